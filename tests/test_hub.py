"""The hub on its own, without a server: fan-out, topics and flow control."""

import asyncio
import gc
from typing import Any, Optional, Union

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

import realtime.hub
from realtime.brokers import Deliver, Payload
from realtime.closecodes import CloseCode
from realtime.hub import Hub


class FakeConnection:
    """A subscriber whose socket takes every frame at once, or none until the test says so."""

    def __init__(self, flushes: bool = True) -> None:
        self.flushes = flushes
        self.frames: list[Union[str, bytes]] = []
        self.binary: list[bool] = []
        self.unflushed: list[asyncio.Future[None]] = []
        self.held = 0  # bytes its socket has not taken, as Tornado's stream would report
        self.close_code: Optional[int] = None

    def write_message(self, message: Union[str, bytes], binary: bool = False) -> Any:
        if self.close_code is not None:
            raise WebSocketClosedError()
        self.frames.append(message)
        self.binary.append(binary)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.flushes:
            future.set_result(None)
        else:
            self.held += len(message)
            self.unflushed.append(future)
        return future

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        self.close_code = code


def make_hub(**options: Any) -> Hub:
    """A hub that asks the fake connections, not Tornado, what they still hold."""
    return Hub(unflushed=lambda connection: connection.held, **options)


async def test_one_publish_to_1000_subscribers_serializes_once(monkeypatch):
    """A message published to 1,000 subscribers is encoded once and the same str reaches all."""
    calls = []
    real_encode = realtime.hub.encode
    monkeypatch.setattr(realtime.hub, "encode", lambda m: calls.append(m) or real_encode(m))
    hub = make_hub()
    subscribers = [FakeConnection() for _ in range(1000)]
    for subscriber in subscribers:
        hub.subscribe("chat.lobby", subscriber)

    payload = hub.publish("chat.lobby", {"type": "message", "text": "hi"})

    assert len(calls) == 1
    first = subscribers[0].frames[0]
    assert all(len(s.frames) == 1 and s.frames[0] is first for s in subscribers)
    assert first == payload.encode() == b'{"type":"message","text":"hi"}'


async def test_publish_reaches_only_subscribers_of_that_topic():
    """A subscriber of another topic gets nothing."""
    hub = make_hub()
    lobby, other = FakeConnection(), FakeConnection()
    hub.subscribe("chat.lobby", lobby)
    hub.subscribe("chat.other", other)

    hub.publish("chat.lobby", "hello")

    assert lobby.frames == [b"hello"]
    assert other.frames == []


async def test_unsubscribe_stops_delivery():
    """After unsubscribe a connection gets nothing more from that topic."""
    hub = make_hub()
    connection = FakeConnection()
    hub.subscribe("vote.demo", connection)
    hub.publish("vote.demo", "one")
    hub.unsubscribe("vote.demo", connection)
    hub.publish("vote.demo", "two")

    assert connection.frames == [b"one"]
    assert hub.subscribers("vote.demo") == set()


async def test_forget_removes_a_connection_from_every_topic():
    """Forgetting a connection (it closed) removes it from all its topics at once."""
    hub = make_hub()
    connection = FakeConnection()
    hub.subscribe("chat.a", connection)
    hub.subscribe("chat.b", connection)

    hub.forget(connection)

    assert hub.topic_count() == 0
    assert connection not in hub.connections


async def test_bytes_go_out_as_binary_frames():
    """A bytes payload is written as a binary frame, a str as text."""
    hub = make_hub()
    connection = FakeConnection()
    hub.subscribe("echo", connection)
    hub.publish("echo", b"\x00\x01")
    hub.publish("echo", "text")

    assert connection.binary == [True, False]


async def test_slow_subscriber_is_dropped_with_1008_and_others_get_everything():
    """A subscriber that never flushes is closed with 1008 past the bound; the rest get all."""
    hub = make_hub(max_pending_bytes=64 * 1024)
    stalled = FakeConnection(flushes=False)
    readers = [FakeConnection() for _ in range(10)]
    for connection in [stalled, *readers]:
        hub.subscribe("chat.lobby", connection)
    hub.subscribe("chat.other", stalled)

    count = 200  # 200 KB in all, three times the bound
    for n in range(count):
        hub.publish("chat.lobby", f"{n:04d}" + "x" * 1020)

    assert stalled.close_code == CloseCode.POLICY_VIOLATION
    assert hub.topics(stalled) == set()
    assert hub.subscribers("chat.other") == set()
    assert hub.dropped == 1
    assert 64 * 1024 < sum(len(f) for f in stalled.frames) <= 64 * 1024 + 1024
    for reader in readers:
        assert [f[:4] for f in reader.frames] == [b"%04d" % n for n in range(count)]


