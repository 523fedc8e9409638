"""Brokers carry published envelopes between processes and hand them to the local hub.

The seam is deliberately small: the hub calls ``publish(topic, envelope)`` with a message
that is already serialized, and the broker calls back the ``deliver(topic, envelope)`` it
was attached to, in every process, this one included. The hub also says when a topic gets
its first local subscriber (``subscribe``) and loses its last (``unsubscribe``), so a
networked broker listens only to the topics this process needs. ``start`` and ``close``
run with the application (``serve()`` and its lifecycle). A networked broker may also have
``async ready(topics)``, returning once what other processes publish on ``topics`` reaches
this one (``Hub.subscribed`` awaits it before a chat welcome reads history); a broker
without it is taken to be ready at once. A broker that keeps history has
``async publish_with_history(topics, head, tail, history)``: store and publish a message as
one operation (atomic on Redis, as Centrifuge's brokers do), returning its id
(``Hub.publish_with_history``). The default LocalBroker is for a
single process: it delivers straight back. ``realtime.pubsub.redisbroker.RedisBroker`` carries
topics between processes over Redis; only code that builds one imports it (and needs the
``redis`` package).
"""

from typing import Callable, Optional, Protocol

from realtime.pubsub.envelope import Envelope

Deliver = Callable[[str, Envelope], None]


class Broker(Protocol):
    """What the hub needs from a broker."""

    name: str

    def attach(self, deliver: Deliver) -> None:
        """Set the callback that hands an envelope to this process's subscribers."""

    def publish(self, topic: str, envelope: Envelope) -> None:
        """Send ``envelope`` to the subscribers of ``topic`` in every process."""

    def subscribe(self, topic: str) -> None:
        """This process has its first subscriber of ``topic``: carry it here from now on."""

    def unsubscribe(self, topic: str) -> None:
        """This process has no subscriber of ``topic`` any more."""

    async def start(self) -> None:
        """Connect, before the server accepts clients."""

    async def close(self) -> None:
        """Disconnect, at shutdown."""

    def healthy(self) -> bool:
        """Tell whether the broker can deliver right now."""


class LocalBroker:
    """The single-process broker: a publish is delivered at once, in this process only."""

    name = "local"

    def __init__(self) -> None:
        self._deliver: Optional[Deliver] = None

    def attach(self, deliver: Deliver) -> None:
        """Set the hub's delivery callback."""
        self._deliver = deliver

    def publish(self, topic: str, envelope: Envelope) -> None:
        """Deliver ``envelope`` to this process's subscribers of ``topic``."""
        if self._deliver is None:
            raise RuntimeError("LocalBroker.publish before attach")
        self._deliver(topic, envelope)

    def subscribe(self, topic: str) -> None:
        """Nothing to do: every topic is already here."""

    def unsubscribe(self, topic: str) -> None:
        """Nothing to do."""

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to disconnect."""

    def healthy(self) -> bool:
        """An in-process broker is always up."""
        return True
