"""The Tornado internals ``realtime.streams`` reads, checked against the installed Tornado.

If an upgrade renames the stream's write buffer or stops writing to the socket inside
``write()``, these fail, instead of flow control quietly counting nothing (no slow client
ever dropped) or everything (every fast one dropped).
"""

import asyncio
from types import SimpleNamespace

import pytest
import tornado.web
from tornado.iostream import IOStream

from handlers.base import SocketHandler
from realtime.hub import Hub
from realtime.streams import unflushed_bytes
from tests.support import port_of, raw_handshake, receive

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
