"""The load client: a raw asyncio WebSocket client, run as a worker process by ``compare.py``.

A full WebSocket library spends more time per frame than the servers under test, so the
client here does the least that is still correct: a hand-written opening handshake (the
``Sec-WebSocket-Accept`` is checked), client frames masked with a random key per connection,
and a parser for the server's unmasked frames that only finds frame boundaries and looks
for a marker in the payload with ``bytes.find`` (no JSON, no UTF-8 decoding). Pings are
answered with pongs; nothing else of the protocol is needed. ``LineConn`` is the same for
the real server's raw TCP chat (``--tcp-port``): ``/join <room>``, then a line per message.

The controller talks to a worker over its stdin and stdout, one JSON object per line: a
command ``{"id": 1, "cmd": "open", ...}`` gets one reply ``{"id": 1, ...}``. Commands run
as concurrent tasks, so a probe can run while a burst is awaited. ``Worker`` is the
controller's side of that pipe.

Messages the publisher sends carry ``@<tag>:<seq>:<monotonic ns>@`` in their text; the
monotonic clock is the same in every process of the machine, so a subscriber in another
process computes publish-to-receive latency from it.
"""

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import resource
import secrets
import sys
import time
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
TEXT_SIZE = 64  # characters of each published text (marker plus padding): ~150-byte frames
monotonic_ns = time.monotonic_ns


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (RFC 6455 5.3), as one big-int operation."""
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        n, "little")


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked client frame."""
    key = secrets.token_bytes(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + mask(payload, key)


def marked_text(tag: str, seq: int, size: int = TEXT_SIZE) -> str:
    """A message's text: the marker, padded with ``x`` to ``size`` characters."""
    text = f"@{tag}:{seq}:{monotonic_ns()}@"
    return text + "x" * max(0, size - len(text))


def chat_message(tag: str, seq: int) -> bytes:
    """A masked chat frame ``{"type": "message", "text": ...}`` carrying the marker."""
    return client_frame(json.dumps({"type": "message", "text": marked_text(tag, seq)}).encode())


class Conn(asyncio.Protocol):
    """One WebSocket connection; ``on_data(conn, buf, start, end)`` gets each data frame."""

    def __init__(self, host: str, port: int, path: str, welcome: bool, index: int) -> None:
        self.index = index
        self.key = base64.b64encode(secrets.token_bytes(16))
        self.accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest())
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.welcome = welcome  # the server sends a first frame we wait for
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Optional[asyncio.Transport] = None
        self.handshaking = True
        self.buf = b""
        self.closed = False
        self.on_data: Callable[["Conn", bytes, int, int], None] = _welcome
        self.on_lost: Optional[Callable[[], None]] = None  # told once the connection is gone
        self.last_id: Optional[int] = None  # the newest chat message id seen (track_ids)
        # Counters the session's handlers use.
        self.count = 0
        self.done_ns = 0
        self.sent_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def message(self, tag: str, seq: int) -> bytes:
        """A chat message carrying the marker, as this connection sends it."""
        return chat_message(tag, seq)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if self.on_lost is not None:
            self.on_lost()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.handshaking:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end]
            if not head.startswith(b"HTTP/1.1 101") or self.accept not in head:
                self.ready.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                self.transport.abort()  # type: ignore[union-attr]
                return
            self.handshaking = False
            if not self.welcome:
                self.on_data = _ignore
                self.ready.set_result(None)
            buf = buf[end + 4:]
        pos, n = 0, len(buf)
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode < OP_CLOSE:
                self.on_data(self, buf, start, end)
            elif opcode == OP_PING:
                self.write(client_frame(buf[start:end], OP_PONG))
            elif opcode == OP_CLOSE:
                self.closed = True
                self.transport.close()  # type: ignore[union-attr]
                return
            pos = end
        self.buf = buf[pos:] if pos < n else b""


