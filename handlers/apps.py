"""Every transport for any real-time app (``realtime.apps.session.AppSession``), and its routes.

``app_routes(r"/counter/([a-z0-9-]{1,40})", CounterSession, apps)`` makes three routes:

* ``/ws/counter/<name>`` (``AppSocketHandler``): a JSON socket (``handlers.websocket``), so
  origins, connection caps, handshake and frame budgets, metrics and the slow-consumer
  bound are those of every socket. Each frame goes to the session's ``handle_<type>``.
* ``/sse/counter/<name>`` (``AppEventStreamHandler``): the same frames out, as Server-Sent
  Events (``handlers.http``): origin, caps, handshake budget, heartbeats, the
  slow-consumer bound. No ``id:``: a reconnect starts again from the welcome.
* ``POST /api/counter/<name>`` (``AppPostHandler``): one message in, as a JSON body
  ``{"type": ..., ...}``, answered with what its handler returned; errors as every HTTP
  transport answers them (``{"error": {"code", "message"}}``, ``handlers.http.STATUS``).

A session that refuses to open (``ClientError`` from ``opened``) gets its error frame and
the socket is closed (1013 for ``unavailable``, else 1008); a stream gets an error event
and ends (the browser retries).
"""

import asyncio
import logging
from typing import Any, Optional

import tornado.web
from tornado.web import url

from handlers.http import EventStreamHandler, TransportHandler
from handlers.websocket import Frame, JsonSocketHandler
from realtime.apps.session import AppSession
from realtime.apps.state import AppState
from realtime.wire import messages
from realtime.wire.closecodes import CloseCode
from realtime.wire.messages import ClientError, Message, encode, is_unavailable

log = logging.getLogger("realtime.apps")

OK: Message = {"type": "ok"}  # the answer to a POST whose handler returned nothing


def query_of(request: Any) -> dict[str, str]:
    """The last value of each query argument, undecodable bytes replaced."""
    return {name: values[-1].decode("utf-8", errors="replace")
            for name, values in request.query_arguments.items() if values}


class AppSocketHandler(JsonSocketHandler):
    """``/ws/<app>/...``: one ``AppSession`` over a WebSocket; see the module docstring."""

    session: Optional[AppSession] = None

    def initialize(  # type: ignore[override]
        self, session_class: type[AppSession], state: AppState, **base: Any
    ) -> None:
        """Args: ``session_class``, the app; ``state``, the server's app state; the rest as
        ``SocketHandler``."""
        super().initialize(**base)
        self.session_class = session_class
        self.state = state

    async def connected(self, *args: str) -> None:
        self.session = self.session_class(
            self.hub, self.state, self, self.send, args, query_of(self.request))
        try:
            await self.session.open(*args)
        except ClientError as error:
            self.send_error_frame(error.code, error.message)
            code = CloseCode.TRY_AGAIN_LATER if is_unavailable(error) else \
                CloseCode.POLICY_VIOLATION
            self.close(code, error.code)

    def received(self, frame: Frame) -> Any:
        if isinstance(frame, bytes):
            raise ClientError("bad_message", "This endpoint takes JSON text frames, not binary.")
        assert self.session is not None, "a frame before connected()"
        return self.session.receive(messages.parse(frame))

    def disconnected(self) -> None:
        if self.session is None:
            return
        closing = asyncio.ensure_future(self.session.close())
        closing.add_done_callback(_log_failure)


class AppEventStreamHandler(EventStreamHandler):
    """``/sse/<app>/...``: one ``AppSession`` as Server-Sent Events; see the module docstring."""

    session: Optional[AppSession] = None

    def initialize(  # type: ignore[override]
        self, session_class: type[AppSession], state: AppState, **base: Any
    ) -> None:
        """Args: ``session_class``, the app; ``state``, the server's app state; the rest as
        ``EventStreamHandler``."""
        super().initialize(**base)
        self.session_class = session_class
        self.state = state

    async def opened(self, *args: str) -> None:
        self.session = self.session_class(
            self.hub, self.state, self, self.send, args, query_of(self.request))
        await self.session.open(*args)

    async def closed(self) -> None:
        if self.session is not None:
            await self.session.close()


@tornado.web.stream_request_body
class AppPostHandler(TransportHandler):
    """``POST /api/<app>/...``: one message to an ``AppSession`` of its own, answered with
    what its handler returned; see the module docstring.

    Each request is charged one frame of the address's budget (``--ip-rate-limit``), as a
    chat POST is; a foreign ``Origin`` is refused (403), a body that is not
    ``application/json`` too (415: no cross-site form can post), and one over 64 KiB (413).
    """

    def initialize(  # type: ignore[override]
        self, session_class: type[AppSession], state: AppState, **base: Any
    ) -> None:
        """Args: ``session_class``, the app; ``state``, the server's app state; the rest as
        ``TransportHandler``."""
        super().initialize(**base)
        self.session_class = session_class
        self.state = state

    def prepare(self) -> None:
        self.check_origin()
        if self.request.method != "POST":
            return
        self.expect_json_body()

    async def post(self, *args: str) -> None:
        self.metrics.messages_in.labels(endpoint=self.endpoint).inc()
        self.charge_request()
        try:
            text = self.body().decode("utf-8")
        except UnicodeDecodeError:
            raise ClientError("bad_json", "The body is not UTF-8 JSON.") from None
        message = messages.parse(text)  # the socket's rules: bad_json, bad_message
        session = self.session_class(self.hub, self.state, None, args=args,
                                     query=query_of(self.request))
        answer = await session.receive(message)
        self.answer_json(encode(answer if answer is not None else OK))


def app_routes(
    pattern: str, session_class: type[AppSession], apps: dict[str, Any]
) -> list[tornado.web.URLSpec]:
    """The routes of an app: ``/ws`` + ``pattern``, ``/sse`` + ``pattern`` and ``/api`` +
    ``pattern`` (for POST), named ``ws_<name>``, ``sse_<name>`` and ``api_<name>`` after
    the session's ``name`` (their log field and metric label).

    Args:
        pattern: the path after the prefix, starting with ``/``, its groups the session's
            ``args``: ``r"/counter/([a-z0-9-]{1,40})"``. Keep groups tight: they name
            topics and state keys.
        session_class: the app.
        apps: what every app route gets (``make_app``'s ``apps``, in ``app.settings``):
            the socket and event stream dependencies and the ``state``.
    """
    if not pattern.startswith("/"):
        raise ValueError("an app's pattern starts with /")
    name = session_class.name
    deps = dict(apps, session_class=session_class)
    sockets = {key: value for key, value in deps.items() if key != "heartbeat"}
    return [
        url("/ws" + pattern, AppSocketHandler, dict(sockets, endpoint=f"ws_{name}"),
            name=f"ws_{name}"),
        url("/sse" + pattern, AppEventStreamHandler, dict(deps, endpoint=f"sse_{name}"),
            name=f"sse_{name}"),
        url("/api" + pattern, AppPostHandler, dict(sockets, endpoint=f"api_{name}"),
            name=f"api_{name}"),
    ]


def _log_failure(task: "asyncio.Future[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("closing an app session failed", exc_info=task.exception())
