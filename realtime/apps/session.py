"""Real-time apps written once for every transport: ``AppSession``.

An app is one subclass of ``AppSession``: what one connection does, whatever carries it.
``handlers/apps.py`` serves it over a WebSocket (``/ws/<app>/...``), as Server-Sent Events
(``/sse/<app>/...``) and as HTTP POSTs of its messages (``/api/<app>/...``), with the
flow control, limits and metrics of the other endpoints; ``app_routes(...)`` makes the
three route lines. The session does no I/O of its own: it reads and writes its app's
shared state (``realtime.apps.state``: in this process, or on Redis with ``--redis-url``),
subscribes its connection to topics and publishes on the hub (carried to every process
by the broker), and hands the frames meant for its connection alone to the ``send`` it
was given. So it is tested without a server (tests/apps/test_apps.py).

Hooks, plain or ``async``:

* ``opened(*args)``: a connection (socket or stream) is open; ``args`` are the URL's
  groups. Subscribe, send a welcome (``welcome(...)`` does both without missing anything).
* ``handle_<type>(message)``: one per inbound message type (``{"type": "<type>", ...}``).
  Raise ``ClientError(code, message)`` for a bad request: the sender gets an error frame
  (a POST an error answer), the connection stays. What it returns is the answer to that
  message sent as an HTTP POST (``{"type": "ok"}`` if None); a socket hears the outcome on
  its topics, as everyone else does, or from ``send``.
* ``closed()``: the connection is over (only after ``opened`` returned); its topics are
  already unsubscribed.

A POST is handled by a session of its own that is never opened and has no connection
(``send`` reaches nobody, ``subscribe`` refuses): what a handler needs must come from the
URL (``args``, ``query``) or the shared ``state``, never from ``opened``. Nothing a session
keeps in its attributes is seen by another connection, or by another process.
"""

import inspect
from typing import Any, Awaitable, Callable, ClassVar, Mapping, Optional

import orjson

from realtime.apps.state import AppState
from realtime.pubsub.hub import Hub, Send, Subscriber
from realtime.wire import messages
from realtime.wire.messages import ClientError, Message, quote


StillDue = Callable[[Message, Message], bool]  # (welcome, held frame) -> send it after?


def _nobody(frame: Message) -> None:
    """Where a POST session's frames go: it has no connection."""


class AppSession:
    """One connection of a real-time app; see the module docstring.

    Subclasses set ``name`` (lowercase, ``[a-z0-9_]``): the middle of the app's URLs
    (``/ws/<name>/...``), the first part of its topics (``<name>.<...>``, ``topic(...)``)
    and the namespace of its state keys.

    Args:
        hub: where topics are subscribed and published.
        state: the app state of the server; the session sees its ``name``'s keys only.
        subscriber: the connection as the hub knows it; None for a POST.
        send: writes a frame to this connection alone.
        args: the URL's groups.
        query: the URL's query arguments (the last value of each).
    """

    name: ClassVar[str] = ""
    # message type -> the name of its handle_ method, collected per subclass.
    _dispatch: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dispatch = messages.handlers_by_type(cls)

    def __init__(
        self, hub: Hub, state: AppState, subscriber: Optional[Subscriber] = None,
        send: Send = _nobody, args: tuple[str, ...] = (),
        query: Optional[Mapping[str, str]] = None,
    ) -> None:
        if not self.name:
            raise TypeError(f"{type(self).__name__} needs a name")
        self.hub = hub
        self.state = state.scoped(self.name)  # this app's keys only
        self.subscriber = subscriber
        self._send = send
        self.args = args
        self.query: Mapping[str, str] = query or {}
        self.is_open = False  # opened() returned, closed() not yet run
        self._opening = False  # opened() is running
        self._gone = False  # the connection ended while opened() ran

    # Hooks for subclasses.

    def opened(self, *args: str) -> Optional[Awaitable[None]]:
        """The connection is open: subscribe, send a welcome."""
        return None

    def closed(self) -> Optional[Awaitable[None]]:
        """The connection is over; its topics are already unsubscribed."""
        return None

    # What a session does.

    def topic(self, *parts: str) -> str:
        """This app's topic named by ``parts``: ``topic("lobby")`` is ``"<name>.lobby"``."""
        return ".".join((self.name, *parts))

    def send(self, frame: Message) -> None:
        """Write ``frame`` to this connection alone (nobody's, in a POST)."""
        self._send(frame)

    def subscribe(self, topic: str) -> None:
        """Receive what is published on ``topic``, from every process, until closed."""
        self.hub.subscribe(topic, self._connection())

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""
        if self.subscriber is not None:
            self.hub.unsubscribe(topic, self.subscriber)

    def publish(self, topic: str, message: Message) -> None:
        """Send ``message`` to every subscriber of ``topic`` in every process, this
        connection too if it is one."""
        self.hub.publish(topic, message)

    async def welcome(
        self, *topics: str, build: Callable[[], Awaitable[Message]],
        still_due: Optional[StillDue] = None,
    ) -> Message:
        """Subscribe to ``topics`` and send the frame ``build()`` returns, missing nothing
        published meanwhile; returns that frame.

        Subscribed (on every process: the broker's subscription confirmed) before
        ``build`` reads the state, so nothing published after the read is missed; what
        arrives while it reads is held by the hub and written after the welcome, less the
        frames for which ``still_due(welcome, frame)`` is False (those the welcome already
        accounts for). Without ``still_due`` every held frame follows.
        """
        hub, me = self.hub, self._connection()
        hub.hold(me)
        try:
            for topic in topics:
                hub.subscribe(topic, me)
            await hub.subscribed(*topics)
            frame = await build()
        finally:
            held = hub.release(me)
        self.send(frame)
        for envelope in held:
            if still_due is not None and not envelope.binary:
                if not still_due(frame, orjson.loads(envelope.data)):
                    continue
            if not hub.send(me, envelope):
                break
        return frame

    # What the transports call.

    async def open(self, *args: str) -> None:
        """Run ``opened``; the session is open once it returned. If the connection ended
        meanwhile (``close`` was called), what ``opened`` subscribed is undone and
        ``closed`` runs at once."""
        self._opening = True
        try:
            await _run(self.opened(*args))
        finally:
            self._opening = False
        if self._gone:
            if self.subscriber is not None:
                self.hub.forget(self.subscriber)
            await _run(self.closed())
            return
        self.is_open = True

    async def receive(self, message: Message) -> Optional[Message]:
        """Run the ``handle_<type>`` of a parsed message (``realtime.wire.messages.parse``);
        return what it returned.

        Raises:
            ClientError: ``unknown_type`` if the app has no such message, and whatever the
                handler raises.
        """
        name = self._dispatch.get(message["type"])
        if name is None:
            raise ClientError(
                "unknown_type", f"Unknown message type {quote(message['type'])}.")
        result: Optional[Message] = await _run(getattr(self, name)(message))
        return result

    async def close(self) -> None:
        """Run ``closed`` if ``opened`` had returned (or once it returns, if it is
        running); closing twice is closing once."""
        if self._opening:
            self._gone = True
        elif self.is_open:
            self.is_open = False
            await _run(self.closed())

    def _connection(self) -> Subscriber:
        if self.subscriber is None:
            raise RuntimeError("a POST's session has no connection to subscribe")
        return self.subscriber


async def _run(result: Any) -> Any:
    """What a hook returned, awaited if it is awaitable."""
    if inspect.isawaitable(result):
        return await result
    return result
