"""Knowing that Redis is down: one warning when an outage starts, one line when it ends, and
a probe that PINGs with backoff until Redis answers.

Every part on Redis (polls, chat state, the broker) degrades instead of failing when Redis
does not answer, and each must tell the operator once per outage, not once per call: a
failed call during an outage is expected, and a log line per vote would bury the one that
matters. ``Outage`` is that bookkeeping; what a part does while Redis is down (refuse, stay
local, drop publishes) stays the part's own.
"""

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Optional

from redis.exceptions import RedisClusterException, RedisError

# What a lost, refused or failing Redis raises (MISCONF when the AOF cannot be written,
# LOADING while Redis reads it back, OOM under noeviction): all mean "not now".
# What a Redis that cannot answer raises: a cluster without a reachable node raises
# RedisClusterException, which is no RedisError.
FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

FIRST_PROBE = 0.1  # seconds before the probe's first PING
MAX_PROBE_WAIT = 2.0  # seconds between two PINGs at most


class Outage:
    """Whether Redis is down for one part, logged once per outage.

    Args:
        log: the part's logger.
        where: the Redis, as the log lines name it (its URL).
        what: what the part keeps there, e.g. ``"polls"``.
        down: what an outage means for clients, e.g. ``"votes are refused until it answers"``.
        up: what coming back means, e.g. ``"polls are back"``.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self, log: logging.Logger, where: str, what: str, down: str, up: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.where = where
        self.what = what
        self.down = down
        self.up = up
        self.clock = clock
        self.since: Optional[float] = None  # when the current outage started; None: up

    def healthy(self) -> bool:
        """False from a failure until Redis answers again."""
        return self.since is None

    def failed(self, error: BaseException) -> bool:
        """Redis failed: start an outage, with its one warning, unless one is on.

        Returns:
            True if this failure started the outage.
        """
        if self.since is not None:
            return False
        self.since = self.clock()
        self.log.warning("Redis at %s unavailable for %s (%s): %s", self.where, self.what,
                         str(error) or type(error).__name__, self.down)
        return True

    def answered(self) -> Optional[float]:
        """Redis answered: end the outage, if one is on, with one line saying so.

        Returns:
            How long the outage lasted, in seconds; None if there was none.
        """
        if self.since is None:
            return None
        lasted = self.clock() - self.since
        self.since = None
        self.log.info("Redis at %s answers again after %.1f s: %s", self.where, lasted, self.up)
        return lasted


async def probe(
    ping: Callable[[], Awaitable[Any]],
    timeout: float,
    first: float = FIRST_PROBE,
    longest: float = MAX_PROBE_WAIT,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Call ``ping`` until it answers within ``timeout``, waiting ``first`` seconds before the
    first call and twice as long before each next one, ``longest`` at most.

    Returns once a ping answered; a failure in ``FAILURES`` is another try, anything else
    (a bug) is raised. Cancel the task to stop probing.
    """
    wait = first
    while True:
        await sleep(wait)
        wait = min(wait * 2, longest)
        try:
            async with asyncio.timeout(timeout):
                await ping()
        except FAILURES:
            continue
        return
