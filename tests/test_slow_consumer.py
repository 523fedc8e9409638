"""Flow control over real sockets: a client that stops reading is dropped, nobody else waits,
and a client that reads is never taken for a slow one."""

import asyncio
import gc
from typing import Any

import pytest
import tornado.web

from handlers.websocket import JsonSocketHandler
from realtime.pubsub.hub import DEFAULT_MAX_PENDING_BYTES, Hub
from realtime.wire.closecodes import CloseCode
from tests.support import port_of, raw_close_code, raw_handshake, receive

BOUND = DEFAULT_MAX_PENDING_BYTES
LONGEST_HEADER = 10  # bytes before the payload of an unmasked frame of 64 KiB or more


class ListenerSocketHandler(JsonSocketHandler):
    """Subscribes every connection to two topics and reports when one ends."""

    def initialize(self, ended: "asyncio.Queue[Any]", **base: Any) -> None:
        super().initialize(**base)
        self.ended = ended

    def connected(self) -> None:
        self.subscribe("test.feed")
        self.subscribe("test.other")

    def disconnected(self) -> None:
        self.ended.put_nowait(self)


@pytest.fixture
def hub() -> Hub:
    return Hub(max_pending_bytes=BOUND)


@pytest.fixture
def ended() -> "asyncio.Queue[Any]":
    """Gets the server-side handler of every connection that ends."""
    return asyncio.Queue()


@pytest.fixture
def app(hub: Hub, ended: "asyncio.Queue[Any]") -> tornado.web.Application:
    # The client's limit on incoming messages is 10 MiB, so a frame past the bound reaches it.
    return tornado.web.Application([
        (r"/ws/feed", ListenerSocketHandler, dict(hub=hub, ended=ended)),
    ])


async def test_same_tick_burst_past_the_bound_reaches_a_reading_client(ws_connect, hub):
    """1,100 frames of 1 KB published in one tick (more than the bound) all reach a reader."""
    reader = await ws_connect("/ws/feed")

    count = 1100
    for n in range(count):  # no await: one turn of the loop
        hub.publish("test.feed", f"{n:04d}" + "x" * 1020)

    assert hub.dropped == 0
    for n in range(count):
        frame = await receive(reader)
        assert frame is not None and frame[:4] == f"{n:04d}"
    hub.publish("test.feed", "still open")
    assert await receive(reader) == "still open"


async def test_one_frame_larger_than_the_bound_reaches_a_reading_client(ws_connect, hub):
    """A 1.5 MiB frame (the bound is 1 MiB) is delivered whole and the connection is kept."""
    reader = await ws_connect("/ws/feed")
    big = "y" * (BOUND * 3 // 2)

    hub.publish("test.feed", big)

    assert await receive(reader) == big
    hub.publish("test.feed", "after")
    assert await receive(reader) == "after"
    assert hub.dropped == 0


async def test_stalled_reader_is_dropped_with_1008_and_memory_stays_bounded(
    http_server_client, ws_connect, hub
):
    """A client that never reads is dropped with 1008 and forgotten once the server holds more
    than the bound for it, never more than the bound and one frame; readers get everything."""
    readers = [await ws_connect("/ws/feed") for _ in range(3)]
    reader, stalled_transport, head = await raw_handshake(port_of(http_server_client), "/ws/feed")
    assert head.startswith(b"HTTP/1.1 101")
    stalled = hub.connections[3]  # the server's side of the raw client, registered last

    frame_size = 10_005
    most_held = sent = 0
    while hub.dropped == 0 and sent < 3000:  # 30 MB at most, far past any kernel buffer
        hub.publish("test.feed", f"{sent:05d}" + "x" * (frame_size - 5))
        sent += 1
        most_held = max(most_held, hub.pending_bytes(stalled))
        for conn in readers:
            frame = await receive(conn)
            assert frame is not None and frame[:5] == f"{sent - 1:05d}"

    assert hub.dropped == 1
    assert BOUND < most_held <= BOUND + frame_size + LONGEST_HEADER
    assert stalled not in hub.connections and hub.topics(stalled) == set()
    assert stalled not in hub.subscribers("test.feed") | hub.subscribers("test.other")
    assert len(hub.subscribers("test.feed")) == 3
    # Once it does read, the close frame is behind what was queued for it.
    assert await raw_close_code(reader) == CloseCode.POLICY_VIOLATION
    stalled_transport.close()


@pytest.mark.parametrize("writer", ["prebuilt frames", "write_message"])
async def test_writes_lost_with_a_vanished_client_log_no_unretrieved_exception(
    http_server_client, hub, ended, monkeypatch, writer
):
    """Frames still queued when a client resets fail quietly, whichever way they were
    written: nothing is left unretrieved."""
    gc.collect()  # garbage of earlier tests is not this test's to report
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    _, transport, _ = await raw_handshake(port_of(http_server_client), "/ws/feed")
    stalled = hub.connections[0]
    written: list[asyncio.Future[None]] = []
    real_write = stalled.write_message

    def write_message(*args: Any, **kwargs: Any) -> Any:
        written.append(real_write(*args, **kwargs))
        return written[-1]

    if writer == "write_message":  # the path of compressed connections
        del stalled.write_envelope, stalled.unflushed_bytes  # the class's general path
        monkeypatch.setattr(stalled, "write_message", write_message)
    while hub.pending_bytes(stalled) == 0:  # until the kernel refuses some
        hub.publish("test.feed", "z" * 10_000)

    transport.abort()  # unread data in its buffer: the kernel answers with a reset
    assert await asyncio.wait_for(ended.get(), 5) is stalled
    # Bytes were still held at the reset, so the last writes failed. Wait for every write to
    # end without retrieving anything, then let the futures go.
    if written:
        await asyncio.wait(written)
        written.clear()
    gc.collect()

    assert reported == []
