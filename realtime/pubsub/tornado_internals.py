"""Every use of Tornado's private attributes, in one module.

Tornado's public API leaves out a few things this server needs. Each is reached here
through a small, named, typed function or class; no other module touches a name Tornado
keeps private. ``INTERNALS`` lists every such name by the class that owns it, and
``tests/pubsub/test_tornado_internals.py`` checks each against the installed Tornado (it exists,
with the type and behaviour relied on) and that no other module uses one, so an upgrade
that changes them fails there loudly instead of silently switching something off.

* **What a stream still holds** (``unflushed_bytes``, ``stream_unflushed_bytes``): flow
  control. Tornado tells when a write has completed (the awaitable ``write_message``
  returns) but not how much waits behind it, and a counter kept beside it would be wrong: it
  learns of a completed write only on a later turn of the loop, after the kernel took the
  bytes. Only the connection's ``IOStream`` knows the figure. ``IOStream.write`` appends
  the frame, header included, to ``_write_buffer`` and at once sends what the kernel takes,
  so what stays in the buffer is exactly what the kernel refused.
* **The fast path** (``fast_stream``, ``FrameWriter``, ``append``, ``ResponseStream``): a
  frame built once per publish, written to each stream with no Task, no Future and no
  header or copy per subscriber. It keeps the stream's write indices agreeing with its
  buffer (Tornado resolves its own write futures by them) and asks the loop, through
  ``_add_io_state``, to call back when the socket can take more. A WebSocket's first
  frame in a turn of the loop is sent at once; later ones in the same turn wait for its
  end (``WriteBatch``) and leave through Tornado's own ``_handle_write``, so the frames
  one connection gets in a turn (the ``joined`` frames of a reconnect storm) cost two
  ``send()`` calls at most, and a fan-out (one frame a connection a turn) keeps the
  direct send; the bound of a slow consumer is judged only
  after that send, so what counts is still what the kernel refused. A WebSocket qualifies
  without compression (``WebSocketProtocol13._compressor``); an event stream must know
  whether Tornado chunks its body (``HTTP1Connection._chunking_output``). Only on a
  ``VERIFIED_TORNADO``; elsewhere everything goes through the public writes.
* **Counting every frame a client sends** (``CountingProtocol``, ``counting``): Tornado
  tells a handler about each whole message, ping and pong, not about a data frame that
  does not end its message, so a client could send endless empty continuation fragments
  and never be counted. The bulk reader below tells the handler of each such fragment
  itself; on Tornado's own reader ``CountingProtocol`` overrides
  ``WebSocketProtocol13._receive_frame`` (one frame read and handled per call, Tornado 6.x);
  ``check_tornado()`` fails at import if it is gone, so the server refuses to start
  without it.
* **Reading frames in bulk** (``CountingProtocol._receive_frame_loop``, ``reads_fast``):
  Tornado reads each frame with two to four ``read_bytes`` calls (header, length, mask,
  payload), each a Future, and handles it in a coroutine step of its own. On an
  uncompressed connection of a ``FAST_READ_TORNADO`` the loop is replaced by one that
  reads whatever the socket holds and hands it to the pure parser
  ``realtime.wire.inbound.FrameReader``. On a plain ``IOStream`` it reads in the loop's
  own callback for the readable socket, the way an asyncio ``Protocol`` does: the IOLoop's
  entry for the socket (``BaseAsyncIOLoop.handlers``, an undocumented attribute the guard
  test checks too) calls ``CountingProtocol.on_events`` instead of the stream's
  ``_handle_events``, and while the reader waits a readable socket goes to
  ``on_readable``, which reads it once and handles every frame it completes there and
  then, with no Future, no coroutine step and no read attempt that could only fail with
  ``EAGAIN`` per message; every other event is the stream's. To Tornado the
  reader's future is the stream's pending read (``_read_future``, ``_add_io_state``): the
  socket stays watched for reads, and the future fails with ``StreamClosedError`` when the
  stream closes, as a ``read_bytes`` would. While an ``async`` hook is awaited the
  coroutine takes over and the stream's own read fills its buffer;
  what it holds (``_read_buffer_size``) is taken next through the public
  ``read_bytes(n, partial=True)``, as is everything on a stream of another kind. The
  answers to the frames of one read are sent together (``corked``: held in the stream's
  buffer, then one ``_handle_write``), so a burst costs one ``send``, not one a frame. The
  parser checks every rule of RFC 6455 Tornado checks and more (masking, close frames,
  UTF-8 fragment by fragment). The reader then does what
  Tornado's ``_handle_message`` would: answers a ping (``_send_pong``), marks a pong for
  the ping timeout (``_received_pong``), runs the handler's hooks inside Tornado's error
  boundary (``_run_callback``), echoes a close; it reports a fragment to the handler
  (``on_fragment``) itself, so the rate limit counts every frame; it fails a connection
  that breaks a rule with a close frame of the parser's code (1002, 1007, 1009) where
  Tornado drops the TCP connection without one (but for 1009), and ends on a closed
  stream as Tornado does (``_abort``). Payloads are unmasked by Tornado's C
  ``tornado.speedups.websocket_mask`` when it is built, else by the parser's
  ``int.from_bytes`` XOR. With compression (``--compression``) or another Tornado,
  Tornado's own loop runs, counted through ``_receive_frame`` below.
* **Answering an invalid close frame with 1002** (``CountingProtocol._handle_message``):
  Tornado echoes whatever close code a client sends, a reserved or undefined one too, and
  fails on a reason that is not UTF-8; RFC 6455 wants such a close answered with 1002 (1007
  for the reason). The check itself is ``realtime.wire.closecodes.close_frame_problem``.
* **Letting go of the handshake** (``shed_handshake``): Tornado keeps a WebSocket
  handler's request (its headers, query arguments, cookies and spent HTTP/1 connection),
  its response headers and its template namespace for the connection's whole life,
  though after the 101 none of them is read again (``write``, ``finish`` and the other
  HTTP methods are disabled by then); at some thousands of connections they are a good
  part of the memory per idle socket (``bench/memory_profile.py``). The response headers
  (``RequestHandler._headers``) and the cookie cache (``HTTPServerRequest._cookies``) are
  private.
* **A response's reason phrase** (``reason_phrase``): what ``set_status`` set, for the
  JSON and HTML error bodies (``RequestHandler._reason``).
* **Accepting through our own loop** (``add_listening_socket``): what
  ``TCPServer.add_sockets`` records so that ``stop()`` stops accepting
  (``TCPServer._sockets``, ``_handlers``, ``_handle_connection``), for ``realtime.ops.accept``.
"""

