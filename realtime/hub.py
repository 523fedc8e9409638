"""The in-process pub/sub hub: who listens to which topic, and fan-out with flow control.

Every WebSocket connection of the process is registered here while it is open. The hub

* serializes a published message **once**, to JSON and then to UTF-8, and hands the same
  bytes to every subscriber;
* bounds, per connection, what Tornado still holds for it. Before each frame it asks the
  connection's stream how many bytes the kernel has not taken yet (``realtime.streams``,
  frame headers included); if that is already over ``max_pending_bytes`` the client has
  stopped reading, so instead of writing the frame the hub removes the connection from
  every topic at once and closes it with 1008. A stalled reader thus costs the server at
  most the bound plus one frame, and never holds up the others. Bytes the kernel took do
  not count, so a client that keeps reading is not dropped for a burst larger than the
  bound, nor for one frame larger than the bound;
* hands payloads to a broker (``realtime.brokers``) and takes them back through
  ``deliver``, so several processes can share topics without the handlers knowing.

Topics are lowercase dotted names, endpoint first: ``chat.lobby``, ``vote.demo``.
"""

import asyncio
import logging
from typing import Any, Awaitable, Callable, Optional, Protocol, Union

from tornado.websocket import WebSocketClosedError

from realtime.brokers import Broker, LocalBroker, Payload
from realtime.closecodes import CloseCode
from realtime.messages import Message, encode
from realtime.streams import unflushed_bytes

log = logging.getLogger("realtime.hub")

DEFAULT_MAX_PENDING_BYTES = 1024 * 1024