async def test_a_subscriber_that_keeps_up_is_never_dropped():
    """Bytes its socket took do not count: a reader gets far more than the bound in all."""
    hub = make_hub(max_pending_bytes=4096)
    reader = FakeConnection()
    hub.subscribe("chat.lobby", reader)

    for _ in range(100):
        hub.publish("chat.lobby", "x" * 1000)

    assert reader.close_code is None
    assert len(reader.frames) == 100
    assert hub.pending_bytes(reader) == 0


async def test_a_frame_larger_than_the_bound_goes_out_and_the_next_waits_for_it():
    """Within the bound any frame is written; while it is still held, the next one drops."""
    hub = make_hub(max_pending_bytes=4096)
    connection = FakeConnection(flushes=False)
    hub.subscribe("chat.lobby", connection)

    hub.publish("chat.lobby", "x" * 10_000)
    assert connection.close_code is None and hub.pending_bytes(connection) == 10_000

    connection.held = 0  # the client read it
    hub.publish("chat.lobby", "y" * 10_000)
    assert connection.close_code is None

    hub.publish("chat.lobby", "z")  # 10,000 bytes are still held: it stopped reading
    assert connection.close_code == CloseCode.POLICY_VIOLATION
    assert connection.frames[-1][:1] == b"y"


async def test_a_dropped_connection_is_dropped_once():
    """Frames due to a connection already dropped are refused without closing it again."""
    hub = make_hub(max_pending_bytes=100)
    stalled = FakeConnection(flushes=False)
    hub.subscribe("chat.lobby", stalled)
    hub.publish("chat.lobby", "x" * 101)
    hub.publish("chat.lobby", "dropped here")
    closes: list[Optional[int]] = []
    stalled.close = lambda code=None, reason=None: closes.append(code)  # type: ignore

    assert hub.send(stalled, "an error frame, say") is False

    assert hub.dropped == 1 and closes == []
    assert stalled.frames == [b"x" * 101]


async def test_write_to_a_closed_connection_forgets_it():
    """A connection that is already closed is forgotten without an error."""
    hub = make_hub()
    gone, alive = FakeConnection(), FakeConnection()
    hub.subscribe("chat.lobby", gone)
    hub.subscribe("chat.lobby", alive)
    gone.close_code = CloseCode.NORMAL

    hub.publish("chat.lobby", "hello")

    assert hub.subscribers("chat.lobby") == {alive}
    assert alive.frames == [b"hello"]


async def test_failed_write_leaves_no_unretrieved_exception():
    """A write that fails because the client vanished logs no 'exception never retrieved'."""
    gc.collect()  # garbage of earlier tests is not this test's to report
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    hub = make_hub()
    vanished = FakeConnection(flushes=False)
    hub.subscribe("chat.lobby", vanished)
    hub.publish("chat.lobby", "hello")

    failed = vanished.unflushed.pop()
    failed.set_exception(StreamClosedError())
    # The hub's callback was added first, so it has run once wait() returns; wait() itself
    # retrieves nothing.
    await asyncio.wait([failed])
    del failed
    gc.collect()

    assert reported == []


class QueueBroker:
    """A broker that carries payloads on a queue, as a networked broker would."""

    name = "queue"

    def __init__(self) -> None:
        self.deliver: Optional[Deliver] = None
        self.carried: list[tuple[str, Payload]] = []

    def attach(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def publish(self, topic: str, payload: Payload) -> None:
        self.carried.append((topic, payload))

    def healthy(self) -> bool:
        return True

    def flush(self) -> None:
        assert self.deliver is not None
        for topic, payload in self.carried:
            self.deliver(topic, payload)
        self.carried.clear()


async def test_publish_goes_through_the_broker():
    """Payloads reach subscribers only once the broker delivers them back."""
    broker = QueueBroker()
    hub = make_hub(broker=broker)
    connection = FakeConnection()
    hub.subscribe("chat.lobby", connection)

    hub.publish("chat.lobby", {"type": "message"})
    assert connection.frames == []
    broker.flush()

    assert connection.frames == [b'{"type":"message"}']
