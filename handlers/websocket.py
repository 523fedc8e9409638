"""Base classes for WebSocket endpoints.

``SocketHandler`` is the base of every socket. Admission (``realtime.limits.admission``) refuses
handshakes from foreign origins (403) and from addresses over their connection cap or
handshake budget (429), rate-limits every incoming frame (fragments, pings and pongs too:
``tornado_internals.CountingProtocol``), logs one line per connect and disconnect (never
a message body) and keeps the gauges. The handler registers the connection with the hub,
writes through the hub's flow control, turns a ``ClientError`` into an error frame and any
other exception into a logged traceback and a 1011 close, and undoes subscriptions on
close.

``JsonSocketHandler`` adds the JSON message format: each text frame is parsed as an object
with a ``"type"`` and dispatched to the method ``handle_<type>``.

A new endpoint is not written here: it is a session class (``realtime.apps.session``) and
one route line (``handlers.apps.app_routes``), which serve it over a WebSocket, an event
stream and POST alike (docs/extending.md, "Adding an endpoint"). Subclass these classes only for
a socket that is not JSON messages (``handlers/echo.py``).
"""

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, ClassVar, Iterable, Optional, Union

import tornado.websocket

from realtime.limits.admission import HANDSHAKE_RATE, WEBSOCKET, Admission, Client, Refused, Ticket
from realtime.limits.ratelimit import retry_after_header
from realtime.pubsub import delivery
from realtime.pubsub import tornado_internals
from realtime.pubsub.delivery import CloseReason
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.wire import messages
from realtime.wire.closecodes import CLOSE_FOR_REASON, CloseCode
from realtime.wire.messages import ClientError, Message

log = logging.getLogger("realtime.handlers")

Frame = Union[str, bytes]

# Every WebSocket's close at shutdown, built once for all of them.
GOING_AWAY_FRAME = tornado_internals.close_frame(*CLOSE_FOR_REASON[CloseReason.SHUTDOWN])


def _retrieve(written: "asyncio.Future[Any]") -> None:
    # A write to a client that vanished fails once its stream closes; nobody awaits it (the
    # close is handled by on_close), so retrieving the error here keeps asyncio from
    # logging "Task exception was never retrieved".
    if not written.cancelled():
        written.exception()


