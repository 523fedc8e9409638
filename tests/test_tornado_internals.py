"""The Tornado internals ``realtime.tornado_internals`` reads, checked against the installed
Tornado.

If an upgrade renames the stream's write buffer or stops writing to the socket inside
``write()``, these fail, instead of flow control quietly counting nothing (no slow client
ever dropped) or everything (every fast one dropped). The same goes for what the fast path
writes through (``fast_stream``, ``FrameWriter``): the stream's socket, buffer, write
indices and I/O state, and the protocol's compressor, masking and closing state.
"""

import asyncio
import inspect
import socket
from types import SimpleNamespace

import pytest
import tornado
import tornado.web
from tornado.iostream import IOStream
from tornado.websocket import WebSocketProtocol13

from handlers.base import SocketHandler
from realtime import tornado_internals
from realtime.hub import Hub
from realtime.tornado_internals import VERIFIED_TORNADO, FrameWriter, fast_stream, unflushed_bytes
from tests.support import OP_TEXT, port_of, raw_handshake, read_frame, receive

HEADER_16 = 4  # bytes before the payload of a server frame of 126 to 65,535 bytes


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    return tornado.web.Application([(r"/ws/quiet", SocketHandler, dict(hub=hub))])


def stream_of(handler: SocketHandler) -> IOStream:
    """The server-side stream of a connection, where Tornado keeps what it has not sent."""
    assert handler.ws_connection is not None
    stream = handler.ws_connection.stream
    assert isinstance(stream, IOStream), "WebSocketProtocol.stream is no longer the IOStream"
    return stream


def write(handler: SocketHandler, text: str) -> None:
    """write_message, its outcome retrieved: writes to the reset client below fail."""
    asyncio.ensure_future(handler.write_message(text)).add_done_callback(
        lambda written: written.exception())


def assert_internals(stream: IOStream) -> None:
    """The attributes ``unflushed_bytes`` relies on exist and agree with each other."""
    for name in ("_write_buffer", "_total_write_index", "_total_write_done_index"):
        assert hasattr(stream, name), f"tornado.iostream.IOStream has no {name} any more"
    assert len(stream._write_buffer) == (
        stream._total_write_index - stream._total_write_done_index
    ), "IOStream's write buffer and its write indices no longer agree"


async def test_a_frame_to_an_idle_client_is_handed_to_the_kernel_at_once(ws_connect, hub):
    """write_message sends at once: right after it, nothing is left in Tornado's buffer."""
    client = await ws_connect("/ws/quiet")
    handler = hub.connections[0]
    stream = stream_of(handler)

    write(handler, "x" * 1000)

    assert_internals(stream)
    assert stream._total_write_done_index > 0
    assert unflushed_bytes(handler) == 0
    assert await receive(client) == "x" * 1000


async def test_what_the_kernel_refuses_is_counted_whole_with_headers(http_server_client, hub):
    """Frames the kernel refuses stay in Tornado's buffer, each counted with its header."""
    _, transport, _ = await raw_handshake(port_of(http_server_client), "/ws/quiet")
    handler = hub.connections[0]
    stream = stream_of(handler)
    for _ in range(10_000):  # 100 MB at most; the kernel stops taking bytes long before
        if unflushed_bytes(handler) > 0:
            break
        write(handler, "y" * 10_000)
    assert unflushed_bytes(handler) > 0, "the kernel took 100 MB from a client that never reads"
    queued = stream._total_write_index

    write(handler, "z" * 1000)

    # The kernel may take a little more at any moment (its buffers grow on their own), so
    # the frame's size is checked on the total queued, not on what is still held.
    assert stream._total_write_index == queued + 1000 + HEADER_16
    assert unflushed_bytes(handler) > 0
    assert_internals(stream)
    assert unflushed_bytes(handler) == len(stream._write_buffer)
    transport.abort()


async def test_nothing_is_held_before_the_handshake_or_after_the_close(ws_connect, hub):
    """No connection yet, or a closed stream, counts as nothing held."""
    assert unflushed_bytes(SimpleNamespace(ws_connection=None)) == 0

    await ws_connect("/ws/quiet")
    server_side = hub.connections[0]
    stream = stream_of(server_side)
    stream.close()
    assert unflushed_bytes(server_side) == 0


# The fast path (realtime.tornado_internals.fast_stream and FrameWriter) relies on more of Tornado.


