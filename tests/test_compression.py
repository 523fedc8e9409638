"""permessage-deflate (RFC 7692) with ``--compression``: offered to clients that ask, off by
default; compressed clients get compressed echo and chat frames, others keep the fast path."""

import asyncio
import json
import zlib
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as websockets_connect

from realtime.pubsub.tornado_internals import FrameWriter, reads_fast
from server import Config
from tests.support import (
    OP_TEXT, TIMEOUT, client_frame, poll_until, port_of, raw_handshake, read_frame_head,
)

RSV1 = 0x40  # the "compressed" bit of a frame's first byte
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
TEXT = "a text that compresses well, " * 100  # under the chat's 4000 characters


@pytest.fixture
def compression() -> bool:
    """Whether the test's server runs with --compression (tests of the default say False)."""
    return True


@pytest.fixture
def config(hub, tmp_path: Path, compression: bool) -> Config:
    return Config(hub=hub, data_dir=str(tmp_path / "data"), compression=compression)


def ws(http_server_client, path: str) -> str:
    return f"ws://127.0.0.1:{port_of(http_server_client)}{path}"


async def receive(conn) -> str | bytes:
    """The next message of a websockets client, within the tests' timeout."""
    return await asyncio.wait_for(conn.recv(), TIMEOUT)


async def receive_type(conn, kind: str) -> dict:
    """Read JSON messages until one of type ``kind``."""
    while (message := json.loads(await receive(conn)))["type"] != kind:
        pass
    return message


def inflate(payload: bytes) -> bytes:
    """A permessage-deflate message's payload, decompressed (RFC 7692 section 7.2.2)."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(payload + b"\x00\x00\xff\xff")


async def test_websockets_client_negotiates_deflate_and_gets_its_echo(http_server_client):
    """The websockets client (which offers permessage-deflate) gets it, and its text and
    binary messages echoed."""
    async with websockets_connect(ws(http_server_client, "/ws/echo")) as conn:
        assert conn.response.headers["Sec-WebSocket-Extensions"].startswith(
            "permessage-deflate")
        await conn.send(TEXT)
        assert await receive(conn) == TEXT
        await conn.send(bytes(range(256)) * 8)
        assert await receive(conn) == bytes(range(256)) * 8


async def test_chat_messages_reach_compressed_clients(http_server_client):
    """Two compressed chat clients in one room: what alice says, bob receives."""
    async with websockets_connect(ws(http_server_client, "/ws/chat/deflate?nick=alice")) as alice, \
            websockets_connect(ws(http_server_client, "/ws/chat/deflate?nick=bob")) as bob:
        await receive_type(alice, "welcome")
        await receive_type(bob, "welcome")
        await alice.send(json.dumps({"type": "message", "text": TEXT}))
        frame = await receive_type(bob, "message")
        assert (frame["from"], frame["text"]) == ("alice", TEXT)


async def test_echo_frame_is_compressed_on_the_wire(http_server_client):
    """On the wire the echo of a compressed client has RSV1 set, is smaller than the text
    and inflates to it."""
    reader, transport, head = await raw_handshake(
        port_of(http_server_client), "/ws/echo", extra_headers=OFFER)
    try:
        assert b"sec-websocket-extensions: permessage-deflate" in head.lower()
        transport.write(client_frame(OP_TEXT, TEXT.encode()))  # uncompressed: allowed
        first, payload = await read_frame_head(reader)
        assert first & 0x0F == OP_TEXT and first & RSV1
        assert len(payload) < len(TEXT) // 10
        assert inflate(payload) == TEXT.encode()
    finally:
        transport.close()


async def test_clients_without_compression_keep_the_fast_path(http_server_client, hub):
    """With --compression, a client that does not ask for it gets the prebuilt frames'
    writer and the bulk frame reader, and a compressed one Tornado's write_message and
    Tornado's reader, which still hands it every message."""
    async with websockets_connect(ws(http_server_client, "/ws/echo"), compression=None) as plain:
        await poll_until(lambda: len(hub.connections) == 1)
        [handler] = hub.connections
        assert isinstance(getattr(handler.write_envelope, "__self__", None), FrameWriter)
        assert reads_fast(handler.ws_connection)
        await plain.send("plain")
        assert await receive(plain) == "plain"
    await poll_until(lambda: not hub.connections)
    async with websockets_connect(ws(http_server_client, "/ws/echo")) as deflated:
        await poll_until(lambda: len(hub.connections) == 1)
        [handler] = hub.connections
        assert not isinstance(getattr(handler.write_envelope, "__self__", None), FrameWriter)
        assert not reads_fast(handler.ws_connection)
        await deflated.send(TEXT)
        assert await receive(deflated) == TEXT


@pytest.mark.parametrize("compression", [False])
async def test_compression_is_off_by_default(http_server_client):
    """Without --compression a client offering permessage-deflate is answered without it, and
    its echo comes back uncompressed."""
    assert Config().compression is False
    reader, transport, head = await raw_handshake(
        port_of(http_server_client), "/ws/echo", extra_headers=OFFER)
    try:
        assert b"sec-websocket-extensions" not in head.lower()
        transport.write(client_frame(OP_TEXT, b"plain"))
        first, payload = await read_frame_head(reader)
        assert not first & RSV1 and payload == b"plain"
    finally:
        transport.close()
