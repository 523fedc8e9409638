"""One-line ``key=value`` log records that tools can parse and people can read.

Values with spaces, quotes, ``=`` or control characters are written as JSON strings, so a
client-supplied value (an ``Origin`` header, a path) can never start a new log line or fake
another field. ``logfmt(event="connect", origin='http://x" admin=1')`` gives::

    event=connect origin="http://x\\" admin=1"
"""

import json
from typing import Any

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "-_.:/[]@%+,;?&()*!~")


def format_value(value: Any) -> str:
    """One value: bare if it is plain, ``-`` for None, a JSON string otherwise."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if text and all(char in _PLAIN for char in text):
        return text
    return json.dumps(text)


def logfmt(**fields: Any) -> str:
    """The fields as ``key=value`` pairs in the order given."""
    return " ".join(f"{key}={format_value(value)}" for key, value in fields.items())
