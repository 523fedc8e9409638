"""The raw TCP chat over real sockets: a ``ChatLineServer`` on the test's application, its
clients ``asyncio`` streams, meeting WebSocket clients of the same app in the same rooms."""

import asyncio
import signal
import socket
from typing import Optional, Union
from urllib.parse import quote

import pytest
import redis.asyncio
import tornado.netutil

from handlers.tcp import DEFAULT_JOIN_TIMEOUT, ChatLineConnection, ChatLineServer
from realtime.chat import lines
from realtime.chat.lines import MAX_LINE_BYTES
from server import Config
from tests.conftest import backend_settings
from tests.process import start_server_process
from tests.support import (
    TIMEOUT, free_port, poll_until, receive_json, send_json, wait_listening,
)


@pytest.fixture
def backend():
    """Embedded unless a test parametrizes it (the cross-transport tests also run on Redis)."""
    return "embedded"


@pytest.fixture
def config(backend, hub, tmp_path, request):
    """The embedded default, or ``--redis-url`` on the session's redis-server under a prefix
    of the test's own; a test's indirect parameter adds options."""
    options = getattr(request, "param", {})
    if backend == "embedded":
        return Config(hub=hub, data_dir=str(tmp_path / "data"), **options)
    return Config(data_dir=str(tmp_path / "data"), **backend_settings(backend, request),
                  **options)


@pytest.fixture
def app(running_app):
    """The application, its stores and broker started (conftest's ``running_app``)."""
    return running_app


@pytest.fixture
def join_timeout():
    """Seconds a TCP connection may stay without joining (a test may parametrize it)."""
    return DEFAULT_JOIN_TIMEOUT


@pytest.fixture
def tcp_port(app, join_timeout, io_loop):
    """A ``ChatLineServer`` on the test's app, on a free loopback port; after the test it
    stops, and every connection it still has is ended and gone before the app shuts down."""
    server = ChatLineServer.for_app(app, join_timeout=join_timeout)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield sockets[0].getsockname()[1]
    server.stop()
    hub = app.settings["hub"]

    async def ended():
        for connection in tcp_connections(hub):
            connection.end("test over")
        await poll_until(lambda: not tcp_connections(hub), timeout=10)

    io_loop.run_sync(ended, timeout=15)


def tcp_connections(hub):
    """The server's side of the TCP clients still open."""
    return [c for c in hub.connections if isinstance(c, ChatLineConnection)]


class LineClient:
    """A raw TCP chat client: lines out, lines in, each awaited with a timeout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, *texts: Union[str, bytes]) -> None:
        """Write each text as a line (bytes as they are)."""
        for text in texts:
            self.writer.write(text if isinstance(text, bytes) else text.encode() + b"\n")

    async def line(self) -> str:
        """The next line, without its newline; fails if the connection ends first."""
        data = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert data.endswith(b"\n"), f"the connection ended: {data!r}"
        return data[:-1].decode("utf-8")

    async def ended(self) -> bytes:
        """Everything left until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), TIMEOUT)

    async def join(self, room: str = "lobby", nick: Optional[str] = None) -> list[str]:
        """``/nick`` (if given) then ``/join``; the welcome's first two lines."""
        if nick is not None:
            self.send(f"/nick {nick}")
            assert await self.line() == f"* you will be {nick} in the room you join"
        self.send(f"/join {room}")
        return [await self.line(), await self.line()]

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def tcp_connect(tcp_port):
    """``await tcp_connect()``: a client of the test's TCP chat, greeting read; all closed
    after the test."""
    clients: list[LineClient] = []

    async def connect(greeted: bool = True, receive_buffer: Optional[int] = None) -> LineClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", tcp_port))
        client = LineClient(*await asyncio.open_connection(sock=sock))
        clients.append(client)
        if greeted:
            assert (await client.line()).startswith("* hello: ")
        return client

    yield connect
    for client in clients:
        client.close()


async def ws_join(ws_connect, room="lobby", nick=None):
    """A WebSocket in ``room`` (with ``?nick=``); its welcome (and joined) read."""
    path = f"/ws/chat/{room}" + (f"?nick={quote(nick)}" if nick is not None else "")
    conn = await ws_connect(path)
    assert (await ws_receive(conn))["type"] == "welcome"
    if nick is not None:
        assert await ws_receive(conn) == {"type": "joined", "room": room, "nick": nick}
    return conn


