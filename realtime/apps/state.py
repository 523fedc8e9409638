"""Where real-time apps keep shared state: the ``AppState`` interface and its two stores.

An app (``realtime.apps.session.AppSession``) keeps what every connection must agree on here, never
in its session objects or in module globals: a session lives in one process, and with
``--redis-url`` the next click may come from another. The interface is a small key/value
store with an atomic counter, async because it may be Redis:

* ``EmbeddedAppState`` (the default): a dict in this process, bounded in bytes (keys and
  values together); past the bound the least recently written key goes first. Nothing is
  written to disk: a restart starts from nothing.
* ``realtime.apps.redisstate.RedisAppState`` (``--redis-url``): the same operations on
  Redis, each atomic across processes, under ``<prefix>app:``; every call bounded in time,
  a Redis that does not answer making it raise ``AppStateUnavailable`` (``unavailable``).

``AppState.scoped(namespace)`` is the view one app gets (``AppSession.state``): its keys are
put under ``<namespace>:``, so two apps never share a key by accident.

Values are strings (``set``/``get``) or integers kept as their decimal text (``incr``, and
``get`` answers the text), within the signed 64-bit range Redis counts in.
"""

from collections import OrderedDict
from typing import Optional, Protocol

from realtime.wire.messages import ClientError

DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # what the embedded store holds, keys and values
MAX_VALUE_BYTES = 64 * 1024  # one value, UTF-8
ENTRY_OVERHEAD = 100  # bytes a key costs the embedded store besides its text
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1  # Redis's integers


class AppStateUnavailable(ClientError):
    """The store did not answer in time: nothing is known to have changed."""

    def __init__(self) -> None:
        super().__init__("unavailable", "This is unavailable right now; try again in a moment.")


class AppState(Protocol):
    """What an app's shared state offers; see the module docstring."""

    name: str  # "embedded" or "redis"

    async def get(self, key: str) -> Optional[str]:
        """The value of ``key``, or None if it has none."""

    async def set(self, key: str, value: str) -> None:
        """Give ``key`` the value ``value``.

        Raises:
            ValueError: ``value`` is over ``MAX_VALUE_BYTES``.
        """

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` (0 if it has none), atomically; return the sum.

        Raises:
            ValueError: ``key`` holds something else than an integer, or the sum would
                leave the signed 64-bit range.
        """

    def scoped(self, namespace: str) -> "AppState":
        """A view of this state whose keys are all under ``<namespace>:``."""

    async def start(self) -> None:
        """Connect, before the server accepts clients."""

    async def aclose(self) -> None:
        """Disconnect, at shutdown."""


class Scoped:
    """An ``AppState`` seen through a key prefix (``AppState.scoped``)."""

    def __init__(self, state: AppState, namespace: str) -> None:
        self.base = state
        self.namespace = namespace
        self.name = state.name
        self._prefix = namespace + ":"

    async def get(self, key: str) -> Optional[str]:
        """The value of ``key``, or None if it has none."""
        return await self.base.get(self._prefix + key)

    async def set(self, key: str, value: str) -> None:
        """Give ``key`` the value ``value`` (at most ``MAX_VALUE_BYTES``)."""
        await self.base.set(self._prefix + key, value)

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` (0 if none), atomically; return the sum."""
        return await self.base.incr(self._prefix + key, by)

    def scoped(self, namespace: str) -> AppState:
        """A view of this state whose keys are all under ``<namespace>:``."""
        return Scoped(self.base, self._prefix + namespace)

    async def start(self) -> None:
        """Start the state seen through this view."""
        await self.base.start()

    async def aclose(self) -> None:
        """Close the state seen through this view."""
        await self.base.aclose()


def check_value(value: str) -> None:
    """Refuse what no store keeps: a value that is not text, or too long."""
    if not isinstance(value, str):
        raise TypeError("an app state value is a str")
    if len(value) > MAX_VALUE_BYTES // 4 and len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise ValueError(f"an app state value is {MAX_VALUE_BYTES} bytes at most")


def check_by(by: int) -> None:
    """Refuse an increment that is not an integer."""
    if not isinstance(by, int) or isinstance(by, bool):
        raise TypeError("incr's by is an int")


class EmbeddedAppState:
    """The app state of one process, in memory; see the module docstring.

    Args:
        max_bytes: what keys and values may take together (each key counting
            ``ENTRY_OVERHEAD`` more); past it the least recently written keys are forgotten.
    """

    name = "embedded"

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._values: OrderedDict[str, str] = OrderedDict()  # oldest write first
        self.size = 0  # bytes held, as max_bytes counts them
        self.evicted = 0  # keys forgotten for the bound

    async def get(self, key: str) -> Optional[str]:
        """The value of ``key``, or None if it has none."""
        return self._values.get(key)

    async def set(self, key: str, value: str) -> None:
        """Give ``key`` the value ``value`` (at most ``MAX_VALUE_BYTES``)."""
        check_value(value)
        self._write(key, value)

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` (0 if none), atomically; return the sum."""
        check_by(by)
        current = self._values.get(key, "0")
        try:
            total = int(current) + by
        except ValueError:
            raise ValueError(f"the value of {key!r} is not an integer") from None
        if not INT_MIN <= total <= INT_MAX:
            raise ValueError(f"incrementing {key!r} would overflow")
        self._write(key, str(total))
        return total

    def scoped(self, namespace: str) -> AppState:
        """A view of this state whose keys are all under ``<namespace>:``."""
        return Scoped(self, namespace)

    async def start(self) -> None:
        """Nothing to connect to."""

    async def aclose(self) -> None:
        """Nothing to disconnect; the values stay readable."""

    def _write(self, key: str, value: str) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self.size -= _cost(key, old)
        self._values[key] = value
        self.size += _cost(key, value)
        while self.size > self.max_bytes and len(self._values) > 1:
            gone, held = self._values.popitem(last=False)
            self.size -= _cost(gone, held)
            self.evicted += 1


def _cost(key: str, value: str) -> int:
    return len(key.encode("utf-8")) + len(value.encode("utf-8")) + ENTRY_OVERHEAD
