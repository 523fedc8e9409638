"""The inbound fast path over real sockets: frames read from the stream in bulk
(``realtime.wire.inbound`` through ``tornado_internals.CountingProtocol``) reach the
endpoints whole and in order, and a client breaking a rule gets the rule's close code."""

import json
import socket
import struct

from pathlib import Path

import pytest

from realtime.pubsub import tornado_internals
from realtime.pubsub.hub import Hub
from realtime.wire.closecodes import CloseCode
from server import Config
from tests.support import (
    OP_BINARY, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, client_frame, poll_until, port_of,
    raw_close_code, raw_handshake, read_frame, receive, receive_type,
)


@pytest.fixture
def config(hub: Hub, tmp_path: Path) -> Config:
    """Rate limits off: bursts of hundreds of frames are the point here."""
    return Config(hub=hub, data_dir=str(tmp_path / "data"), rate_limit=0, ip_rate_limit=0)


async def raw_echo(http_server_client):
    """A raw socket to /ws/echo, with room to receive what it is sent back."""
    reader, writer, head = await raw_handshake(port_of(http_server_client), "/ws/echo",
                                               receive_buffer=1 << 20)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_echo_sockets_read_through_the_bulk_reader(ws_connect, hub):
    """An uncompressed socket on this Tornado reads its frames through the fast path."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message("hello")
    assert await receive(conn) == "hello"
    [handler] = hub.connections
    assert tornado_internals.reads_fast(handler.ws_connection)


async def test_many_frames_in_one_write_are_each_echoed_in_order(http_server_client):
    """300 text and binary frames sent in one write come back one by one, in order."""
    reader, writer = await raw_echo(http_server_client)
    sent = [(OP_TEXT if n % 2 else OP_BINARY, f"frame {n} ".encode() * (n % 7))
            for n in range(300)]
    writer.write(b"".join(client_frame(opcode, payload) for opcode, payload in sent))
    assert [await read_frame(reader) for _ in sent] == sent
    writer.close()


async def test_a_fragmented_message_sent_in_pieces_is_echoed_whole(http_server_client):
    """A text message in three fragments, written a few bytes at a time with a multi-byte
    character cut between fragments, comes back as one message."""
    text = "größer als 64 KB? nein: ✓".encode()
    data = (client_frame(OP_TEXT, text[:3], fin=False)
            + client_frame(OP_CONTINUATION, text[3:10], fin=False)
            + client_frame(OP_CONTINUATION, text[10:]))
    reader, writer = await raw_echo(http_server_client)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for start in range(0, len(data), 5):
        writer.write(data[start:start + 5])
    assert await read_frame(reader) == (OP_TEXT, text)
    writer.close()


async def test_a_ping_inside_a_fragmented_message_is_answered_before_the_message(
    http_server_client
):
    """A ping between two fragments gets its pong at once; the message follows whole."""
    reader, writer = await raw_echo(http_server_client)
    writer.write(client_frame(OP_BINARY, b"first half, ", fin=False)
                 + client_frame(OP_PING, b"are you there")
                 + client_frame(OP_CONTINUATION, b"second half"))
    assert await read_frame(reader) == (OP_PONG, b"are you there")
    assert await read_frame(reader) == (OP_BINARY, b"first half, second half")
    writer.close()


def unmasked(opcode: int, payload: bytes) -> bytes:
    """A frame as only a server may send it: without a mask."""
    return bytes([0x80 | opcode, len(payload)]) + payload


BROKEN = [
    ("unmasked frame", unmasked(OP_TEXT, b"hello"), CloseCode.PROTOCOL_ERROR),
    ("reserved bit without an extension", bytes([0x40]) + client_frame(OP_TEXT, b"x")[1:],
     CloseCode.PROTOCOL_ERROR),
    ("unknown opcode", client_frame(0x3, b"x"), CloseCode.PROTOCOL_ERROR),
    ("ping of 126 bytes", client_frame(OP_PING, b"p" * 126), CloseCode.PROTOCOL_ERROR),
    ("fragmented ping", client_frame(OP_PING, b"p", fin=False), CloseCode.PROTOCOL_ERROR),
    ("continuation outside a message", client_frame(OP_CONTINUATION, b"x"),
     CloseCode.PROTOCOL_ERROR),
    ("invalid UTF-8 split across fragments",
     client_frame(OP_TEXT, b"ok \xf0\x90", fin=False)
     + client_frame(OP_CONTINUATION, b"\x28\x8c"), CloseCode.INVALID_DATA),
]


@pytest.mark.parametrize("data, code", [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
async def test_a_frame_breaking_a_rule_is_answered_with_its_close_code(
    http_server_client, hub, data, code
):
    """A client frame breaking RFC 6455 gets a close frame with the rule's code, then the
    connection ends and the server forgets it."""
    reader, writer = await raw_echo(http_server_client)
    writer.write(client_frame(OP_TEXT, b"fine") + data)
    assert await read_frame(reader) == (OP_TEXT, b"fine")  # what came before is handled
    assert await raw_close_code(reader) == code
    assert hub.connections == []
    writer.close()


async def test_chat_messages_and_pings_in_one_write_all_arrive(ws_connect, http_server_client):
    """A chat client's ping and two messages in one write: the pong, then both messages
    reach another member, in order."""
    listener = await ws_connect("/ws/chat/bulk?nick=listener")
    await receive_type(listener, "welcome")
    reader, writer, _ = await raw_handshake(port_of(http_server_client),
                                            "/ws/chat/bulk?nick=talker", receive_buffer=1 << 20)
    assert json.loads((await read_frame(reader))[1])["type"] == "welcome"
    writer.write(client_frame(OP_PING, b"p")
                 + client_frame(OP_TEXT, json.dumps({"type": "message", "text": "one"}).encode())
                 + client_frame(OP_TEXT, json.dumps({"type": "message", "text": "two"}).encode()))
    assert [(await receive_type(listener, "message"))["text"] for _ in range(2)] == [
        "one", "two"]
    while (frame := await read_frame(reader))[0] != OP_PONG:
        pass
    assert frame == (OP_PONG, b"p")
    writer.close()


async def test_a_close_frame_in_a_burst_ends_the_reading(http_server_client, hub):
    """Frames written after the client's close frame are not echoed; the close is."""
    reader, writer = await raw_echo(http_server_client)
    writer.write(client_frame(OP_TEXT, b"before") + client_frame(0x8, struct.pack("!H", 1000))
                 + client_frame(OP_TEXT, b"after"))
    assert await read_frame(reader) == (OP_TEXT, b"before")
    assert await raw_close_code(reader) == 1000
    assert hub.connections == []
    writer.close()


