"""The lifecycle rule, route by route: a client that leaves while its connection awaits
something before it is fully open (a poll lookup, a chat state call, a nickname) gets its
slot, gauges and subscriptions back at once, and leaving so 150 times locks nobody out.

Each await point is held by a gate (the store's or chat state's method waits on an event
the test sets), the client closes with FIN or resets (RST) while it is held, and the
address's count and every connection gauge must be back where they were before the gate
opens; once it opens, the hub's connections and topics and the room's readers follow.
"""

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import pytest
import tornado.netutil

from handlers.apps import AppEventStreamHandler, AppSocketHandler
from handlers.chat import ChatSocketHandler
from handlers.chathttp import ChatEventStreamHandler, ChatLongPollHandler
from handlers.tcp import ChatLineServer
from handlers.vote import VoteEventStreamHandler, VoteSocketHandler
from server import Config
from tests.eventstream import EventStream
from tests.support import TIMEOUT, closed, connect, poll_until, port_of, receive, receive_json

IP = "127.0.0.1"
COOKIE = "lifecycle-cookie-0123456789"  # a valid chat cookie (16 to 64 URL-safe characters)
FRESH_COOKIE = "lifecycle-fresh-0123456789"
ROOM = "lobby"
REPEATS = 150  # more than --max-connections-per-ip (100): a leak would lock the address out


@pytest.fixture
def config(hub, tmp_path) -> Config:
    """The default cap of 100 per address; no handshake or per-address frame budget, so
    150 quick requests are refused only if slots leak."""
    return Config(hub=hub, data_dir=str(tmp_path / "data"), handshake_rate_limit=0,
                  ip_rate_limit=0)


@pytest.fixture
def app(running_app):
    """The application with its chat state started."""
    return running_app


@pytest.fixture
def tcp_port(app, io_loop) -> Iterator[int]:
    """The raw TCP chat on the test's app, on a loopback port; stopped after the test."""
    server = ChatLineServer.for_app(app)
    sockets = tornado.netutil.bind_sockets(0, IP)
    server.add_sockets(sockets)
    yield sockets[0].getsockname()[1]
    server.stop()


class Gate:
    """Holds every call of one async method at its start until ``open()``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> None:
        self.reached: asyncio.Queue[None] = asyncio.Queue()
        self._open = asyncio.Event()
        original = getattr(target, name)

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.put_nowait(None)
            await self._open.wait()
            return await original(*args, **kwargs)

        monkeypatch.setattr(target, name, held)

    async def wait_reached(self) -> None:
        """Until one more call is held at the gate."""
        await asyncio.wait_for(self.reached.get(), TIMEOUT)

    def open(self) -> None:
        self._open.set()


class Noticed:
    """Tells when the server noticed a client leave: the route's handler class has its
    ``on_connection_close`` called (Tornado's hook for it). None for the TCP lines."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, handler: Optional[type]) -> None:
        self.closes: asyncio.Queue[None] = asyncio.Queue()
        if handler is None:
            return
        original = handler.on_connection_close

        def notice(this: Any) -> None:
            self.closes.put_nowait(None)
            original(this)

        monkeypatch.setattr(handler, "on_connection_close", notice)
        self.watching = True

    watching = False

    async def wait(self) -> None:
        """Until the server has noticed one more client leave (at once for TCP)."""
        if self.watching:
            await asyncio.wait_for(self.closes.get(), TIMEOUT)


def ws_request(path: str) -> Callable[[int], bytes]:
    def request(port: int) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    return request


def http_request(path: str, cookie: Optional[str] = None) -> Callable[[int], bytes]:
    def request(port: int) -> bytes:
        cookie_line = f"Cookie: chat_id={cookie}\r\n" if cookie else ""
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie_line}\r\n".encode()
    return request


def fresh_cookie_request(path: str) -> Callable[[int], bytes]:
    """As ``http_request``, with a chat cookie of its own each time: one browser's event
    streams share its HTTP session, whose joins go one at a time, so only a stream of
    another browser reaches the state's join while an earlier one is held there."""
    serials = iter(range(1_000_000))

    def request(port: int) -> bytes:
        return http_request(path, f"lifecycle-browser-{next(serials):08d}")(port)
    return request


def tcp_lines(*lines: str) -> Callable[[int], bytes]:
    return lambda port: "".join(line + "\n" for line in lines).encode()


