"""How many bytes Tornado still holds for a WebSocket client: the one place that reads its
internals.

Tornado's public API tells when a write has completed (the awaitable ``write_message``
returns) but not how much waits behind it, and a counter kept beside it would be wrong: it
learns of a completed write only on a later turn of the loop, after the kernel took the
bytes. Only the connection's ``IOStream`` knows the figure. ``IOStream.write`` appends the
frame, header included, to ``_write_buffer`` and at once sends what the kernel takes, so
what stays in the buffer is exactly what the kernel refused.

``tests/test_tornado_internals.py`` checks these assumptions against the installed Tornado, so an
upgrade that changes them fails there loudly instead of silently switching off flow control.
"""

import sys
from typing import Any, Optional

import tornado
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.websocket import WebSocketProtocol13

from realtime.delivery import CLOSED, STALLED, WRITTEN


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
    event streams of ``handlers.transport``).
    """
    if stream is None or stream.closed():
        return 0
    return len(stream._write_buffer)


# The fast path: a frame built once per publish, written to each stream with no Task, no
# Future and no header or copy per subscriber. It relies on what unflushed_bytes() does and
# on three more internals of IOStream: the write indices, which must keep agreeing with the
# buffer (Tornado resolves its own write futures by them), and _add_io_state, which asks the
# loop to call back when the socket can take more. tests/test_tornado_internals.py checks them all.
VERIFIED_TORNADO = ((6, 5), (6, 6))  # minor versions this module was checked against


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


class FrameWriter:
    """Writes an envelope's prebuilt WebSocket frame to one uncompressed connection.

    Frames are appended whole to the stream Tornado writes its own frames (pings, pongs,
    closes) to, on the loop's one thread, so they never interleave and keep their order.
    """

    __slots__ = ("_connection", "_stream", "_buffer")

    def __init__(self, handler: Any, stream: IOStream) -> None:
        self._connection = handler.ws_connection
        self._stream = stream
        self._buffer = stream._write_buffer

    def write(self, envelope: Any, max_pending: int) -> int:
        """Write ``envelope.ws_frame`` unless the stream is closed or holds over
        ``max_pending`` bytes; WRITTEN, CLOSED or STALLED."""
        if self._connection.is_closing():
            return CLOSED
        if len(self._buffer) > max_pending:
            return STALLED
        return append(self._stream, envelope.ws_frame)

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


class ResponseStream:
    """The body of one HTTP response, written straight into its connection's stream once
    its headers are out (an event stream: ``handlers/transport.py``).

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
