"""The command line: options parsed with one clear line per mistake, and a short ``--help``.

``parse`` reads the ``REALTIME_*`` variables, then the flags (a flag wins), into a Tornado
option registry where ``realtime.ops.options.define_options`` defined the options of a
dataclass. Any mistake raises ``ConfigError`` with one line that names the flag or the
variable, what was wrong and, for a mistyped flag, the nearest real one; ``main()`` prints
it and exits with ``EXIT_USAGE``. ``help_text`` lists the dataclass's options by group, then
Tornado's log level, instead of Tornado's own ``--help`` (which starts with its log options
and wraps every help text into a narrow column).
"""

import dataclasses
import difflib
import textwrap
from typing import Any, Mapping, Sequence

import tornado.options

from realtime.ops.options import (
    env_name, environment_settings, flag_default, flag_name, join_option_values, option_aliases,
    option_fields, option_group, option_help, option_kind, option_maximum,
)

EXIT_USAGE = 2  # the status of a command-line mistake, as argparse and most tools use
HELP_FLAGS = ("--help", "-h")
# Tornado's own options that the server documents and reads from the environment too.
TORNADO_SHOWN = ("logging",)
TORNADO_FLAGS = ("log_to_stderr",)  # Tornado's options that take no value
LOG_LEVELS = ("debug", "info", "warning", "error", "critical", "none")
LOGGING_GROUP = "logging"  # where --logging is listed; options may join it
LOGGING_HELP = ("log level: `debug`, `info`, `warning`, `error` or `none` (Tornado's "
                "option)")
WIDTH = 100  # columns of --help
INDENT = 28  # where the help text of a flag starts


class ConfigError(Exception):
    """A mistake in the options, the environment or what they point at (a port in use, a
    data directory another process holds, a missing extra): one line for stderr, and the
    process exits with ``EXIT_USAGE``."""


