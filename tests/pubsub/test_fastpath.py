"""The fast path over real sockets: prebuilt frames written straight into Tornado's stream.

What must hold whichever way a frame goes out
(``realtime.pubsub.tornado_internals.FrameWriter`` or the ``write_message`` fallback): every
frame arrives whole and in order, frames Tornado writes itself (pings, pongs, closes) never
cut into ours, nothing follows a close frame, a closed connection is skipped and forgotten,
and a compressed connection still gets everything."""

import asyncio
import logging
import select
import socket
import struct
import time
from typing import Any, Optional

import pytest
import tornado.web
from tornado.httpclient import HTTPRequest
from tornado.iostream import IOStream
from tornado.websocket import websocket_connect

from handlers.websocket import SocketHandler
from realtime.pubsub.hub import Hub
from realtime.pubsub.tornado_internals import FrameWriter, write_batch
from realtime.wire.closecodes import CloseCode
from tests.support import (
    OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, TIMEOUT, RawReader, client_frame,
    port_of, raw_handshake, receive, ws_url,
)

TOPIC = "test.feed"
# Payload sizes around every header boundary (7-bit, 16-bit and 64-bit lengths) and around
# the size past which Tornado's write buffer keeps a view instead of a copy (2,048).
SIZES = (10, 125, 126, 2047, 2049, 65535, 65536, 70000)


class FeedSocketHandler(SocketHandler):
    """Subscribes every connection to ``test.feed``; reports pings, pongs and closes."""

    def initialize(self, heard: "asyncio.Queue[Any]", **base: Any) -> None:
        super().initialize(**base)
        self.heard = heard

    def connected(self) -> None:
        self.subscribe(TOPIC)

    def on_ping(self, data: bytes) -> None:
        super().on_ping(data)
        self.heard.put_nowait(("ping", self, data))

    def on_pong(self, data: bytes) -> None:
        super().on_pong(data)
        self.heard.put_nowait(("pong", self, data))

    def disconnected(self) -> None:
        self.heard.put_nowait(("closed", self, None))


class CompressedFeedSocketHandler(FeedSocketHandler):
    """The same, accepting permessage-deflate when the client offers it."""

    def get_compression_options(self) -> Optional[dict[str, Any]]:
        return {}


@pytest.fixture
def hub() -> Hub:
    # A bound no test here reaches: these tests are about order, not about dropping.
    return Hub(max_pending_bytes=64 * 1024 * 1024)


@pytest.fixture
def heard() -> "asyncio.Queue[Any]":
    """(what, server-side handler, payload) for every ping, pong and close the server hears."""
    return asyncio.Queue()


@pytest.fixture
def app(hub: Hub, heard: "asyncio.Queue[Any]") -> tornado.web.Application:
    return tornado.web.Application([
        (r"/ws/feed", FeedSocketHandler, dict(hub=hub, heard=heard)),
        (r"/ws/deflate", CompressedFeedSocketHandler, dict(hub=hub, heard=heard)),
    ])


@pytest.fixture
def reported(io_loop: Any) -> list[dict[str, Any]]:
    """What reaches the loop's exception handler during the test (must stay empty)."""
    found: list[dict[str, Any]] = []
    loop = io_loop.asyncio_loop
    loop.set_exception_handler(lambda _loop, context: found.append(context))
    return found


def payload(seq: int, size: int) -> bytes:
    """A recognisable payload: its sequence number, then filler that depends on it."""
    head = b"%06d:" % seq
    return head + bytes([0x61 + seq % 26]) * (size - len(head))


def stream_of(handler: SocketHandler) -> IOStream:
    """The server-side stream of a connection."""
    assert handler.ws_connection is not None
    return handler.ws_connection.stream


async def strict_frame(reader: RawReader) -> tuple[int, bytes]:
    """The next server frame as (opcode, payload), failing unless its header is one a server
    may send: FIN set (we never fragment), no RSV bit, no mask, a known opcode, control
    payloads of 125 bytes at most. A frame cut into by another would fail one of these."""
    async def read(n: int) -> bytes:
        return await asyncio.wait_for(reader.readexactly(n), TIMEOUT)

    first, second = await read(2)
    opcode = first & 0x0F
    assert first & 0xF0 == 0x80, f"bad first byte {first:#04x}: not FIN, or RSV bits set"
    assert not second & 0x80, "a server frame is masked"
    assert opcode in (OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG), f"opcode {opcode}"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await read(2))
        assert length >= 126, "a 16-bit length for a short payload"
    elif length == 127:
        (length,) = struct.unpack("!Q", await read(8))
        assert 0xFFFF < length < 1 << 32, f"implausible 64-bit length {length}"
    assert opcode < 0x8 or length <= 125, "a control frame over 125 bytes"
    return opcode, await read(length)


