"""The hub on its own, without a server: fan-out, topics and flow control."""

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from realtime.pubsub.brokers import Deliver
from realtime.pubsub.delivery import CLOSED, STALLED, WRITTEN, CloseReason
from realtime.pubsub.envelope import Envelope
import realtime.pubsub.envelope
from realtime.pubsub.hub import Hub


class FakeConnection:
    """A subscriber whose socket takes every frame at once, or none until the test says so."""

    def __init__(self, flushes: bool = True) -> None:
        self.flushes = flushes
        self.wire: list[bytes] = []  # the frames written, as the hub built them
        self.frames: list[bytes] = []  # their payloads
        self.binary: list[bool] = []
        self.held = 0  # bytes its socket has not taken, as Tornado's stream would report
        self.closed = False  # the client closed it
        self.closed_for: Optional[CloseReason] = None  # why the hub closed it, if it did

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        if self.closed or self.closed_for is not None:
            return CLOSED
        if self.held > max_pending:
            return STALLED
        self.wire.append(envelope.ws_frame)
        self.frames.append(envelope.data)
        self.binary.append(envelope.binary)
        if not self.flushes:
            self.held += len(envelope.data)
        return WRITTEN

    def unflushed_bytes(self) -> int:
        return self.held

    def close_for(self, reason: CloseReason) -> None:
        self.closed_for = reason


def make_hub(**options: Any) -> Hub:
    """A hub for fake connections."""
    return Hub(**options)