def test_the_installed_tornado_is_one_the_fast_path_was_verified_against():
    """VERIFIED_TORNADO names the installed minor version: else every connection would
    silently fall back to write_message (or the pin in setup.cfg has drifted)."""
    assert tornado.version_info[:2] in VERIFIED_TORNADO, (
        f"Tornado {tornado.version} is not in tornado_internals.VERIFIED_TORNADO: check the "
        "internals listed there against it, then add its minor version")


async def test_the_stream_and_protocol_internals_the_fast_path_uses_exist(ws_connect, hub):
    """IOStream still has socket, _write_buffer (append taking bytes and memoryview, len),
    the two write indices, _add_io_state and closed(); WebSocketProtocol13 still has
    _compressor, mask_outgoing and is_closing()."""
    await ws_connect("/ws/quiet")
    handler = hub.connections[0]
    connection = handler.ws_connection
    assert isinstance(connection, WebSocketProtocol13)
    stream = stream_of(handler)

    assert isinstance(stream.socket, socket.socket)
    for name in ("_total_write_index", "_total_write_done_index"):
        assert isinstance(getattr(stream, name, None), int), f"IOStream.{name} is gone"
    assert callable(getattr(stream, "_add_io_state", None)), "IOStream._add_io_state is gone"
    assert stream.closed() is False
    buffer = type(stream._write_buffer)()  # a fresh one: the live one is the stream's
    buffer.append(b"x" * 10)
    buffer.append(memoryview(b"y" * 5000)[1000:])
    buffer.append(b"z" * 3000)
    assert len(buffer) == 10 + 4000 + 3000
    assert inspect.signature(IOStream._add_io_state).parameters.keys() == {"self", "state"}

    assert hasattr(connection, "_compressor") and connection._compressor is None
    assert connection.mask_outgoing is False
    assert connection.is_closing() is False
    assert fast_stream(handler) is stream


async def fill_until_held(hub: Hub, handler: SocketHandler, text: str) -> int:
    """Send ``text`` through the hub until the kernel refuses some; how many were sent."""
    sent = 0
    while unflushed_bytes(handler) == 0:  # the kernel's buffers are megabytes on loopback
        assert hub.send(handler, text)
        sent += 1
        assert sent < 10_000, "the kernel took 100 MB from a client that never reads"
    return sent


async def test_fast_frames_to_a_stalled_client_keep_tornados_books_and_futures(
    http_server_client, hub
):
    """Frames the FrameWriter left in Tornado's buffer go out on their own once the client
    reads; the buffer and the write indices agree throughout; a write_message queued behind
    fast frames resolves once the client has read everything."""
    reader, transport, _ = await raw_handshake(port_of(http_server_client), "/ws/quiet")
    handler = hub.connections[0]
    stream = stream_of(handler)
    assert isinstance(getattr(handler.write_envelope, "__self__", None), FrameWriter)

    sent = await fill_until_held(hub, handler, "f" * 10_000)
    for _ in range(3):  # behind what is held: appended, not sent
        assert hub.send(handler, "g" * 3000)
    assert_internals(stream)
    assert handler.unflushed_bytes() == unflushed_bytes(handler) > 0
    # Only the FrameWriter wrote: Tornado must still have been asked to finish the job.
    for n in range(sent + 3):
        assert await read_frame(reader) == (OP_TEXT, b"f" * 10_000 if n < sent else b"g" * 3000)
    assert_internals(stream)

    sent = await fill_until_held(hub, handler, "h" * 10_000)
    tail = handler.write_message("tail")
    assert not tail.done()
    assert_internals(stream)
    for _ in range(sent):
        assert await read_frame(reader) == (OP_TEXT, b"h" * 10_000)
    assert await read_frame(reader) == (OP_TEXT, b"tail")
    await asyncio.wait_for(tail, 5)
    assert_internals(stream)
    assert unflushed_bytes(handler) == 0
    transport.close()


async def test_an_unverified_tornado_falls_back_to_write_message(
    ws_connect, hub, monkeypatch
):
    """With the installed Tornado missing from VERIFIED_TORNADO, fast_stream() refuses and new
    connections keep the write_message path, which still delivers."""
    monkeypatch.setattr(tornado_internals, "VERIFIED_TORNADO", ((5, 1),))
    client = await ws_connect("/ws/quiet")
    handler = hub.connections[0]

    assert fast_stream(handler) is None
    assert "write_envelope" not in vars(handler)
    assert hub.send(handler, "slow path") is True
    assert await receive(client) == "slow path"
