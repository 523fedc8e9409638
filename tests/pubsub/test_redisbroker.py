"""The Redis broker against a real ``redis-server``: two applications on two ports share
topics through it, and it survives its listener being killed and Redis itself dying."""

import asyncio
import gc
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Iterator

import pytest
import redis.asyncio
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import WebSocketClientConnection as Client

from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.pubsub.redisbroker import RedisBroker, decode, encode, encode_batch
from realtime.wire.closecodes import CloseCode
from server import Config, make_app
from tests.probe import TOPIC, add_probe
from tests.redis_server import RedisServer
from tests.support import closed, poll_until, receive, receive_type, send_json

# The contract's bounds (ISSUE10, Faults): health flips within 5 s of an outage, and
# cross-process delivery resumes within 10 s of Redis coming back.
DOWN_WITHIN = 5.0
RESUMED_WITHIN = 10.0

Build = Callable[..., Awaitable[SimpleNamespace]]


@pytest.fixture
def redis_app(redis_server: RedisServer, start_server: Any, io_loop: Any,
              tmp_path: Path) -> Iterator[Build]:
    """``await redis_app()`` builds an application on a hub with a RedisBroker on the test's
    Redis, with ``/ws/probe`` added, starts its broker and serves it on a free port.
    Returns ``.app``, ``.hub``, ``.broker``, ``.port``; every broker is closed after."""
    built: list[SimpleNamespace] = []

    async def build(**broker_options: Any) -> SimpleNamespace:
        broker = RedisBroker(redis_server.url, **broker_options)
        hub = Hub(broker=broker)
        app = make_app(Config(hub=hub, data_dir=str(tmp_path / f"data{len(built)}")))
        add_probe(app)
        node = SimpleNamespace(app=app, hub=hub, broker=broker, port=start_server(app))
        built.append(node)
        await broker.start()
        assert broker.healthy()
        return node

    yield build
    for node in built:
        io_loop.run_sync(node.broker.close, timeout=10)
        node.app.settings["polls"].close()


@pytest.fixture
def admin(redis_server: RedisServer, io_loop: Any) -> Iterator[redis.asyncio.Redis]:
    """A plain client of the test's Redis, to look at it and to kill connections."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    io_loop.run_sync(client.aclose, timeout=10)


async def probe(ws_open: Callable[..., Awaitable[Client]], node: SimpleNamespace) -> Client:
    """A WebSocket on ``node``'s ``/ws/probe``, subscribed to ``probe.room`` (welcomed)."""
    conn = await ws_open(f"ws://127.0.0.1:{node.port}/ws/probe")
    await receive_type(conn, "welcome")
    return conn


async def channels(admin: redis.asyncio.Redis) -> set[bytes]:
    """The channels someone is SUBSCRIBEd to."""
    return set(await admin.pubsub_channels())


async def listeners(admin: redis.asyncio.Redis, channel: bytes) -> int:
    """How many connections are SUBSCRIBEd to ``channel``."""
    [(_, count)] = await admin.pubsub_numsub(channel)
    return int(count)


