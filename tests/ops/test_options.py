"""Options reach the Config from flags and REALTIME_* variables, all declared once."""

from pathlib import Path

import tornado.options

import server
from realtime.ops.options import (
    environment_args, join_option_values, markdown_table, option_fields, replace_table,
)

OPTIONS_DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "options.md"


def parse(argv: list[str], environ: dict[str, str]) -> server.Config:
    parser = tornado.options.OptionParser()
    server.define_options(server.Config, parser)
    args = ["server.py", *environment_args(server.Config, environ),
            *join_option_values(argv, parser)]
    parser.parse_command_line(args, final=False)
    return server.Config(**server.values_from(server.Config, parser))


def test_defaults_match_the_config_defaults():
    """With no flags and no environment, the options give Config's own defaults, except the
    data directory: a served process keeps its data in ./data."""
    assert parse([], {}) == server.Config(data_dir="data")


def test_environment_variable_sets_an_option():
    """REALTIME_MAX_MESSAGE_SIZE=1000 sets --max-message-size."""
    assert parse([], {"REALTIME_MAX_MESSAGE_SIZE": "1000"}).max_message_size == 1000


def test_flag_wins_over_the_environment():
    """A flag on the command line overrides the same option's variable."""
    config = parse(["--rate-limit", "5"], {"REALTIME_RATE_LIMIT": "50"})
    assert config.rate_limit == 5


def test_allowed_origins_take_a_comma_separated_list():
    """--allowed-origins a,b gives both origins."""
    config = parse(["--allowed-origins=https://a.example,http://b.example:8080"], {})
    assert config.allowed_origins == ("https://a.example", "http://b.example:8080")


def test_boolean_flag_and_variable():
    """--xheaders alone turns it on; REALTIME_XHEADERS=false leaves it off."""
    assert parse(["--xheaders"], {}).xheaders is True
    assert parse([], {"REALTIME_XHEADERS": "false"}).xheaders is False


def test_an_empty_optional_path_is_none():
    """No --cookie-secret-file leaves it None, so the data directory's secret is used."""
    assert parse([], {}).cookie_secret_file is None
    assert parse(["--cookie-secret-file", "/tmp/s"], {}).cookie_secret_file == "/tmp/s"


def test_every_option_has_a_flag_a_variable_and_a_documented_row():
    """Each Config option is a row of the table in docs/options.md, exactly as generated from
    Config (run scripts/readme-options after changing an option)."""
    readme = OPTIONS_DOC.read_text(encoding="utf-8")
    assert replace_table(readme, markdown_table(server.Config)) == readme
    for f in option_fields(server.Config):
        assert f"`--{f.name.replace('_', '-')}`" in readme


def test_an_old_flag_name_still_sets_its_renamed_option():
    """--poll-session-timeout, the old name of --long-poll-session-timeout, still sets it."""
    assert parse(["--poll-session-timeout", "50"], {}).long_poll_session_timeout == 50


def test_an_old_variable_name_still_sets_its_renamed_option():
    """REALTIME_POLL_SESSION_TIMEOUT still sets --long-poll-session-timeout; the new name
    wins when both are set."""
    assert parse([], {"REALTIME_POLL_SESSION_TIMEOUT": "50"}).long_poll_session_timeout == 50
    both = {"REALTIME_POLL_SESSION_TIMEOUT": "50", "REALTIME_LONG_POLL_SESSION_TIMEOUT": "60"}
    assert parse([], both).long_poll_session_timeout == 60
