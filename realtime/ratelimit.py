"""Token buckets: how many messages a client may send, with room for short bursts.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second. Each message
takes one; a message that finds the bucket empty is over the limit. The clock is injected so
tests can freeze or step time instead of sleeping.
"""

import time
from typing import Callable

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full.

    Args:
        rate: tokens gained per second (the sustained message rate).
        burst: the most tokens the bucket holds (messages allowed at once after a pause).
        clock: monotonic seconds; ``time.monotonic`` unless a test passes its own.
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self) -> bool:
        """Take one token; False (and nothing taken) if the bucket is empty."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token, 0.0 if one is there now."""
        self._refill()
        return max(0.0, (1 - self.tokens) / self.rate)
