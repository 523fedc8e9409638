"""ScriptBatcher against a real ``redis-server``: the script calls of one loop turn go in one
pipeline, bounded, in order, each caller with its own reply or its own error."""

import asyncio
from typing import Any, Callable, Iterator

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from realtime.storage.redisbatch import GROUP_CALLS, ScriptBatcher
from tests.redis_server import RedisServer
from tests.support import poll_until

# KEYS: a counter. ARGV: a label. Counts the call and returns {count, label}: the order in
# which Redis ran the calls.
COUNT = "return {redis.call('INCR', KEYS[1]), ARGV[1]}"
# ARGV: a label. Fails the call whose label is "bad", else returns the label.
PICKY = "if ARGV[1] == 'bad' then return redis.error_reply('refused') end return ARGV[1]"

Make = Callable[..., tuple[ScriptBatcher, Any]]


@pytest.fixture
def batcher(redis_server: RedisServer, io_loop: Any) -> Iterator[Make]:
    """``batcher(**options)``: a ScriptBatcher and its client on the test's Redis; both
    closed after the test."""
    made: list[tuple[ScriptBatcher, Any]] = []

    def make(**options: Any) -> tuple[ScriptBatcher, Any]:
        client = redis.asyncio.Redis.from_url(redis_server.url, retry=Retry(NoBackoff(), 0),
                                              socket_timeout=2, protocol=2)
        made.append((ScriptBatcher(client, **options), client))
        return made[-1]

    yield make
    for each, client in made:
        io_loop.run_sync(each.aclose, timeout=10)
        io_loop.run_sync(client.aclose, timeout=10)


async def loaded(client: Any, source: str) -> Any:
    """``source`` registered with ``client`` and loaded into Redis (no NOSCRIPT at first)."""
    await client.script_load(source)
    return client.register_script(source)


def labels(replies: list[Any]) -> list[str]:
    return [label.decode() for _, label in replies]


@pytest.mark.parametrize("depth, pipelines", [(2, 2), (1, 1)])
async def test_calls_of_one_turn_share_one_pipeline_or_two_halves(batcher, depth, pipelines):
    """200 calls made in one loop turn (nothing on its way) reach Redis in two pipelines
    written back to back, half each (in one with ``depth=1``), each caller gets its own
    reply, and Redis ran them in the order they were made."""
    batch, client = batcher(depth=depth)
    script = await loaded(client, COUNT)
    replies = await asyncio.gather(*(batch.call(script, ["n"], [f"m{i}"]) for i in range(200)))
    assert batch.pipelines == pipelines
    assert labels(replies) == [f"m{i}" for i in range(200)]
    assert [count for count, _ in replies] == list(range(1, 201))


async def test_a_pipeline_holds_at_most_max_count_calls(batcher):
    """With ``max_count=4``, 10 calls of one turn go in 3 pipelines, still in order."""
    batch, client = batcher(max_count=4)
    script = await loaded(client, COUNT)
    replies = await asyncio.gather(*(batch.call(script, ["n"], [f"m{i}"]) for i in range(10)))
    assert batch.pipelines == 3
    assert [count for count, _ in replies] == list(range(1, 11))


async def test_a_pipeline_holds_at_most_max_bytes(batcher):
    """With ``max_bytes`` room for two 1 KB calls, 5 such calls go in 3 pipelines."""
    batch, client = batcher(max_bytes=2100)
    script = await loaded(client, COUNT)
    replies = await asyncio.gather(
        *(batch.call(script, ["n"], [f"{i}" * 1000]) for i in range(5)))
    assert batch.pipelines == 3
    assert [count for count, _ in replies] == list(range(1, 6))


async def test_a_refused_call_fails_alone(batcher):
    """A script error fails its own call; the calls before and after it in the same
    pipeline get their replies."""
    batch, client = batcher()
    script = await loaded(client, PICKY)
    results = await asyncio.gather(*(batch.call(script, [], [label])
                                     for label in ("a", "bad", "c")), return_exceptions=True)
    assert results[0] == b"a" and results[2] == b"c"
    assert isinstance(results[1], ResponseError) and "refused" in str(results[1])
    assert batch.pipelines == 1


