"""What runs when the server stops: async closers registered by the parts that need them.

``serve()`` stops accepting connections and closes every WebSocket with 1001, then runs the
closers in the order they were registered, all within one time budget, and exits. A part
with work to finish (a store with pending writes, a broker connection) registers itself
where ``make_app`` builds it::

    store = PollStore(os.path.join(config.data_dir, DB_FILENAME))
    lifecycle.on_shutdown(store.aclose, "poll store")  # async def aclose(self) -> None

A closer that fails is logged with its traceback and the next one still runs; a closer
still running when the budget is spent is cancelled and logged.
"""

import asyncio
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger("realtime.lifecycle")

Closer = Callable[[], Awaitable[None]]


class Lifecycle:
    """The ordered list of async closers of one application."""

    def __init__(self) -> None:
        self._closers: list[tuple[str, Closer]] = []

    def on_shutdown(self, closer: Closer, name: str = "") -> None:
        """Run ``await closer()`` at shutdown, after the closers registered before it."""
        self._closers.append((name or getattr(closer, "__qualname__", repr(closer)), closer))

    @property
    def closers(self) -> list[str]:
        """The names of the registered closers, in the order they will run."""
        return [name for name, _ in self._closers]

    async def shutdown(self, timeout: float) -> bool:
        """Run every closer in order within ``timeout`` seconds in all.

        Returns True if every closer finished in time without an exception. Never raises.
        """
        deadline = time.monotonic() + timeout
        clean = True
        for name, closer in self._closers:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(closer(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                log.error("shutdown: %s did not finish in time; cancelled", name)
                clean = False
            except Exception:
                log.exception("shutdown: %s failed", name)
                clean = False
        return clean