class SocketHandler(tornado.websocket.WebSocketHandler):
    """The base of every WebSocket endpoint.

    Subclasses implement any of these hooks, plain or ``async``:

    * ``before_open(*path_args)``: the connection is admitted and the handshake not yet
      answered: what the route must know first (a poll lookup); raise an ``HTTPError`` to
      refuse. The client may leave meanwhile: its slot is given back at once, and neither
      ``connected`` nor ``disconnected`` is called.
    * ``connected(*path_args)``: the handshake is done; the URL's groups are the arguments.
      The last hook that may read the request (headers, cookies, query arguments): once
      it returns they are let go, to keep an idle connection small
      (``tornado_internals.shed_handshake``).
    * ``received(frame)``: one text (``str``) or binary (``bytes``) frame arrived.
    * ``disconnected()``: the connection is closed; subscriptions are already undone.

    Raise ``ClientError(code, message)`` from a hook to answer with an error frame.

    Subclasses taking more dependencies accept ``**base`` and call
    ``super().initialize(**base)``, so the keys ``make_app`` gives every socket route reach
    this class unchanged.
    """

    # Our per-connection attributes live in slots, not in the instance dict: Tornado's own
    # attributes then fit Python's shared-key dict layout (a few hundred bytes a handler
    # instead of a full table of some 1.5 KiB; ``bench/memory_profile.py``). A subclass with
    # per-connection attributes of its own declares them in ``__slots__`` too.
    __slots__ = ("hub", "admission", "metrics", "endpoint", "ticket", "frames_counted",
                 "_message_refused", "_close_sent", "_connecting", "_messages_in")

    hub: Hub
    ticket: Optional[Ticket]  # from admission, before any await of the handshake
    _connecting: "Optional[asyncio.Future[None]]"  # done once connected() returned
    # Whether a refused frame is answered with a ``rate_limited`` error frame. A raw
    # endpoint (echo) sets it False: anything it writes must be what the client sent, so
    # it drops refused frames silently and only closes (1008) after the strikes.
    error_frames: ClassVar[bool] = True

    def initialize(
        self, hub: Hub, admission: Optional[Admission] = None, endpoint: str = ""
    ) -> None:
        """Take the dependencies of the route.

        Args:
            hub: the pub/sub hub; every connection registers with it.
            admission: the process's one ``Admission`` (``make_app`` gives it): the allowed
                origins, the per-connection frame rate, the per-address connection cap,
                frame and handshake budgets, shared by every route, and the metrics where
                connections, frames and errors are counted. Without it: same-host pages
                only, no limits, metrics of its own.
            endpoint: the name in logs and metric labels; ``make_app`` sets the route name.
        """
        self.hub = hub
        self.ticket = None
        self._connecting = None
        self.admission = admission if admission is not None else Admission()
        self.metrics = self.admission.metrics
        self.endpoint = endpoint or type(self).__name__
        self.frames_counted = 0  # incoming frames charged so far (CountingProtocol reads it)
        self._message_refused = False  # a fragment of the message being received was refused
        self._close_sent: Optional[int] = None  # the close code we sent, if we closed first

    # Hooks for subclasses.

    def before_open(self, *path_args: str) -> Optional[Awaitable[None]]:
        """Called once admitted, before the handshake is answered."""
        return None

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
        return self.hub.send(self, Envelope.of(message))

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        """How the hub writes to this connection (``realtime.pubsub.hub.Subscriber``).

        This is the general path, through ``write_message``; ``open()`` replaces it with the
        prebuilt-frame writer of ``realtime.pubsub.tornado_internals`` wherever that applies.
        """
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return delivery.CLOSED
        if tornado_internals.unflushed_bytes(self) > max_pending:
            return delivery.STALLED
        try:
            written = self.write_message(envelope.data, binary=envelope.binary)
        except tornado.websocket.WebSocketClosedError:
            return delivery.CLOSED
        written.add_done_callback(_retrieve)
        return delivery.WRITTEN

    def unflushed_bytes(self) -> int:
        """Bytes written to this connection that the kernel has not taken yet."""
        return tornado_internals.unflushed_bytes(self)

    def send_error_frame(self, code: str, message: str) -> bool:
        """Write an error frame: ``{"type": "error", "code": code, "message": message}``."""
        self.metrics.errors.labels(code=code).inc()
        return self.send(messages.error_frame(code, message))

    def subscribe(self, topic: str) -> None:
        """Receive what is published on ``topic`` until unsubscribed or closed (nothing, if
        the client has left already: an await of ``connected`` may outlast it)."""
        if self.ticket is not None and not self.ticket.released:
            self.hub.subscribe(topic, self)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""
        self.hub.unsubscribe(topic, self)

    def publish(self, topic: str, message: Message) -> None:
        """Send ``message`` to every subscriber of ``topic``, this connection too if it is one."""
        self.hub.publish(topic, message)

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Start the closing handshake with ``code`` (remembered for the disconnect log)."""
        if self._close_sent is None and self.ws_connection is not None:
            self._close_sent = code if code is not None else CloseCode.NORMAL
        super().close(code, reason)

    def close_for(self, reason: CloseReason) -> None:
        """How the hub closes this connection: with the code and text of ``reason``.

        At shutdown the close frame joins this turn's batch of writes and no timer waits
        for the client's reply: ``abort_closing`` ends the connections still open once the
        kernel has taken the frames."""
        if reason is CloseReason.SHUTDOWN and self._close_sent is None:
            if tornado_internals.send_close_unwaited(self, GOING_AWAY_FRAME):
                self._close_sent = CloseCode.GOING_AWAY
                return
        self.close(*CLOSE_FOR_REASON[reason])

    def abort(self) -> None:
        """Close the socket now, without waiting any longer for the client's close reply
        (``tornado_internals.abort``); ``on_close`` follows as for any close."""
        tornado_internals.abort(self)

    # The handshake: admission, before any await.

    async def prepare(self) -> None:
        # The ticket is taken before anything is awaited, so a client that leaves during
        # before_open() is let go by on_close() at once, whatever it was waiting for.
        try:
            self.ticket = self.admission.admit(self._client())
        except Refused as refused:
            self.set_status(429)
            if refused.reason == HANDSHAKE_RATE:
                self.set_header("Retry-After", retry_after_header(refused.retry_after or 0))
            self.finish(refused.message)
            return
        pending = self.before_open(*self.path_args)
        if pending is not None:
            await pending

    def check_origin(self, origin: str) -> bool:
        """Allow same-host pages and the ``--allowed-origins`` list
        (``realtime.limits.origins``)."""
        return self.admission.origin_allowed(self._client(), self.request.headers.get("Host"))

    def on_finish(self) -> None:
        # A handshake answered with anything but 101 (a 404 from before_open, a 403) is
        # over; an upgraded one ends in on_close.
        if self.get_status() != 101:
            self._give_back()

    def _client(self) -> Client:
        return Client(WEBSOCKET, self.endpoint, self.request.remote_ip,
                      self.request.headers.get("Origin"))

    # Tornado's callbacks: the one error boundary around the hooks.

    async def open(self, *path_args: str) -> None:
        # The labelled metric children, looked up once instead of per frame.
        self._messages_in = self.metrics.messages_in.labels(endpoint=self.endpoint)
        ticket = self.ticket
        if ticket is None or self.ws_connection is None or self.ws_connection.is_closing():
            # The client went away before the upgrade (during before_open(), say), yet
            # Tornado still calls open(). Its on_close has run already, or will run before
            # anything was counted, and never runs again: count and register nothing.
            return
        if not ticket.open():
            return  # released already: the client left
        stream = tornado_internals.fast_stream(self)
        if stream is not None:
            # Per connection, once: the hub then calls the writer with no detour.
            writer = tornado_internals.FrameWriter(self, stream)
            self.write_envelope = writer.write  # type: ignore[method-assign]
            self.unflushed_bytes = writer.unflushed  # type: ignore[method-assign]
        self.hub.register(self)
        # Tornado reads the socket, and so notices the client leaving, only once open()
        # returns: while connected() awaits (a Redis call, a nickname), the stream's close
        # callback lets the connection go at once.
        ws_stream = self.ws_connection.stream
        if ws_stream is not None:
            ws_stream.set_close_callback(self.on_connection_close)
        self._connecting = connecting = asyncio.get_running_loop().create_future()
        try:
            await self._guarded(self.connected, *path_args)
        finally:
            connecting.set_result(None)
            # The endpoint has read what it needs of the request: let the rest go.
            tornado_internals.shed_handshake(self)
            if ws_stream is not None and not ws_stream.closed():
                # From here Tornado's read loop reports the close, with its close code.
                ws_stream.set_close_callback(None)

    def on_message(self, message: Frame) -> Optional[Awaitable[None]]:
        # Not a coroutine: Tornado wraps one in a Task and waits a turn of the loop for it
        # per message. A plain hook is done when this returns; an async hook's awaitable is
        # returned for Tornado to await before it reads the next frame, as before.
        accepted = self._frame_allowed()  # the frame that ended the message
        refused_before, self._message_refused = self._message_refused, False
        if self._close_sent is not None:
            return None  # frames still in flight after we closed
        self._messages_in.inc()
        if accepted and not refused_before:  # a message is dropped whole
            return self._call_hook(self.received, message)
        return None

    # Every other frame is charged like a message; Tornado has already answered a ping.

    def on_ping(self, data: bytes) -> None:
        self._frame_allowed()

    def on_pong(self, data: bytes) -> None:
        self._frame_allowed()

    def on_fragment(self) -> None:
        """A data frame that does not end its message (``tornado_internals.CountingProtocol``)."""
        if not self._frame_allowed():
            self._message_refused = True

    def get_compression_options(self) -> Optional[dict[str, Any]]:
        # permessage-deflate only with --compression (the app's ``websocket_compression``):
        # a compressed connection's frames are compressed for it alone, through Tornado's
        # write_message, where every other connection gets the prebuilt frame of the fast
        # path (tornado_internals.fast_stream). Tornado's defaults: level 6, a 32 KB window.
        return {} if self.settings.get("websocket_compression") else None

    def get_websocket_protocol(self) -> Optional[tornado.websocket.WebSocketProtocol]:
        # Tornado's protocol, made to report the fragments it has no public hook for.
        return tornado_internals.counting(super().get_websocket_protocol())

    def on_close(self) -> None:
        ticket = self.ticket
        if ticket is None or ticket.released or ticket.opened_at is None:
            self._give_back()  # the client went away during the handshake
            return
        self.hub.forget(self)
        if self._close_sent is not None:
            code, by = self._close_sent, "server"
        elif self.close_code is not None:
            code, by = self.close_code, "client"
        else:
            code, by = CloseCode.ABNORMAL, "network"  # no close frame: dropped or aborted
        self._give_back(origin=ticket.client.origin, code=int(code), by=by)
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            # Slot, gauge and topics are back already; the endpoint's own cleanup waits for
            # connected() to finish, or it would undo a half-done open (leave a room not
            # yet entered).
            connecting.add_done_callback(lambda _: self._disconnected())
        else:
            self._disconnected()

    def _disconnected(self) -> None:
        try:
            self.disconnected()
        except Exception:
            log.exception("%s.disconnected failed", type(self).__name__)

    def _give_back(self, **disconnect: Any) -> None:
        """Give back what admission gave (slot, gauge), once: the one way out."""
        if self.ticket is not None:
            self.ticket.release(**disconnect)

    def _frame_allowed(self) -> bool:
        """Charge one incoming frame to this connection's budget, then to its address's;
        False (after the strike policy has answered it) if either is spent."""
        self.frames_counted += 1
        if self._close_sent is not None or self.ticket is None:
            return False
        over = self.ticket.charge()
        if over is None:
            return True
        if over.close:
            self.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        elif self.error_frames:
            why = ("Too many messages from your address (all its connections together)"
                   if over.per_address else "Too many messages")
            self.send_error_frame("rate_limited", (
                f"{why}; this one was dropped. Send again in {over.retry_after:.2f} s or "
                f"less often."
            ))
        return False

    async def _guarded(self, hook: Callable[..., Any], *args: Any) -> None:
        pending = self._call_hook(hook, *args)
        if pending is not None:
            await pending

    def _call_hook(self, hook: Callable[..., Any], *args: Any) -> Optional[Awaitable[None]]:
        """Run ``hook`` inside the error boundary. A plain hook has run when this returns;
        an async one comes back as an awaitable with the same boundary around it."""
        try:
            result = hook(*args)
        except ClientError as error:
            self.send_error_frame(error.code, error.message)
            return None
        except Exception:
            self._hook_failed(hook)
            return None
        if result is None or not inspect.isawaitable(result):
            return None
        return self._await_hook(hook, result)

    async def _await_hook(self, hook: Callable[..., Any], result: Awaitable[Any]) -> None:
        try:
            await result
        except ClientError as error:
            self.send_error_frame(error.code, error.message)
        except Exception:
            self._hook_failed(hook)

    def _hook_failed(self, hook: Callable[..., Any]) -> None:
        # Called while the exception is being handled, so log.exception has its traceback.
        # Tornado's own default is to log and drop the TCP connection without a close
        # frame; a 1011 tells the client it was our fault and that it may retry.
        log.exception("%s.%s failed; closing with 1011", type(self).__name__, hook.__name__)
        self.metrics.internal_errors.inc()
        self.close(CloseCode.INTERNAL_ERROR, "internal server error")


class JsonSocketHandler(SocketHandler):
    """A socket speaking JSON messages: ``{"type": "x", ...}`` goes to ``handle_x(message)``.

    Answers, keeping the connection open: ``bad_json`` (not JSON), ``bad_message`` (not an
    object, no ``type`` string, or a binary frame), ``unknown_type`` (no ``handle_<type>``).
    """

    __slots__ = ()

    # message type -> name of the method that handles it, collected per subclass.
    _dispatch: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dispatch = messages.handlers_by_type(cls)

    @classmethod
    def resolve(cls, frame: Frame) -> tuple[str, Message]:
        """The name of the ``handle_`` method for one frame, and the parsed message.

        Pure (no socket), so the parsing and dispatch rules are tested on their own.

        Raises:
            ClientError: ``bad_message`` for a binary frame and whatever ``messages.parse``
                raises; ``unknown_type`` if the class has no method for the type.
        """
        if isinstance(frame, bytes):
            raise ClientError("bad_message", "This endpoint takes JSON text frames, not binary.")
        message = messages.parse(frame)
        name = cls._dispatch.get(message["type"])
        if name is None:
            raise ClientError(
                "unknown_type", f"Unknown message type {messages.quote(message['type'])}."
            )
        return name, message

    def received(self, frame: Frame) -> Optional[Awaitable[None]]:
        name, message = self.resolve(frame)
        handler: Callable[[Message], Optional[Awaitable[None]]] = getattr(self, name)
        return handler(message)


def abort_closing(connections: Iterable[object]) -> int:
    """Close at once every WebSocket among ``connections`` that was sent its close frame
    and is still open (the client has not replied yet, or never will); how many. The
    shutdown calls it once the kernel has taken the close frames, instead of a timer per
    connection waiting for each reply."""
    closing = [c for c in connections
               if isinstance(c, SocketHandler) and c._close_sent is not None]
    for handler in closing:
        handler.abort()
    return len(closing)