import asyncio
import inspect
import socket
import struct
import sys
import weakref
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Iterator, Optional, Protocol

import tornado
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.log import gen_log
from tornado.platform.asyncio import BaseAsyncIOLoop
from tornado.tcpserver import TCPServer
from tornado.web import RequestHandler
from tornado.websocket import WebSocketProtocol, WebSocketProtocol13

from realtime.pubsub.delivery import CLOSED, STALLED, WRITTEN
from realtime.wire import inbound
from realtime.wire.closecodes import close_frame_problem

try:  # Tornado's C extension, built with most installs; the parser's XOR otherwise
    from tornado.speedups import websocket_mask as UNMASK
except ImportError:
    UNMASK = inbound.unmask

# Every private name of Tornado's used below, by the class that owns it (instance
# attributes and methods alike). tests/pubsub/test_tornado_internals.py checks each one.
INTERNALS: dict[type, tuple[str, ...]] = {
    IOStream: ("_write_buffer", "_total_write_index", "_total_write_done_index",
               "_add_io_state", "_read_buffer_size", "_read_future", "_handle_events",
               "_handle_write"),
    WebSocketProtocol13: ("_compressor", "_receive_frame", "_handle_message",
                          "_receive_frame_loop", "_send_pong", "_received_pong",
                          "_run_callback", "_abort"),
    HTTP1Connection: ("_chunking_output",),
    RequestHandler: ("_reason", "_finished", "_headers"),
    HTTPServerRequest: ("_cookies",),
    TCPServer: ("_sockets", "_handlers", "_handle_connection"),
}

VERIFIED_TORNADO = ((6, 5), (6, 6))  # minor versions the fast path was checked against

# The inbound fast path (CountingProtocol._receive_frame_loop): on unless turned off here,
# and only on the minor versions its internals (_send_pong above all) were checked against.
FAST_READ = True
FAST_READ_TORNADO = ((6, 6),)
READ_SIZE = 256 * 1024  # the most bytes one read takes from the stream's buffer
# As Tornado's websocket loop: let other callbacks run after this much work, each frame
# counting as 1 KB besides its bytes.
YIELD_THRESHOLD = 256 * 1024
FRAME_YIELD_COST = 1024
# Reads of what a client sent that ``abort`` drops before closing its socket, at most.
UNREAD_READS = 4