@dataclass(frozen=True)
class Point:
    """One await point of one route: where the gate is and what reaches it."""

    name: str
    target: str  # "polls", "chat" or "app_state": the app setting whose method is held
    method: str
    request: Callable[[int], bytes]
    handler: Optional[type] = None  # the route's handler class (None: the TCP lines)
    tcp: bool = False
    session: bool = False  # needs this cookie's long-poll session to exist first
    repeatable: bool = True  # every request reaches the gate (no lock or shared future)
    # What the client leaves behind by design: a long-poll session it opened lives on, and a
    # nickname its session took is held by the session (no longer an anonymous reader).
    leaves_session: bool = False
    readers_change: int = 0


POINTS = [
    Point("ws_vote-lookup", "polls", "get", ws_request("/ws/vote/demo"), VoteSocketHandler),
    Point("ws_vote-snapshot", "polls", "snapshot", ws_request("/ws/vote/demo"),
          VoteSocketHandler),
    Point("sse_vote-lookup", "polls", "get", http_request("/sse/vote/demo"),
          VoteEventStreamHandler),
    Point("sse_vote-snapshot", "polls", "snapshot", http_request("/sse/vote/demo"),
          VoteEventStreamHandler),
    Point("ws_chat-enter", "chat", "enter", ws_request(f"/ws/chat/{ROOM}"),
          ChatSocketHandler),
    Point("ws_chat-nick", "chat", "join", ws_request(f"/ws/chat/{ROOM}?nick=alice"),
          ChatSocketHandler),
    Point("sse_chat-enter", "chat", "enter", http_request(f"/sse/chat/{ROOM}"),
          ChatEventStreamHandler),
    Point("sse_chat-nick", "chat", "join", fresh_cookie_request(f"/sse/chat/{ROOM}?nick=alice"),
          ChatEventStreamHandler),
    Point("poll_chat-session", "chat", "enter",
          http_request(f"/poll/chat/{ROOM}?since=0", FRESH_COOKIE), ChatLongPollHandler,
          repeatable=False,
          leaves_session=True),
    Point("poll_chat-nick", "chat", "join",
          http_request(f"/poll/chat/{ROOM}?since=0&nick=alice", COOKIE), ChatLongPollHandler,
          session=True,
          repeatable=False, readers_change=-1),
    Point("poll_chat-replay", "chat", "replay",
          http_request(f"/poll/chat/{ROOM}?since=0", COOKIE), ChatLongPollHandler,
          session=True),
    Point("poll_chat-anonymous", "chat", "enter", http_request(f"/poll/chat/{ROOM}?since=0"),
          ChatLongPollHandler),
    Point("ws_counter-state", "app_state", "get", ws_request("/ws/counter/demo"),
          AppSocketHandler),
    Point("sse_counter-state", "app_state", "get", http_request("/sse/counter/demo"),
          AppEventStreamHandler),
    Point("tcp-join", "chat", "enter", tcp_lines(f"/join {ROOM}"), tcp=True),
    Point("tcp-nick", "chat", "join", tcp_lines("/nick alice", f"/join {ROOM}"), tcp=True),
]
REPEATED = [point for point in POINTS if point.repeatable]


# What a probe opens, by the route's endpoint family.
PATHS = {"vote": "vote/demo", "chat": f"chat/{ROOM}", "counter": "counter/demo"}


def counts(app) -> dict[str, Any]:
    """The address's open connections and every non-zero connection gauge."""
    gauges = {sample.labels["endpoint"]: sample.value
              for sample in app.settings["metrics"].connections.collect()[0].samples
              if sample.value}
    slots = app.settings["sockets"]["admission"].ip_connections.count(IP)
    return {"slots": slots, "gauges": gauges}


def settled(app) -> tuple[int, int, int]:
    """The hub's connections and topics and the room's anonymous readers."""
    hub = app.settings["hub"]
    return len(hub.connections), hub.topic_count(), app.settings["chat"].readers(ROOM)


async def send_request(port: int, data: bytes) -> socket.socket:
    """A raw client that sent ``data`` (a request, or lines) and reads nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (IP, port))
    await loop.sock_sendall(sock, data)
    return sock


def leave(sock: socket.socket, how: str) -> None:
    """Close with a FIN (the socket is kept, to be closed after the test) or a reset."""
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    else:
        sock.shutdown(socket.SHUT_WR)


async def start_session(http_server_client) -> None:
    """Open COOKIE's long-poll session in the room with a request that is not held."""
    response = await http_server_client.fetch(
        f"/poll/chat/{ROOM}?since=0&wait=0", headers={"Cookie": f"chat_id={COOKIE}"})
    assert response.code == 200


