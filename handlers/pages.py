"""Page handlers: the HTML demo pages, the health check, the metrics and the error pages."""

import time
from typing import Any, Awaitable, Callable, Optional, Sized

import tornado.web
from prometheus_client import CollectorRegistry

from realtime.chatstate import ChatState
from realtime.hub import Hub
from realtime.messages import is_unavailable
from realtime.metrics import render
from realtime.tornado_internals import reason_phrase

# No inline script or style anywhere: every script comes from /static, so an injected
# <script> in user text could not run even if it ever reached the DOM as HTML.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


RETRY_AFTER_UNAVAILABLE = "5"  # seconds: a Redis restart, a failover


def unavailable_status(status_code: int, kwargs: dict[str, Any]) -> int:
    """503 for a request that failed because a backing store was unavailable, else the
    status Tornado chose."""
    error = kwargs.get("exc_info", (None, None, None))[1]
    return 503 if status_code == 500 and is_unavailable(error) else status_code


def head_as_get(
    handler: tornado.web.RequestHandler, *args: Any, **kwargs: Any
) -> Optional[Awaitable[None]]:
    """Answer a HEAD request with the handler's ``get``, or 405 if it has none."""
    if type(handler).get is tornado.web.RequestHandler.get:
        raise tornado.web.HTTPError(405)
    return handler.get(*args, **kwargs)


class BaseHandler(tornado.web.RequestHandler):
    """Security headers on every response, and error pages that never show a traceback."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """As Tornado's, but a store that does not answer (``unavailable``) is a 503 the
        client may retry, not a 500."""
        super().send_error(unavailable_status(status_code, kwargs), **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not is_unavailable(value):  # the store logs its outage once, not per request
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 503:
            self.set_header("Retry-After", RETRY_AFTER_UNAVAILABLE)
        reason = reason_phrase(self)
        self.render("error.html", status_code=status_code, reason=reason)

    def head(self, *args: Any, **kwargs: Any) -> Optional[Awaitable[None]]:
        """``HEAD`` wherever ``GET`` is: the same status and headers, no body.

        It runs the subclass's own ``get`` (cookies, 404s and all); Tornado's ``flush`` drops
        the body of a HEAD response and ``finish`` still sends the GET body's length. A
        handler without ``get`` answers 405, as for any method it does not serve."""
        return head_as_get(self, *args, **kwargs)


class PageHandler(BaseHandler):
    """A page rendered from one template with no arguments."""

    def initialize(self, template: str) -> None:
        self.template = template

    def get(self) -> None:
        self.render(self.template)


class NotFoundPageHandler(BaseHandler):
    """Every unknown path: a 404 page."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class HealthHandler(BaseHandler):
    """``GET /healthz``: 200 with a small JSON status while the server can serve."""

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
