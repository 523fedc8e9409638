"""How late the event loop runs: the one number that says whether one task hogs the loop.

Everything in this server shares one loop, so a handler, a fan-out or a database call that
holds it delays every client at once. ``LoopLag`` asks the loop to call it back every
``interval`` seconds and records how much later than asked the callback ran: that delay is
what any client waiting on the loop waited too. ``/metrics`` exports a histogram of the
delays and the worst one of the last minute.
"""

import asyncio
import time
from collections import deque
from typing import Callable, Optional

# Delays worth telling apart: a healthy loop stays under a millisecond or two; 50 ms is
# what a person starts to notice in a chat; seconds mean something is badly wrong.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WINDOW = 60.0  # seconds the worst delay is remembered


class LoopLag:
    """Samples the loop's delay every ``interval`` seconds once started.

    Args:
        interval: seconds between samples.
        observe: called with every delay in seconds (a histogram's ``observe``).
        clock: monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        interval: float = 0.05,
        observe: Optional[Callable[[float], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._observe = observe
        self._clock = clock
        self._handle: Optional[asyncio.TimerHandle] = None
        self._due = 0.0  # when the pending callback was asked for
        # (when, delay) of the worst delays, newest last; each older entry is larger than
        # every newer one, so the first still in the window is the window's worst.
        self._worst: deque[tuple[float, float]] = deque()
        self.samples = 0

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._handle is not None

    def start(self) -> None:
        """Begin sampling on the running loop (again a no-op once started)."""
        if self._handle is None:
            self._schedule()

    def stop(self) -> None:
        """Stop sampling."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    async def aclose(self) -> None:
        """``stop()`` as a shutdown closer."""
        self.stop()

    def _schedule(self) -> None:
        self._due = self._clock() + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        self.record(max(0.0, now - self._due), now)
        self._schedule()

    def record(self, delay: float, now: float) -> None:
        """Take one delay measured at ``now`` (what each sample does)."""
        self.samples += 1
        if self._observe is not None:
            self._observe(delay)
        worst = self._worst
        while worst and worst[-1][1] <= delay:
            worst.pop()
        worst.append((now, delay))

    def worst(self) -> float:
        """The longest delay of the last minute, in seconds (0 before any sample)."""
        horizon = self._clock() - WINDOW
        worst = self._worst
        while worst and worst[0][0] < horizon:
            worst.popleft()
        return worst[0][1] if worst else 0.0
