"""Rate limits: a token bucket, and a keyed set of them (per client IP) with bounded memory.

A ``TokenBucket(rate, burst)`` allows ``burst`` actions at once and then ``rate`` actions per
second on average. It never sleeps: ``take()`` answers at once, and ``retry_after()`` says
how long to wait for the next token (what a ``Retry-After`` header or an error frame tells
the client). The clock is injected so tests control time.

``KeyedLimiter`` holds one bucket per key (a client IP, a connection) and forgets a key once
its bucket would be full again, since a full bucket and a fresh one behave the same; a hard
cap on the number of keys bounds memory against a flood of distinct keys.
"""

import math
import time
from collections import OrderedDict
from typing import Callable, Hashable

Clock = Callable[[], float]

DEFAULT_MAX_KEYS = 10_000


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` tokens per second; an action
    costs one token, or ``cost`` tokens when it weighs more (a publish to N listeners).

    Args:
        rate: tokens added per second (> 0).
        burst: the bucket's size, and so the number of actions allowed at once (>= 1).
        clock: seconds from any fixed point; ``time.monotonic`` by default.
    """

    # One per connection (its frame budget) and per active key: a small fixed record.
    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()  # when _tokens was last brought up to date

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return now

    def take(self, cost: float = 1) -> bool:
        """Spend ``cost`` tokens if there are that many; False means the action is over the
        limit (and costs nothing).

        A cost above ``burst`` is charged as ``burst``: such an action is still possible,
        once the bucket is full, rather than never.
        """
        cost = min(cost, self.burst)
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1) -> float:
        """Seconds until ``take(cost)`` can succeed again; 0 if it can now."""
        cost = min(cost, self.burst)
        self._refill()
        return max(0.0, (cost - self._tokens) / self.rate)

    def idle_for(self) -> float:
        """Seconds since the bucket was last used."""
        return self._clock() - self._stamp

    def full_after(self) -> float:
        """Seconds of idleness after which this bucket is full (as good as a fresh one)."""
        return self.burst / self.rate


class KeyedLimiter:
    """One ``TokenBucket`` per key, e.g. per client IP, with bounded memory.

    Args:
        rate: tokens per second for each key.
        burst: bucket size for each key.
        clock: as for ``TokenBucket``.
        max_keys: the most keys kept; past it the least recently used key is forgotten
            (which gives that key a fresh bucket: lenient, never wrong about others).
    """

    def __init__(
        self, rate: float, burst: int, clock: Clock = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        TokenBucket(rate, burst, clock)  # validates the arguments once, here
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()  # least recent first

    def take(self, key: Hashable, cost: float = 1) -> bool:
        """Spend ``cost`` of ``key``'s tokens; False means ``key`` is over the limit."""
        return self._bucket(key).take(cost)

    def retry_after(self, key: Hashable, cost: float = 1) -> float:
        """Seconds until ``key`` may act again (at ``cost``); 0 if it may now."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.retry_after(cost)

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: Hashable) -> TokenBucket:
        self._evict_idle()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        return bucket

    def _evict_idle(self) -> None:
        # The least recently used buckets come first, so the scan stops at the first one
        # still refilling: the work per call is what it evicts, plus one.
        while self._buckets:
            bucket = next(iter(self._buckets.values()))
            if bucket.idle_for() < bucket.full_after():
                break
            self._buckets.popitem(last=False)


def retry_after_header(seconds: float) -> str:
    """``seconds`` as a ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