def test_the_hub_imports_no_tornado():
    """Importing the hub (and what it and its subscribers share) loads no Tornado: it speaks
    outcomes and reasons, never a transport's internals or close codes."""
    probe = ("import sys, realtime.pubsub.hub, realtime.pubsub.delivery; "
             "print(sorted(name for name in sys.modules if name.split('.')[0] == 'tornado'))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent.parent, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


async def test_one_publish_to_1000_subscribers_serializes_once(monkeypatch):
    """A message published to 1,000 subscribers is encoded once, its frame built once, and
    the same bytes object reaches all."""
    calls = []
    real_encode = realtime.pubsub.envelope.encode
    monkeypatch.setattr(realtime.pubsub.envelope, "encode",
                        lambda m: calls.append(m) or real_encode(m))
    hub = make_hub()
    subscribers = [FakeConnection() for _ in range(1000)]
    for subscriber in subscribers:
        hub.subscribe("chat.lobby", subscriber)

    envelope = hub.publish("chat.lobby", {"type": "message", "text": "hi"})
    await until_drained(hub)

    assert len(calls) == 1
    first = subscribers[0].wire[0]
    assert all(len(s.wire) == 1 and s.wire[0] is first for s in subscribers)
    assert envelope.data == b'{"type":"message","text":"hi"}'
    assert first == b"\x81" + bytes([len(envelope.data)]) + envelope.data


def test_another_transports_form_is_built_once_per_envelope():
    """A form other than the WebSocket frame is built by the first subscriber of its kind
    and the same bytes are handed to every later one; another kind gets its own."""
    envelope = Envelope.of({"type": "message", "text": "hi"})
    built = []

    def sse(of: Envelope) -> bytes:
        built.append("sse")
        return b"data: " + of.data + b"\n\n"

    first = envelope.form("sse", sse)
    assert all(envelope.form("sse", sse) is first for _ in range(1000))
    assert envelope.form("line", lambda of: b"line\n") == b"line\n"
    assert built == ["sse"] and first == b'data: {"type":"message","text":"hi"}\n\n'


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
    assert hub.subscriber_count("vote.demo") == 0


async def test_subscriber_count_counts_a_topics_local_subscribers():
    """subscriber_count says how many connections listen to a topic, 0 for an unknown one."""
    hub = make_hub()
    first, second = FakeConnection(), FakeConnection()
    hub.subscribe("chat.lobby", first)
    hub.subscribe("chat.lobby", second)
    hub.subscribe("chat.other", first)

    assert hub.subscriber_count("chat.lobby") == 2
    assert hub.subscriber_count("chat.other") == 1
    assert hub.subscriber_count("chat.nobody") == 0
    hub.forget(first)
    assert hub.subscriber_count("chat.lobby") == 1


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


async def test_slow_subscriber_is_closed_as_slow_and_others_get_everything():
    """A subscriber that never flushes is closed as slow past the bound; the rest get all."""
    hub = make_hub(max_pending_bytes=64 * 1024)
    stalled = FakeConnection(flushes=False)
    readers = [FakeConnection() for _ in range(10)]
    for connection in [stalled, *readers]:
        hub.subscribe("chat.lobby", connection)
    hub.subscribe("chat.other", stalled)

    count = 200  # 200 KB in all, three times the bound
    for n in range(count):
        hub.publish("chat.lobby", f"{n:04d}" + "x" * 1020)

    assert stalled.closed_for is CloseReason.SLOW
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

    assert reader.closed_for is None
    assert len(reader.frames) == 100
    assert hub.pending_bytes(reader) == 0


async def test_a_frame_larger_than_the_bound_goes_out_and_the_next_waits_for_it():
    """Within the bound any frame is written; while it is still held, the next one drops."""
    hub = make_hub(max_pending_bytes=4096)
    connection = FakeConnection(flushes=False)
    hub.subscribe("chat.lobby", connection)

    hub.publish("chat.lobby", "x" * 10_000)
    assert connection.closed_for is None and hub.pending_bytes(connection) == 10_000

    connection.held = 0  # the client read it
    hub.publish("chat.lobby", "y" * 10_000)
    assert connection.closed_for is None

    hub.publish("chat.lobby", "z")  # 10,000 bytes are still held: it stopped reading
    assert connection.closed_for is CloseReason.SLOW
    assert connection.frames[-1][:1] == b"y"


async def test_a_dropped_connection_is_dropped_once():
    """Frames due to a connection already dropped are refused without closing it again."""
    hub = make_hub(max_pending_bytes=100)
    stalled = FakeConnection(flushes=False)
    hub.subscribe("chat.lobby", stalled)
    hub.publish("chat.lobby", "x" * 101)
    hub.publish("chat.lobby", "dropped here")
    closes: list[CloseReason] = []
    stalled.close_for = closes.append  # type: ignore[method-assign]

    assert hub.send(stalled, "an error frame, say") is False

    assert hub.dropped == 1 and closes == []
    assert stalled.frames == [b"x" * 101]


async def test_write_to_a_closed_connection_forgets_it():
    """A connection that is already closed is forgotten without an error."""
    hub = make_hub()
    gone, alive = FakeConnection(), FakeConnection()
    hub.subscribe("chat.lobby", gone)
    hub.subscribe("chat.lobby", alive)
    gone.closed = True

    hub.publish("chat.lobby", "hello")

    assert hub.subscribers("chat.lobby") == {alive}
    assert alive.frames == [b"hello"]


class QueueBroker:
    """A broker that carries payloads on a queue, as a networked broker would."""

    name = "queue"

    def __init__(self) -> None:
        self.deliver: Optional[Deliver] = None
        self.carried: list[tuple[str, Envelope]] = []
        self.listening: list[str] = []

    def attach(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def publish(self, topic: str, envelope: Envelope) -> None:
        self.carried.append((topic, envelope))

    def subscribe(self, topic: str) -> None:
        self.listening.append(topic)

    def unsubscribe(self, topic: str) -> None:
        self.listening.remove(topic)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def flush(self) -> None:
        assert self.deliver is not None
        for topic, envelope in self.carried:
            self.deliver(topic, envelope)
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


async def test_the_broker_hears_of_a_topics_first_and_last_local_subscriber():
    """The broker is told to carry a topic here when its first subscriber comes, and to stop
    when the last one leaves, not for every subscriber."""
    broker = QueueBroker()
    hub = make_hub(broker=broker)
    first, second = FakeConnection(), FakeConnection()
    hub.subscribe("chat.lobby", first)
    hub.subscribe("chat.lobby", second)
    assert broker.listening == ["chat.lobby"]

    hub.unsubscribe("chat.lobby", first)
    assert broker.listening == ["chat.lobby"]
    hub.forget(second)
    assert broker.listening == []


async def until_drained(hub: Hub) -> None:
    """Let the loop turn until the hub has written everything it queued."""
    while hub.queued:
        await asyncio.sleep(0)


async def test_a_large_fan_out_goes_out_in_slices_that_yield_to_the_loop():
    """A publish to more subscribers than a slice holds is written over several turns of the
    loop, no turn writing more than a slice, and everyone gets it."""
    hub = make_hub(slice_size=1000)
    subscribers = [FakeConnection() for _ in range(2500)]
    for subscriber in subscribers:
        hub.subscribe("chat.lobby", subscriber)
    written_per_turn = []

    hub.publish("chat.lobby", "hello")
    while hub.queued:
        before = hub.sent
        await asyncio.sleep(0)
        written_per_turn.append(hub.sent - before)

    assert max(written_per_turn) <= 1000 and sum(written_per_turn) == 2500
    assert all(s.frames == [b"hello"] for s in subscribers)


class Clock:
    """Seconds that pass only when a write says so: a slice's time budget, without timing."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowConnection(FakeConnection):
    """A subscriber each write to which takes ``cost`` seconds of ``clock``, and is logged."""

    def __init__(self, clock: Clock, cost: float, log: list[str]) -> None:
        super().__init__()
        self.clock, self.cost, self.log = clock, cost, log

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        self.clock.now += self.cost
        self.log.append("write")
        return super().write_envelope(envelope, max_pending)


async def fan_out_beside_a_callback(cost: float) -> tuple[list[str], list[SlowConnection]]:
    """Publish to 200 subscribers whose writes cost ``cost`` seconds each (slices of 150
    writes or 0.5 s) and queue another callback right after; the log of writes and that
    callback, once the fan-out is done."""
    clock, log = Clock(), []
    hub = make_hub(slice_size=150, slice_seconds=0.5, clock=clock)
    subscribers = [SlowConnection(clock, cost, log) for _ in range(200)]
    for subscriber in subscribers:
        hub.subscribe("chat.lobby", subscriber)

    hub.publish("chat.lobby", "hello")
    asyncio.get_running_loop().call_soon(log.append, "other")
    await until_drained(hub)
    return log, subscribers


async def test_a_fan_out_yields_the_loop_once_its_time_budget_is_spent():
    """A fan-out whose writes take longer than a slice's time budget yields the loop before
    its count allows: another callback runs between its writes, and everyone gets it."""
    log, subscribers = await fan_out_beside_a_callback(0.01)

    assert 0 < log.index("other") < 150  # the budget, not the count, ended the first slice
    assert all(s.frames == [b"hello"] for s in subscribers)


async def test_a_fan_out_within_its_time_budget_fills_its_slice():
    """When writes are cheap, the time budget does not cut a slice short: a turn writes a
    whole slice before another callback runs."""
    log, subscribers = await fan_out_beside_a_callback(0.0)

    assert log.index("other") == 150
    assert all(s.frames == [b"hello"] for s in subscribers)


async def test_frames_queued_behind_a_slice_keep_their_order():
    """Publishes and direct sends made while a fan-out is still going out reach every
    connection after it, in the order they were made."""
    hub = make_hub(slice_size=100)
    subscribers = [FakeConnection() for _ in range(250)]
    for subscriber in subscribers:
        hub.subscribe("chat.lobby", subscriber)
    last = subscribers[-1]

    hub.publish("chat.lobby", "one")
    hub.send(last, "direct")
    hub.publish("chat.lobby", "two")
    assert last.frames == []
    await until_drained(hub)

    assert last.frames == [b"one", b"direct", b"two"]
    assert all(s.frames == [b"one", b"two"] for s in subscribers[:-1])


async def test_a_connection_closed_during_a_sliced_fan_out_is_skipped_and_forgotten():
    """A subscriber that closes while a fan-out waits for its slice gets nothing more and
    leaves every topic."""
    hub = make_hub(slice_size=10)
    subscribers = [FakeConnection() for _ in range(30)]
    for subscriber in subscribers:
        hub.subscribe("chat.lobby", subscriber)
    gone = subscribers[-1]

    hub.publish("chat.lobby", "hello")
    gone.closed = True
    await until_drained(hub)

    assert gone.frames == []
    assert gone not in hub.subscribers("chat.lobby")
    assert all(s.frames == [b"hello"] for s in subscribers[:-1])


async def test_a_connection_with_nothing_queued_is_served_during_a_fan_out():
    """While a large fan-out waits for its slices, a direct send to a connection that is not
    in it (an echo client, say) goes out at once."""
    hub = make_hub(slice_size=10)
    for _ in range(50):
        hub.subscribe("chat.lobby", FakeConnection())
    bystander = FakeConnection()
    hub.register(bystander)

    hub.publish("chat.lobby", "hello")
    assert hub.queued == 50
    assert hub.send(bystander, "echo") is True

    assert bystander.frames == [b"echo"]


async def test_a_connection_that_leaves_a_topic_mid_fan_out_gets_nothing_more_of_it():
    """Unsubscribing while a fan-out of the topic still waits for its slice stops it."""
    hub = make_hub(slice_size=10)
    subscribers = [FakeConnection() for _ in range(30)]
    for subscriber in subscribers:
        hub.subscribe("chat.lobby", subscriber)
    leaver = subscribers[-1]

    hub.publish("chat.lobby", "hello")
    hub.unsubscribe("chat.lobby", leaver)
    await until_drained(hub)

    assert leaver.frames == []
    assert all(s.frames == [b"hello"] for s in subscribers[:-1])


class BrokenConnection(FakeConnection):
    """A subscriber whose writer raises: a bug in one connection's code."""

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        raise RuntimeError("broken writer")


async def test_a_failing_writer_is_closed_and_never_stalls_the_fan_out(caplog):
    """A subscriber whose write raises is logged, closed for an error and forgotten; everyone
    else gets the frame, and later publishes still flow."""
    hub = make_hub(slice_size=10)
    subscribers = [FakeConnection() for _ in range(25)]
    broken = BrokenConnection()
    for subscriber in [*subscribers[:12], broken, *subscribers[12:]]:
        hub.subscribe("chat.lobby", subscriber)

    hub.publish("chat.lobby", "one")
    await until_drained(hub)
    hub.publish("chat.lobby", "two")
    await until_drained(hub)

    assert broken.closed_for is CloseReason.ERROR
    assert broken not in hub.connections
    assert all(s.frames == [b"one", b"two"] for s in subscribers)
    assert "broken writer" in caplog.text


async def test_a_gap_on_topics_no_handler_takes_ends_their_subscribers():
    """After a broker's gap, subscribers of topics a handler caught up keep going; those of
    the others (and of a handler that failed) are closed for GAP and unsubscribed."""
    hub = make_hub()
    kept, ended, failed = FakeConnection(), FakeConnection(), FakeConnection()
    hub.subscribe("chat.lobby", kept)
    hub.subscribe("counter.clicks", ended)
    hub.subscribe("vote.demo", failed)
    caught_up: list[set[str]] = []

    async def chat(topics: set[str]) -> set[str]:
        caught_up.append(topics)
        return {topic for topic in topics if topic.startswith("chat.")}

    async def votes(topics: set[str]) -> set[str]:
        raise RuntimeError("a bug in a gap handler")

    hub.on_gap(chat)
    hub.on_gap(votes)
    await hub.catch_up({"chat.lobby", "counter.clicks", "vote.demo"})

    assert caught_up == [{"chat.lobby", "counter.clicks", "vote.demo"}]
    assert kept.closed_for is None and hub.topics(kept) == {"chat.lobby"}
    assert ended.closed_for is CloseReason.GAP and failed.closed_for is CloseReason.GAP
    assert hub.subscriber_count("counter.clicks") == hub.subscriber_count("vote.demo") == 0
    assert hub.gap_closed == 2