async def test_scripts_flushed_from_redis_are_loaded_again(batcher):
    """After ``SCRIPT FLUSH``, the calls of a turn are still run, once each, in order."""
    batch, client = batcher()
    script = await loaded(client, COUNT)
    await batch.call(script, ["n"], ["first"])
    await client.script_flush()
    replies = await asyncio.gather(*(batch.call(script, ["n"], [f"m{i}"]) for i in range(20)))
    assert [count for count, _ in replies] == list(range(2, 22))
    assert int(await client.get("n")) == 21


async def test_a_dead_redis_fails_every_call_of_the_pipeline(batcher, redis_server):
    """Redis killed before a turn's pipeline is sent: every call of it, and of the
    pipelines queued behind it, fails with a connection error, none with a reply."""
    batch, client = batcher(max_count=5)
    script = await loaded(client, COUNT)
    await batch.call(script, ["n"], ["connect"])  # the connection is open
    calls = [asyncio.ensure_future(batch.call(script, ["n"], [f"m{i}"])) for i in range(12)]
    redis_server.kill()  # in the same turn: the pipeline goes to a dead Redis
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, RedisConnectionError) for result in results), results


async def test_a_pipeline_past_its_oldest_call_s_deadline_fails_every_call(batcher,
                                                                           redis_server):
    """With ``timeout``, a pipeline Redis does not answer (paused) fails each of its calls,
    and each call queued behind it, with a timeout within that time, none with a reply."""
    batch, client = batcher(max_count=5, timeout=0.5)
    script = await loaded(client, COUNT)
    await batch.call(script, ["n"], ["connect"])  # the connection is open
    redis_server.pause()
    try:
        calls = [asyncio.ensure_future(batch.call(script, ["n"], [f"m{i}"]))
                 for i in range(12)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 1.5)
    finally:
        redis_server.resume()
    assert all(isinstance(result, TimeoutError) for result in results), results


async def test_a_function_argument_is_read_when_the_pipeline_is_built(batcher):
    """An argument given as a function is called when its pipeline is built, after the
    callers of the pipeline before it have handled their replies."""
    batch, client = batcher(max_count=1)
    script = await loaded(client, COUNT)
    seen: list[str] = []

    async def first() -> None:
        _, label = await batch.call(script, ["n"], ["first"])
        seen.append(label.decode())

    second = asyncio.ensure_future(batch.call(script, ["n"], [lambda: f"after {seen}"]))
    await first()
    _, label = await second
    assert label == b"after ['first']"


async def test_pipelining_off_sends_each_call_alone(batcher):
    """``max_count=1``: 5 calls of one turn take 5 pipelines, in order."""
    batch, client = batcher(max_count=1)
    script = await loaded(client, COUNT)
    replies = await asyncio.gather(*(batch.call(script, ["n"], [f"m{i}"]) for i in range(5)))
    assert batch.pipelines == 5 and not batch.batching
    assert [count for count, _ in replies] == list(range(1, 6))


async def test_calls_made_while_two_pipelines_travel_share_the_next_one(
        batcher, redis_server):
    """While two pipelines are on their way (Redis frozen), 10 calls made in 10 loop turns
    go together in the third, after them, in the order made."""
    batch, client = batcher()
    script = await loaded(client, COUNT)
    redis_server.pause()
    try:
        first = asyncio.ensure_future(batch.call(script, ["n"], ["first"]))
        await poll_until(lambda: batch.pipelines == 1)  # sent, unanswered
        second = asyncio.ensure_future(batch.call(script, ["n"], ["second"]))
        await poll_until(lambda: batch.pipelines == 2)  # sent behind it, unanswered
        later = []
        for n in range(10):
            later.append(asyncio.ensure_future(batch.call(script, ["n"], [f"m{n}"])))
            await asyncio.sleep(0)  # the next call in another loop turn
    finally:
        redis_server.resume()
    replies = await asyncio.gather(first, second, *later)
    assert batch.pipelines == 3
    assert labels(replies) == ["first", "second"] + [f"m{n}" for n in range(10)]
    assert [count for count, _ in replies] == list(range(1, 13))


