"""Options declared once: a dataclass field per option, everything else derived from it.

A field declared with ``option(default, help)`` is an option. From the dataclass alone come
its command-line flag (``max_pending_bytes`` is ``--max-pending-bytes``), its environment
variable (``REALTIME_MAX_PENDING_BYTES``), the value parsed into the dataclass, and its row
in the options table of docs/options.md (``markdown_table``). Fields declared with plain ``field``
are not options (objects a test hands in, secrets).

Types come from the annotations: ``int``, ``float``, ``bool``, ``str``, ``Optional[str]``
(an empty value is None) and ``tuple[str, ...]`` (a comma-separated list).
"""

import dataclasses
import typing
from typing import Any, Mapping, Optional, Sequence

import tornado.options

ENV_PREFIX = "REALTIME_"
_HELP = "option.help"
_SERVED = "option.served"  # the value a served process starts with, when not the field's
_SHOWN = "option.shown"  # how docs/options.md writes the default, when not the plain value
_ALIASES = "option.aliases"  # old names that still set it (a flag and a variable each)
_GROUP = "option.group"  # its heading in --help ("network", "limits", ...)
_MAXIMUM = "option.maximum"  # the largest value accepted, if numbers above it make no sense


def option(
    default: Any, help: str, *, served: Any = dataclasses.MISSING, shown: Optional[str] = None,
    aliases: tuple[str, ...] = (), group: str = "other", maximum: Optional[float] = None,
) -> Any:
    """Declare a dataclass field as an option.

    Args:
        default: the value of the dataclass field (what ``make_app`` gets by default).
        help: one sentence or two for ``--help`` and docs/options.md.
        served: the flag's default, where a served process needs another value than the
            dataclass (the data directory: none in tests, ``./data`` when served).
        shown: the default as docs/options.md writes it, where the value itself says little.
        aliases: old field names of the option, whose flag and variable still set it (a
            rename keeps deployments that use the old name working).
        group: the heading it is listed under in ``--help``.
        maximum: the largest value accepted (a port's 65535); every number must also be
            0 or more.
    """
    metadata = {_HELP: help, _SERVED: served, _SHOWN: shown, _ALIASES: aliases,
                _GROUP: group, _MAXIMUM: maximum}
    return dataclasses.field(default=default, metadata=metadata)


def option_fields(cls: type) -> list[dataclasses.Field]:  # type: ignore[type-arg]
    """The fields of ``cls`` declared with ``option``, in declaration order."""
    return [f for f in dataclasses.fields(cls) if _HELP in f.metadata]


def flag_name(name: str) -> str:
    """``max_pending_bytes`` as ``max-pending-bytes``."""
    return name.replace("_", "-")


def env_name(name: str) -> str:
    """``max_pending_bytes`` as ``REALTIME_MAX_PENDING_BYTES``."""
    return ENV_PREFIX + name.upper()


