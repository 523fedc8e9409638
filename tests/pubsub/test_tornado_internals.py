"""Tornado's internals, used by ``realtime.pubsub.tornado_internals`` alone, checked against the
installed Tornado.

One guard test checks every private name the module lists in ``INTERNALS``: that it exists
with the type and behaviour relied on. Another checks that no other module of the server
uses a private name of Tornado's. If an upgrade renames the stream's write buffer or stops
writing to the socket inside ``write()``, these fail, instead of flow control quietly
counting nothing (no slow client ever dropped) or everything (every fast one dropped). The
same goes for what the fast path writes through (``fast_stream``, ``FrameWriter``,
``ResponseStream``), for fragment counting, error bodies' reason phrase and accepting.
"""

import ast
import asyncio
import inspect
import re
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import tornado
import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.iostream import IOStream
from tornado.tcpserver import TCPServer
from tornado.web import RequestHandler
from tornado.websocket import WebSocketProtocol13

from handlers.echo import EchoSocketHandler
from handlers.websocket import SocketHandler
from realtime.pubsub import tornado_internals
from realtime.pubsub.hub import Hub
from realtime.pubsub.tornado_internals import (
    INTERNALS, NO_HEADERS, VERIFIED_TORNADO, CountingProtocol, FrameWriter, ResponseStream,
    add_listening_socket, corked, fast_stream, reads_fast, reason_phrase,
    response_finished, unflushed_bytes,
)
from tests.support import (
    OP_BINARY, OP_PING, OP_TEXT, client_frame, poll_until, port_of, raw_handshake, read_frame,
    receive, receive_json,
)

HEADER_16 = 4  # bytes before the payload of a server frame of 126 to 65,535 bytes


class InternalsHandler(RequestHandler):
    """Records what a live response shows of Tornado's internals, for the guard test."""

    def initialize(self, seen: dict[str, Any]) -> None:
        self.seen = seen

    def get(self) -> None:
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)
        self.seen["chunking_before"] = connection._chunking_output
        self.seen["reason_default"] = reason_phrase(self)
        self.set_status(418)
        self.seen["reason_standard"] = reason_phrase(self)
        self.set_status(299, "Quite Fine")
        self.seen["reason_given"] = reason_phrase(self)
        self.set_status(200)
        self.set_header("X-Probe", "yes")
        self.seen["headers"] = (isinstance(self._headers, HTTPHeaders)
                                and self._headers.get("X-Probe") == "yes")
        cookies = self.request.cookies
        cached = self.request._cookies is cookies and cookies["probe"].value == "1"
        del self.request._cookies
        self.seen["cookies"] = cached and self.request.cookies is not cookies
        self.flush()  # the headers go out: HTTP/1.1 without Content-Length, so chunked
        self.seen["chunking_after"] = connection._chunking_output
        self.seen["chunked"] = ResponseStream(self).chunked
        self.seen["finished_before"] = response_finished(self)
        self.finish()
        self.seen["finished_after"] = response_finished(self)


class GatedEchoSocketHandler(SocketHandler):
    """Echoes each frame from an ``async`` hook that first waits for the test's gate."""

    def initialize(self, gate: asyncio.Event, entered: list[Any], **base: Any) -> None:
        super().initialize(**base)
        self.gate = gate  # set by the test: every hook waiting on it goes on
        self.entered = entered  # every frame whose hook has started, in order

    async def received(self, frame: Any) -> None:
        self.entered.append(frame)
        await self.gate.wait()
        self.send_frame(frame)


@pytest.fixture
def seen() -> dict[str, Any]:
    return {}


@pytest.fixture
def gate() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def entered() -> list[Any]:
    return []


@pytest.fixture
def app(hub: Hub, seen: dict[str, Any], gate: asyncio.Event,
        entered: list[Any]) -> tornado.web.Application:
    return tornado.web.Application([
        (r"/ws/quiet", SocketHandler, dict(hub=hub)),
        (r"/ws/gated", GatedEchoSocketHandler, dict(hub=hub, gate=gate, entered=entered)),
        (r"/ws/echo", EchoSocketHandler, dict(hub=hub)),
        (r"/internals", InternalsHandler, dict(seen=seen)),
    ])


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


