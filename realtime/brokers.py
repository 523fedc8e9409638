"""Brokers carry published payloads between processes and hand them to the local hub.

The seam is deliberately small: the hub calls ``publish(topic, payload)`` with a payload that
is already serialized, and the broker calls back the ``deliver(topic, payload)`` it was
attached to, in every process, this one included. The default LocalBroker is for a single
process: it delivers straight back.
"""

from typing import Callable, Protocol, Union

Payload = Union[str, bytes]
Deliver = Callable[[str, Payload], None]


class Broker(Protocol):
    """What the hub needs from a broker."""

    name: str

    def attach(self, deliver: Deliver) -> None:
        """Set the callback that hands a payload to this process's subscribers."""

    def publish(self, topic: str, payload: Payload) -> None:
        """Send ``payload`` to the subscribers of ``topic`` in every process."""

    def healthy(self) -> bool:
        """Tell whether the broker can deliver right now."""


class LocalBroker:
    """The single-process broker: a publish is delivered at once, in this process only."""

    name = "local"

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def attach(self, deliver: Deliver) -> None:
        """Set the hub's delivery callback."""
        self._deliver = deliver

    def publish(self, topic: str, payload: Payload) -> None:
        """Deliver ``payload`` to this process's subscribers of ``topic``."""
        if self._deliver is None:
            raise RuntimeError("LocalBroker.publish before attach")
        self._deliver(topic, payload)

    def healthy(self) -> bool:
        """An in-process broker is always up."""
        return True
