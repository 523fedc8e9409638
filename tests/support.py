"""Helpers for talking to a test server over real sockets."""

import asyncio
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from typing import Any, Callable, Optional, Union

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

TIMEOUT = 5.0


def ws_url(http_server_client: Any, path: str) -> str:
    """The ws:// URL of ``path`` on the test server."""
    return http_server_client.get_url(path).replace("http://", "ws://", 1)


async def connect(
    http_server_client: Any, path: str, headers: Optional[dict[str, str]] = None
) -> WebSocketClientConnection:
    """Open a real WebSocket to the test server."""
    return await connect_url(ws_url(http_server_client, path), headers)


async def connect_url(
    url: str, headers: Optional[dict[str, str]] = None, source_ip: Optional[str] = None,
    ping_interval: Optional[float] = None,
) -> WebSocketClientConnection:
    """Open a real WebSocket to ``url``, from ``source_ip`` if given (a loopback address)."""
    request = HTTPRequest(url, headers=headers, network_interface=source_ip)
    return await asyncio.wait_for(
        websocket_connect(request, ping_interval=ping_interval), TIMEOUT)


async def receive(conn: WebSocketClientConnection) -> Union[str, bytes, None]:
    """The next frame, or None once the connection is closed."""
    return await asyncio.wait_for(conn.read_message(), TIMEOUT)


async def receive_json(conn: WebSocketClientConnection) -> dict[str, Any]:
    """The next frame, which must be a JSON text frame."""
    frame = await receive(conn)
    assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
    return json.loads(frame)


async def receive_json_except(conn: WebSocketClientConnection, *kinds: str) -> dict[str, Any]:
    """The next JSON frame whose type is none of ``kinds``: frames a test is not about, such
    as a poll's ``participants`` counts, which follow every page that opens or closes."""
    while True:
        message = await receive_json(conn)
        if message.get("type") not in kinds:
            return message


async def receive_type(conn: WebSocketClientConnection, kind: str) -> dict[str, Any]:
    """Read frames until one of type ``kind`` arrives and return it."""
    while True:
        message = await receive_json(conn)
        if message.get("type") == kind:
            return message


async def closed(conn: WebSocketClientConnection) -> Optional[int]:
    """Wait until the server closes the connection; return the close code."""
    while await receive(conn) is not None:
        pass
    return conn.close_code


async def send_json(conn: WebSocketClientConnection, message: Any) -> None:
    """Send one JSON text frame."""
    await conn.write_message(json.dumps(message))


