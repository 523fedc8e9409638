"""Counting every frame a client sends, fragments included: the one place that reaches into
Tornado's WebSocket internals.

Tornado tells a handler about each whole message (``on_message``), ping (``on_ping``) and
pong (``on_pong``), but nothing about a data frame that does not end its message: a client
could send endless empty continuation fragments and never be counted. ``CountingProtocol``
is Tornado's own ``WebSocketProtocol13`` with one addition: after each frame it has read, if
the handler heard of none of the above, it calls ``handler.on_fragment()``. The handler
keeps ``frames_counted``, the number of frames its public hooks have counted, which is how
the protocol knows whether the frame was heard of.

It overrides the private ``WebSocketProtocol13._receive_frame`` (one frame read and handled
per call, Tornado 6.x); ``check_tornado()`` fails at import if that method is gone, and
``tests/test_frames.py`` checks the counting against a real socket.
"""

import inspect
from typing import Any, Optional, Protocol

from tornado.websocket import WebSocketProtocol, WebSocketProtocol13


class FrameCounter(Protocol):
    """What ``CountingProtocol`` needs from its handler."""

    frames_counted: int  # frames the handler counted in on_message, on_ping and on_pong

    def on_fragment(self) -> None:
        """A data frame arrived that does not end its message."""


def check_tornado() -> None:
    """Raise ``ImportError`` if Tornado no longer reads frames the way this module expects."""
    method = getattr(WebSocketProtocol13, "_receive_frame", None)
    if method is None or not inspect.iscoroutinefunction(method):
        raise ImportError(
            "tornado.websocket.WebSocketProtocol13._receive_frame is gone or no longer a "
            "coroutine: handlers/frames.py cannot count fragments with this Tornado"
        )


check_tornado()


class CountingProtocol(WebSocketProtocol13):
    """``WebSocketProtocol13`` that reports data fragments to its handler (module docstring)."""

    async def _receive_frame(self) -> None:
        counter: Any = self.handler
        counted = counter.frames_counted
        await super()._receive_frame()
        # A close frame or a protocol error ends the connection: nothing left to count.
        if counter.frames_counted == counted and not self.client_terminated:
            counter.on_fragment()


def counting(protocol: Optional[WebSocketProtocol]) -> Optional[WebSocketProtocol]:
    """``protocol`` (what ``WebSocketHandler.get_websocket_protocol`` built) as a
    ``CountingProtocol`` with the same handler and parameters; None stays None."""
    if not isinstance(protocol, WebSocketProtocol13):
        return protocol
    return CountingProtocol(protocol.handler, protocol.mask_outgoing, protocol.params)