async def eventually(read: Callable[[], Awaitable[Any]], expected: Any,
                     timeout: float = 5.0) -> None:
    """Await ``read()`` until it returns ``expected``, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        await asyncio.sleep(0.01)


async def says(conn: Client, *texts: str) -> None:
    """The next frames on ``conn`` are ``say`` messages with exactly these texts."""
    for text in texts:
        message = json.loads(await receive(conn))  # type: ignore[arg-type]
        assert message == {"type": "say", "text": text}


def test_wire_form_is_kind_origin_payload():
    """A message is one kind byte, the 16-byte origin and the payload; unknown kinds are
    refused."""
    origin = bytes(range(16))
    text = encode(Envelope(b'{"a":1}'), origin)
    assert text == b"\x00" + origin + b'{"a":1}'
    binary = encode(Envelope(b"\xff\x00", binary=True), origin)
    assert binary[0] == 1
    back_origin, [(envelope, message_id)] = decode(binary)  # type: ignore[misc]
    assert back_origin == origin and envelope.data == b"\xff\x00" and envelope.binary
    assert message_id is None
    assert decode(b"\x07" + origin + b"x") is None
    assert decode(b"\x00short") is None


def test_wire_form_with_history_carries_the_id():
    """A message stored with history is kind 2, the origin, its id as 20 digits, then the
    payload; a malformed id is refused."""
    origin = bytes(16)
    back_origin, [(envelope, message_id)] = decode(  # type: ignore[misc]
        b"\x02" + origin + b"%020d" % 1733520000123456 + b'{"id":1733520000123456}')
    assert (back_origin, envelope.data, envelope.binary, message_id) == (
        origin, b'{"id":1733520000123456}', False, 1733520000123456)
    assert decode(b"\x02" + origin + b"12x") is None


def test_wire_form_of_a_batch_carries_each_message_with_its_id_in_order():
    """Kind 3 carries several messages stored with history, each its length, its id and
    its payload, in order; a length running past the end is refused."""
    origin = bytes(16)
    wire = encode_batch([(7, b'{"id":7}'), (8, b'{"id":8,"t":"x"}')], origin)
    assert wire[0] == 3
    back_origin, messages = decode(wire)  # type: ignore[misc]
    assert back_origin == origin
    assert [(envelope.data, message_id) for envelope, message_id in messages] == [
        (b'{"id":7}', 7), (b'{"id":8,"t":"x"}', 8)]
    assert decode(wire[:-1]) is None


async def test_publish_reaches_the_other_process_exactly_once(redis_app, ws_open, admin):
    """A publish on one app reaches WebSocket subscribers on the other once, and the
    publisher's own subscribers once, in publish order, text and binary alike."""
    a, b = await redis_app(), await redis_app()
    a1, a2 = await probe(ws_open, a), await probe(ws_open, a)
    b1 = await probe(ws_open, b)
    channel = a.broker.channel(TOPIC)
    await eventually(lambda: listeners(admin, channel), 2)

    await send_json(a1, {"type": "say", "text": "one"})
    await send_json(a1, {"type": "say", "text": "two"})
    await says(a2, "one", "two")  # both published before the binary below
    a.hub.publish(TOPIC, b"\x00binary\xff")
    for conn in (b1, a1):
        await says(conn, "one", "two")
    for conn in (b1, a1, a2):
        assert await receive(conn) == b"\x00binary\xff"
    await send_json(b1, {"type": "say", "text": "three"})
    for conn in (b1, a1, a2):
        await says(conn, "three")
    # A duplicate (a process delivering its own message again when Redis echoes it back)
    # would arrive before this marker.
    await send_json(a1, {"type": "say", "text": "end"})
    for conn in (a1, a2, b1):
        await says(conn, "end")
    assert a.broker.received == 1 and b.broker.received == 4
    await poll_until(lambda: a.broker.published == 4 and b.broker.published == 1)


async def test_only_topics_with_local_subscribers_are_subscribed(redis_app, ws_open, admin):
    """A topic's channel is SUBSCRIBEd with its first local subscriber and UNSUBSCRIBEd
    when the last leaves; nothing is subscribed by pattern."""
    node = await redis_app(prefix="app1:")
    assert await channels(admin) == set()
    first, second = await probe(ws_open, node), await probe(ws_open, node)
    await eventually(lambda: channels(admin), {b"app1:topic:probe.{room}"})
    assert await admin.pubsub_numpat() == 0
    assert await listeners(admin, b"app1:topic:probe.{room}") == 1

    first.close()
    await poll_until(lambda: node.hub.subscriber_count(TOPIC) == 1)
    assert await channels(admin) == {b"app1:topic:probe.{room}"}
    second.close()
    await eventually(lambda: channels(admin), set())
    assert node.broker.healthy()


async def ended_for_gap(*conns: Client) -> None:
    """Each of ``conns`` is closed with 1012: its topic (one no gap handler knows, like the
    probe's) may have missed messages while the listener was cut off."""
    for conn in conns:
        assert await closed(conn) == CloseCode.SERVICE_RESTART
        assert conn.close_reason == "messages missed: reconnect with since"