class RawReader(asyncio.Protocol):
    """The reading side of a raw test socket.

    Unlike ``asyncio.StreamReader`` it hands out every byte that arrived before a connection
    reset: a server closing a socket with unread input (as Tornado does after a 1009) makes
    the kernel send a reset right behind the close frame, and the test must still see it.
    Like ``StreamReader`` it stops reading the socket once ``limit`` bytes wait unread, so a
    client that never reads fills the kernel's buffers and stalls the sender.
    """

    def __init__(self, limit: int = 256 * 1024) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.transport: Optional[asyncio.Transport] = None
        self.ended = False
        self._changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        if len(self.buffer) > self.limit and self.transport is not None:
            self.transport.pause_reading()
        self._changed.set()

    def eof_received(self) -> None:
        self.ended = True
        self._changed.set()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.ended = True
        self._changed.set()

    async def _wait_for(self, ready: Callable[[], bool]) -> None:
        while not ready() and not self.ended:
            self._changed.clear()
            if self.transport is not None and len(self.buffer) <= self.limit:
                self.transport.resume_reading()
            await self._changed.wait()

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def readexactly(self, n: int) -> bytes:
        """``n`` bytes; raises ``asyncio.IncompleteReadError`` if the connection ends first."""
        await self._wait_for(lambda: len(self.buffer) >= n)
        if len(self.buffer) < n:
            raise asyncio.IncompleteReadError(self._take(len(self.buffer)), n)
        return self._take(n)

    async def readuntil(self, separator: bytes) -> bytes:
        """Everything up to and including ``separator``."""
        await self._wait_for(lambda: separator in self.buffer)
        end = self.buffer.find(separator)
        if end < 0:
            raise asyncio.IncompleteReadError(self._take(len(self.buffer)), None)
        return self._take(end + len(separator))

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, b"" once the connection has ended."""
        await self._wait_for(lambda: bool(self.buffer))
        return self._take(min(n, len(self.buffer)))


async def raw_handshake(
    port: int, path: str, receive_buffer: int = 4096, extra_headers: str = "",
    upgrade: bool = True,
) -> tuple[RawReader, asyncio.Transport, bytes]:
    """Open a TCP socket, do a WebSocket handshake by hand, and return a reader, the
    transport to write to, and the response head. The caller decides whether it ever reads
    again: this is a client that can stall. ``receive_buffer`` shrinks the kernel's buffer so
    a stall shows quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    transport, reader = await loop.create_connection(RawReader, sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade_headers = "Upgrade: websocket\r\nConnection: Upgrade\r\n" if upgrade else ""
    transport.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{upgrade_headers}"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra_headers}\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    return reader, transport, head


def port_of(http_server_client: Any) -> int:
    """The test server's TCP port."""
    return int(http_server_client.get_http_port())


# Raw WebSocket frames (RFC 6455 section 5.2), for what a polite client library won't send.
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked frame, as a client must send it."""
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return head + mask + masked


async def read_frame(reader: RawReader) -> tuple[int, bytes]:
    """The next (unmasked) server frame as (opcode, payload).

    Raises:
        asyncio.IncompleteReadError: the server closed the TCP connection.
    """
    first, payload = await read_frame_head(reader)
    return first & 0x0F, payload


async def read_frame_head(reader: RawReader) -> tuple[int, bytes]:
    """The next (unmasked) server frame as (its first byte: FIN, RSV1-3 and opcode, payload).

    Raises:
        asyncio.IncompleteReadError: the server closed the TCP connection.
    """
    async def read(n: int) -> bytes:
        return await asyncio.wait_for(reader.readexactly(n), TIMEOUT)

    first, second = await read(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await read(8))
    return first, await read(length)


async def raw_close_code(reader: RawReader) -> Optional[int]:
    """Read frames until the server's close frame; its code, or None if TCP ended first."""
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    except asyncio.IncompleteReadError:
        return None


async def eof(reader: RawReader) -> bool:
    """Read and discard until the server ends the TCP connection; True once it has."""
    while await asyncio.wait_for(reader.read(65536), TIMEOUT):
        pass
    return True


async def poll_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for ``condition`` to hold, checking every few milliseconds, failing at ``timeout``.

    For conditions no event announces (a log line in a file, a process's state).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout} s waiting for {condition}"
        await asyncio.sleep(0.01)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: Union[int, str] = "self") -> int:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


async def wait_listening(host: str, port: int, process: Any, timeout: float = 10.0) -> None:
    """Wait until ``process`` (a Popen) accepts connections on host:port; fail if it exits."""
    def ready() -> bool:
        assert process.poll() is None, f"process exited with {process.returncode}"
        return accepts(host, port)
    await poll_until(ready, timeout)


def find_program(env_var: str, *names: str) -> str:
    """A program the tests drive for real: ``$env_var``, else the first of ``names`` found on
    the PATH (or given as a path). Missing, it fails the test under CI and skips it elsewhere,
    so CI never passes by silently skipping."""
    found = os.environ.get(env_var) or next(filter(None, map(shutil.which, names)), None)
    if found:
        return found
    message = f"{names[0]} is not installed (apt-get install {names[0]}, or set ${env_var})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def stop_process(process: Any, grace: float = 5.0) -> None:
    """End a child process if it still runs: SIGTERM, then SIGKILL after ``grace`` seconds;
    it is reaped either way."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


class RecordingConnection:
    """A hub subscriber for server-less session tests: it keeps every frame written to it,
    JSON-decoded, in the order it arrived, and the reason the hub closed it for, if any.
    A test's own connection adds its session (``self.frames.append`` as its ``send``)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.frames: list[dict[str, Any]] = []
        self.closed_for: Any = None

    def subscribe(self, topic: str) -> None:
        self.hub.subscribe(topic, self)

    def unsubscribe(self, topic: str) -> None:
        self.hub.unsubscribe(topic, self)

    def write_envelope(self, envelope: Any, max_pending: int) -> int:
        self.frames.append(json.loads(envelope.data))
        return 0  # realtime.pubsub.delivery.WRITTEN

    def unflushed_bytes(self) -> int:
        return 0

    def close_for(self, reason: Any) -> None:
        self.closed_for = reason

    def kinds(self) -> list[str]:
        """The types of the frames received so far, ``readers`` left out."""
        return [frame["type"] for frame in self.frames if frame["type"] != "readers"]
