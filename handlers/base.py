"""Base classes for WebSocket endpoints.

``SocketHandler`` is the base of every socket: it registers the connection with the hub,
writes through the hub's flow control, turns a ``ClientError`` into an error frame and any
other exception into a logged traceback and a 1011 close, and undoes subscriptions on close.

``JsonSocketHandler`` adds the JSON message format: each text frame is parsed as an object
with a ``"type"`` and dispatched to the method ``handle_<type>``. Adding an endpoint is a
subclass with one ``handle_...`` method per message type::

    class PingSocketHandler(JsonSocketHandler):
        def handle_ping(self, message: Message) -> None:
            self.send({"type": "pong"})
"""

import inspect
import logging
from typing import Any, Awaitable, Callable, ClassVar, Optional, Union

import tornado.websocket

from realtime import messages
from realtime.closecodes import CloseCode
from realtime.hub import Hub
from realtime.messages import ClientError, Message

log = logging.getLogger("realtime.handlers")

Frame = Union[str, bytes]
HANDLER_PREFIX = "handle_"


class SocketHandler(tornado.websocket.WebSocketHandler):
    """The base of every WebSocket endpoint.

    Subclasses implement any of these hooks, plain or ``async``:

    * ``connected(*path_args)``: the handshake is done; the URL's groups are the arguments.
    * ``received(frame)``: one text (``str``) or binary (``bytes``) frame arrived.
    * ``disconnected()``: the connection is closed; subscriptions are already undone.

    Raise ``ClientError(code, message)`` from a hook to answer with an error frame.
    """

    hub: Hub

    def initialize(self, hub: Hub) -> None:
        """Take the dependencies of the route (``make_app`` passes the hub)."""
        self.hub = hub

    # Hooks for subclasses.

    def connected(self, *path_args: str) -> Optional[Awaitable[None]]:
        """Called once the WebSocket is open."""
        return None

    def received(self, frame: Frame) -> Optional[Awaitable[None]]:
        """Called for every frame; the default refuses them all."""
        raise ClientError("bad_message", "This endpoint does not take messages.")

    def disconnected(self) -> None:
        """Called once the connection has closed."""

    # Sending.

    def send_frame(self, frame: Frame) -> bool:
        """Write one frame (``bytes`` as binary) within this connection's backlog bound."""
        return self.hub.send(self, frame)

    def send(self, message: Message) -> bool:
        """Write one JSON message."""
        return self.send_frame(messages.encode(message))

    def send_error_frame(self, code: str, message: str) -> bool:
        """Write an error frame: ``{"type": "error", "code": code, "message": message}``."""
        return self.send(messages.error_frame(code, message))

    def subscribe(self, topic: str) -> None:
        """Receive what is published on ``topic`` until unsubscribed or closed."""
        self.hub.subscribe(topic, self)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""
        self.hub.unsubscribe(topic, self)

    def publish(self, topic: str, message: Message) -> None:
        """Send ``message`` to every subscriber of ``topic``, this connection too if it is one."""
        self.hub.publish(topic, message)

    # Tornado's callbacks: the one error boundary around the hooks.

    async def open(self, *path_args: str) -> None:
        self.hub.register(self)
        await self._guarded(self.connected, *path_args)

    async def on_message(self, message: Frame) -> None:
        await self._guarded(self.received, message)

    def on_close(self) -> None:
        self.hub.forget(self)
        try:
            self.disconnected()
        except Exception:
            log.exception("%s.disconnected failed", type(self).__name__)

    async def _guarded(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except ClientError as error:
            self.send_error_frame(error.code, error.message)
        except Exception:
            # Tornado's own default is to log and drop the TCP connection without a close
            # frame; a 1011 tells the client it was our fault and that it may retry.
            log.exception("%s.%s failed; closing with 1011", type(self).__name__, hook.__name__)
            self.close(CloseCode.INTERNAL_ERROR, "internal server error")


class JsonSocketHandler(SocketHandler):
    """A socket speaking JSON messages: ``{"type": "x", ...}`` goes to ``handle_x(message)``.

    Answers, keeping the connection open: ``bad_json`` (not JSON), ``bad_message`` (not an
    object, no ``type`` string, or a binary frame), ``unknown_type`` (no ``handle_<type>``).
    """

    # message type -> name of the method that handles it, collected per subclass.
    _dispatch: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dispatch = {
            name[len(HANDLER_PREFIX):]: name
            for name in dir(cls)
            if name.startswith(HANDLER_PREFIX) and callable(getattr(cls, name))
        }

    def received(self, frame: Frame) -> Optional[Awaitable[None]]:
        if isinstance(frame, bytes):
            raise ClientError("bad_message", "This endpoint takes JSON text frames, not binary.")
        message = messages.parse(frame)
        name = self._dispatch.get(message["type"])
        if name is None:
            raise ClientError(
                "unknown_type", f"Unknown message type {messages.quote(message['type'])}."
            )
        handler: Callable[[Message], Optional[Awaitable[None]]] = getattr(self, name)
        return handler(message)
