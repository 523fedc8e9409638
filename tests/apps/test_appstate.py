"""The apps' shared state: ``EmbeddedAppState`` in this process and ``RedisAppState`` on a
real ``redis-server``, through the same interface."""

import asyncio
import time
from typing import Any, Iterator

import pytest

from realtime.apps.state import ENTRY_OVERHEAD, AppStateUnavailable, EmbeddedAppState
from tests.conftest import PREFIXES


@pytest.fixture(params=["embedded", "redis"])
def state(request: pytest.FixtureRequest, io_loop: Any) -> Iterator[Any]:
    """An app state on each backend in turn (Redis: ``session_redis``, a prefix of its own)."""
    if request.param == "embedded":
        yield EmbeddedAppState()
        return
    from realtime.apps.redisstate import RedisAppState

    store = RedisAppState(request.getfixturevalue("session_redis").url, f"test{next(PREFIXES)}:")
    yield store
    io_loop.run_sync(store.aclose, timeout=10)


async def test_a_missing_key_has_no_value(state):
    """``get`` of a key never written is None."""
    assert await state.get("nothing") is None


async def test_set_then_get(state):
    """A value set is the value got."""
    await state.set("greeting", "héllo")
    assert await state.get("greeting") == "héllo"


async def test_incr_counts_from_zero_and_get_reads_the_text(state):
    """``incr`` starts a missing key at 0 and returns the sum; ``get`` answers its text."""
    assert await state.incr("clicks") == 1
    assert await state.incr("clicks", 41) == 42
    assert await state.get("clicks") == "42"


async def test_incr_of_text_is_a_value_error(state):
    """Adding to a key that holds text is the caller's ``ValueError``, not an outage."""
    await state.set("word", "abc")
    with pytest.raises(ValueError):
        await state.incr("word")


async def test_incr_past_64_bits_is_a_value_error(state):
    """A sum outside the signed 64-bit range is refused, as Redis refuses it."""
    await state.incr("big", 2 ** 63 - 1)
    with pytest.raises(ValueError):
        await state.incr("big")


async def test_concurrent_increments_all_count(state):
    """Increments made at once are all counted."""
    await asyncio.gather(*(state.incr("many") for _ in range(50)))
    assert await state.get("many") == "50"


async def test_scoped_views_do_not_share_keys(state):
    """Two apps' views of one state keep their keys apart."""
    await state.scoped("a").incr("n")
    assert await state.scoped("b").get("n") is None
    assert await state.get("a:n") == "1"


async def test_a_value_over_the_bound_is_refused(state):
    """A value over 64 KiB is a ``ValueError``."""
    with pytest.raises(ValueError):
        await state.set("huge", "x" * (64 * 1024 + 1))


async def test_the_embedded_state_forgets_the_oldest_write_past_its_bound():
    """Past its byte bound the embedded state forgets the least recently written keys."""
    state = EmbeddedAppState(max_bytes=3 * (ENTRY_OVERHEAD + 2))
    for key in ["a", "b", "c"]:
        await state.incr(key)
    await state.incr("a")  # written again: now the newest
    await state.incr("d")
    assert [await state.get(key) for key in "abcd"] == ["2", None, "1", "1"]
    assert state.size <= state.max_bytes and state.evicted == 1


async def test_redis_keys_expire_after_their_last_write(session_redis):
    """On Redis a key written gets the state's ttl, renewed at each write."""
    import redis.asyncio

    from realtime.apps.redisstate import RedisAppState

    prefix = f"test{next(PREFIXES)}:"
    state = RedisAppState(session_redis.url, prefix, ttl=100)
    admin = redis.asyncio.Redis.from_url(session_redis.url)
    try:
        await state.incr("n")
        await state.set("s", "v")
        assert 0 < await admin.ttl(f"{prefix}app:n") <= 100
        assert 0 < await admin.ttl(f"{prefix}app:s") <= 100
    finally:
        await state.aclose()
        await admin.aclose()


async def test_redis_down_answers_unavailable_within_the_bound(redis_server):
    """With Redis stopped, a call raises ``unavailable`` within its timeout."""
    from realtime.apps.redisstate import RedisAppState

    state = RedisAppState(redis_server.url, "t:", timeout=1.0)
    try:
        assert await state.incr("n") == 1
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(AppStateUnavailable) as refused:
            await state.incr("n")
        assert refused.value.code == "unavailable"
        assert time.monotonic() - started < 5
    finally:
        await state.aclose()


async def test_redis_frozen_answers_unavailable_within_the_bound(redis_server):
    """With Redis paused (SIGSTOP), a call raises ``unavailable`` within its timeout."""
    from realtime.apps.redisstate import RedisAppState

    state = RedisAppState(redis_server.url, "t:", timeout=1.0)
    try:
        await state.get("n")
        redis_server.pause()
        started = time.monotonic()
        with pytest.raises(AppStateUnavailable):
            await state.get("n")
        assert time.monotonic() - started < 5
    finally:
        redis_server.resume()
        await state.aclose()