# What a stream still holds.

def unflushed_bytes(handler: Any) -> int:
    """Bytes queued for ``handler``'s client that Tornado has not yet handed to the kernel.

    Frames count whole, headers included (compressed, if the client negotiated compression).
    0 before the handshake and once the stream is closed: Tornado frees its buffer then.

    Args:
        handler: a ``tornado.websocket.WebSocketHandler`` (typed loosely, as the hub's
            subscribers are).
    """
    connection = handler.ws_connection
    return stream_unflushed_bytes(connection.stream if connection is not None else None)


def stream_unflushed_bytes(stream: Optional[IOStream]) -> int:
    """Bytes written to ``stream`` that it has not yet handed to the kernel; 0 once closed.

    For any transport on a plain ``IOStream`` (the raw TCP lines of ``handlers.tcp``, the
    event streams of ``handlers.http``).
    """
    if stream is None or stream.closed():
        return 0
    return len(stream._write_buffer)


# The fast path.


def fast_stream(handler: Any) -> Optional[IOStream]:
    """The plain ``IOStream`` of ``handler``'s connection if prebuilt frames can go straight
    into it, else None (compression negotiated, TLS in Tornado, an unverified Tornado)."""
    if tornado.version_info[:2] not in VERIFIED_TORNADO or sys.platform == "win32":
        return None
    connection = handler.ws_connection
    if not isinstance(connection, WebSocketProtocol13):
        return None
    if connection._compressor is not None or connection.mask_outgoing:
        return None
    stream = connection.stream
    if type(stream) is not IOStream or stream.closed():
        return None
    return stream


class WriteBatch:
    """The streams written to in this turn of the loop: the first frame a connection gets in
    a turn is sent at once, any later ones wait for the start of the next turn.

    Frames for one connection within a turn (a room's ``joined`` frames while a reconnect
    storm welcomes many of its members, a burst of messages read at once) then leave in
    one ``send()`` after the first instead of one each: on loopback a send costs more than
    building the frame. A fan-out, whose slices give each connection one frame a turn,
    keeps the direct send (``append``), cheaper than a deferred one through Tornado's
    ``_handle_write``. The batch's callback is queued before anything the next turn's poll
    brings, so it is the next turn's first work.
    """

    __slots__ = ("_loop", "_streams", "_touched")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._streams: list[IOStream] = []
        self._touched: set[IOStream] = set()

    def first(self, stream: IOStream) -> bool:
        """Whether this is ``stream``'s first frame in this turn (remembered until the next)."""
        touched = self._touched
        if stream in touched:
            return False
        if not touched and not self._streams:
            self._loop.call_soon(self.flush)
        touched.add(stream)
        return True

    def add(self, stream: IOStream) -> None:
        """Send what ``stream`` holds at the start of the next turn."""
        if not self._streams and not self._touched:
            self._loop.call_soon(self.flush)
        self._streams.append(stream)

    def flush(self) -> None:
        """Hand every batched stream's bytes to the kernel now (what it refuses waits for
        the socket to be writable, as after any write of Tornado's); a new turn begins."""
        streams, self._streams = self._streams, []
        self._touched.clear()
        for stream in streams:
            send_held(stream)


_batches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch]" = (
    weakref.WeakKeyDictionary())


def write_batch() -> WriteBatch:
    """The running loop's ``WriteBatch``."""
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = WriteBatch(loop)
    return batch


def send_held(stream: IOStream) -> None:
    """Send what ``stream`` holds as far as the kernel takes it, as Tornado's own write
    does; the rest waits for the socket to be writable. A failed send closes the stream."""
    buffer = stream._write_buffer
    if stream.closed() or buffer is None or not len(buffer):
        return
    stream._handle_write()  # a failed send closes the stream (its buffer is then None)
    if not stream.closed() and len(stream._write_buffer):
        stream._add_io_state(IOLoop.WRITE)


def hold(stream: IOStream, data: bytes, batch: WriteBatch) -> None:
    """Queue ``data`` behind what ``stream`` holds, with no send now: it leaves with the
    turn's ``batch``, or with the send already due (batched, corked, or the socket
    writable)."""
    buffer = stream._write_buffer
    if not len(buffer) and stream not in corked_streams:
        batch.add(stream)
    buffer.append(data)
    stream._total_write_index += len(data)