async def test_listener_killed_by_redis_resubscribes(redis_app, ws_open, admin):
    """After ``CLIENT KILL TYPE pubsub`` both listeners reconnect and resubscribe, the
    subscribers of a topic nobody can catch up are closed with 1012 (never left with a
    silent gap), and cross-process delivery works again."""
    a, b = await redis_app(), await redis_app()
    a1, b1 = await probe(ws_open, a), await probe(ws_open, b)
    channel = a.broker.channel(TOPIC)
    await eventually(lambda: listeners(admin, channel), 2)

    assert await admin.client_kill_filter(_type="pubsub") == 2

    await ended_for_gap(a1, b1)
    await poll_until(lambda: a.broker.reconnects == b.broker.reconnects == 1
                     and a.broker.healthy() and b.broker.healthy(), RESUMED_WITHIN)
    a1, b1 = await probe(ws_open, a), await probe(ws_open, b)
    await eventually(lambda: listeners(admin, channel), 2)
    await send_json(a1, {"type": "say", "text": "after the kill"})
    await says(b1, "after the kill")
    await says(a1, "after the kill")


async def test_a_resubscribed_listener_reports_the_topics_of_its_gap(redis_app, ws_open, admin):
    """The gap hook (``_after_gap``) hears nothing on the first connection and, once the
    listener is subscribed again after a ``CLIENT KILL``, every topic wanted across it."""
    a = await redis_app()
    gaps: list[set[str]] = []
    a.broker._after_gap = gaps.append  # the seam gap recovery plugs into
    await probe(ws_open, a)
    await eventually(lambda: listeners(admin, a.broker.channel(TOPIC)), 1)
    assert gaps == []
    assert await admin.client_kill_filter(_type="pubsub") == 1
    await poll_until(lambda: gaps, RESUMED_WITHIN)
    assert gaps == [{TOPIC}] and a.broker.healthy()


async def test_redis_killed_then_restarted(redis_app, ws_open, admin, redis_server, caplog):
    """Redis SIGKILLed: local delivery goes on, publishes are dropped with one log line,
    the broker is unhealthy within 5 s and /healthz says 503; Redis back on the same port:
    healthy again and cross-process delivery resumes within 10 s."""
    caplog.set_level(logging.INFO, logger="realtime.redis")
    a, b = await redis_app(), await redis_app()
    a1, a2, b1 = await probe(ws_open, a), await probe(ws_open, a), await probe(ws_open, b)
    channel = a.broker.channel(TOPIC)
    await eventually(lambda: listeners(admin, channel), 2)
    health = f"http://127.0.0.1:{a.port}/healthz"

    redis_server.kill()
    await poll_until(lambda: not a.broker.healthy() and not b.broker.healthy(), DOWN_WITHIN)
    response = await AsyncHTTPClient().fetch(health, raise_error=False)
    assert response.code == 503
    assert json.loads(response.body)["broker"] == {"name": "redis", "ok": False}

    texts = [f"local {n}" for n in range(20)]
    for text in texts:
        await send_json(a1, {"type": "say", "text": text})
    await says(a2, *texts)
    await says(a1, *texts)
    await poll_until(lambda: a.broker.dropped == len(texts))
    drops = [r for r in caplog.records if "dropping publishes" in r.getMessage()]
    assert len(drops) == 1
    outages = [r for r in caplog.records if "delivery paused" in r.getMessage()]
    assert len(outages) == 2  # one per broker, however many reconnection attempts failed

    restarted = time.monotonic()
    await redis_server.restart()
    await ended_for_gap(a1, a2, b1)
    await poll_until(lambda: a.broker.healthy() and b.broker.healthy(), RESUMED_WITHIN)
    response = await AsyncHTTPClient().fetch(health, raise_error=False)
    assert response.code == 200
    a1, b1 = await probe(ws_open, a), await probe(ws_open, b)
    async with redis.asyncio.Redis.from_url(redis_server.url) as fresh:  # admin's is gone
        await eventually(lambda: listeners(fresh, channel), 2)
    await send_json(a1, {"type": "say", "text": "back"})
    await says(b1, "back")
    assert time.monotonic() - restarted < RESUMED_WITHIN
    await says(a1, "back")
    assert len([r for r in caplog.records if "available again" in r.getMessage()]) == 2