def help_requested(argv: Sequence[str]) -> bool:
    """Whether the command line asks for ``--help`` (before any ``--``)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in HELP_FLAGS:
            return True
    return False


def parse(cls: type, registry: tornado.options.OptionParser, argv: Sequence[str],
          environ: Mapping[str, str]) -> None:
    """Parse ``environ``'s ``REALTIME_*`` variables, then ``argv`` (without the program name),
    into ``registry``, then run its parse callbacks (Tornado's configure logging).

    Raises:
        ConfigError: an unknown flag, a flag without its value, a value of the wrong type or
            out of range, or an argument that is not a flag.
    """
    for variable, name, value in environment_settings(cls, environ, TORNADO_SHOWN):
        _set(cls, registry, name, value, variable)
    for arg in join_option_values(argv, registry):
        if arg == "--" or not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: options look like --port 9000 "
                              "(see --help)")
        name, equals, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key not in registry or key == "help":
            raise ConfigError(f"unknown option --{name}{_suggestion(name, registry)}")
        if not equals:
            if not _takes_bool(cls, key):
                raise ConfigError(f"--{name} needs a value (--{name} VALUE)")
            value = "true"
        _set(cls, registry, key, value, f"--{name}")
    registry.run_parse_callbacks()


def _set(cls: type, registry: tornado.options.OptionParser, name: str, value: str,
         source: str) -> None:
    """Parse one value into ``registry``; ``source`` names the flag or variable in errors."""
    try:
        registry.parse_command_line(["", f"--{name}={value}"], final=False)
    except (tornado.options.Error, ValueError):
        raise ConfigError(f"{source}: {_expected(cls, name)} expected, not {value!r}") from None
    if name == "logging" and value.lower() not in LOG_LEVELS:
        raise ConfigError(f"{source}: one of {', '.join(LOG_LEVELS)} expected, not {value!r}")
    field = _field(cls, name)
    if field is None:
        return
    kind, _ = option_kind(cls, field.name)
    if kind in (int, float):
        number = getattr(registry, name)
        maximum = option_maximum(field)
        if number < 0 or (maximum is not None and number > maximum):
            bounds = "0 or more" if maximum is None else f"from 0 to {maximum:g}"
            raise ConfigError(f"{source}: a number {bounds} expected, not {value!r}")


def _field(cls: type, name: str) -> "dataclasses.Field[Any] | None":
    """The option field of ``cls`` named ``name`` or with it as an old name."""
    for f in option_fields(cls):
        if name == f.name or name in option_aliases(f):
            return f
    return None


def _takes_bool(cls: type, name: str) -> bool:
    """Whether option ``name`` is a flag without a value (``--xheaders``)."""
    field = _field(cls, name)
    if field is None:
        return name in TORNADO_FLAGS
    return option_kind(cls, field.name)[0] is bool


def _expected(cls: type, name: str) -> str:
    """What a value of option ``name`` must be, in words."""
    field = _field(cls, name)
    if field is None:
        return "another value"
    kind, multiple = option_kind(cls, field.name)
    words = {int: "a whole number", float: "a number", bool: "true or false"}.get(kind, "a text")
    return f"comma-separated {words.split(' ', 1)[1]}s" if multiple else words


def _suggestion(name: str, registry: tornado.options.OptionParser) -> str:
    """"; did you mean --port?" for the nearest defined flag, if one is near."""
    flags = [flag_name(known) for known in registry if known != "help"]
    close = difflib.get_close_matches(name.replace("_", "-"), flags, n=1, cutoff=0.6)
    return f"; did you mean --{close[0]}?" if close else " (see --help)"


def help_text(cls: type, registry: tornado.options.OptionParser, usage: str,
              groups: Sequence[str]) -> str:
    """``--help``: ``usage``, then every option of ``cls`` under its group, in the order of
    ``groups`` (any other group after them), then the log level and a word on Tornado's
    other log options."""
    by_group: dict[str, list[tuple[str, str]]] = {}
    for f in option_fields(cls):
        kind, multiple = option_kind(cls, f.name)
        flag = f"--{flag_name(f.name)}"
        if kind is not bool:
            flag += " LIST" if multiple else f" {_metavar(kind)}"
        text = _plain(option_help(f))
        default = flag_default(f)
        if default is not None and default is not False and default not in ("", ()):
            text += f" [default: {_value_text(default)}]"
        by_group.setdefault(option_group(f), []).append((flag, text))
    level = getattr(registry, "logging", "info")
    by_group.setdefault(LOGGING_GROUP, []).append(
        ("--logging LEVEL", f"{_plain(LOGGING_HELP)} [default: {level}]"))
    order = [*groups, *(group for group in by_group if group not in groups)]
    lines = [*usage.splitlines(), "", *textwrap.wrap(
        f"Every option is also an environment variable: --max-message-size is "
        f"{env_name('max_message_size')}; a flag wins over its variable.", WIDTH,
        break_on_hyphens=False), ""]
    for group in order:
        if group not in by_group:
            continue
        lines.append(f"{group}:")
        for flag, text in by_group[group]:
            lines.extend(_entry(flag, text))
        lines.append("")
    tornado_flags = ", ".join(
        f"--{flag_name(name)}" for name in registry
        if name not in ("help", *TORNADO_SHOWN) and _field(cls, name) is None)
    lines.extend(textwrap.wrap(
        f"Tornado's other log options are accepted too: {tornado_flags}.", WIDTH,
        break_on_hyphens=False))
    return "\n".join(lines) + "\n"


def _metavar(kind: type) -> str:
    return {int: "N", float: "NUMBER"}.get(kind, "TEXT")


def _value_text(value: Any) -> str:
    """A default as typed on the command line: ``25`` for 25.0, ``a,b`` for a list."""
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _plain(markdown: str) -> str:
    """Help text for a terminal: the Markdown backticks of docs/options.md dropped."""
    return markdown.replace("`", "")


def _entry(flag: str, text: str) -> list[str]:
    """One option in ``--help``: the flag, its help wrapped beside it (or below a long flag)."""
    indent = " " * INDENT
    wrapped = textwrap.wrap(text, WIDTH - INDENT, break_on_hyphens=False)
    head = f"  {flag}"
    if len(head) < INDENT - 1:
        return [head.ljust(INDENT) + wrapped[0], *(indent + line for line in wrapped[1:])]
    return [head, *(indent + line for line in wrapped)]