async def ws_receive(conn):
    """The next frame other than ``readers`` (anonymous counts change as clients come)."""
    while True:
        frame = await receive_json(conn)
        if frame["type"] != "readers":
            return frame


async def test_nick_before_join_carries_into_the_room(tcp_connect, ws_connect):
    """A /nick before /join is the nickname the room gets: welcome, online and joined."""
    watcher = await ws_join(ws_connect)
    alice = await tcp_connect()
    assert await alice.join(nick="alice") == [
        "* you are in lobby as alice", "* online in lobby: alice; anonymous readers: 1"]
    assert await alice.line() == "* alice joined lobby"
    assert await ws_receive(watcher) == {"type": "joined", "room": "lobby", "nick": "alice"}
    alice.send("hello")
    assert await alice.line() == "[lobby] alice: hello"


@pytest.mark.parametrize("second", ["alice", "ALICE", "ａｌｉｃｅ", " alice "])
async def test_nick_taken_by_another_tcp_connection(tcp_connect, second):
    """A nickname held by one TCP connection is nick_taken for another, which stays."""
    alice = await tcp_connect()
    await alice.join(nick="alice")
    other = await tcp_connect()
    await other.join()
    other.send(f"/nick {second}")
    assert (await other.line()).startswith("! nick_taken: The nickname ")
    other.send("still here")
    assert await other.line() == "[lobby] anonymous: still here"


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_nick_taken_between_tcp_and_websocket(tcp_connect, ws_connect, backend):
    """A nickname held by a browser is nick_taken for a TCP client, and the other way round."""
    await ws_join(ws_connect, nick="alice")
    tcp = await tcp_connect()
    assert await tcp.join(nick="Alice") == [
        "* you are in lobby without a nickname (/nick <name> takes one)",
        "* online in lobby: alice; anonymous readers: 1"]
    assert (await tcp.line()).startswith("! nick_taken: ")

    tcp.send("/nick bob")
    assert await tcp.line() == "* bob joined lobby"
    browser = await ws_join(ws_connect)
    await send_json(browser, {"type": "join", "nick": "BOB"})
    assert (await ws_receive(browser))["code"] == "nick_taken"


async def test_private_message_reaches_only_its_recipient(tcp_connect, ws_connect):
    """/msg reaches its recipient and its sender only: no third TCP client, no browser."""
    browser = await ws_join(ws_connect)
    alice, bob, carol = [await tcp_connect() for _ in range(3)]
    nicks = ["alice", "bob", "carol"]
    for n, client in enumerate((alice, bob, carol)):
        await client.join(nick=nicks[n])
    for n, client in enumerate((alice, bob, carol)):
        assert [await client.line() for _ in nicks[n:]] == [
            f"* {nick} joined lobby" for nick in nicks[n:]]

    alice.send("/msg bob psst", "public")
    assert await bob.line() == "[lobby] alice -> you: psst"
    assert await alice.line() == "[lobby] you -> bob: psst"
    for client in (alice, bob, carol):
        assert await client.line() == "[lobby] alice: public"
    for _ in range(3):
        assert (await ws_receive(browser))["type"] == "joined"
    assert (await ws_receive(browser))["text"] == "public"


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_whoever_takes_a_nickname_later_never_sees_its_private_messages(
    tcp_connect, app, backend
):
    """Whoever takes a nickname after its holder left never sees that holder's private messages."""
    alice, bob = await tcp_connect(), await tcp_connect()
    await alice.join(room="r", nick="alice")
    await bob.join(room="r", nick="bob")
    bob.send("/msg alice secret", "public")
    assert await bob.line() == "* bob joined r"
    assert await bob.line() == "[r] you -> alice: secret"
    assert await bob.line() == "[r] bob: public"
    for client in (alice, bob):
        client.send("/quit")
        while await client.line() != "* bye":
            pass
        assert await client.ended() == b""
    await poll_until(lambda: not tcp_connections(app.settings["hub"]))  # both left

    later = await tcp_connect()
    assert await later.join(room="r", nick="alice") == [
        "* you are in r as alice", "* online in r: alice; anonymous readers: 0"]
    assert [await later.line() for _ in range(3)] == [
        "* 1 recent message:", "[r] bob: public", "* alice joined r"]