async def test_silent_redis_is_noticed(redis_app, ws_open, admin, redis_server):
    """A Redis that keeps its connections open but answers nothing (SIGSTOP) makes the
    broker unhealthy within 5 s; once it answers again, delivery resumes within 10 s."""
    a, b = await redis_app(), await redis_app()
    a1, b1 = await probe(ws_open, a), await probe(ws_open, b)
    await eventually(lambda: listeners(admin, a.broker.channel(TOPIC)), 2)

    redis_server.pause()
    await poll_until(lambda: not a.broker.healthy() and not b.broker.healthy(), DOWN_WITHIN)
    redis_server.resume()
    await ended_for_gap(a1, b1)
    await poll_until(lambda: a.broker.healthy() and b.broker.healthy(), RESUMED_WITHIN)
    a1, b1 = await probe(ws_open, a), await probe(ws_open, b)
    await eventually(lambda: listeners(admin, a.broker.channel(TOPIC)), 2)
    await send_json(a1, {"type": "say", "text": "awake"})
    await says(b1, "awake")


async def test_full_queue_drops_and_logs_once(redis_server, caplog):
    """Publishes beyond the queue's bound are dropped (still delivered locally) with one
    log line, and the queued ones go out."""
    broker = RedisBroker(redis_server.url, max_queue=2)
    hub = Hub(broker=broker)
    await broker.start()
    try:
        for n in range(5):  # in one turn of the loop: the publisher cannot take any yet
            hub.publish("probe.room", f"message {n}")
        assert broker.dropped == 3
        await poll_until(lambda: broker.published == 2)
        assert len([r for r in caplog.records if "queue is full" in r.getMessage()]) == 1
    finally:
        await broker.close()


async def test_broker_counters_are_metrics(redis_app, ws_open):
    """The broker's counters are exported as realtime_broker_<name>_total."""
    node = await redis_app()
    node.hub.publish(TOPIC, "counted")
    await poll_until(lambda: node.broker.published == 1)
    port = node.port
    body = (await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")).body.decode()
    assert "realtime_broker_published_total 1.0" in body
    assert "realtime_broker_dropped_total 0.0" in body
    assert "realtime_broker_up 1.0" in body


async def test_start_while_redis_is_down_starts_degraded(tmp_path):
    """A broker started while Redis is down returns from start() unhealthy, and connects
    by itself once Redis answers."""
    server = RedisServer(tmp_path / "redis")
    broker = RedisBroker(server.url, timeout=1.0)
    hub = Hub(broker=broker)
    try:
        await broker.start()
        assert not broker.healthy()
        hub.publish("probe.room", "nobody hears this")
        await poll_until(lambda: broker.dropped == 1)
        await server.restart()
        await poll_until(broker.healthy, RESUMED_WITHIN)
    finally:
        await broker.close()
        server.stop()


async def test_close_leaves_no_task_or_connection(redis_server):
    """close() ends the listener and the publisher and closes every connection: no task
    left, nothing for the garbage collector to warn about."""
    broker = RedisBroker(redis_server.url)
    Hub(broker=broker).subscribe("probe.room", object())  # type: ignore[arg-type]
    await broker.start()
    await poll_until(broker.healthy)

    await broker.close()

    assert not broker.healthy()
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("redis-")] == []
    gc.collect()  # an unclosed connection would warn now, and warnings are errors


async def test_close_in_the_middle_of_a_command_always_ends(redis_server):
    """close() ends both tasks even when it lands as one of their commands completes, where
    Python 3.11's ``asyncio.wait_for`` swallows the cancellation: 20 brokers closed a moment
    after a subscribe and a publish each close within 3 s, leaving no task."""
    for n in range(20):
        broker = RedisBroker(redis_server.url)
        Hub(broker=broker)
        await broker.start()
        broker.subscribe("probe.room")  # the listener SUBSCRIBEs, the publisher PUBLISHes
        broker.publish("probe.room", Envelope(b"to close on"))
        await asyncio.sleep(0.001 * (n % 5))
        await asyncio.wait_for(broker.close(), 3)
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("redis-")] == []
    gc.collect()  # an unclosed connection would warn now, and warnings are errors