async def test_a_refused_call_in_the_first_of_two_pipelines_fails_alone(
        batcher, redis_server):
    """With two pipelines on their way, a refused call of the first fails its caller only:
    the first's other calls and every call of the second get their replies."""
    batch, client = batcher()
    script = await loaded(client, PICKY)
    redis_server.pause()
    try:
        first = [asyncio.ensure_future(batch.call(script, [], [label]))
                 for label in ("a", "bad", "c")]
        await poll_until(lambda: batch.pipelines == 1)
        second = [asyncio.ensure_future(batch.call(script, [], [label]))
                  for label in ("d", "e")]
        await poll_until(lambda: batch.pipelines == 2)  # written behind the first
    finally:
        redis_server.resume()
    results = await asyncio.gather(*first, *second, return_exceptions=True)
    assert [results[i] for i in (0, 2, 3, 4)] == [b"a", b"c", b"d", b"e"]
    assert isinstance(results[1], ResponseError) and "refused" in str(results[1])


async def test_a_pipeline_behind_one_that_timed_out_fails_and_the_next_calls_work(
        batcher, redis_server):
    """Two pipelines on their way when the first times out (Redis paused): the calls of
    both fail with a timeout; once Redis answers, the next calls get their replies."""
    batch, client = batcher(timeout=0.5)
    script = await loaded(client, COUNT)
    await batch.call(script, ["n"], ["connect"])
    redis_server.pause()
    try:
        first = asyncio.ensure_future(batch.call(script, ["n"], ["first"]))
        await poll_until(lambda: batch.pipelines == 2)
        second = asyncio.ensure_future(batch.call(script, ["n"], ["second"]))
        await poll_until(lambda: batch.pipelines == 3)
        results = await asyncio.gather(first, second, return_exceptions=True)
    finally:
        redis_server.resume()
    assert all(isinstance(result, TimeoutError) for result in results), results
    _, label = await batch.call(script, ["n"], ["after"])
    assert label == b"after"


async def test_a_function_argument_knows_its_pipeline_is_chained(batcher, redis_server):
    """A function argument read while the pipeline before is unanswered sees ``chained``
    True; one read with nothing on its way sees False."""
    batch, client = batcher()
    script = await loaded(client, COUNT)
    redis_server.pause()
    try:
        first = asyncio.ensure_future(batch.call(script, ["n"], [lambda: str(batch.chained)]))
        await poll_until(lambda: batch.pipelines == 1)
        second = asyncio.ensure_future(batch.call(script, ["n"], [lambda: str(batch.chained)]))
        await poll_until(lambda: batch.pipelines == 2)
    finally:
        redis_server.resume()
    assert labels(await asyncio.gather(first, second)) == ["False", "True"]


# The group form of COUNT: each call's label, read as the batcher sends a group's calls.
COUNT_MANY = GROUP_CALLS + """
local replies = {}
for args in calls() do
    replies[#replies + 1] = {redis.call('INCR', KEYS[1]), args[1]}
end
return replies
"""
# The group form of PICKY: a refused call is an error reply among the others.
PICKY_MANY = GROUP_CALLS + """
local replies = {}
for args in calls() do
    if args[1] == 'bad' then
        replies[#replies + 1] = {err = 'refused'}
    else
        replies[#replies + 1] = args[1]
    end
end
return replies
"""
# A group script that returns each call's arguments as it read them.
ECHO_MANY = GROUP_CALLS + """
local replies = {}
for args in calls() do
    local copy = {}
    for i = 1, #args do copy[i] = args[i] end
    replies[#replies + 1] = copy
end
return replies
"""