# The text of a TCP chat line, after "[room] guest-xxxx: ", fits the 80 columns the server
# cuts lines at: one line per delivery, as one frame per delivery on a WebSocket.
LINE_TEXT_SIZE = 44


class LineConn(Conn):
    """One raw TCP chat connection (``--tcp-port``): ``/join <room>`` with ``path`` the room
    name; ready at the room's welcome (``* you are in <room> ...``); ``on_data`` gets each
    line, ``\n`` excluded."""

    def __init__(self, host: str, port: int, path: str, welcome: bool, index: int) -> None:
        super().__init__(host, port, path, welcome, index)
        self.request = f"/join {path}\n".encode()
        self.joined = f"* you are in {path} ".encode()

    def message(self, tag: str, seq: int) -> bytes:
        return (marked_text(tag, seq, LINE_TEXT_SIZE) + "\n").encode()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                break
            if self.handshaking:
                if buf.startswith(b"! ", pos):
                    self.ready.set_exception(ConnectionError(buf[pos:end].decode()))
                    self.transport.abort()  # type: ignore[union-attr]
                    return
                if buf.startswith(self.joined, pos):
                    self.handshaking = False
                    self.on_data = _ignore
                    self.ready.set_result(None)
            else:
                self.on_data(self, buf, pos, end)
            pos = end + 1
        self.buf = buf[pos:] if pos < len(buf) else b""


def _welcome(conn: Conn, buf: bytes, start: int, end: int) -> None:
    conn.on_data = _ignore
    if not conn.ready.done():
        conn.ready.set_result(None)


def _ignore(conn: Conn, buf: bytes, start: int, end: int) -> None:
    pass


MESSAGE_ID = re.compile(rb'"id": ?(\d+)')


def _track_ids(conn: Conn, buf: bytes, start: int, end: int) -> None:
    """Keep the newest chat message id a frame carries, as the chat page keeps it for its
    reconnect's ``?since=`` (the welcome's history, then each message)."""
    ids = MESSAGE_ID.findall(buf, start, end)
    if ids:
        newest = max(int(found) for found in ids)
        if conn.last_id is None or newest > conn.last_id:
            conn.last_id = newest


def _welcome_tracked(conn: Conn, buf: bytes, start: int, end: int) -> None:
    _track_ids(conn, buf, start, end)
    conn.on_data = _track_ids
    if not conn.ready.done():
        conn.ready.set_result(None)