class Subscriber(Protocol):
    """What the hub needs of a connection; ``tornado.websocket.WebSocketHandler`` has it."""

    def write_message(self, message: Union[str, bytes], binary: bool = False) -> Awaitable[None]:
        """Queue a frame; the awaitable completes once it is flushed to the socket."""

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Start the closing handshake."""


def wire(payload: Payload) -> tuple[bytes, bool]:
    """The bytes of a frame and whether it is binary: ``str`` is a text frame in UTF-8."""
    if isinstance(payload, bytes):
        return payload, True
    return payload.encode("utf-8"), False


def _retrieve(written: "asyncio.Future[Any]") -> None:
    # A write to a client that vanished fails once its stream closes; nobody awaits it (the
    # close is handled by the socket), so retrieving the error here keeps asyncio from
    # logging "Task exception was never retrieved".
    if not written.cancelled():
        written.exception()


class Hub:
    """Topics, connections and flow control; see the module docstring.

    Args:
        broker: carries payloads between processes; default: this process only.
        max_pending_bytes: a connection holding more unflushed bytes than this when a new
            frame is due is dropped instead.
        unflushed: how many bytes a connection's stream still holds; default: ask Tornado
            (``realtime.streams.unflushed_bytes``). Tests without sockets pass their own.
    """

    def __init__(
        self,
        broker: Optional[Broker] = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        unflushed: Callable[[Any], int] = unflushed_bytes,
    ) -> None:
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.max_pending_bytes = max_pending_bytes
        self._unflushed = unflushed
        self._topics: dict[str, set[Subscriber]] = {}  # topic -> its local subscribers
        self._connections: dict[Subscriber, None] = {}  # open connections, in order (a set)
        self._subscriptions: dict[Subscriber, set[str]] = {}  # connection -> its topics
        self.published = 0  # messages published from this process
        self.sent = 0  # frames written to connections
        self.dropped = 0  # connections dropped for not reading
        self.broker.attach(self.deliver)

    # Connections

    def register(self, subscriber: Subscriber) -> None:
        """Start tracking an open connection (done by the socket base class)."""
        self._connections.setdefault(subscriber, None)

    def forget(self, subscriber: Subscriber) -> None:
        """Drop every trace of a connection: it and its topics."""
        for topic in self._subscriptions.pop(subscriber, ()):
            self._remove(topic, subscriber)
        self._connections.pop(subscriber, None)

    @property
    def connections(self) -> list[Subscriber]:
        """The open connections, in the order they registered."""
        return list(self._connections)

    def pending_bytes(self, subscriber: Subscriber) -> int:
        """Bytes written to ``subscriber`` that its socket has not taken yet, headers included."""
        return self._unflushed(subscriber)

    # Topics

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Deliver what is published on ``topic`` to ``subscriber`` from now on."""
        self.register(subscriber)
        self._topics.setdefault(topic, set()).add(subscriber)
        self._subscriptions.setdefault(subscriber, set()).add(topic)

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Stop delivering ``topic`` to ``subscriber``; unknown pairs are ignored."""
        topics = self._subscriptions.get(subscriber)
        if topics is not None:
            topics.discard(topic)
        self._remove(topic, subscriber)

    def subscribers(self, topic: str) -> set[Subscriber]:
        """The local subscribers of ``topic`` (a copy)."""
        return set(self._topics.get(topic, ()))

    def topics(self, subscriber: Subscriber) -> set[str]:
        """The topics ``subscriber`` listens to (a copy)."""
        return set(self._subscriptions.get(subscriber, ()))

    def _remove(self, topic: str, subscriber: Subscriber) -> None:
        members = self._topics.get(topic)
        if members is None:
            return
        members.discard(subscriber)
        if not members:
            del self._topics[topic]

    # Sending

    def publish(self, topic: str, message: Union[Message, Payload]) -> Payload:
        """Send ``message`` to every subscriber of ``topic``, in every process.

        A dict is serialized to JSON once; ``str`` and ``bytes`` go as they are (text and
        binary frames). Returns the payload that was sent.
        """
        payload = message if isinstance(message, (str, bytes)) else encode(message)
        self.published += 1
        self.broker.publish(topic, payload)
        return payload

    def deliver(self, topic: str, payload: Payload) -> None:
        """Write ``payload`` to this process's subscribers of ``topic`` (the broker calls it)."""
        data, binary = wire(payload)
        for subscriber in self.subscribers(topic):
            self._write(subscriber, data, binary)

    def send(self, subscriber: Subscriber, payload: Payload) -> bool:
        """Write one frame to one connection, within its backlog bound.

        Returns False if the connection is closed or was dropped for its backlog.
        """
        return self._write(subscriber, *wire(payload))

    def _write(self, subscriber: Subscriber, data: bytes, binary: bool) -> bool:
        # Checked before writing, not after: Tornado hands each frame to the kernel at once,
        # so what it still holds now is what the client has not read. Over the bound, the
        # client stopped reading and this frame would only add to a backlog it never takes;
        # within it, the frame goes out whatever its size.
        if self._unflushed(subscriber) > self.max_pending_bytes:
            # A dropped connection is forgotten at once but its stream lives on until the
            # closing handshake ends; frames still due to it then are refused quietly.
            if subscriber in self._connections:
                self.drop(subscriber)
            return False
        try:
            # Tornado sends bytes as they are, so a text payload encoded once in deliver()
            # is not encoded again for every subscriber.
            written = subscriber.write_message(data, binary=binary)
        except WebSocketClosedError:
            self.forget(subscriber)
            return False
        asyncio.ensure_future(written).add_done_callback(_retrieve)
        self.sent += 1
        return True

    def drop(self, subscriber: Subscriber) -> None:
        """Remove a connection that stopped reading from every topic and close it with 1008."""
        log.warning(
            "dropping slow consumer %r: %d bytes unflushed (bound %d)",
            subscriber, self._unflushed(subscriber), self.max_pending_bytes,
        )
        self.forget(subscriber)
        self.dropped += 1
        subscriber.close(CloseCode.POLICY_VIOLATION, "slow consumer: messages were not read")

    def close_all(self, code: int, reason: str) -> None:
        """Close every open connection with ``code`` (server shutdown)."""
        for subscriber in self.connections:
            subscriber.close(code, reason)

    def topic_count(self) -> int:
        """How many topics have local subscribers."""
        return len(self._topics)
