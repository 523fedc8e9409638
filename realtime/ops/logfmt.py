"""One-line ``key=value`` log records that tools can parse and people can read.

Values with spaces, quotes, ``=`` or control characters are written as JSON strings, so a
client-supplied value (an ``Origin`` header, a path) can never start a new log line or fake
another field. ``logfmt(event="connect", origin='http://x" admin=1')`` gives::

    event=connect origin="http://x\\" admin=1"

``ThrottledLog`` writes such a line at most once per interval, however often the thing it
reports happens (a spinning accept loop, a bug every request of a flood hits), each line
saying how many repeats it held back.
"""

import json
import logging
import re
import time
from typing import Any, Callable, Optional

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "-_.:/[]@%+,;?&()*!~")
# A value made only of _PLAIN characters, tested in one regex call: a log line per
# connection and per request is formatted on every reconnect of a storm.
_PLAIN_VALUE = re.compile("[" + re.escape("".join(sorted(_PLAIN))) + "]+")


def format_value(value: Any) -> str:
    """One value: bare if it is plain, ``-`` for None, a JSON string otherwise."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = value if type(value) is str else str(value)
    if _PLAIN_VALUE.fullmatch(text):
        return text
    return json.dumps(text)


def logfmt(**fields: Any) -> str:
    """The fields as ``key=value`` pairs in the order given."""
    return " ".join([f"{key}={format_value(value)}" for key, value in fields.items()])


# Seconds between two reports of the same repeated event.
LOG_INTERVAL = 1.0


class ThrottledLog:
    """A repeated event logged at most once per ``interval`` seconds, each report saying
    how many repeats it held back since the last one."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.held_back = 0  # repeats since the last report
        self._last: Optional[float] = None  # clock() of the last report

    def log(self, level: int, **fields: Any) -> bool:
        """Log ``fields`` (logfmt) at ``level`` with ``repeats=<held back>``, unless a report
        went out less than ``interval`` ago; True if this one was logged."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self.held_back += 1
            return False
        self.logger.log(level, logfmt(**fields, repeats=self.held_back))
        self._last = now
        self.held_back = 0
        return True

    def warning(self, **fields: Any) -> bool:
        """``log`` at WARNING."""
        return self.log(logging.WARNING, **fields)

    def error(self, **fields: Any) -> bool:
        """``log`` at ERROR."""
        return self.log(logging.ERROR, **fields)