# The chat page's reconnect delay (static/js/socket.js, retryDelay): a ceiling doubling from
# 500 ms up to 10 s with the failed attempts in a row, and a random point in its upper half.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones in a row, drawn as
    the page draws them."""
    ceiling = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** attempts)
    return ceiling / 2 + random.random() * ceiling / 2


class Session:
    """The connections of this worker and what the current measurement counts."""

    def __init__(self) -> None:
        self.conns: list[Conn] = []
        self.tag = b""  # the marker prefix the current measurement counts: b"@b1:"
        self.expect = 0  # marked frames each connection should get
        self.pending = 0  # connections that have not got them all yet
        self.done = asyncio.Event()
        self.latencies: list[int] = []  # µs, publish to receive, when timing
        self.received = 0  # marked frames received, all connections together
        self.probe_samples: list[list[int]] = []  # [sent_ns, rtt_us] per probe round trip
        self.probe_stopping = asyncio.Event()
        self.probe_task: Optional[asyncio.Task[None]] = None

    # Opening and closing.

    async def open(self, host: str, port: int, path: str, indices: list[int], welcome: bool,
                   concurrency: int, timeout: float, room_size: int = 1,
                   tcp: bool = False, sources: Optional[list[str]] = None,
                   track: bool = False) -> dict[str, Any]:
        """Open one connection per index, ``concurrency`` handshakes in flight at most; with
        ``tcp``, raw TCP chat connections that join the room ``path``. With ``sources``,
        connection ``i`` binds the loopback address ``sources[i % len(sources)]`` (many
        clients' addresses); with ``track``, each keeps the newest message id it sees."""
        kind = LineConn if tcp else Conn
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        opened: list[Conn] = []

        def made(target: str, index: int) -> Conn:
            conn = kind(host, port, target, welcome, index)
            if track:
                conn.on_data = _welcome_tracked
            return conn

        async def one(index: int) -> None:
            target = path.format(i=index, room=index // room_size)
            local = (sources[index % len(sources)], 0) if sources else None
            async with gate:
                try:
                    _, conn = await asyncio.wait_for(loop.create_connection(
                        lambda: made(target, index), host, port, local_addr=local), timeout)
                    await asyncio.wait_for(conn.ready, timeout)
                    opened.append(conn)
                except (OSError, asyncio.TimeoutError) as error:
                    errors.append(f"{type(error).__name__}: {error}")

        t0 = monotonic_ns()
        await asyncio.gather(*(one(index) for index in indices))
        t1 = monotonic_ns()
        opened.sort(key=lambda conn: conn.index)
        self.conns.extend(opened)
        return {"opened": len(opened), "failed": len(errors), "error": errors[:1],
                "t0": t0, "t1": t1}

    def close(self) -> dict[str, Any]:
        """Abort every connection (a reset: no TIME_WAIT left behind on either side)."""
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.abort()
        closed = len(self.conns)
        self.conns = []
        return {"closed": closed}

    # A reconnect storm: the server restarts and every page comes back.

    def seed(self, tag: str, count: int, room_size: int) -> dict[str, Any]:
        """``count`` chat messages from the first connection of each room, so the rooms
        have history and every page a newest id for its ``?since=``."""
        sent = 0
        for conn in self.conns:
            if conn.index % room_size == 0 and not conn.closed:
                conn.write(b"".join(conn.message(tag, seq) for seq in range(count)))
                sent += count
        return {"sent": sent}

    async def reconnect(self, host: str, port: int, path: str, room_size: int,
                        sources: list[str], timeout: float) -> dict[str, Any]:
        """Once its server has closed it, every connection comes back as the chat page's
        socket does (``static/js/socket.js``): after ``retry_delay(attempts)``, where
        ``attempts`` counts its failed tries in a row (a refused connect, a refused or
        closed handshake), from the same source address, at ``path`` formatted with
        ``{i}``, ``{room}`` and ``{since}`` (``&since=<newest id seen>``, or nothing).
        Sent before the server is stopped; answers once every connection has its welcome
        or ``timeout`` seconds have passed: per welcomed connection the monotonic ns of its
        welcome and the µs from the start of its last attempt to its welcome."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        old, self.conns = self.conns, []
        welcomes: list[int] = []
        handshakes: list[int] = []
        tries: list[int] = []
        errors: list[str] = []

        async def back(gone: Conn) -> None:
            lost = loop.create_future()
            gone.on_lost = lambda: lost.done() or lost.set_result(None)
            if gone.closed:
                lost.set_result(None)
            await asyncio.wait_for(lost, deadline - time.monotonic())
            since = "" if gone.last_id is None else f"&since={gone.last_id}"
            target = path.format(i=gone.index, room=gone.index // room_size, since=since)
            local = (sources[gone.index % len(sources)], 0)
            attempts = 0
            while True:
                await asyncio.sleep(retry_delay(attempts))
                attempts += 1  # the page counts an attempt before it knows how it went
                started = monotonic_ns()
                try:
                    _, conn = await asyncio.wait_for(loop.create_connection(
                        lambda: Conn(host, port, target, True, gone.index), host, port,
                        local_addr=local), deadline - time.monotonic())
                    await asyncio.wait_for(conn.ready, deadline - time.monotonic())
                except OSError:  # refused, 429, closed, timed out (TimeoutError is one)
                    if time.monotonic() >= deadline:
                        raise
                    continue
                now = monotonic_ns()
                welcomes.append(now)
                handshakes.append((now - started) // 1000)
                tries.append(attempts)
                self.conns.append(conn)
                return

        async def guarded(gone: Conn) -> None:
            try:
                await back(gone)
            except (OSError, asyncio.TimeoutError) as error:
                errors.append(f"{type(error).__name__}: {error}")

        await asyncio.gather(*(guarded(conn) for conn in old))
        return {"welcomed": len(welcomes), "failed": len(errors), "error": errors[:1],
                "welcome_ns": welcomes, "handshake_us": handshakes, "attempts": tries,
                "with_since": sum(1 for conn in old if conn.last_id is not None)}

    # Fan-out: count marked frames per connection, time the last one.

    def arm(self, tag: str, expect: int, timed: bool) -> dict[str, Any]:
        """Count frames marked ``tag`` from now; with ``timed``, keep their latencies."""
        self.tag = f"@{tag}:".encode()
        self.expect = expect
        self.latencies = []
        self.received = 0
        self.done.clear()
        live = [conn for conn in self.conns if not conn.closed]
        self.pending = len(live)
        handler = self._timed if timed else self._counted
        for conn in live:
            conn.count = 0
            conn.done_ns = 0
            conn.on_data = handler
        if not live:
            self.done.set()
        return {"armed": len(live)}

    def _counted(self, conn: Conn, buf: bytes, start: int, end: int) -> None:
        if buf.find(self.tag, start, end) < 0:
            return
        self.received += 1
        conn.count += 1
        if conn.count == self.expect:
            conn.done_ns = monotonic_ns()
            self.pending -= 1
            if not self.pending:
                self.done.set()

    def _timed(self, conn: Conn, buf: bytes, start: int, end: int) -> None:
        at = buf.find(self.tag, start, end)
        if at < 0:
            return
        now = monotonic_ns()
        at += len(self.tag)
        sent = int(buf[at:buf.find(b"@", at, end)].split(b":")[1])
        self.latencies.append((now - sent) // 1000)
        self.received += 1
        conn.count += 1
        if conn.count == self.expect:
            conn.done_ns = now
            self.pending -= 1
            if not self.pending:
                self.done.set()

    async def wait(self, timeout: float) -> dict[str, Any]:
        """Until every armed connection has every marked frame, or ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        armed = [conn for conn in self.conns if conn.on_data in (self._counted, self._timed)]
        complete = sum(1 for conn in armed if conn.count >= self.expect)
        last = max((conn.done_ns for conn in armed), default=0)
        result = {"complete": complete, "total": len(armed), "last_ns": last,
                  "received": self.received}
        if self.latencies:
            result["latencies_us"] = self.latencies
        for conn in armed:
            conn.on_data = _ignore
        return result

    async def publish(self, tag: str, count: int, rate: float) -> dict[str, Any]:
        """Send ``count`` marked chat messages from the first connection: all in one write
        (``rate`` 0), or ``rate`` per second."""
        publisher = next(conn for conn in self.conns if not conn.closed)
        if rate <= 0:
            frames = b"".join(publisher.message(tag, seq) for seq in range(count))
            t0 = monotonic_ns()
            publisher.write(frames)
            return {"t0": t0}
        t0 = time.monotonic()
        for seq in range(count):
            delay = t0 + seq / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            publisher.write(publisher.message(tag, seq))
        return {"t0": int(t0 * 1e9)}

    async def publish_each(self, tag: str, count: int) -> dict[str, Any]:
        """Send ``count`` marked chat messages from every connection, each connection's
        in one write, all at once."""
        live = [conn for conn in self.conns if not conn.closed]
        frames = [b"".join(conn.message(tag, seq) for seq in range(count)) for conn in live]
        t0 = monotonic_ns()
        for conn, data in zip(live, frames):
            conn.write(data)
        return {"t0": t0, "sent": len(live) * count}

    # Echo: each client keeps one frame in flight.

    async def echo(self, host: str, port: int, path: str, clients: int, duration: float,
                   size: int, timeout: float) -> dict[str, Any]:
        """``clients`` echo connections, one frame in flight each, for ``duration`` s."""
        loop = asyncio.get_running_loop()
        rtts: list[int] = []
        running = True

        def answered(conn: Conn, buf: bytes, start: int, end: int) -> None:
            now = monotonic_ns()
            rtts.append((now - conn.sent_ns) // 1000)
            if running:
                conn.sent_ns = now
                conn.write(conn.frame)  # type: ignore[attr-defined]

        conns = []
        try:
            for index in range(clients):
                _, conn = await asyncio.wait_for(loop.create_connection(
                    lambda: Conn(host, port, path, False, index), host, port), timeout)
                await asyncio.wait_for(conn.ready, timeout)
                conn.frame = client_frame(b"e" * size)  # type: ignore[attr-defined]
                conns.append(conn)
        except (OSError, asyncio.TimeoutError) as error:
            for conn in conns:
                conn.transport.abort()  # type: ignore[union-attr]
            return {"error": f"{type(error).__name__}: {error}"}
        cpu0, t0 = time.process_time(), monotonic_ns()
        for conn in conns:
            conn.on_data = answered
            conn.sent_ns = monotonic_ns()
            conn.write(conn.frame)  # type: ignore[attr-defined]
        await asyncio.sleep(duration)
        running = False
        done, elapsed = len(rtts), (monotonic_ns() - t0) / 1e9
        cpu = time.process_time() - cpu0
        for conn in conns:
            conn.transport.abort()  # type: ignore[union-attr]
        rtts.sort()
        return {"round_trips": done, "elapsed": elapsed, "cpu": cpu,
                "p50_us": rtts[len(rtts) // 2] if rtts else None,
                "p99_us": rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)] if rtts else None}

    # Health: HTTP requests one at a time, as a monitor polls.

    async def health(self, host: str, port: int, path: str, count: int,
                     timeout: float) -> dict[str, Any]:
        """``count`` ``GET path`` requests one after the other, each on a new connection (as a
        load balancer's health check); the time from connecting to the whole answer, and
        how many were not a 200."""
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Connection: close\r\n\r\n").encode()
        times: list[int] = []
        failed: list[str] = []
        for _ in range(count):
            start = monotonic_ns()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout)
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), timeout)
                writer.close()
            except (OSError, asyncio.TimeoutError) as error:
                failed.append(f"{type(error).__name__}: {error}")
                continue
            times.append((monotonic_ns() - start) // 1000)
            if not answer.startswith(b"HTTP/1.1 200"):
                failed.append(answer.split(b"\r\n", 1)[0].decode(errors="replace"))
        times.sort()
        result: dict[str, Any] = {"requests": count, "answered": len(times),
                                  "failed": len(failed), "error": failed[:1]}
        if times:
            result.update(p50_us=times[len(times) // 2],
                          p99_us=times[min(len(times) - 1, len(times) * 99 // 100)],
                          max_us=times[-1])
        return result

    # Probe: one echo client timing round trips while something else loads the server.

    async def probe_start(self, host: str, port: int, path: str, interval: float,
                          timeout: float) -> dict[str, Any]:
        """Open one echo connection and send a frame every ``interval`` s after each reply,
        until ``probe_stop``."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: Conn(host, port, path, False, -1), host, port), timeout)
            await asyncio.wait_for(conn.ready, timeout)
        except (OSError, asyncio.TimeoutError) as error:
            return {"error": f"{type(error).__name__}: {error}"}
        self.probe_samples = []
        self.probe_stopping.clear()
        self.probe_task = asyncio.create_task(self._probe(conn, interval))
        return {"started": True}

    async def _probe(self, conn: Conn, interval: float) -> None:
        loop = asyncio.get_running_loop()
        replied: asyncio.Future[int] = loop.create_future()

        def answered(conn: Conn, buf: bytes, start: int, end: int) -> None:
            if not replied.done():
                replied.set_result(monotonic_ns())

        conn.on_data = answered
        frame = client_frame(b"probe")
        stopping = asyncio.ensure_future(self.probe_stopping.wait())
        try:
            while not self.probe_stopping.is_set():
                replied = loop.create_future()
                sent = monotonic_ns()
                conn.write(frame)
                await asyncio.wait([replied, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not replied.done():  # stopped while a reply is due: give it 5 s more
                    await asyncio.wait([replied], timeout=5.0)
                got = replied.result() if replied.done() else monotonic_ns()
                self.probe_samples.append([sent, (got - sent) // 1000])
                await asyncio.sleep(interval)
        finally:
            stopping.cancel()
            conn.transport.abort()  # type: ignore[union-attr]

    async def probe_stop(self) -> dict[str, Any]:
        """Stop the probe; its round trips as ``[[sent_ns, rtt_us], ...]``."""
        self.probe_stopping.set()
        if self.probe_task is not None:
            await asyncio.wait([self.probe_task], timeout=10.0)
        return {"samples": self.probe_samples}


async def worker_main() -> None:
    """Serve commands from stdin until ``exit`` or end of input."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    session = Session()
    tasks = set()

    def reply(ident: int, result: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(dict(result, id=ident)) + "\n")
        sys.stdout.flush()

    async def run(command: dict[str, Any]) -> None:
        ident, name = command.pop("id"), command.pop("cmd")
        try:
            method = getattr(session, name)
            result = method(**command)
            if asyncio.iscoroutine(result):
                result = await result
        except Exception as error:  # the controller shows it in the table
            result = {"error": f"{type(error).__name__}: {error}"}
        reply(ident, result)

    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "exit":
            break
        task = asyncio.create_task(run(command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    session.close()


class Worker:
    """The controller's handle on one load-client process.

    Args:
        cores: CPUs the process is pinned to (``os.sched_setaffinity``), or None.
    """

    def __init__(self, cores: Optional[set[int]], loop: str = "asyncio") -> None:
        self.cores = cores
        self.loop = loop  # the worker's event loop: "asyncio" or "uvloop"
        self.process: Optional[asyncio.subprocess.Process] = None
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: Optional[asyncio.Task[None]] = None

    async def start(self) -> None:
        cores = self.cores
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, os.path.join(HERE, "loadclient.py"), self.loop,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**27,
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
        self._reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            result = json.loads(line)
            future = self._waiting.pop(result.pop("id"), None)
            if future is not None and not future.done():
                future.set_result(result)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("the load client exited"))

    async def call(self, cmd: str, wait: float = 60.0, **args: Any) -> dict[str, Any]:
        """Run one command in the worker; no answer within ``wait`` seconds is an error."""
        assert self.process is not None and self.process.stdin is not None
        self._next += 1
        ident = self._next
        future = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self.process.stdin.write((json.dumps(dict(args, id=ident, cmd=cmd)) + "\n").encode())
        await self.process.stdin.drain()
        try:
            return await asyncio.wait_for(future, wait)
        except asyncio.TimeoutError:
            self._waiting.pop(ident, None)
            return {"error": f"no answer to {cmd} within {wait:.0f} s"}

    async def stop(self) -> None:
        """Ask the worker to exit; kill it (by its pid) if it does not within 5 s."""
        if self.process is None or self.process.returncode is not None:
            return
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"cmd": "exit"}\n')
            await self.process.stdin.drain()
            await asyncio.wait_for(self.process.wait(), 5)
        except (OSError, asyncio.TimeoutError):
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()


def run_worker(loop: str) -> None:
    """Run a worker on ``loop``: ``uvloop`` (the same protocol code, a faster event loop) or
    ``asyncio``."""
    if loop == "uvloop":
        import uvloop
        uvloop.run(worker_main())
    else:
        asyncio.run(worker_main())


def default_loop() -> str:
    """``uvloop`` when it is installed (``pip install .[bench]``), else ``asyncio``."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


if __name__ == "__main__":
    run_worker(sys.argv[1] if len(sys.argv) > 1 else default_loop())
