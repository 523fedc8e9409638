"""Page handlers: the HTML demo pages, the health check, the metrics and the 404 page."""

import time
from typing import Any, Callable, Optional, Sized

import tornado.web
from prometheus_client import CollectorRegistry

from handlers.http import BaseHandler, head_as_get
from realtime.chat.state import ChatState
from realtime.ops.metrics import render
from realtime.pubsub.hub import Hub


class PageHandler(BaseHandler):
    """A page rendered from one template with no arguments."""

    def initialize(self, template: str) -> None:
        self.template = template

    def get(self) -> None:
        self.render(self.template)


class NotFoundPageHandler(BaseHandler):
    """Every unknown path: a 404 page."""

    async def prepare(self) -> None:
        await super().prepare()  # a flood of unknown paths is charged to the budget too
        raise tornado.web.HTTPError(404)


class HealthHandler(BaseHandler):
    """``GET /healthz``: 200 with a small JSON status while the server can serve."""

    budgeted = False  # a monitor polling it must never be refused

    def initialize(
        self, hub: Hub, started: float, clock: Callable[[], float] = time.monotonic,
        chat: Optional[ChatState] = None, sessions: Optional[Sized] = None,
    ) -> None:
        """``started`` is ``clock()`` when the application was built: ``initialize`` runs
        once per request, so a start time taken here would always be a moment ago.
        ``chat`` is the chat state, whose Redis may be down while the broker's is not;
        ``sessions`` the long-polling browsers' long-poll sessions, counted apart from the
        connections (a session is no hub connection between its requests)."""
        self.hub = hub
        self.started = started
        self.clock = clock
        self.chat = chat
        self.sessions = sessions

    def get(self) -> None:
        broker_ok = self.hub.broker.healthy()
        chat_ok = self.chat is None or self.chat.healthy()
        self.set_status(200 if broker_ok and chat_ok else 503)
        self.set_header("Cache-Control", "no-store")
        status: dict[str, Any] = {
            "status": "ok" if broker_ok and chat_ok else "degraded",
            "broker": {"name": self.hub.broker.name, "ok": broker_ok},
        }
        if self.chat is not None:
            status["chat"] = {"name": self.chat.name, "ok": chat_ok}
        status["connections"] = len(self.hub.connections)
        if self.sessions is not None:
            status["long_poll_sessions"] = len(self.sessions)
        status["uptime_s"] = round(self.clock() - self.started, 1)
        self.write(status)


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: every metric, in the Prometheus text format or OpenMetrics, as the
    scraper's ``Accept`` header asks."""

    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def head(self) -> None:
        """``HEAD /metrics``: the headers of ``GET`` without the body."""
        head_as_get(self)

    def get(self) -> None:
        body, content_type = render(self.registry, self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.write(body)