@pytest.mark.parametrize("ending", ["shutdown", "reset"])
async def test_a_client_that_ends_its_tcp_connection_is_forgotten(
    http_server_client, hub, ending
):
    """A client that shuts its side of the TCP connection, or resets it, while the server
    waits for its next frame is forgotten at once, after its last frame was echoed."""
    reader, writer = await raw_echo(http_server_client)
    writer.write(client_frame(OP_TEXT, b"last"))
    assert await read_frame(reader) == (OP_TEXT, b"last")
    assert len(hub.connections) == 1
    if ending == "shutdown":
        writer.write_eof()
    else:
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.abort()  # SO_LINGER 0: the close sends a reset
    await poll_until(lambda: hub.connections == [])


async def test_a_burst_answered_at_once_is_not_taken_for_a_slow_consumer(
    http_server_client, hub
):
    """The answers to a burst of frames read at once go out together, and while they are
    gathered they do not count against --max-pending-bytes: a client that reads is never
    dropped for sending many frames in one write."""
    hub.max_pending_bytes = 1024
    reader, writer = await raw_echo(http_server_client)
    sent = [(OP_TEXT, b"%03d" % n + b"x" * 97) for n in range(100)]  # 10 KB of answers
    writer.write(b"".join(client_frame(opcode, payload) for opcode, payload in sent))
    assert [await read_frame(reader) for _ in sent] == sent
    assert len(hub.connections) == 1
    writer.close()