class FrameWriter:
    """Writes an envelope's prebuilt WebSocket frame to one uncompressed connection.

    Frames are appended whole to the stream Tornado writes its own frames (pings, pongs,
    closes) to, on the loop's one thread, so they never interleave and keep their order.
    A connection's first frame in a turn of the loop is sent at once; later ones are sent
    at the start of the next turn (``WriteBatch``), together in one ``send()``; Tornado
    writing to the stream meanwhile sends them first.
    """

    __slots__ = ("_connection", "_stream", "_buffer", "_batch")

    def __init__(self, handler: Any, stream: IOStream) -> None:
        self._connection = handler.ws_connection
        self._stream = stream
        self._buffer = stream._write_buffer
        self._batch = write_batch()

    def write(self, envelope: Any, max_pending: int) -> int:
        """Write ``envelope.ws_frame`` unless the stream is closed or holds over
        ``max_pending`` bytes the kernel refused; WRITTEN, CLOSED or STALLED."""
        if self._connection.is_closing():
            return CLOSED
        buffer, stream = self._buffer, self._stream
        if len(buffer) > max_pending:
            # Only bytes the kernel refused count: hand it what waits for this turn's end.
            send_held(stream)
            if stream.closed():
                return CLOSED
            if len(buffer) > max_pending:
                return STALLED
        data = envelope.ws_frame
        if len(buffer) or stream in corked_streams or self._batch.first(stream):
            # Queued behind what waits, held by corked(), or its first frame this turn
            # (sent at once): append's cases.
            return append(stream, data)
        hold(stream, data, self._batch)
        return WRITTEN

    def unflushed(self) -> int:
        """Bytes still held for this connection."""
        return len(self._buffer)


def append(stream: IOStream, data: bytes) -> int:
    """Write ``data`` to a plain ``IOStream`` (one ``fast_stream`` or ``ResponseStream``
    found fit) with no Future: sent at once as far as the kernel takes it, the rest queued
    behind what the stream already holds, in order. WRITTEN, or CLOSED if the send failed."""
    buffer = stream._write_buffer
    size = len(data)
    stream._total_write_index += size
    if len(buffer):
        # Tornado already waits for the socket to be writable and will send this after
        # what is ahead of it.
        buffer.append(data)
        return WRITTEN
    if stream in corked_streams:
        # The frames of one read are being answered: they go out together at the end.
        corked_streams[stream] = stream._total_write_done_index
        buffer.append(data)
        return WRITTEN
    try:
        sent = stream.socket.send(data)
    except BlockingIOError:
        sent = 0
    except OSError as error:
        stream._total_write_index -= size
        stream.close(exc_info=error)  # as Tornado does on a failed send: on_close follows
        return CLOSED
    stream._total_write_done_index += sent
    if sent < size:
        buffer.append(memoryview(data)[sent:])
        stream._add_io_state(IOLoop.WRITE)
    return WRITTEN


# Closing every connection at once (server shutdown).


def close_frame(code: int, reason: str) -> bytes:
    """The unmasked close frame a server sends with ``code`` and ``reason`` (at most 123
    bytes of UTF-8, as for any control frame)."""
    payload = struct.pack(">H", code) + reason.encode()
    if len(payload) > 125:
        raise ValueError("a close frame's reason is at most 123 bytes")
    return bytes((0x88, len(payload))) + payload


def send_close_unwaited(handler: Any, frame: bytes) -> bool:
    """Queue ``frame`` (``close_frame``) on ``handler``'s connection as its close, sent
    with this turn's other frames (``WriteBatch``), and mark the close as sent
    (``server_terminated``), without Tornado's 5 s timer per connection for the client's
    reply: the caller ends what is still open with ``abort`` once the kernel has taken
    the frames. A client's reply arriving meanwhile closes the stream as usual.

    False, with nothing done, where this does not apply (the fast path's conditions, or a
    close already sent): the caller closes through Tornado instead.
    """
    protocol = handler.ws_connection
    stream = fast_stream(handler)
    if stream is None or protocol.server_terminated or protocol.client_terminated:
        return False
    hold(stream, frame, write_batch())
    protocol.server_terminated = True
    return True


