"""A small JSON endpoint built the way chat and vote are, for the hostile-input tests.

``/ws/probe`` subscribes each connection to ``probe.room``, greets it with ``welcome`` and
broadcasts every ``say`` to the room, so a test can check fan-out, validation and that other
clients keep being served. It is added to the real application with every socket dependency
``make_app`` gives its own routes (origins, rate limit, per-IP cap, metrics).
"""

import asyncio
from typing import Any, Optional

import tornado.web
from tornado.web import url

from handlers.websocket import JsonSocketHandler
from realtime.wire.messages import Message, require_str
from server import name_socket_endpoints

TOPIC = "probe.room"


class ProbeSocketHandler(JsonSocketHandler):
    """``/ws/probe``: ``say`` is broadcast to everyone, ``ping`` is answered with ``pong``."""

    def initialize(self, closed: "Optional[asyncio.Queue[Any]]" = None, **base: Any) -> None:
        super().initialize(**base)
        self.closed = closed  # gets the handler of every connection that ends

    def connected(self) -> None:
        self.subscribe(TOPIC)
        self.send({"type": "welcome"})

    def handle_say(self, message: Message) -> None:
        self.publish(TOPIC, {"type": "say", "text": require_str(message, "text")})

    def handle_ping(self, message: Message) -> None:
        self.send({"type": "pong"})

    def disconnected(self) -> None:
        if self.closed is not None:
            self.closed.put_nowait(self)


def add_probe(
    app: tornado.web.Application, closed: "Optional[asyncio.Queue[Any]]" = None
) -> None:
    """Add ``/ws/probe`` to an application built by ``make_app``."""
    app.add_handlers(r".*", name_socket_endpoints([
        url(r"/ws/probe", ProbeSocketHandler, dict(app.settings["sockets"], closed=closed),
            name="ws_probe"),
    ]))
