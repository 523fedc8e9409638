"""The app state on Redis: ``RedisAppState`` keeps what real-time apps share where every
process sees it (``--redis-url``), with the interface of ``realtime.apps.state.AppState``.

Keys are ``<prefix>app:<app>:<key>`` (``realtime:app:counter:demo``). Each operation is one
Redis command (``GET``, ``SET ... EX``) or one ``MULTI``/``EXEC`` block (``INCRBY`` and its
``EXPIRE``), so an increment on one process and one on another never lose each other. Each
write renews the key's expiry (``ttl``, 30 days): keys named after what clients ask for
(a counter per URL) do not pile up forever. Size Redis's ``maxmemory`` for them. Every
operation touches one key, so the state works on a Redis Cluster as it is
(``redis+cluster://``, ``realtime.storage.rediskeys``).

Faults. Every call, its wait for a turn included, is bounded by ``timeout`` seconds (2); a
Redis that is down, frozen or refusing writes makes it raise ``AppStateUnavailable``
(``unavailable``: the socket answers an error frame, a POST a 503), logged once per outage.
An increment that timed out after reaching Redis may still have counted: refused but
counted can happen, acknowledged but lost cannot.
"""

import asyncio
import logging
from typing import Awaitable, Callable, Optional, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from realtime.apps.state import (
    INT_MAX, INT_MIN, AppState, AppStateUnavailable, Scoped, check_by, check_value,
)
from realtime.storage.redisdown import FAILURES, Outage
from realtime.storage.rediskeys import client, close

log = logging.getLogger("realtime.appstate")

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0  # seconds per call, its wait for a turn included
DEFAULT_TTL = 30 * 24 * 3600  # seconds a key lives after its last write
CONCURRENT_CALLS = 16  # calls in flight per process; more wait their turn


class RedisAppState:
    """The app state on Redis, shared by every process using the same Redis and prefix;
    see the module docstring.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``).
        prefix: put before every key (then ``app:``), to share one Redis between deployments.
        timeout: seconds any call may take, its wait for a turn included.
        ttl: seconds a key lives after its last write.

    Raises:
        ValueError: ``url`` is not a Redis URL.
    """

    name = "redis"

    def __init__(self, url: str, prefix: str = "realtime:", *, timeout: float = DEFAULT_TIMEOUT,
                 ttl: int = DEFAULT_TTL) -> None:
        self.url = url
        self.prefix = prefix + "app:"
        self.timeout = timeout
        self.ttl = ttl
        # No redis-py retries (the client retries, once told "unavailable"); every socket
        # operation times out, so a half-open connection fails a call instead of hanging it.
        self._redis = client(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2,
            decode_responses=True, client_name="realtime-apps",
            max_connections=CONCURRENT_CALLS,
        )
        self._turns = asyncio.Semaphore(CONCURRENT_CALLS)  # the pool never refuses a call
        self._outage = Outage(log, url, "app state", "apps answer unavailable until it answers",
                              "app state is back")

    async def get(self, key: str) -> Optional[str]:
        """The value of ``key``, or None if it has none."""
        value: Optional[str] = await self._call(lambda: self._redis.get(self.prefix + key))
        return value

    async def set(self, key: str, value: str) -> None:
        """Give ``key`` the value ``value`` (at most ``MAX_VALUE_BYTES``)."""
        check_value(value)
        await self._call(lambda: self._redis.set(self.prefix + key, value, ex=self.ttl))

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer at ``key`` (0 if none), atomically; return the sum."""
        check_by(by)
        if not INT_MIN <= by <= INT_MAX:
            raise ValueError("incr's by is a signed 64-bit integer")

        async def job() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(self.prefix + key, by).expire(self.prefix + key, self.ttl)
                total, _ = await pipe.execute()
            return int(total)
        return await self._call(job)

    def scoped(self, namespace: str) -> AppState:
        """A view of this state whose keys are all under ``<namespace>:``."""
        return Scoped(self, namespace)

    async def start(self) -> None:
        """Check that Redis answers; with Redis down, log a warning and start anyway (the
        apps answer ``unavailable`` until it answers)."""
        try:
            await self._call(self._redis.ping)
        except AppStateUnavailable:
            log.warning("starting without Redis for the app state; it comes back when it "
                        "answers")

    async def aclose(self) -> None:
        """Close the connections; closing twice is harmless."""
        await close(self._redis)

    async def _call(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job`` in a turn, bounded by ``timeout`` in all; Redis failures become
        ``AppStateUnavailable``, logged once per outage. A value Redis cannot add to is the
        caller's ``ValueError``, not an outage."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._turns:
                    result = await job()
        except ResponseError as error:
            if "not an integer" in str(error) or "overflow" in str(error):
                raise ValueError(str(error)) from None
            self._outage.failed(error)  # MISCONF, OOM, READONLY: not now
            raise AppStateUnavailable() from error
        except FAILURES as error:
            self._outage.failed(error)
            raise AppStateUnavailable() from error
        self._outage.answered()
        return result