async def script_calls(client: Any) -> int:
    """``EVALSHA`` commands Redis has run so far."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_calls_of_one_key_share_one_group_script_call(batcher):
    """100 calls of one turn on two keys, interleaved, reach Redis as two script calls (one
    per key), each caller with its own reply, in the order made on its key."""
    batch, client = batcher()
    script, many = await loaded(client, COUNT), await loaded(client, COUNT_MANY)
    before = await script_calls(client)
    replies = await asyncio.gather(*(batch.call(script, [f"k{i % 2}"], [f"m{i}"], group=many)
                                     for i in range(100)))
    assert await script_calls(client) - before == 2
    assert labels(replies) == [f"m{i}" for i in range(100)]
    assert [count for count, _ in replies[0::2]] == list(range(1, 51))
    assert [count for count, _ in replies[1::2]] == list(range(1, 51))


async def test_a_refused_call_of_a_group_fails_alone(batcher):
    """One refused call of a group fails its caller only; the others get their replies."""
    batch, client = batcher()
    script, many = await loaded(client, PICKY), await loaded(client, PICKY_MANY)
    replies = await asyncio.gather(
        *(batch.call(script, ["k"], [label], group=many) for label in ("a", "bad", "c")),
        return_exceptions=True)
    assert replies[0] == b"a" and replies[2] == b"c"
    assert isinstance(replies[1], ResponseError) and "refused" in str(replies[1])


async def test_a_group_never_overtakes_a_call_outside_groups(batcher):
    """A call outside any group closes the groups queued before it: a grouped call made
    after it runs after it."""
    batch, client = batcher()
    script, many = await loaded(client, COUNT), await loaded(client, COUNT_MANY)
    replies = await asyncio.gather(batch.call(script, ["n"], ["g1"], group=many),
                                   batch.call(script, ["n"], ["plain"]),
                                   batch.call(script, ["n"], ["g2"], group=many))
    assert [count for count, _ in replies] == [1, 2, 3]


async def test_a_group_counts_each_of_its_calls_toward_max_count(batcher):
    """With ``max_count=4``, 10 grouped calls on one key go in 3 pipelines, in order."""
    batch, client = batcher(max_count=4)
    script, many = await loaded(client, COUNT), await loaded(client, COUNT_MANY)
    replies = await asyncio.gather(*(batch.call(script, ["n"], [f"m{i}"], group=many)
                                     for i in range(10)))
    assert batch.pipelines == 3
    assert [count for count, _ in replies] == list(range(1, 11))


async def test_a_group_is_loaded_again_after_a_script_flush(batcher):
    """After ``SCRIPT FLUSH``, a turn's grouped calls are each run once, in order."""
    batch, client = batcher()
    script, many = await loaded(client, COUNT), await loaded(client, COUNT_MANY)
    await client.script_flush()
    replies = await asyncio.gather(*(batch.call(script, ["n"], [f"m{i}"], group=many)
                                     for i in range(5)))
    assert [count for count, _ in replies] == list(range(1, 6))


async def test_a_group_call_s_arguments_reach_redis_whole(batcher):
    """Calls of a group whose arguments repeat the call before's (in part, wholly, or not
    at all, in number or in type) each reach the group script with all their own."""
    batch, client = batcher()
    script, many = await loaded(client, COUNT), await loaded(client, ECHO_MANY)
    calls = [["a", "x", "y"], ["b", "x", "y"], ["b", "x", "y"], ["c", "z", "y"],
             ["d", "y"], ["e", "y", 1], ["e", "y", 1.0], ["e", "y", "1.0"], ["f", "y", 2]]
    replies = await asyncio.gather(*(batch.call(script, ["k"], args, group=many)
                                     for args in calls))
    assert [[value.decode() for value in reply] for reply in replies] == [
        [str(value) for value in args] for args in calls]
    assert batch.pipelines == 1


async def test_a_connection_redis_closed_while_idle_is_replaced(batcher, redis_server):
    """Redis closes the batcher's connection between two bursts (``CLIENT KILL``, as a
    restart does): the next burst's calls get their replies, not a connection error."""
    batch, client = batcher()
    script = await loaded(client, COUNT)
    await asyncio.gather(*(batch.call(script, ["n"], [f"a{i}"]) for i in range(3)))
    async with redis.asyncio.Redis.from_url(redis_server.url) as admin:
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
    replies = await asyncio.gather(*(batch.call(script, ["n"], [f"b{i}"]) for i in range(3)))
    assert [count for count, _ in replies] == [4, 5, 6]