async def probe(point: Point, http_server_client, port: int) -> None:
    """One client all the way through the route (its calls past the open gate) and out.

    The store and the chat state answer in order, so once it is through, the clients held
    before it have gone on past the gate too: what they would leak is leaked by then.
    """
    route = point.name.split("-")[0]
    if point.tcp:
        reader, writer = await asyncio.open_connection(IP, port)
        writer.write(f"/join {ROOM}\n".encode())
        while not (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(b"* online"):
            pass
        writer.write(b"/quit\n")
        await asyncio.wait_for(reader.read(), TIMEOUT)  # to the end: the server closed
        writer.close()
        await writer.wait_closed()
    elif route.startswith("ws_"):
        conn = await connect(http_server_client, "/ws/" + PATHS[route[3:]])
        await receive_json(conn)  # the poll, the welcome, the count: connected() is done
        conn.close()
        await closed(conn)
    elif route.startswith("sse_"):
        stream = await EventStream.open(port, "/sse/" + PATHS[route[4:]])
        await stream.frame()
        stream.close()
    else:
        headers = {"Cookie": f"chat_id={COOKIE}"} if point.session else {}
        response = await http_server_client.fetch(f"/poll/chat/{ROOM}?since=0&wait=0",
                                                  headers=headers)
        assert response.code == 200


async def can_connect(http_server_client) -> None:
    """The address may still open a socket."""
    conn = await connect(http_server_client, "/ws/echo")
    await conn.write_message("still welcome")
    assert await receive(conn) == "still welcome"
    conn.close()


def port_for(point: Point, http_server_client, request: pytest.FixtureRequest) -> int:
    return request.getfixturevalue("tcp_port") if point.tcp else port_of(http_server_client)


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("point", POINTS, ids=[point.name for point in POINTS])
async def test_a_client_leaving_at_an_await_point_gets_everything_back_at_once(
    app, http_server_client, monkeypatch, request, point, how
):
    """A client gone while the route awaits has its slot and gauges back before the await
    ends, and its hub connection, topics and reader place once it has ended."""
    port = port_for(point, http_server_client, request)
    if point.session:
        await start_session(http_server_client)
    before, hub_before = counts(app), settled(app)
    gate = Gate(monkeypatch, app.settings[point.target], point.method)
    noticed = Noticed(monkeypatch, point.handler)
    sock = await send_request(port, point.request(port))
    try:
        await gate.wait_reached()
        leave(sock, how)
        await noticed.wait()  # the gate holds the await while the server sees the client go
        expected = before
        if point.leaves_session:
            gauges = dict(before["gauges"], long_poll_session=1.0)
            expected = {"slots": before["slots"] + 1, "gauges": gauges}
        await poll_until(lambda: counts(app) == expected)  # the gate still holds the await
        gate.open()
        await probe(point, http_server_client, port)
        readers = hub_before[2] + point.readers_change + (1 if point.leaves_session else 0)
        hub_before = (hub_before[0], hub_before[1], readers)
        await poll_until(lambda: settled(app) == hub_before and counts(app) == expected)
    finally:
        gate.open()
        sock.close()


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("point", REPEATED, ids=[point.name for point in REPEATED])
async def test_150_clients_leaving_at_an_await_point_lock_nobody_out(
    app, http_server_client, monkeypatch, request, point, how
):
    """150 clients of one address leaving at the same await point leave it able to
    connect, with its count and gauges where they were."""
    port = port_for(point, http_server_client, request)
    if point.session:
        await start_session(http_server_client)
    before, hub_before = counts(app), settled(app)
    gate = Gate(monkeypatch, app.settings[point.target], point.method)
    noticed = Noticed(monkeypatch, point.handler)
    kept: list[socket.socket] = []
    try:
        for _ in range(REPEATS):
            sock = await send_request(port, point.request(port))
            kept.append(sock)
            await gate.wait_reached()  # admitted: a leaked slot would refuse one before this
            leave(sock, how)
            await noticed.wait()
        await poll_until(lambda: counts(app) == before)
        gate.open()
        await probe(point, http_server_client, port)
        await poll_until(lambda: settled(app) == hub_before and counts(app) == before)
        await can_connect(http_server_client)
    finally:
        gate.open()
        for sock in kept:
            sock.close()