async def data_until_close(reader: RawReader) -> tuple[list[bytes], Optional[int]]:
    """The data payloads a raw client reads until the server's close frame, and that frame's
    code (None if the connection ended without one)."""
    payloads: list[bytes] = []
    try:
        while True:
            opcode, data = await strict_frame(reader)
            if opcode == OP_CLOSE:
                return payloads, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            if opcode in (OP_TEXT, OP_BINARY):
                payloads.append(data)
    except asyncio.IncompleteReadError:
        return payloads, None


async def rest_of_stream(reader: RawReader) -> bytes:
    """Every byte the server sends until it ends the TCP connection."""
    rest = b""
    while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT):
        rest += chunk
    return rest


def assert_in_order_from_zero(payloads: list[bytes], sizes: list[int]) -> None:
    """``payloads`` are the first len(payloads) published, whole and in order."""
    for seq, data in enumerate(payloads):
        assert data == payload(seq, sizes[seq]), f"frame {seq} is wrong"


async def wait_for_close_of(heard: "asyncio.Queue[Any]", handlers: set[Any]) -> None:
    """Wait until every handler in ``handlers`` has run its on_close."""
    waiting = set(handlers)
    while waiting:
        what, handler, _ = await asyncio.wait_for(heard.get(), TIMEOUT)
        if what == "closed":
            waiting.discard(handler)


async def until_queued_at_most(hub: Hub, writes: int) -> None:
    """Let the loop turn until the hub has at most ``writes`` queued; fail after TIMEOUT (a
    drain that raised never empties its queue)."""
    deadline = time.monotonic() + TIMEOUT
    while hub.queued > writes:
        assert time.monotonic() < deadline, f"the hub still has {hub.queued} writes queued"
        await asyncio.sleep(0)