def option_group(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    """The ``--help`` heading of an option."""
    return str(f.metadata[_GROUP])


def option_help(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    """The help text of an option, as docs/options.md writes it (Markdown)."""
    return str(f.metadata[_HELP])


def option_aliases(f: dataclasses.Field) -> tuple[str, ...]:  # type: ignore[type-arg]
    """The old names of an option."""
    return tuple(f.metadata[_ALIASES])


def option_maximum(f: dataclasses.Field) -> Optional[float]:  # type: ignore[type-arg]
    """The largest value an option takes, if it has one."""
    return f.metadata[_MAXIMUM]


def option_kind(cls: type, name: str) -> tuple[type, bool]:
    """The scalar type of option ``name`` of ``cls`` and whether it takes a list."""
    hint = typing.get_type_hints(cls)[name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return args[0], True
    if origin is typing.Union:  # Optional[X]
        return next(arg for arg in args if arg is not type(None)), False
    return hint, False


def flag_default(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    """The value a served process starts with for this option."""
    served = f.metadata[_SERVED]
    return f.default if served is dataclasses.MISSING else served


def _defined_default(f: dataclasses.Field, multiple: bool) -> Any:  # type: ignore[type-arg]
    """The default a flag is defined with (a list for a list, "" for None)."""
    default = flag_default(f)
    if multiple:
        return list(default)
    return "" if default is None else default


def define_options(
    cls: type, registry: tornado.options.OptionParser, group: str = "server",
) -> None:
    """Define every option of ``cls`` in a Tornado option parser, under ``group`` in
    ``--help``."""
    for f in option_fields(cls):
        kind, multiple = option_kind(cls, f.name)
        registry.define(f.name, default=_defined_default(f, multiple), type=kind, multiple=multiple,
                        help=f.metadata[_HELP], group=group)
        for alias in f.metadata[_ALIASES]:
            registry.define(alias, default=None, type=kind, multiple=multiple,
                            help=f"the old name of --{flag_name(f.name)}", group=group)


def values_from(cls: type, registry: tornado.options.OptionParser) -> dict[str, Any]:
    """The parsed options as keyword arguments for ``cls``."""
    values: dict[str, Any] = {}
    for f in option_fields(cls):
        kind, multiple = option_kind(cls, f.name)
        value = getattr(registry, f.name)
        for alias in f.metadata[_ALIASES]:
            # An old name counts where the new one was left at its default: given both,
            # the new name wins.
            old = getattr(registry, alias)
            if old not in (None, []) and value == _defined_default(f, multiple):
                value = old
        if multiple:
            value = tuple(value)
        elif value == "" and kind is str and f.default is None:
            value = None
        values[f.name] = value
    return values


def environment_settings(
    cls: type, environ: Mapping[str, str], extra: Sequence[str] = (),
) -> list[tuple[str, str, str]]:
    """(variable, option name, value) of every option of ``cls``, and of each name in
    ``extra`` (options defined elsewhere, Tornado's ``logging``), set in ``environ``."""
    names = [*extra]
    for f in option_fields(cls):
        names.extend((*f.metadata[_ALIASES], f.name))  # the new name last: it wins
    settings = []
    for name in names:
        value = environ.get(env_name(name))
        if value is not None:
            settings.append((env_name(name), name, value))
    return settings


def environment_args(cls: type, environ: Mapping[str, str]) -> list[str]:
    """``REALTIME_PORT=9000`` as ``--port=9000``, for every option of ``cls`` set in
    ``environ``."""
    return [f"--{name}={value}" for _, name, value in environment_settings(cls, environ)]


def join_option_values(argv: Sequence[str], registry: tornado.options.OptionParser) -> list[str]:
    """Turn ``--port 9000`` into ``--port=9000``: tornado.options only takes the second form."""
    joined: list[str] = []
    args = iter(argv)
    for arg in args:
        name = arg[2:].replace("-", "_")
        takes_value = name in registry and not isinstance(getattr(registry, name), bool)
        if arg.startswith("--") and "=" not in arg and takes_value:
            value = next(args, None)
            joined.append(arg if value is None else f"{arg}={value}")
        else:
            joined.append(arg)
    return joined


def _shown(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    shown = f.metadata[_SHOWN]
    if shown is not None:
        return shown
    value = flag_default(f)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def markdown_table(cls: type) -> str:
    """The options table of docs/options.md: flag, default, help, one row per option."""
    rows = ["| option | environment | default | what it does |", "| --- | --- | --- | --- |"]
    for f in option_fields(cls):
        help_text = f.metadata[_HELP].replace("|", "\\|")
        for alias in f.metadata[_ALIASES]:
            help_text += f" (old name, still read: `--{flag_name(alias)}`, `{env_name(alias)}`)"
        rows.append(
            f"| `--{flag_name(f.name)}` | `{env_name(f.name)}` | {_shown(f)} | {help_text} |"
        )
    return "\n".join(rows) + "\n"


TABLE_START = "<!-- options: generated by scripts/readme-options from server.Config -->\n"
TABLE_END = "<!-- end of options -->\n"


def replace_table(readme: str, table: str) -> str:
    """``readme`` with the text between the table markers replaced by ``table``."""
    start = readme.index(TABLE_START) + len(TABLE_START)
    end = readme.index(TABLE_END, start)
    return readme[:start] + table + readme[end:]