async def test_private_message_errors(tcp_connect):
    """/msg from anonymous, to nobody or without text is refused; the connection stays."""
    anonymous, alice = await tcp_connect(), await tcp_connect()
    await anonymous.join()
    await alice.join(nick="alice")
    anonymous.send("/msg alice hi")
    assert await anonymous.line() == "* alice joined lobby"
    assert (await anonymous.line()).startswith("! nick_required: ")
    alice.send("/msg nobody hi", "/msg bob", "still here")
    assert await alice.line() == "* alice joined lobby"
    assert (await alice.line()).startswith("! no_such_user: Nobody called nobody")
    assert (await alice.line()).startswith("! bad_message: A private message is /msg")
    assert await alice.line() == "[lobby] alice: still here"


@pytest.mark.parametrize("garbage, answers", [
    (b"\xff\xfe\xfd\n", ["bad_message"]),
    (b"nul\x00inside\n", ["bad_message"]),
    (b"\x1b[2J\x1b[31mred\n", ["bad_message"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\n", ["bad_message"] * 3),
    (b"x" * (MAX_LINE_BYTES + 1) + b"\n", ["too_long"]),
    (b"y" * (3 * MAX_LINE_BYTES) + b"the rest\n", ["too_long"]),
    (b"/bogus\n", ["unknown_command"]),
    (b"/join no.dots\n", ["bad_room"]),
    (b"/nick \xe2\x80\x8bzero\n", ["bad_nick"]),
], ids=["invalid-utf8", "nul", "escapes", "binary", "over-long", "much-too-long", "unknown",
        "bad-room", "bad-nick"])
async def test_garbage_is_answered_and_the_connection_still_works(tcp_connect, garbage, answers):
    """Garbage, binary and over-long lines get ! lines; the next line works as usual."""
    client = await tcp_connect()
    await client.join()
    client.send(garbage, "after")
    for code in answers:
        assert (await client.line()).startswith(f"! {code}: ")
    assert await client.line() == "[lobby] anonymous: after"


async def test_an_endless_line_is_never_buffered(tcp_connect, app):
    """1 MiB without a newline is one too_long, never held beyond the line bound."""
    client = await tcp_connect()
    await client.join()
    chunk = b"z" * 65536
    for _ in range(16):
        client.send(chunk)
        await client.writer.drain()
    assert (await client.line()).startswith("! too_long: ")
    (connection,) = tcp_connections(app.settings["hub"])
    assert len(connection._splitter._partial) <= MAX_LINE_BYTES
    client.send(b"\n", "after")
    assert await client.line() == "[lobby] anonymous: after"


async def test_lines_before_join_ask_to_join(tcp_connect):
    """A message, /msg or /who before /join gets not_joined; /help answers anywhere."""
    client = await tcp_connect()
    client.send("hello", "/msg bob hi", "/who", "/help")
    for _ in range(3):
        assert await client.line() == "! not_joined: Join a room first: /join <room>."
    assert await client.line() == "* commands:"
    for _ in lines.COMMANDS:
        assert (await client.line()).startswith("*   /")


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_messages_cross_between_tcp_and_websocket(tcp_connect, ws_connect, backend):
    """Public and private messages cross between a TCP client and a browser, both ways."""
    browser = await ws_join(ws_connect, nick="alice")
    tcp = await tcp_connect()
    await tcp.join(nick="bob")
    assert await tcp.line() == "* bob joined lobby"
    assert await ws_receive(browser) == {"type": "joined", "room": "lobby", "nick": "bob"}

    tcp.send("hi from tcp")
    frame = await ws_receive(browser)
    assert (frame["type"], frame["from"], frame["text"]) == ("message", "bob", "hi from tcp")
    assert await tcp.line() == "[lobby] bob: hi from tcp"

    await send_json(browser, {"type": "message", "text": "hi from the browser"})
    assert await tcp.line() == "[lobby] alice: hi from the browser"
    await send_json(browser, {"type": "message", "text": "psst", "to": "bob"})
    assert await tcp.line() == "[lobby] alice -> you: psst"

    tcp.send("/msg alice back")
    assert await tcp.line() == "[lobby] you -> alice: back"
    while (frame := await ws_receive(browser))["type"] != "private" or frame["from"] != "bob":
        pass
    assert (frame["to"], frame["text"]) == ("alice", "back")


async def test_bidi_override_reaches_tcp_neutralised(tcp_connect, ws_connect):
    """A browser's message holding a right-to-left override (U+202E) shows on a TCP client
    with U+FFFD in its place, so it cannot turn the line around."""
    browser = await ws_join(ws_connect, nick="alice")
    tcp = await tcp_connect()
    await tcp.join()
    await send_json(browser, {"type": "message", "text": "see \u202egnp.exe"})
    assert await tcp.line() == "[lobby] alice: see \ufffdgnp.exe"


async def test_padded_tcp_message_cannot_forge_a_line(tcp_connect):
    """A message padded with spaces so that a fake "[lobby] admin:" would start a terminal
    row arrives with that part on a row after the continuation marker."""
    sender, reader = await tcp_connect(), await tcp_connect()
    await sender.join(nick="mallory")
    await reader.join()
    sender.send("hi" + " " * 150 + "[lobby] admin: your password please")
    rows = [await reader.line()]
    while not rows[-1].endswith("your password please"):
        rows.append(await reader.line())
    assert rows[0].startswith("[lobby] mallory: hi")
    assert len(rows) > 1 and all(row.startswith(lines.CONTINUATION) for row in rows[1:])


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_presence_crosses_between_tcp_and_websocket(tcp_connect, ws_connect, backend):
    """joined, renamed and left cross between a TCP client and a browser, both ways."""
    tcp = await tcp_connect()
    await tcp.join()
    browser = await ws_join(ws_connect, nick="alice")
    assert await tcp.line() == "* alice joined lobby"

    tcp.send("/nick bob")
    assert await ws_receive(browser) == {"type": "joined", "room": "lobby", "nick": "bob"}
    tcp.send("/nick rob")
    assert await ws_receive(browser) == {
        "type": "renamed", "room": "lobby", "from": "bob", "to": "rob"}
    tcp.send("/who")
    assert await tcp.line() == "* bob joined lobby"
    assert await tcp.line() == "* bob is now rob in lobby"
    assert await tcp.line() == "* online in lobby: alice, rob; anonymous readers: 0"

    browser.close()
    assert await tcp.line() == "* alice left lobby"
    watcher = await ws_join(ws_connect)
    tcp.send("/quit")
    assert await ws_receive(watcher) == {"type": "left", "room": "lobby", "nick": "rob"}


async def test_welcome_has_the_recent_messages(tcp_connect, ws_connect):
    """Joining shows who is online and the recent messages, oldest first, as lines."""
    browser = await ws_join(ws_connect, nick="alice")
    for text in ("one", "two"):
        await send_json(browser, {"type": "message", "text": text})
        assert (await ws_receive(browser))["text"] == text
    tcp = await tcp_connect()
    assert await tcp.join() == [
        "* you are in lobby without a nickname (/nick <name> takes one)",
        "* online in lobby: alice; anonymous readers: 1"]
    assert [await tcp.line() for _ in range(3)] == [
        "* 2 recent messages:", "[lobby] alice: one", "[lobby] alice: two"]


async def test_a_browser_message_cannot_break_a_line_or_drive_a_terminal(
    tcp_connect, ws_connect
):
    """A browser's newlines and escapes reach a TCP client as visible characters, on one line."""
    browser = await ws_join(ws_connect, nick="mallory")
    tcp = await tcp_connect()
    await tcp.join()
    await send_json(browser, {"type": "message", "text": "a\n* root joined lobby\x1b]0;x\x07"})
    assert await tcp.line() == "[lobby] mallory: a\u240a* root joined lobby\u241b]0;x\u2407"


async def test_join_another_room_leaves_the_first(tcp_connect, ws_connect):
    """/join elsewhere leaves the room (left is announced) and takes the nickname along."""
    watcher = await ws_join(ws_connect, room="one")
    tcp = await tcp_connect()
    await tcp.join(room="one", nick="alice")
    assert await ws_receive(watcher) == {"type": "joined", "room": "one", "nick": "alice"}
    assert await tcp.line() == "* alice joined one"
    assert await tcp.join(room="two") == [
        "* you are in two as alice", "* online in two: alice; anonymous readers: 0"]
    assert await ws_receive(watcher) == {"type": "left", "room": "one", "nick": "alice"}
    await send_json(watcher, {"type": "message", "text": "not for two"})
    tcp.send("/join two", "in two")
    assert await tcp.line() == "* alice joined two"
    assert await tcp.line() == "* you are in two already"
    assert await tcp.line() == "[two] alice: in two"


async def test_quit_says_bye_and_closes(tcp_connect, ws_connect):
    """/quit answers "* bye", closes, and the room hears the nickname left."""
    watcher = await ws_join(ws_connect)
    tcp = await tcp_connect()
    await tcp.join(nick="alice")
    tcp.send("/quit", "never read")
    assert await tcp.line() == "* alice joined lobby"
    assert await tcp.line() == "* bye"
    assert await tcp.ended() == b""
    assert await ws_receive(watcher) == {"type": "joined", "room": "lobby", "nick": "alice"}
    assert await ws_receive(watcher) == {"type": "left", "room": "lobby", "nick": "alice"}


async def test_one_publish_builds_each_line_once(tcp_connect, ws_connect, monkeypatch):
    """One publish to 20 TCP clients builds each of its lines once."""
    built = []
    for name in ("received_line", "sent_line", "private_sender"):
        real = getattr(lines, name)
        monkeypatch.setattr(lines, name, lambda envelope, real=real, name=name: (
            built.append(name), real(envelope))[1])
    browser = await ws_join(ws_connect, nick="alice")
    clients = [await tcp_connect() for _ in range(20)]
    for n, client in enumerate(clients):
        await client.join(nick=f"n{n}")
    for n, client in enumerate(clients):
        for m in range(n, 20):
            assert await client.line() == f"* n{m} joined lobby"
    built.clear()

    await send_json(browser, {"type": "message", "text": "to everyone"})
    for client in clients:
        assert await client.line() == "[lobby] alice: to everyone"
    assert sorted(built) == ["private_sender", "received_line"]

    built.clear()
    clients[0].send("/msg n1 psst")
    assert await clients[1].line() == "[lobby] n0 -> you: psst"
    assert await clients[0].line() == "[lobby] you -> n1: psst"
    assert sorted(built) == ["private_sender", "received_line", "sent_line"]


@pytest.mark.parametrize("config", [dict(max_pending_bytes=256 * 1024)], indirect=True)
async def test_client_that_stops_reading_is_dropped_at_the_bound(tcp_connect, app):
    """A TCP client that stops reading is dropped at --max-pending-bytes plus one line at most."""
    hub = app.settings["hub"]
    reader = await tcp_connect()
    await reader.join()
    stalled = await tcp_connect(receive_buffer=4096)
    await stalled.join()
    (_, connection) = tcp_connections(hub)
    bound = hub.max_pending_bytes
    # Each message is one line cut into rows (lines.fitted); every message's text is as long.
    shown = lines.frame_line({"type": "message", "room": "lobby", "from": "feed",
                              "text": "0" * 6 + "x" * 10_000})
    line_size, rows = len(shown.encode()) + 1, shown.count("\n") + 1
    most_held = sent = 0
    while hub.dropped == 0 and sent < 3000:  # 30 MB at most, far past any kernel buffer
        hub.publish("chat.lobby", {"type": "message", "id": sent, "room": "lobby",
                                   "from": "feed", "text": f"{sent:06d}" + "x" * 10_000})
        sent += 1
        most_held = max(most_held, connection.unflushed_bytes())
        assert (await reader.line()).startswith(f"[lobby] feed: {sent - 1:06d}")
        for _ in range(rows - 1):
            assert (await reader.line()).startswith(lines.CONTINUATION)

    assert hub.dropped == 1
    assert bound < most_held <= bound + line_size
    assert connection not in hub.connections and hub.topics(connection) == set()
    await stalled.ended()  # what the kernel held, then the end
    hub.publish("chat.lobby", {"type": "message", "id": sent, "room": "lobby", "from": "feed",
                               "text": "still"})
    assert await reader.line() == "[lobby] feed: still"


@pytest.mark.parametrize("config", [dict(rate_limit=0.1, rate_burst=3, rate_limit_strikes=2)],
                         indirect=True)
async def test_rate_limit_is_answered_then_closes_after_the_strikes(tcp_connect):
    """Lines over the rate limit get rate_limited, and past the strikes a last line and a close."""
    client = await tcp_connect()
    client.send("/help", "/help", "/help", "/help", "/help", "/help", "never answered")
    for _ in range(3):
        assert await client.line() == "* commands:"
        for _ in range(len(lines.COMMANDS) + 1):
            await client.line()
    for _ in range(2):
        assert (await client.line()).startswith("! rate_limited: Too many lines; this one was "
                                                "dropped. Send again in ")
    assert await client.line() == \
        "! rate_limited: Too many lines over the rate limit in a row; closing."
    assert await client.ended() == b""


@pytest.mark.parametrize("config", [dict(rate_limit=0.1, rate_burst=3, rate_limit_strikes=2)],
                         indirect=True)
async def test_an_endless_line_meets_the_rate_limit(tcp_connect):
    """An endless line costs a line per bound dropped, so the rate limit closes it."""
    client = await tcp_connect()
    client.send(b"w" * (MAX_LINE_BYTES * 8))
    assert (await client.line()).startswith("! too_long: ")
    assert (await client.line()).startswith("! rate_limited: Too many lines; ")
    assert (await client.line()).startswith("! rate_limited: Too many lines; ")
    assert await client.line() == \
        "! rate_limited: Too many lines over the rate limit in a row; closing."
    assert await client.ended() == b""


@pytest.mark.parametrize("config", [dict(max_connections_per_ip=2)], indirect=True)
async def test_connection_cap_is_shared_with_websockets(tcp_connect, ws_connect):
    """--max-connections-per-ip counts an address's WebSockets and TCP connections together."""
    await ws_join(ws_connect)
    first = await tcp_connect()
    refused = await tcp_connect(greeted=False)
    assert await refused.line() == \
        "! too_many_connections: Too many connections from your address."
    assert await refused.ended() == b""
    first.send("/help")
    assert await first.line() == "* commands:"


@pytest.mark.parametrize("config", [dict(handshake_rate_limit=0.1, handshake_rate_burst=2)],
                         indirect=True)
async def test_new_connection_budget_is_shared_with_websockets(tcp_connect, ws_connect):
    """--handshake-rate-limit counts new WebSockets and TCP connections together."""
    await ws_join(ws_connect)
    await tcp_connect()
    refused = await tcp_connect(greeted=False)
    assert (await refused.line()).startswith(
        "! rate_limited: Too many new connections from your address; connect again in ")
    assert await refused.ended() == b""


@pytest.mark.parametrize("join_timeout", [0.3])
async def test_a_connection_that_never_joins_is_closed(tcp_connect):
    """A connection without /join within the timeout is told so and closed; a joined one stays."""
    joined = await tcp_connect()
    await joined.join()
    idle = await tcp_connect()
    idle.send("/nick alice", "/help")
    assert (await idle.line()).startswith("* you will be alice")
    while (line := await idle.line()) != "! join_timeout: No /join within 0.3 s; closing.":
        assert line.startswith("* ")
    assert await idle.ended() == b""
    joined.send("still here")
    assert await joined.line() == "[lobby] anonymous: still here"


def test_every_command_has_a_handler():
    """Each command of realtime.chat.lines.COMMANDS has its handle_<name> method."""
    for name in lines.COMMANDS:
        assert callable(getattr(ChatLineConnection, f"handle_{name}"))


async def test_tcp_port_option_serves_the_chat_in_a_real_process(spawn, python, tmp_path):
    """server.py --tcp-port serves the raw chat, and tells its clients on SIGTERM before closing."""
    tcp_port = free_port()
    process, _ = await start_server_process(
        spawn, python, tmp_path, "--tcp-port", str(tcp_port))
    await wait_listening("127.0.0.1", tcp_port, process)
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    client = LineClient(reader, writer)
    try:
        assert (await client.line()).startswith("* hello: ")
        assert await client.join(nick="alice") == [
            "* you are in lobby as alice", "* online in lobby: alice; anonymous readers: 0"]
        client.send("over the wire")
        assert await client.line() == "* alice joined lobby"
        assert await client.line() == "[lobby] alice: over the wire"

        process.send_signal(signal.SIGTERM)
        assert await client.line() == \
            "* the server is shutting down; connect again in a moment"
        assert await client.ended() == b""
        await poll_until(lambda: process.poll() is not None)
        assert process.returncode == 0
    finally:
        client.close()
    log = (tmp_path / "server.log").read_text()
    assert f"raw TCP chat on 127.0.0.1:{tcp_port}" in log
    assert "event=disconnect endpoint=tcp_chat ip=127.0.0.1 by=server reason=shutdown" in log
    assert "Traceback" not in log


async def test_tcp_clients_of_two_processes_share_nicknames_and_rooms(cluster):
    """On Redis, TCP clients of two processes share nicknames, presence and messages."""
    tcp_ports = [free_port(), free_port()]
    nodes = [(await cluster.start(1, "--tcp-port", str(port)))[0] for port in tcp_ports]
    clients = []
    for node, port in zip(nodes, tcp_ports):
        await wait_listening("127.0.0.1", port, node.process)
        clients.append(LineClient(*await asyncio.open_connection("127.0.0.1", port)))
    alice, bob = clients
    try:
        for client in clients:
            assert (await client.line()).startswith("* hello: ")
        await alice.join(nick="alice")
        assert await alice.line() == "* alice joined lobby"
        await cluster.wait_subscribed("chat.lobby", 1)
        assert await bob.join(nick="ALICE") == [
            "* you are in lobby without a nickname (/nick <name> takes one)",
            "* online in lobby: alice; anonymous readers: 1"]
        assert (await bob.line()).startswith("! nick_taken: ")

        bob.send("/nick bob")
        for client in clients:
            assert await client.line() == "* bob joined lobby"
        alice.send("hello from A")
        for client in clients:
            assert await client.line() == "[lobby] alice: hello from A"
        bob.send("/msg alice psst")
        assert await alice.line() == "[lobby] bob -> you: psst"
        assert await bob.line() == "[lobby] you -> alice: psst"
        bob.send("/quit")
        assert await bob.line() == "* bye"
        assert await alice.line() == "* bob left lobby"
    finally:
        for client in clients:
            client.close()


async def two_tcp_processes(cluster) -> tuple["LineClient", "LineClient"]:
    """alice on A and bob on B in lobby, by TCP, each having seen both join."""
    tcp_ports = [free_port(), free_port()]
    nodes = [(await cluster.start(1, "--tcp-port", str(port)))[0] for port in tcp_ports]
    clients = []
    for node, port in zip(nodes, tcp_ports):
        await wait_listening("127.0.0.1", port, node.process)
        clients.append(LineClient(*await asyncio.open_connection("127.0.0.1", port)))
    alice, bob = clients
    for client in clients:
        assert (await client.line()).startswith("* hello: ")
    await alice.join(nick="alice")
    assert await alice.line() == "* alice joined lobby"
    await bob.join(nick="bob")
    for client in clients:
        assert await client.line() == "* bob joined lobby"
    await cluster.wait_subscribed("chat.lobby", 2)
    return alice, bob


async def test_tcp_client_is_caught_up_after_its_process_lost_redis_pubsub(cluster):
    """``CLIENT KILL TYPE pubsub`` while A's alice talks: B's bob gets each of her lines once,
    in order, and a line saying who is online."""
    alice, bob = await two_tcp_processes(cluster)
    try:
        async with redis.asyncio.Redis.from_url(cluster.redis.url) as admin:
            for n in range(10):
                if n == 5:
                    assert await admin.client_kill_filter(_type="pubsub") == 2
                alice.send(f"line {n}")
                await asyncio.sleep(0.02)
        got: list[str] = []
        while len([line for line in got if line.startswith("[lobby]")]) < 10 or \
                "* online in lobby: alice, bob" not in got:
            got.append(await bob.line())
        assert [line for line in got if line.startswith("[lobby]")] == [
            f"[lobby] alice: line {n}" for n in range(10)]
    finally:
        alice.close()
        bob.close()


async def test_tcp_client_is_told_when_redis_lost_what_it_missed(cluster):
    """Redis killed and restarted without its data: B's bob gets a line saying messages were
    missed, then the connection ends (he connects again and joins anew)."""
    alice, bob = await two_tcp_processes(cluster)
    try:
        alice.send("before")
        assert await bob.line() == "[lobby] alice: before"
        cluster.redis.kill()
        await cluster.redis.restart()
        while not (line := await bob.line()).startswith("* messages"):
            pass
        assert line == ("* messages of this room were missed while the server lost its link "
                        "to the others; connect again")
        assert await bob.ended() == b""
    finally:
        alice.close()
        bob.close()