async def test_frames_to_one_connection_in_one_turn_leave_together_at_its_end(ws_connect, hub):
    """The first frame a connection gets in a turn of the loop goes at once (a fan-out's
    one frame each); later ones wait for the turn's end, then reach the kernel together,
    in order (one send for a storm's joined frames)."""
    client = await ws_connect("/ws/quiet")
    await asyncio.sleep(0)  # a turn of its own: what the handshake wrote is behind it
    handler = hub.connections[0]
    stream = stream_of(handler)
    sent = stream._total_write_done_index

    for text in ("one", "two", "three"):
        hub.send(handler, text)

    assert stream._total_write_done_index == sent + 2 + len("one"), "the first did not go at once"
    assert unflushed_bytes(handler) == 2 * 2 + len("twothree"), "the later ones did not wait"
    assert [await receive(client) for _ in range(3)] == ["one", "two", "three"]
    assert unflushed_bytes(handler) == 0
    assert_internals(stream)


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


async def test_an_open_socket_lets_go_of_its_handshake(ws_connect, hub):
    """Once open, a socket keeps none of its handshake's headers, arguments, cookies, HTTP
    connection or template namespace, keeps what the error log names, and still talks."""
    conn = await ws_connect("/ws/quiet?probe=1", headers={"Cookie": "probe=1"})
    await conn.write_message("anything")
    assert (await receive_json(conn))["code"] == "bad_message"  # open() has returned
    handler = hub.connections[0]
    request = handler.request
    assert request.headers is NO_HEADERS and len(request.headers) == 0
    assert handler._headers is NO_HEADERS
    assert dict(request.arguments) == dict(request.query_arguments) == {}
    assert request.connection is None and request.server_connection is None
    assert handler.ui is None and handler.get_cookie("probe") is None
    assert (request.method, request.uri, request.remote_ip) == ("GET", "/ws/quiet?probe=1",
                                                                "127.0.0.1")
    with pytest.raises(RuntimeError):
        request.headers["X-Late"] = "no"  # the one stand-in is shared: never written


# The guard: every private name in INTERNALS, on live objects of the installed Tornado.


def test_the_installed_tornado_is_one_the_fast_path_was_verified_against():
    """VERIFIED_TORNADO names the installed minor version: else every connection would
    silently fall back to write_message (or the pin in setup.cfg has drifted)."""
    assert tornado.version_info[:2] in VERIFIED_TORNADO, (
        f"Tornado {tornado.version} is not in tornado_internals.VERIFIED_TORNADO: check the "
        "internals listed there against it, then add its minor version")


