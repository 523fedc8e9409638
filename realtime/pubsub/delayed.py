"""A subscriber's writes held back a fixed time: added latency, as a slow network has.

``DelayedWrites`` stands in front of a subscriber's ``write_envelope``: every envelope waits
``delay`` seconds in a queue, then goes to the real writer in the order it came. What waits
is bounded in bytes by the same ``max_pending`` the hub gives the writer, so a delayed
subscriber holds no more than a slow one may. The ``/models`` page uses it
(``realtime.chat.latency``); nothing else does.
"""

import asyncio
from collections import deque
from typing import Callable, Optional

from realtime.pubsub import delivery
from realtime.pubsub.envelope import Envelope

Write = Callable[[Envelope, int], int]


class DelayedWrites:
    """Hands each envelope to ``write`` ``delay`` seconds after it came, in order.

    Args:
        write: the subscriber's own ``write_envelope``.
        delay: seconds each envelope waits.
        stalled: called when ``write`` refuses a held envelope (``STALLED``): the hub's
            answer to a slow subscriber, since the hub itself has already moved on.
    """

    def __init__(self, write: Write, delay: float, stalled: Callable[[], None]) -> None:
        self._write = write
        self.delay = delay
        self._stalled = stalled
        self._queue: "deque[tuple[float, Envelope, int]]" = deque()  # (due, envelope, bound)
        self._queued_bytes = 0
        self._timer: Optional[asyncio.TimerHandle] = None
        self._closed = False

    def write(self, envelope: Envelope, max_pending: int) -> int:
        """The ``write_envelope`` of the subscriber: queue ``envelope`` for later."""
        if self._closed:
            return delivery.CLOSED
        if self._queued_bytes + len(envelope.data) > max_pending:
            return delivery.STALLED
        loop = asyncio.get_running_loop()
        self._queue.append((loop.time() + self.delay, envelope, max_pending))
        self._queued_bytes += len(envelope.data)
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0][0], self._flush)
        return delivery.WRITTEN

    def queued_bytes(self) -> int:
        """Bytes of payload waiting for their time."""
        return self._queued_bytes

    def close(self) -> None:
        """Drop what waits and write nothing more."""
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, envelope, max_pending = self._queue.popleft()
            self._queued_bytes -= len(envelope.data)
            outcome = self._write(envelope, max_pending)
            if outcome == delivery.CLOSED:
                self.close()
                return
            if outcome == delivery.STALLED:
                self.close()
                self._stalled()
                return
        if self._queue:
            self._timer = loop.call_at(self._queue[0][0], self._flush)