def abort(handler: Any) -> None:
    """Close ``handler``'s WebSocket now, its close frame sent or not, as Tornado's close
    timer would at its end (``_abort``): the stream closes and ``on_close`` follows.

    What the client sent and nobody read (its close reply, above all) is read and dropped
    first: a socket closed with unread bytes ends in a reset, which may discard our close
    frame still in flight; without them the kernel sends what it holds, then a FIN.
    """
    protocol = handler.ws_connection
    if protocol is None or protocol.stream is None:
        return
    stream = protocol.stream
    if not stream.closed():
        try:
            for _ in range(UNREAD_READS):  # bounded: a client may still be sending
                if not stream.socket.recv(READ_SIZE):
                    break
        except OSError:  # nothing more to read (EAGAIN), or a reset: close all the same
            pass
    protocol._abort()


# Streams whose writes are held back while the frames of one read are answered (corked),
# each with its _total_write_done_index when the hold began: once Tornado sends, what is
# left in the buffer is what the kernel refused, no longer held by choice.
corked_streams: dict[IOStream, int] = {}


def holding(stream: IOStream) -> bool:
    """Whether all ``stream``'s buffer holds is held by ``corked``, none of it refused by the
    kernel: the slow-consumer bound does not apply to it."""
    return corked_streams.get(stream) == stream._total_write_done_index


@contextmanager
def corked(stream: IOStream) -> Iterator[None]:
    """Within the block, what ``append`` writes to ``stream`` only joins its buffer; at the
    end it goes out in one send as far as the kernel takes it, the rest when the socket is
    writable (Tornado's ``_handle_write``), so the answers to a burst of frames read at
    once cost one system call, not one each. Tornado's own writes meanwhile (a pong, a
    close) send everything held before them, in order. A stream that holds bytes already
    is not corked: Tornado waits for its socket, and appended frames queue anyway."""
    if len(stream._write_buffer):
        yield
        return
    corked_streams[stream] = stream._total_write_done_index
    try:
        yield
    finally:
        held = holding(stream)
        del corked_streams[stream]
        if held and not stream.closed() and len(stream._write_buffer):
            stream._handle_write()  # sends until the kernel refuses; closes on an error
            if not stream.closed() and len(stream._write_buffer):
                stream._add_io_state(IOLoop.WRITE)


class ResponseStream:
    """The body of one HTTP response, written straight into its connection's stream once
    its headers are out (an event stream: ``handlers/http.py``).

    ``chunked`` says whether Tornado frames this response's body in chunks (an HTTP/1.1
    response without a ``Content-Length``): the writer must then send whole chunks, so
    that Tornado's own last chunk still ends the body. ``fast`` says whether bytes go in
    through ``append`` (a plain ``IOStream`` of a verified Tornado) or ``IOStream.write``.
    """

    __slots__ = ("stream", "chunked", "fast")

    def __init__(self, handler: Any) -> None:
        connection = handler.request.connection
        self.stream: IOStream = connection.stream
        self.chunked = bool(connection._chunking_output)
        self.fast = (tornado.version_info[:2] in VERIFIED_TORNADO and sys.platform != "win32"
                     and type(self.stream) is IOStream)

    def write(self, data: bytes) -> int:
        """Write ``data`` (already chunked if ``chunked``); WRITTEN or CLOSED."""
        stream = self.stream
        if stream.closed():
            return CLOSED
        if self.fast:
            return append(stream, data)
        stream.write(data)  # its Future retrieves its own error
        return WRITTEN

    def unflushed(self) -> int:
        """Bytes of this response the kernel has not taken yet."""
        return stream_unflushed_bytes(self.stream)


# Counting every frame a client sends.


# What on_readable hands read_frames: the awaitable of an async hook (None if the client
# ended the frames instead) and the events after the one that returned it.
Handback = tuple[Optional[Awaitable[None]], list[inbound.Event]]


class FrameCounter(Protocol):
    """What ``CountingProtocol`` needs from its handler."""

    frames_counted: int  # frames the handler counted in on_message, on_ping and on_pong

    def on_fragment(self) -> None:
        """A data frame arrived that does not end its message."""