async def test_an_ordinary_connection_gets_frames_through_the_frame_writer(ws_connect, hub):
    """An uncompressed connection's write_envelope is the FrameWriter's, and a publish reaches
    it without Tornado's write_message."""
    client = await ws_connect("/ws/feed")
    handler = hub.connections[0]

    assert isinstance(getattr(handler.write_envelope, "__self__", None), FrameWriter)

    def no_write_message(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the fast path went through write_message")

    handler.write_message = no_write_message
    hub.publish(TOPIC, "fast")
    hub.publish(TOPIC, b"\x00binary")
    assert await receive(client) == "fast"
    assert await receive(client) == b"\x00binary"


async def test_a_compressed_connection_falls_back_to_write_message_and_gets_everything(
    http_server_client, hub
):
    """A client that negotiates permessage-deflate gets no prebuilt (uncompressed) frames:
    the handler keeps the write_message path, and every message arrives intact."""
    request = HTTPRequest(ws_url(http_server_client, "/ws/deflate"))
    client = await asyncio.wait_for(websocket_connect(request, compression_options={}), TIMEOUT)
    try:
        assert client.protocol is not None and client.protocol._compressor is not None, (
            "the test client did not negotiate compression")
        handler = hub.connections[0]
        assert handler.ws_connection._compressor is not None
        assert "write_envelope" not in vars(handler), "a compressed connection took the fast path"
        assert handler.write_envelope.__func__ is SocketHandler.write_envelope

        sizes = [SIZES[n % len(SIZES)] for n in range(40)]
        for seq, size in enumerate(sizes):
            hub.publish(TOPIC, payload(seq, size).decode() if seq % 2 else payload(seq, size))
        for seq, size in enumerate(sizes):
            expected = payload(seq, size)
            assert await receive(client) == (expected.decode() if seq % 2 else expected)
        assert hub.dropped == 0
    finally:
        client.close()


async def test_data_frames_stay_whole_and_in_order_among_pings_and_pongs(
    http_server_client, hub, heard, reported
):
    """While bursts of published frames wait in the server's buffer, the server pings, the
    client pings and answers pings: the raw byte stream parses into whole frames, data in
    publish order, each server ping exactly between the data published before and after it."""
    rounds = 8
    reader, transport, head = await raw_handshake(port_of(http_server_client), "/ws/feed")
    assert head.startswith(b"HTTP/1.1 101")
    handler = hub.connections[0]
    received: list[tuple[str, Any]] = []  # ("data", seq) / ("ping", round) / ("pong", payload)
    published_before_ping: list[int] = []
    done = asyncio.Event()  # the server has sent its last ping
    last_pong = b"c%d" % (rounds - 1)

    async def read_everything() -> None:
        data = pings = 0
        while not (done.is_set() and data == seq and pings == rounds
                   and ("pong", last_pong) in received):
            opcode, body = await strict_frame(reader)
            if opcode in (OP_TEXT, OP_BINARY):
                assert body == payload(data, SIZES[data % len(SIZES)]), f"frame {data} is wrong"
                received.append(("data", data))
                data += 1
            elif opcode == OP_PING:
                received.append(("ping", int(body[1:])))
                pings += 1
                transport.write(client_frame(OP_PONG, body))  # as a real client answers
            elif opcode == OP_PONG:
                received.append(("pong", body))
            else:
                raise AssertionError(f"unexpected frame {opcode} {body!r}")

    reading = asyncio.ensure_future(read_everything())
    seq = 0
    for round_ in range(rounds):
        # At least one of each size, then on until the kernel refuses some (its buffers are
        # megabytes on loopback), so the ping below is queued behind unsent data frames.
        while seq % len(SIZES) or handler.unflushed_bytes() == 0:
            hub.publish(TOPIC, payload(seq, SIZES[seq % len(SIZES)]))
            seq += 1
            assert seq < 2000, "the kernel took 60 MB from a client with an 8 KB window"
        published_before_ping.append(seq)
        handler.ping(b"s%d" % round_)
        transport.write(client_frame(OP_PING, b"c%d" % round_))
        # The server has read the client's ping (and written its pong) before the next burst.
        while True:
            what, _, data = await asyncio.wait_for(heard.get(), TIMEOUT)
            if what == "ping" and data == b"c%d" % round_:
                break
    done.set()
    await asyncio.wait_for(reading, TIMEOUT * 4)

    assert [n for what, n in received if what == "data"] == list(range(seq))
    for round_ in range(rounds):
        at = received.index(("ping", round_))
        before = [n for what, n in received[:at] if what == "data"]
        assert len(before) == published_before_ping[round_], f"server ping {round_} misplaced"
    pongs = [int(body[1:]) for what, body in received if what == "pong"]
    assert pongs == sorted(pongs) and len(set(pongs)) == len(pongs)
    assert hub.dropped == 0 and reported == []
    transport.close()


async def test_closes_during_a_sliced_burst_are_skipped_forgotten_and_end_the_stream(
    http_server_client, ws_connect, hub, heard, reported, caplog
):
    """Mid-burst, the server closes one subscriber, one client closes, one stream drops:
    no exception, those three are forgotten, nothing follows either close frame, and every
    other subscriber gets the whole burst in order."""
    hub.slice_size = 7  # every publish to these 23 subscribers goes out over several turns
    port = port_of(http_server_client)
    raws = [await raw_handshake(port, "/ws/feed") for _ in range(3)]
    by_server, by_client, dropped = hub.connections[:3]
    readers = [await ws_connect("/ws/feed") for _ in range(20)]
    count = 80
    sizes = [SIZES[n % 3] for n in range(count)]  # small frames: many writes per slice

    for seq in range(count // 2):
        hub.publish(TOPIC, payload(seq, sizes[seq]))
    assert hub.queued > 0, "the burst was not sliced"
    await until_queued_at_most(hub, count // 4 * 23)  # part of the first half is out
    by_server.close(CloseCode.GOING_AWAY, "going")
    raws[1][1].write(client_frame(OP_CLOSE, struct.pack("!H", CloseCode.NORMAL)))
    stream_of(dropped).close()  # as when Tornado sees the network fail
    for seq in range(count // 2, count):
        hub.publish(TOPIC, payload(seq, sizes[seq]))
    await until_queued_at_most(hub, 0)

    for client in readers:
        for seq in range(count):
            assert await receive(client) == payload(seq, sizes[seq])
    close_codes = (CloseCode.GOING_AWAY, CloseCode.NORMAL)
    for (reader, transport, _), expected_code in zip(raws[:2], close_codes):
        payloads, code = await data_until_close(reader)
        assert code == expected_code
        assert_in_order_from_zero(payloads, sizes)
        if expected_code == CloseCode.GOING_AWAY:  # the server waits for our answer
            transport.write(client_frame(OP_CLOSE, struct.pack("!H", CloseCode.NORMAL)))
        assert await rest_of_stream(reader) == b"", "bytes followed the server's close frame"
    payloads, code = await data_until_close(raws[2][0])
    assert code is None
    assert_in_order_from_zero(payloads, sizes)
    await wait_for_close_of(heard, {by_server, by_client, dropped})

    for gone in (by_server, by_client, dropped):
        assert gone not in hub.connections and hub.topics(gone) == set()
    assert len(hub.subscribers(TOPIC)) == 20
    assert reported == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    for _, transport, _ in raws:
        transport.close()


async def test_a_stream_closed_under_a_publish_is_skipped_and_forgotten_at_once(
    ws_connect, hub, reported
):
    """A connection whose stream has closed, before Tornado's on_close has run, gets nothing
    and is forgotten by the very publish that found it closed; the others get the frame."""
    gone_client = await ws_connect("/ws/feed")
    other = await ws_connect("/ws/feed")
    gone, _ = hub.connections

    stream_of(gone).close()
    hub.publish(TOPIC, "after")  # synchronously: on_close has not run yet

    assert gone not in hub.connections and hub.topics(gone) == set()
    assert hub.subscribers(TOPIC) == {hub.connections[0]}
    assert await receive(other) == "after"
    assert await receive(gone_client) is None
    assert reported == []


async def test_a_fan_out_larger_than_a_slice_reaches_everyone_in_order_with_a_send_behind_it(
    ws_connect, hub
):
    """With slices of 4 and 10 subscribers, publishes and a direct send made in one tick reach
    every real socket in the order they were made."""
    hub.slice_size = 4
    clients = [await ws_connect("/ws/feed") for _ in range(10)]
    last = hub.connections[-1]

    hub.publish(TOPIC, "one")
    assert hub.queued == 10, "the publish was not queued for slicing"
    assert hub.send(last, "direct") is True
    hub.publish(TOPIC, "two")
    hub.publish(TOPIC, b"three")

    for client in clients[:-1]:
        assert [await receive(client) for _ in range(3)] == ["one", "two", b"three"]
    assert [await receive(clients[-1]) for _ in range(4)] == ["one", "direct", "two", b"three"]


async def plain_client(port: int, path: str) -> socket.socket:
    """A non-blocking socket past the WebSocket handshake, with a small receive buffer, for a
    test to read (or reset) synchronously, between two turns of the loop."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await asyncio.wait_for(loop.sock_recv(sock, 1), TIMEOUT)
    except BaseException:
        sock.close()
        raise
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Every whole server frame in ``data``, checked as ``strict_frame`` does; what is left
    must be the start of a frame."""
    frames = []
    at = 0
    while len(data) - at >= 2:
        first, second = data[at], data[at + 1]
        assert first & 0xF0 == 0x80 and not second & 0x80, f"no frame header at byte {at}"
        assert first & 0x0F in (OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)
        length, start = second & 0x7F, at + 2
        if length == 126:
            (length,), start = struct.unpack_from("!H", data, start), start + 2
        elif length == 127:
            (length,), start = struct.unpack_from("!Q", data, start), start + 8
            assert length < 1 << 32, f"implausible length at byte {at}"
        if len(data) < start + length:
            break
        frames.append((first & 0x0F, data[start:start + length]))
        at = start + length
    return frames


async def test_a_frame_goes_behind_held_bytes_even_when_the_kernel_has_room_again(
    http_server_client, hub
):
    """When the client has read (so the socket could take more) but Tornado has not yet been
    told and still holds bytes, a new frame is queued behind them, not sent ahead."""
    loop = asyncio.get_running_loop()
    sock = await plain_client(port_of(http_server_client), "/ws/feed")
    try:
        handler = hub.connections[0]
        server_socket = stream_of(handler).socket
        sent = 0
        while handler.unflushed_bytes() == 0:  # the kernel's buffers are megabytes
            hub.publish(TOPIC, payload(sent, 10_000))
            sent += 1
            assert sent < 10_000, "the kernel took 100 MB from a client that never reads"

        # Read, without letting the loop turn: the kernel makes room, Tornado does not know.
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                break
            assert chunk, "the server ended the connection"
            received += chunk
        assert handler.unflushed_bytes() > 0
        assert select.select([], [server_socket], [], 0)[1], "the server's socket has no room"
        hub.publish(TOPIC, payload(sent, 10_000))
        sent += 1

        while len(parse_frames(bytes(received))) < sent:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), TIMEOUT)
            assert chunk, "the server ended the connection"
            received += chunk
        frames = parse_frames(bytes(received))
        assert [data for _, data in frames] == [payload(n, 10_000) for n in range(sent)]
        assert hub.dropped == 0
    finally:
        sock.close()


async def test_a_publish_to_a_client_that_reset_closes_its_stream_and_forgets_it(
    http_server_client, ws_connect, hub, heard, reported, caplog
):
    """A client that sent a TCP reset before Tornado noticed: the frame's failed send (the
    turn's batched send) closes the stream (on_close follows), the connection is forgotten,
    nothing is logged as an error, and the other subscribers get the frame."""
    sock = await plain_client(port_of(http_server_client), "/ws/feed")
    other = await ws_connect("/ws/feed")
    gone = hub.connections[0]
    stream = stream_of(gone)
    assert stream.closed() is False

    # Linger 0: close() sends a reset, which the server's socket has taken in before close()
    # returns (loopback), while Tornado hears of it only on a later turn of the loop.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    hub.publish(TOPIC, "after the reset")
    write_batch().flush()  # what the loop does first on its next turn

    assert stream.closed(), "the failed send left the stream open"
    assert await receive(other) == "after the reset"
    await wait_for_close_of(heard, {gone})
    assert gone not in hub.connections and hub.topics(gone) == set()
    assert reported == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
