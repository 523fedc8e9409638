"""Options reach the Config from flags and REALTIME_* environment variables."""

import os

import tornado.options

import server


def parse(argv: list[str], environ: dict[str, str]) -> server.Config:
    args = ["server.py", *server.environment_args(environ), *server.join_option_values(argv)]
    saved = {name: getattr(server.options, name) for name in server.options.as_dict()}
    try:
        tornado.options.parse_command_line(args, final=False)
        return server.config_from_options()
    finally:
        for name, value in saved.items():
            setattr(server.options, name, value)


def test_defaults_match_the_config_defaults():
    """With no flags and no environment, the options give Config's own defaults, except the
    data directory: a served process keeps its data in data/ beside server.py."""
    config = parse([], {})
    assert config == server.Config(data_dir=os.path.join(server.HERE, "data"))


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