def check_tornado() -> None:
    """Raise ``ImportError`` if Tornado no longer reads frames the way ``CountingProtocol``
    expects."""
    method = getattr(WebSocketProtocol13, "_receive_frame", None)
    if method is None or not inspect.iscoroutinefunction(method):
        raise ImportError(
            "tornado.websocket.WebSocketProtocol13._receive_frame is gone or no longer a "
            "coroutine: realtime/pubsub/tornado_internals.py cannot count fragments with this "
            "Tornado"
        )


check_tornado()


class CountingProtocol(WebSocketProtocol13):
    """Tornado's ``WebSocketProtocol13`` that tells its handler of every frame read: of a
    data frame that does not end its message through ``handler.on_fragment()``.

    Where ``reads_fast`` says so it reads frames in bulk through
    ``realtime.wire.inbound.FrameReader`` (``read_frames``), which reports such fragments as
    events. Elsewhere Tornado's loop reads them, and after each frame, if the handler heard
    of no message, ping or pong, this calls ``on_fragment()``: the handler (a
    ``FrameCounter``) keeps ``frames_counted``, the number of frames its public hooks have
    counted, which is how the protocol knows whether the frame was heard of.
    """

    # The bulk reader's state on a plain IOStream (read_frames): the parser, and the read
    # on_readable serves, None while read_frames awaits a hook or reads otherwise. Slots:
    # a key added to the instance dict after Tornado's own would cost some 1.5 KiB a
    # connection (Python's shared-key dict layout given up).
    __slots__ = ("reader", "waiting")
    reader: inbound.FrameReader
    waiting: "Optional[asyncio.Future[Handback]]"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = None

    async def _receive_frame_loop(self) -> None:
        if not reads_fast(self):
            await super()._receive_frame_loop()
            return
        try:
            await self.read_frames()
        except StreamClosedError:
            self._abort()
        finally:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    async def read_frames(self) -> None:
        """Read and handle frames until the client's close, a broken rule or a closed
        stream (``StreamClosedError``): the fast path of ``_receive_frame_loop``.

        On a plain ``IOStream`` the frames are read and handled in the loop's callback for
        the readable socket (``on_readable``), with no Future or coroutine step per read;
        this coroutine only waits, and takes over while an ``async`` hook is awaited.
        Bytes Tornado read meanwhile, or a stream of another kind, are read through the
        public ``read_bytes(n, partial=True)``.
        """
        stream = self.stream
        assert stream is not None
        reader = inbound.FrameReader(self.params.max_message_size, UNMASK)
        direct = type(stream) is IOStream and isinstance(stream.io_loop, BaseAsyncIOLoop)
        if direct:
            self.reader = reader
            self.watch(stream)
        work = 0  # bytes read, and a cost per frame, since the loop last let others run
        try:
            while not self.client_terminated:
                if direct and not stream._read_buffer_size and not stream.closed():
                    pending, events = await self.read_when_readable(stream)
                    if pending is not None:
                        await pending  # as Tornado: an async hook ends before the next frame
                else:
                    data = await stream.read_bytes(READ_SIZE, partial=True)
                    events = reader.feed(data)
                    work += len(data) + FRAME_YIELD_COST * len(events)
                for kind, payload in events:
                    if self.client_terminated:
                        break
                    done = self.handle_event(kind, payload)
                    if done is not None:
                        await done
                # Tornado's fairness rule: a client sending without pause must not hold the
                # loop, and a read served from the stream's buffer does not yield.
                if work >= YIELD_THRESHOLD:
                    work = 0
                    await asyncio.sleep(0)
        finally:
            if direct:
                if stream._read_future is self.waiting:
                    stream._read_future = None  # cancelled: no read of ours is pending
                self.unwatch(stream)
            self.waiting = None

    def watch(self, stream: IOStream) -> None:
        """Have the loop call ``on_events`` for ``stream``'s socket instead of the stream's
        own ``_handle_events`` (the stream's entry in the IOLoop's ``handlers``, looked up
        at every event); registered for reads first if it was not."""
        stream._add_io_state(IOLoop.READ)
        handlers = stream.io_loop.handlers  # type: ignore[attr-defined]
        fd = stream.socket.fileno()
        fileobj, _ = handlers[fd]
        handlers[fd] = (fileobj, self.on_events)

    def unwatch(self, stream: IOStream) -> None:
        """Give ``stream``'s events back to the stream, unless it has closed (its entry gone)."""
        if stream.closed():
            return
        handlers = stream.io_loop.handlers  # type: ignore[attr-defined]
        entry = handlers.get(stream.socket.fileno())
        if entry is not None and entry[1] == self.on_events:
            handlers[stream.socket.fileno()] = (entry[0], stream._handle_events)

    def on_events(self, fileobj: Any, events: int) -> None:
        """The loop's handler for the stream's socket while ``read_frames`` runs: a read
        while it waits (``read_when_readable``) is ``on_readable``'s; any other event is
        the stream's (a write, a read while a hook is awaited: Tornado's, into its
        buffer)."""
        waiting = self.waiting
        if events != IOLoop.READ or waiting is None or waiting.done():
            self.stream._handle_events(fileobj, events)  # type: ignore[union-attr]
            return
        try:
            self.on_readable(waiting)
        except Exception as error:  # as Tornado's _handle_events: log, close the stream
            gen_log.error("Uncaught exception, closing connection.", exc_info=True)
            self.stream.close(exc_info=error)  # type: ignore[union-attr]

    def read_when_readable(self, stream: IOStream) -> "asyncio.Future[Handback]":
        """Let ``on_readable`` read and handle the frames the socket gets next; done when
        a hook must be awaited or the client ended the stream of frames, with that hook's
        awaitable and the events after it; failed with ``StreamClosedError`` once the
        stream closes.

        To Tornado the future is the stream's pending read (``_read_future``): it keeps
        the socket watched for reads, backlog or not, and fails it when the stream closes,
        as it would fail a ``read_bytes``.
        """
        # The loop's own create_future: asyncio.Future() would ask for the running loop,
        # a getpid() system call each time.
        waiting: "asyncio.Future[Handback]" = (
            stream.io_loop.asyncio_loop.create_future())  # type: ignore[attr-defined]
        self.waiting = stream._read_future = waiting
        stream._add_io_state(IOLoop.READ)
        return waiting

    def on_readable(self, waiting: "asyncio.Future[Handback]") -> None:
        """Read the socket once, now readable while ``read_frames`` waits on it
        (``read_when_readable``), and handle every frame the bytes complete, at once."""
        stream: Any = self.stream
        try:
            data = stream.socket.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return  # nothing after all: the loop calls again when there is
        except OSError as error:  # a reset: the stream ends, as Tornado ends it
            stream.close(exc_info=error)
            return
        if not data:  # the client shut its side: Tornado closes the stream
            stream.close()
            return
        events = self.reader.feed(data)
        if len(events) == 1:
            self.handle_events(events, waiting)
        else:
            with corked(stream):  # the answers to a burst go out in one send
                self.handle_events(events, waiting)

    def handle_events(self, events: list[inbound.Event],
                      waiting: "asyncio.Future[Handback]") -> None:
        """Handle ``events`` at once for ``on_readable``, until a hook returns an awaitable
        or the client ends the frames: then ``waiting`` hands the rest to ``read_frames``."""
        stream: Any = self.stream
        for index, (kind, payload) in enumerate(events):
            done = self.handle_event(kind, payload)
            if waiting.done():
                return  # the stream closed (an abort, a failed send): read_frames ends
            if done is not None or self.client_terminated:
                stream._read_future = self.waiting = None
                waiting.set_result((done, [] if self.client_terminated else events[index + 1:]))
                return

    def handle_event(self, kind: int, payload: Any) -> Optional[Awaitable[None]]:
        """Do what Tornado's ``_handle_message`` would with one event of the parser; the
        awaitable of an ``async`` hook (message, pong), to await before the next frame."""
        handler: Any = self.handler
        if kind == inbound.TEXT or kind == inbound.BINARY:
            return self._run_callback(handler.on_message, payload)
        if kind == inbound.FRAGMENT:
            handler.on_fragment()
        elif kind == inbound.PING:
            self._send_pong(payload)
            self._run_callback(handler.on_ping, payload)
        elif kind == inbound.PONG:
            self._received_pong = True  # what Tornado's ping timeout looks at
            return self._run_callback(handler.on_pong, payload)
        elif kind == inbound.CLOSE:
            super()._handle_message(kind, payload)  # Tornado echoes the code
        else:  # FAILED: a close frame with the rule's code, then the stream ends
            self.client_terminated = True
            handler.close(*payload)
        return None

    async def _receive_frame(self) -> None:
        counter: Any = self.handler
        counted = counter.frames_counted
        await super()._receive_frame()
        # A close frame or a protocol error ends the connection: nothing left to count.
        if counter.frames_counted == counted and not self.client_terminated:
            counter.on_fragment()

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        # A close frame (0x8) with an invalid code, a 1-byte payload or a reason that is not
        # UTF-8 is answered with 1002 (1007) instead of echoed; the handler's close() records
        # the code for the disconnect log. Everything else is Tornado's.
        if opcode == 0x8 and not self.client_terminated:
            problem = close_frame_problem(data)
            if problem is not None:
                self.client_terminated = True  # so the close ends the stream at once
                self.handler.close(*problem)
                return None
        return super()._handle_message(opcode, data)


