"""How many bytes Tornado still holds for a WebSocket client: the one place that reads its
internals.

Tornado's public API tells when a write has completed (the awaitable ``write_message``
returns) but not how much waits behind it, and a counter kept beside it would be wrong: it
learns of a completed write only on a later turn of the loop, after the kernel took the
bytes. Only the connection's ``IOStream`` knows the figure. ``IOStream.write`` appends the
frame, header included, to ``_write_buffer`` and at once sends what the kernel takes, so
what stays in the buffer is exactly what the kernel refused.

``tests/test_streams.py`` checks these assumptions against the installed Tornado, so an
upgrade that changes them fails there loudly instead of silently switching off flow control.
"""

from typing import Any


def unflushed_bytes(handler: Any) -> int:
    """Bytes queued for ``handler``'s client that Tornado has not yet handed to the kernel.

    Frames count whole, headers included (compressed, if the client negotiated compression).
    0 before the handshake and once the stream is closed: Tornado frees its buffer then.

    Args:
        handler: a ``tornado.websocket.WebSocketHandler`` (typed loosely, as the hub's
            subscribers are).
    """
    connection = handler.ws_connection
    stream = connection.stream if connection is not None else None
    if stream is None or stream.closed():
        return 0
    return len(stream._write_buffer)