async def test_every_internal_the_module_lists_exists_with_the_shape_relied_on(
    ws_connect, hub, http_server_client, seen
):
    """Every private name in INTERNALS holds on the installed Tornado: IOStream's
    _write_buffer (append taking bytes and memoryview, len), write indices and
    _add_io_state(state), _read_buffer_size, _read_future (the bulk reader's future on an
    idle socket), _handle_events(fd, events) (what the loop's entry for the socket,
    BaseAsyncIOLoop.handlers, calls; the protocol's on_events instead while it reads) and
    _handle_write() (which sends what a corked burst left in the buffer); WebSocketProtocol13's
    _compressor (None uncompressed) and _receive_frame (a coroutine every socket reads
    through), _receive_frame_loop (the
    coroutine the fast reader replaces), _send_pong(data), _received_pong (False until a
    pong), _run_callback(callback, *args, **kwargs) and _abort(); HTTP1Connection's
    _chunking_output (set once an HTTP/1.1 response's headers go out without a length);
    RequestHandler's _reason (the phrase set_status set), _finished (set by finish()) and
    _headers (the response's HTTPHeaders); HTTPServerRequest's _cookies (the cache
    ``cookies`` fills, rebuilt once deleted); TCPServer's _sockets, _handlers and
    _handle_connection (what stop() undoes). Public neighbours relied on are checked too."""
    checked: dict[type, set[str]] = {}

    def check(owner: type, name: str, holds: bool) -> None:
        assert holds, f"{owner.__module__}.{owner.__qualname__}.{name} is gone or changed"
        checked.setdefault(owner, set()).add(name)

    # A WebSocket: its IOStream and its protocol.
    await ws_connect("/ws/quiet")
    handler = hub.connections[0]
    connection = handler.ws_connection
    assert isinstance(connection, WebSocketProtocol13)
    stream = stream_of(handler)
    assert isinstance(stream.socket, socket.socket)
    assert stream.closed() is False
    for name in ("_total_write_index", "_total_write_done_index"):
        check(IOStream, name, isinstance(getattr(stream, name, None), int))
    buffer = type(stream._write_buffer)()  # a fresh one: the live one is the stream's
    buffer.append(b"x" * 10)
    buffer.append(memoryview(b"y" * 5000)[1000:])
    buffer.append(b"z" * 3000)
    check(IOStream, "_write_buffer", len(buffer) == 10 + 4000 + 3000)
    assert_internals(stream)
    check(IOStream, "_add_io_state", callable(getattr(stream, "_add_io_state", None)) and (
        inspect.signature(IOStream._add_io_state).parameters.keys() == {"self", "state"}))
    # What a write batch calls to send what a stream holds, as IOStream.write does.
    check(IOStream, "_handle_write", list(inspect.signature(IOStream._handle_write).parameters)
          == ["self"] and "_handle_write()" in inspect.getsource(IOStream.write))
    # The bulk reader waits on the idle socket: its future is the stream's pending read,
    # and the stream's reads go to the protocol's on_readable.
    check(IOStream, "_read_buffer_size", stream._read_buffer_size == 0)
    check(IOStream, "_read_future", stream._read_future is connection.waiting is not None
          and not stream._read_future.done() and stream.reading())
    # ... and the loop's entry for the socket calls the protocol, which hands every other
    # event to the stream's own _handle_events(fd, events).
    handlers = getattr(stream.io_loop, "handlers", None)
    assert isinstance(handlers, dict) and handlers.get(stream.socket.fileno()) == (
        stream.socket, connection.on_events), "BaseAsyncIOLoop.handlers is gone or changed"
    check(IOStream, "_handle_events", list(inspect.signature(
        IOStream._handle_events).parameters) == ["self", "fd", "events"])
    check(IOStream, "_handle_write", list(inspect.signature(IOStream._handle_write).parameters)
          == ["self"])
    check(WebSocketProtocol13, "_compressor",
          hasattr(connection, "_compressor") and connection._compressor is None)
    check(WebSocketProtocol13, "_receive_frame",
          inspect.iscoroutinefunction(getattr(WebSocketProtocol13, "_receive_frame", None))
          and type(connection) is CountingProtocol)
    check(WebSocketProtocol13, "_handle_message", list(inspect.signature(
        WebSocketProtocol13._handle_message).parameters) == ["self", "opcode", "data"])
    check(WebSocketProtocol13, "_receive_frame_loop", inspect.iscoroutinefunction(
        getattr(WebSocketProtocol13, "_receive_frame_loop", None)) and reads_fast(connection))
    check(WebSocketProtocol13, "_send_pong", list(inspect.signature(
        WebSocketProtocol13._send_pong).parameters) == ["self", "data"])
    check(WebSocketProtocol13, "_received_pong", connection._received_pong is False)
    check(WebSocketProtocol13, "_run_callback", list(inspect.signature(
        WebSocketProtocol13._run_callback).parameters) == ["self", "callback", "args", "kwargs"])
    check(WebSocketProtocol13, "_abort", list(inspect.signature(
        WebSocketProtocol13._abort).parameters) == ["self"])
    assert connection.mask_outgoing is False
    assert connection.is_closing() is False
    assert fast_stream(handler) is stream

    # An HTTP response (InternalsHandler above): its chunking and its reason phrase.
    response = await http_server_client.fetch("/internals", headers={"Cookie": "probe=1"})
    assert response.code == 200
    check(HTTP1Connection, "_chunking_output",
          not seen["chunking_before"] and seen["chunking_after"] and seen["chunked"] is True)
    check(RequestHandler, "_reason", (seen["reason_default"], seen["reason_standard"],
                                      seen["reason_given"]) == ("OK", "I'm a Teapot", "Quite Fine"))
    check(RequestHandler, "_finished",
          seen["finished_before"] is False and seen["finished_after"] is True)
    check(RequestHandler, "_headers", seen["headers"])
    check(HTTPServerRequest, "_cookies", seen["cookies"])

    # A TCPServer: what add_sockets records and stop() undoes.
    server = TCPServer()
    check(TCPServer, "_sockets", server._sockets == {})
    check(TCPServer, "_handlers", server._handlers == {})
    check(TCPServer, "_handle_connection", list(
        inspect.signature(server._handle_connection).parameters) == ["connection", "address"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    handed: list[Callable[..., None]] = []
    stopped: list[socket.socket] = []

    def accept(sock: socket.socket, handle: Callable[..., None]) -> Callable[[], None]:
        handed.append(handle)
        return lambda: stopped.append(sock)

    add_listening_socket(server, listener, accept)
    server.stop()
    assert handed == [server._handle_connection]
    assert stopped == [listener] and listener.fileno() == -1, "TCPServer.stop() changed"

    assert checked == {owner: set(names) for owner, names in INTERNALS.items()}, (
        "INTERNALS and this test disagree: check each internal listed there, and only those")


ROOT = Path(__file__).resolve().parent.parent.parent
SERVER_SOURCES = [*sorted((ROOT / "realtime").rglob("*.py")),
                  *sorted((ROOT / "handlers").glob("*.py")), ROOT / "server.py"]
THE_MODULE = ROOT / "realtime" / "pubsub" / "tornado_internals.py"
PRIVATE = re.compile(r"_[a-z]\w*")


def tornado_private_names() -> set[str]:
    """Every name Tornado's own source reaches as a private attribute or defines privately."""
    names: set[str] = set()
    for path in Path(tornado.__file__).parent.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        names.update(re.findall(r"\.(_[a-z]\w*)\b", source))
        names.update(re.findall(r"\bdef (_[a-z]\w*)", source))
    return names


def own_private_names(trees: list[ast.Module], self_assigned: bool = True) -> set[str]:
    """The private names the server defines itself: attributes it assigns on ``self``
    (unless ``self_assigned`` is False), its functions, classes and names, and its
    ``__slots__``."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif self_assigned and isinstance(node, ast.Attribute) and isinstance(
                    node.ctx, ast.Store) and (
                    isinstance(node.value, ast.Name) and node.value.id == "self"):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(target, ast.Name) and target.id == "__slots__"
                    for target in node.targets):
                names.update(element.value for element in ast.walk(node.value)
                             if isinstance(element, ast.Constant))
    return {name for name in names if isinstance(name, str) and PRIVATE.fullmatch(name)}


def private_uses(tree: ast.Module, names: set[str], of_self: bool = True) -> list[tuple[int, str]]:
    """Where ``tree`` reads or writes an attribute among ``names``, of ``self`` too unless
    ``of_self`` is False: (line, name)."""
    return [(node.lineno, node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in names and (
                of_self or not (isinstance(node.value, ast.Name) and node.value.id == "self"))]


def test_no_other_module_uses_a_private_name_of_tornados():
    """Outside realtime/pubsub/tornado_internals.py no module of the server reads, writes or
    overrides a name Tornado keeps private; the module itself uses exactly those its
    INTERNALS lists."""
    tornados = tornado_private_names()
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in SERVER_SOURCES}
    own = own_private_names([tree for path, tree in trees.items() if path != THE_MODULE])
    suspects = tornados - own
    found = [f"{path.relative_to(ROOT)}:{line}: {name}"
             for path, tree in trees.items() if path != THE_MODULE
             for line, name in private_uses(tree, suspects)]
    for path in SERVER_SOURCES:  # overriding a private method is using it too
        module = __import__(".".join(path.relative_to(ROOT).with_suffix("").parts),
                            fromlist=["_"])
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__ or (
                    path == THE_MODULE):
                continue
            for name, value in vars(cls).items():
                if PRIVATE.fullmatch(name) and inspect.isfunction(value) and any(
                        base.__module__.startswith("tornado.") and name in vars(base)
                        for base in cls.__mro__[1:]):
                    found.append(f"{path.relative_to(ROOT)}: {cls.__qualname__}.{name}")
    assert found == [], "Tornado's private names used outside realtime/pubsub/tornado_internals.py"

    listed = {name for names in INTERNALS.values() for name in names}
    # Its own classes keep their attributes in __slots__; every other private name it
    # reaches, on the objects it is handed or on self in a subclass of Tornado's, is
    # Tornado's. Overriding one of Tornado's private methods is using it too.
    its_own = own_private_names([trees[THE_MODULE]], self_assigned=False)
    used = {name for _, name in private_uses(trees[THE_MODULE], tornados - its_own)}
    used |= {name for cls in vars(tornado_internals).values()
             if inspect.isclass(cls) and cls.__module__ == tornado_internals.__name__
             for name, value in vars(cls).items()
             if PRIVATE.fullmatch(name) and inspect.isfunction(value) and any(
                 base.__module__.startswith("tornado.") and name in vars(base)
                 for base in cls.__mro__[1:])}
    assert used == listed, "realtime/pubsub/tornado_internals.py uses internals INTERNALS omits"


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


def test_the_installed_tornado_is_one_the_bulk_reader_was_verified_against():
    """FAST_READ_TORNADO names the installed minor version: else every connection would
    silently read through Tornado's slower loop."""
    assert tornado.version_info[:2] in tornado_internals.FAST_READ_TORNADO, (
        f"Tornado {tornado.version} is not in tornado_internals.FAST_READ_TORNADO: check "
        "the reader's internals against it, then add its minor version")


async def test_an_unverified_tornado_reads_through_tornados_own_loop(
    ws_connect, hub, monkeypatch
):
    """With the installed Tornado missing from FAST_READ_TORNADO, new connections read
    through Tornado's frame loop, which still hands every message to the handler."""
    monkeypatch.setattr(tornado_internals, "FAST_READ_TORNADO", ((5, 1),))
    client = await ws_connect("/ws/echo")
    await client.write_message("through Tornado's loop")
    assert await receive(client) == "through Tornado's loop"

    [handler] = hub.connections
    assert not reads_fast(handler.ws_connection)
    await client.write_message(b"and binary", binary=True)
    assert await receive(client) == b"and binary"


async def test_frames_read_while_an_async_hook_waits_are_handled_after_it_in_order(
    http_server_client, hub, gate, entered
):
    """The bulk reader hands over to its coroutine while an async hook waits: the frames
    read with the hook's frame, and those Tornado reads into the stream's buffer meanwhile,
    are handled after it, in order, and the reader then waits on the socket again."""
    reader, writer, _ = await raw_handshake(port_of(http_server_client), "/ws/gated",
                                            receive_buffer=1 << 20)
    writer.write(client_frame(OP_TEXT, b"one") + client_frame(OP_BINARY, b"two"))
    await poll_until(lambda: entered == ["one"])
    [handler] = hub.connections
    stream = stream_of(handler)
    assert stream._read_future is None  # no read of the bulk reader's is pending
    writer.write(client_frame(OP_TEXT, b"three"))
    await poll_until(lambda: stream._read_buffer_size > 0)  # Tornado read it meanwhile
    gate.set()
    assert [await read_frame(reader) for _ in range(3)] == [
        (OP_TEXT, b"one"), (OP_BINARY, b"two"), (OP_TEXT, b"three")]
    await poll_until(lambda: stream._read_future is handler.ws_connection.waiting is not None)
    writer.write(client_frame(OP_TEXT, b"four"))
    assert await read_frame(reader) == (OP_TEXT, b"four")
    writer.close()


async def test_frames_written_while_corked_go_out_together_in_order(http_server_client, hub):
    """Inside corked(), what the FrameWriter writes only joins the stream's buffer, and a
    frame Tornado writes meanwhile (a ping) sends everything held before it; at the end
    the rest is sent, in order, with Tornado's write indices agreeing with its buffer."""
    reader, transport, _ = await raw_handshake(port_of(http_server_client), "/ws/quiet")
    handler = hub.connections[0]
    stream = stream_of(handler)
    with corked(stream):
        assert hub.send(handler, "one") and hub.send(handler, "two")
        assert unflushed_bytes(handler) == 2 * (2 + 3)
        assert_internals(stream)
        handler.ping(b"p")
        assert unflushed_bytes(handler) == 0
        assert hub.send(handler, "three")
        assert unflushed_bytes(handler) == 2 + 5
    assert unflushed_bytes(handler) == 0
    assert_internals(stream)
    assert [await read_frame(reader) for _ in range(4)] == [
        (OP_TEXT, b"one"), (OP_TEXT, b"two"), (OP_PING, b"p"), (OP_TEXT, b"three")]
    transport.close()