def reads_fast(protocol: WebSocketProtocol13) -> bool:
    """Whether ``protocol`` reads its frames through ``realtime.wire.inbound`` (uncompressed,
    on a verified Tornado, with ``FAST_READ`` on) rather than Tornado's own loop."""
    return (FAST_READ and tornado.version_info[:2] in FAST_READ_TORNADO
            and protocol._compressor is None and not protocol.mask_outgoing)


def counting(protocol: Optional[WebSocketProtocol]) -> Optional[WebSocketProtocol]:
    """``protocol`` (what ``WebSocketHandler.get_websocket_protocol`` built) as a
    ``CountingProtocol`` with the same handler and parameters; None stays None."""
    if not isinstance(protocol, WebSocketProtocol13):
        return protocol
    return CountingProtocol(protocol.handler, protocol.mask_outgoing, protocol.params)


# Letting go of the handshake.


class SpentHeaders(HTTPHeaders):
    """Headers let go by ``shed_handshake``: empty, and refusing to be written, so that one
    instance (``NO_HEADERS``) stands in for those of every open connection."""

    def add(self, name: str, value: str, **_: Any) -> None:
        raise RuntimeError("this WebSocket's handshake headers are let go; nothing is added")

    def __setitem__(self, name: str, value: str) -> None:
        self.add(name, value)


