"""One room, every transport: a WebSocket, a Server-Sent Events stream, a long-polling
client and a raw TCP client in the same room each send one message and each receive all
four, on the embedded chat state and on Redis."""

import asyncio
import json
import time
from typing import Any

import pytest
import tornado.netutil

from handlers.tcp import ChatLineServer
from server import Config
from tests.conftest import backend_settings
from tests.eventstream import EventStream
from tests.support import TIMEOUT, port_of, receive_json, send_json
from tests.test_chat_http import fetch
from tests.test_tcp import LineClient, tcp_connections

ROOM = "mix"
TEXTS = {"ws": "from the websocket", "sse": "from the event stream",
         "poll": "from the long-poll", "tcp": "from the tcp line"}
SSE_COOKIE = "sse-browser-0123456789ab"
POLL_COOKIE = "poll-browser-0123456789a"


@pytest.fixture(params=["embedded", "redis"])
def backend(request):
    """The test runs on the embedded chat state and on Redis."""
    return request.param


@pytest.fixture
def config(backend, tmp_path, request):
    """The embedded state, or ``--redis-url`` on the session's redis-server under a key
    prefix of the test's own."""
    return Config(data_dir=str(tmp_path / "data"), **backend_settings(backend, request))


@pytest.fixture
def app(running_app):
    """The application, its stores and broker started (conftest's ``running_app``)."""
    return running_app


@pytest.fixture
def tcp_port(app, io_loop):
    """The raw TCP chat on the test's app, on a free loopback port; its connections end
    before the app shuts down."""
    server = ChatLineServer.for_app(app)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield sockets[0].getsockname()[1]
    server.stop()
    for connection in tcp_connections(app.settings["hub"]):
        connection.end("test over")


async def ws_messages(conn: Any, count: int) -> set[str]:
    """The texts of the next ``count`` message frames on a WebSocket."""
    texts = set()
    while len(texts) < count:
        frame = await receive_json(conn)
        if frame["type"] == "message":
            texts.add(frame["text"])
    return texts


async def sse_messages(stream: EventStream, count: int) -> set[str]:
    """The texts of the next ``count`` message events on an event stream."""
    return {(await stream.frame_of("message"))["text"] for _ in range(count)}


async def tcp_messages(client: LineClient, count: int) -> set[str]:
    """The texts of the next ``count`` public lines (``[room] sender: text``) on TCP."""
    texts = set()
    while len(texts) < count:
        line = await client.line()
        if line.startswith(f"[{ROOM}] "):
            texts.add(line.split(": ", 1)[1])
    return texts


async def polled_messages(server: Any, since: int, count: int) -> set[str]:
    """The texts of ``count`` messages read by long-polling from ``since`` on."""
    texts: set[str] = set()
    deadline = time.monotonic() + TIMEOUT
    while len(texts) < count:
        assert time.monotonic() < deadline, f"long-polling saw only {texts}"
        response = await fetch(server, f"/poll/chat/{ROOM}?since={since}", cookie=POLL_COOKIE)
        assert response.code == 200, response.body
        body = json.loads(response.body)
        texts |= {m["text"] for m in body["messages"] if m["type"] == "message"}
        since = body["last_id"] if body["last_id"] is not None else since
    return texts


async def post(server: Any, text: str, cookie: str) -> None:
    """Send a public message by POST."""
    response = await fetch(server, f"/poll/chat/{ROOM}", "POST", {"text": text}, cookie)
    assert response.code == 200, response.body


async def test_a_message_from_each_transport_reaches_every_other(
    http_server_client, ws_connect, tcp_port
):
    """WebSocket, SSE, long-poll and TCP clients of one room each receive all four
    messages, one sent through each transport."""
    ws = await ws_connect(f"/ws/chat/{ROOM}")
    assert (await receive_json(ws))["type"] == "welcome"
    stream = await EventStream.open(port_of(http_server_client), f"/sse/chat/{ROOM}",
                                    {"Cookie": f"chat_id={SSE_COOKIE}"})
    try:
        assert (await stream.frame())["type"] == "welcome"
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        tcp = LineClient(reader, writer)
        try:
            assert (await tcp.line()).startswith("* hello: ")
            await tcp.join(ROOM)
            start = json.loads((await fetch(http_server_client, f"/poll/chat/{ROOM}?wait=0",
                                            cookie=POLL_COOKIE)).body)
            since = start["last_id"] if start["last_id"] is not None else 0
            # Every transport listens from here on; each now sends its one message.
            await send_json(ws, {"type": "message", "text": TEXTS["ws"]})
            await post(http_server_client, TEXTS["sse"], SSE_COOKIE)
            await post(http_server_client, TEXTS["poll"], POLL_COOKIE)
            tcp.send(TEXTS["tcp"])
            everything = set(TEXTS.values())
            received = await asyncio.wait_for(asyncio.gather(
                ws_messages(ws, 4), sse_messages(stream, 4), tcp_messages(tcp, 4),
                polled_messages(http_server_client, since, 4)), 3 * TIMEOUT)
            for texts, transport in zip(received, ["WebSocket", "SSE", "TCP", "long-poll"]):
                assert texts == everything, f"{transport} got {texts}"
        finally:
            tcp.close()
    finally:
        stream.close()
