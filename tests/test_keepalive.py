"""Server pings: live clients stay open, a half-open client is closed and its slot freed."""

import asyncio
import json
import struct

import pytest
import tornado.web

from realtime.pubsub.hub import Hub
from server import Config, make_app
from tests.probe import add_probe
from tests.support import (
    OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, client_frame, port_of, raw_handshake, read_frame,
    receive_json, receive_type,
)

INTERVAL = 0.2
TIMEOUT = 0.2


@pytest.fixture
def closed_queue() -> "asyncio.Queue[object]":
    return asyncio.Queue()


@pytest.fixture
def config(hub: Hub) -> Config:
    return Config(hub=hub, ping_interval=INTERVAL, ping_timeout=TIMEOUT)


@pytest.fixture
def app(config: Config, closed_queue: "asyncio.Queue[object]") -> tornado.web.Application:
    app = make_app(config)
    add_probe(app, closed_queue)
    return app


async def test_client_answering_pings_stays_open(http_server_client):
    """A client that answers three pings in a row is still served afterwards."""
    reader, writer, _ = await raw_handshake(port_of(http_server_client), "/ws/echo")
    for _ in range(3):
        opcode, payload = await read_frame(reader)
        assert opcode == OP_PING
        writer.write(client_frame(OP_PONG, payload))
    writer.write(client_frame(OP_TEXT, b"alive"))
    while (frame := await read_frame(reader))[0] == OP_PING:
        writer.write(client_frame(OP_PONG, frame[1]))
    assert frame == (OP_TEXT, b"alive")
    writer.close()


async def test_half_open_client_is_closed_and_forgotten(http_server_client, hub, app,
                                                        closed_queue):
    """A client that never answers pings gets a close after interval + timeout, and the
    server forgets it (hub, per-IP slot, disconnected hook) once the TCP connection is cut."""
    reader, writer, _ = await raw_handshake(port_of(http_server_client), "/ws/probe")
    await read_frame(reader)  # the welcome
    assert (await read_frame(reader))[0] == OP_PING
    opcode, payload = await read_frame(reader)
    assert opcode == OP_CLOSE and payload[2:] == b"ping timed out"
    assert struct.unpack("!H", payload[:2])[0] == 1000

    # The half-open client does not answer the close either; Tornado waits 5 s for it.
    await asyncio.wait_for(closed_queue.get(), 10)
    assert hub.connections == []
    assert app.settings["sockets"]["admission"].ip_connections.count("127.0.0.1") == 0
    writer.close()


async def test_half_open_chat_client_frees_its_nickname(http_server_client, ws_connect):
    """A chat client that stops answering pings is closed, the room gets left, and its
    nickname can be taken again."""
    watcher = await ws_connect("/ws/chat/lobby")
    assert (await receive_json(watcher))["type"] == "welcome"
    port = port_of(http_server_client)
    reader, writer, _ = await raw_handshake(port, "/ws/chat/lobby?nick=ghost")
    await read_frame(reader)  # the welcome; from now on this client answers nothing
    assert await receive_type(watcher, "joined") == {
        "type": "joined", "room": "lobby", "nick": "ghost"}

    # Ping interval + timeout for the close frame, then Tornado's 5 s closing handshake:
    # longer than one read's default timeout, so read without it.
    left = json.loads(await asyncio.wait_for(watcher.read_message(), 10))
    assert left == {"type": "left", "room": "lobby", "nick": "ghost"}
    again = await ws_connect("/ws/chat/lobby?nick=ghost")
    assert (await receive_json(again))["nick"] == "ghost"
    writer.close()