NO_HEADERS = SpentHeaders()
# The arguments let go by ``shed_handshake``: one empty mapping, read-only, for all.
NO_ARGUMENTS: Any = MappingProxyType({})


def shed_handshake(handler: RequestHandler) -> None:
    """Drop what ``handler``, an open WebSocket's, kept of its handshake and no longer needs.

    Kept: the request's method, URI, path, query string, remote address, protocol and host
    (what Tornado's error log names). Emptied: the request's headers, arguments and cookie
    cache, the response's headers (``NO_HEADERS``, ``NO_ARGUMENTS``); let go: the request's
    spent HTTP/1 connection and the handler's template namespace (``ui``, which Tornado
    itself drops at the close). Call it once the endpoint has read what it needs of the
    request; afterwards ``get_cookie``, ``get_argument`` and ``request.headers`` find
    nothing.
    """
    handler.ui = None
    handler._headers = NO_HEADERS
    request = handler.request
    # Emptied in place too: Tornado's suspended get() still holds the request's headers.
    request.headers.clear()
    request.headers = NO_HEADERS
    request.arguments = request.query_arguments = request.body_arguments = NO_ARGUMENTS
    request.connection = request.server_connection = None
    try:
        del request._cookies  # parsed only if a cookie was read
    except AttributeError:
        pass


# A response's reason phrase.


def reason_phrase(handler: RequestHandler) -> str:
    """The reason phrase of ``handler``'s status: the one given to ``set_status``, else the
    standard one for the code ("Unknown" for a code without one)."""
    return handler._reason


def response_finished(handler: RequestHandler) -> bool:
    """Whether ``handler`` has finished its response (Tornado keeps that flag private): a
    streaming body must stop collecting once a refusal is out."""
    return bool(handler._finished)


# Accepting through our own loop.

ConnectionHandler = Callable[[socket.socket, Any], None]  # (connection, address)


def add_listening_socket(
    server: TCPServer,
    sock: socket.socket,
    accept: Callable[[socket.socket, ConnectionHandler], Callable[[], None]],
) -> None:
    """Listen on ``sock`` for ``server`` as ``TCPServer.add_sockets`` does, but accepting
    through ``accept(sock, handle_connection)``, which starts accepting, hands each
    connection to ``handle_connection`` and returns what stops it (``server.stop()`` calls
    that and closes ``sock``)."""
    server._sockets[sock.fileno()] = sock
    server._handlers[sock.fileno()] = accept(sock, server._handle_connection)
