"""The base classes of every plain HTTP handler: pages, the API, long-polling and
Server-Sent Events.

``BaseHandler`` is every HTTP handler's: security headers on every response, ``HEAD``
wherever ``GET`` is, a store that does not answer a 503 (``Retry-After``), and error pages
that never show a traceback. It also holds what every route needs against a hostile
client:

* the per-address request budget (``--http-rate-limit``): a page, API or QR request over it
  is a 429 with ``Retry-After`` (JSON ``rate_limited`` on the API), answered after one to
  two seconds so a flood slows itself down; the transports have their own
  admission and opt out (``budgeted = False``), as does ``/healthz``;
* bodies: a route that takes one is ``@tornado.web.stream_request_body``, and a body over
  ``MAX_BODY_BYTES`` is a 413 ``too_large`` (``Content-Length`` or chunked alike) before
  more of it is kept (Tornado's own limit would answer a chunked one a bare 400). Routes
  that stream must not await in ``prepare``: Tornado notices a client leaving only once
  the body is read;
* absolute URLs (``absolute_url``) come from ``--public-url`` or a Host header that is a
  host name (bounded in length and characters), else a 400 ``bad_host``;
* an unexpected error is one log line (its type and where it was raised, never the
  request's data), at most one a second with the count of repeats held back: a flood that
  hits a bug cannot flood the log.

``TransportHandler`` is what every ``/poll/...`` and ``/sse/...`` handler shares: errors as
JSON (``{"error": {"code": ..., "message": ...}}``, the status from the code, ``Retry-After``
when waiting helps), no caching, and the sockets' admission (``realtime.limits.admission``): a
foreign ``Origin`` is refused (403 ``bad_origin``), a request that will be held open takes
one of the address's ``--max-connections-per-ip`` slots (429 ``too_many_connections``), and
a new stream is charged to ``--handshake-rate-limit`` (429 ``rate_limited``). A request
takes its ticket in ``prepare``, before anything is awaited, and gives it back in
``release()``, which runs the moment the client leaves (``on_connection_close``) or the
answer is finished (``on_finish``), whichever comes first.

``EventStreamHandler`` is the base of every SSE endpoint: a hub subscriber
(``realtime.pubsub.hub.Subscriber``) that is a plain HTTP response. Its headers go out at
once (the browser's ``open`` fires before the first event), then each envelope the hub hands
it is written as a Server-Sent Event, its bytes built once per publish for every stream
(``realtime.wire.forms``), straight into the connection's stream
(``realtime.pubsub.tornado_internals``). A stream holding more than ``--max-pending-bytes``
the kernel has not taken when an event is due is a slow consumer: the hub drops it and its
TCP connection is closed. A comment line every ``--sse-heartbeat`` seconds keeps proxies
from cutting an idle stream. Subclasses implement ``opened(*path_args)`` (subscribe, write
the first events) and ``closed()`` (the stream is over; its subscriptions are already
undone), plain or ``async``."""

import asyncio
import inspect
import logging
import os
import random
import re
import traceback
from typing import Any, Awaitable, Optional

import tornado.httputil
import tornado.web
from tornado.ioloop import PeriodicCallback

from handlers.errors import RETRY_AFTER_UNAVAILABLE, ApiError, json_error
from realtime.limits.admission import SSE, Admission, Client, Ticket
from realtime.limits.ratelimit import KeyedLimiter, retry_after_header
from realtime.ops.logfmt import ThrottledLog, logfmt
from realtime.pubsub import delivery
from realtime.pubsub import tornado_internals
from realtime.pubsub.delivery import CloseReason
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.pubsub.tornado_internals import reason_phrase, response_finished
from realtime.wire.forms import HEARTBEAT, chunk, sse_event, sse_form
from realtime.wire.messages import ClientError, Message, Refusal, encode, is_unavailable

log = logging.getLogger("realtime.handlers")

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


MAX_BODY_BYTES = 64 * 1024  # one message of 4,000 characters, each escaped, fits
# What a Host header may be to go into an absolute URL: a name or address and a port. A DNS
# name has 253 characters at most; a longer Host would not even fit in a QR code.
HOST_PATTERN = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
HOST_MAX = 253 + len(":65535")
# Seconds a request over the budget waits for its 429 (its Retry-After is 1 s or more).
REFUSAL_HOLD = (1.0, 2.0)


def too_large() -> ApiError:
    """The answer to a body over ``MAX_BODY_BYTES``."""
    return ApiError(413, "too_large", f"The body may be {MAX_BODY_BYTES} bytes at most.")


def origin_of(request: tornado.httputil.HTTPServerRequest, public_url: Optional[str]) -> str:
    """``scheme://host[:port]`` of this server as its clients reach it: ``public_url`` if set
    (``--public-url``), else the request's scheme (the proxy's, with ``--xheaders``) and Host.

    Raises:
        ApiError: 400 ``bad_host``, for a Host that is not a host name and port.
    """
    if public_url:
        return public_url
    host = request.host
    if len(host) > HOST_MAX or not HOST_PATTERN.fullmatch(host):
        raise ApiError(400, "bad_host", "The Host header is not a host name.")
    return f"{request.protocol}://{host}"


def raised_at(tb: Any) -> str:
    """``file.py:line`` where an exception was raised: where to look, with no value in it."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return "-"
    return f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}"


class BaseHandler(tornado.web.RequestHandler):
    """Security headers, bounded bodies, the request budget, absolute URLs and error pages
    that never show a traceback; see the module docstring.

    Application settings it reads (``make_app`` sets them; an app without them has no
    budget, no public URL and logs failures unthrottled): ``http_rate`` (a
    ``KeyedLimiter``), ``public_url``, ``failures`` (a ``ThrottledLog``).
    """

    budgeted = True  # charged to the address's --http-rate-limit
    _body_size = 0  # bytes of body received so far
    _chunks: Optional[list[bytes]] = None  # the body so far

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)

    async def prepare(self) -> None:
        """Charge the request budget and refuse a declared oversized body; a subclass that
        overrides this awaits it first."""
        await self.charge_http_budget()
        self.check_body_length()

    # The request budget.

    async def charge_http_budget(self) -> None:
        """One request of this address, charged to ``--http-rate-limit``. A refusal is held
        one to two seconds before it is answered (its ``Retry-After`` says at least 1): a
        client that does not wait (a flood on keep-alive connections) then costs one answer
        per connection every second or two, instead of as many as it can send.

        Raises:
            ApiError: 429 ``rate_limited`` with ``Retry-After``.
        """
        budget: Optional[KeyedLimiter] = self.settings.get("http_rate")
        if budget is None or not self.budgeted:
            return
        ip = self.request.remote_ip
        if budget.take(ip):
            return
        metrics = self.settings.get("metrics")
        if metrics is not None:
            metrics.rate_limited.labels(endpoint="http").inc()
        wait = retry_after_header(budget.retry_after(ip))
        # Each hold drawn at random, so a flood's refusals come back spread over the second,
        # not in one burst that would hold up everyone else's requests together.
        await asyncio.sleep(random.uniform(*REFUSAL_HOLD))
        raise ApiError(429, "rate_limited",
                       f"Too many requests from your address; try again in {wait} s.",
                       {"Retry-After": wait})

    # Bodies.

    def check_body_length(self) -> None:
        """Refuse a body whose ``Content-Length`` is over ``MAX_BODY_BYTES`` before reading it.

        Raises:
            ApiError: 413 ``too_large``.
        """
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise too_large()

    def data_received(self, chunk: bytes) -> None:
        """(A streaming subclass's.) Keep the body up to ``MAX_BODY_BYTES``; past it answer
        413 ``too_large`` at once (a chunked body declares no length): Tornado reads no more
        of it for us and closes the connection once the answer is out."""
        if response_finished(self):
            return  # answered already (this 413, or a refusal in prepare)
        self._body_size += len(chunk)
        if self._body_size > MAX_BODY_BYTES:
            self._chunks = None
            error = too_large()
            self.send_error(413, exc_info=(type(error), error, None))
            return
        if self._chunks is None:
            self._chunks = []
        self._chunks.append(chunk)

    def body(self) -> bytes:
        """(A streaming subclass's.) The request's body, as received."""
        return b"".join(self._chunks or ())

    # Absolute URLs.

    def absolute_url(self, path: str) -> str:
        """``path`` as an absolute URL (``origin_of``).

        Raises:
            ApiError: 400 ``bad_host``.
        """
        return origin_of(self.request, self.settings.get("public_url")) + path

    # Errors.

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """As Tornado's, but a store that does not answer (``unavailable``) is a 503 the
        client may retry, not a 500."""
        super().send_error(unavailable_status(status_code, kwargs), **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """An ``HTTPError`` as Tornado logs it; a store outage not at all (the store logs it
        once); any other error as one throttled line naming its type and place, never its
        message or the request (both may hold what the client sent). ``--debug`` logs the
        traceback too."""
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
            return
        if is_unavailable(value):
            return
        failures: Optional[ThrottledLog] = self.settings.get("failures")
        fields = dict(event="request_failed", handler=type(self).__name__,
                      method=self.request.method, error=typ.__name__, at=raised_at(tb))
        if failures is None or self.settings.get("debug"):
            log.error(logfmt(**fields), exc_info=(typ, value, tb))
        else:
            failures.error(**fields)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 503:
            self.set_header("Retry-After", RETRY_AFTER_UNAVAILABLE)
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            for name, value in error.headers.items():
                self.set_header(name, value)
        reason = reason_phrase(self)
        self.render("error.html", status_code=status_code, reason=reason)

    def head(self, *args: Any, **kwargs: Any) -> Optional[Awaitable[None]]:
        """``HEAD`` wherever ``GET`` is: the same status and headers, no body.

        It runs the subclass's own ``get`` (cookies, 404s and all); Tornado's ``flush`` drops
        the body of a HEAD response and ``finish`` still sends the GET body's length. A
        handler without ``get`` answers 405, as for any method it does not serve."""
        return head_as_get(self, *args, **kwargs)


_JSON = re.compile(r"application/json\s*(;.*)?", re.IGNORECASE)
DEFAULT_HEARTBEAT = 15.0  # seconds between two comment lines on an idle event stream

# The HTTP status of each error code an HTTP transport answers; any other code is a 400.
STATUS = {
    "bad_origin": 403,
    "no_such_poll": 404,
    "too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "too_many_connections": 429,
    "unavailable": 503,
    "shutting_down": 503,
}


class TransportHandler(BaseHandler):
    """JSON errors and the per-address admission of the HTTP transports; see the module.

    Takes the dependencies every socket route gets (``make_app``'s ``sockets``), so the same
    budgets count sockets, streams and held requests together.
    """

    endpoint = ""
    budgeted = False  # admission budgets these: --handshake-rate-limit, --ip-rate-limit
    transport = SSE  # the refusals' transport label
    ticket: Optional[Ticket] = None  # from admission, for a request held open
    gone = False  # the client closed the connection before the answer was finished

    def initialize(
        self, hub: Hub, admission: Optional[Admission] = None, endpoint: str = "",
        **unused: Any,
    ) -> None:
        """Args: as ``handlers.websocket.SocketHandler.initialize`` (the admission's
        per-connection frame rate has no meaning here); keys meant for another transport of
        the same family (a chat stream gets the chats' ``room_rate``) are ignored."""
        self.hub = hub
        self.admission = admission if admission is not None else Admission()
        self.metrics = self.admission.metrics
        self.endpoint = endpoint or type(self).__name__

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def compute_etag(self) -> None:
        return None  # every answer is fresh; hashing each body would only cost

    # Admission

    def client(self, transport: Optional[str] = None, endpoint: Optional[str] = None) -> Client:
        """Who asks, for ``realtime.limits.admission``."""
        return Client(transport or self.transport, endpoint or self.endpoint,
                      self.request.remote_ip, self.request.headers.get("Origin"))

    def check_origin(self) -> None:
        """Refuse a page of another site (``--allowed-origins``, as for sockets).

        Raises:
            Refused: ``bad_origin``.
        """
        self.admission.check_origin(self.client(), self.request.headers.get("Host"))

    def admit(self, new: bool = True) -> Ticket:
        """Take this request's ticket: charged to ``--handshake-rate-limit`` if ``new``,
        holding a slot until ``release()``.

        Raises:
            Refused: ``rate_limited``, ``too_many_connections``.
        """
        self.ticket = self.admission.admit(self.client(), new)
        return self.ticket

    def charge_request(self) -> None:
        """One request of this address, charged like a WebSocket frame (``--ip-rate-limit``).

        Raises:
            Refusal: ``rate_limited``.
        """
        wait = self.admission.charge_request(self.client())
        if wait is None:
            return
        raise Refusal("rate_limited", (
            f"Too many messages from your address (all its connections together); this one "
            f"was dropped. Send again in {wait:.2f} s or less often."), wait)

    def release(self) -> None:
        """Give back what admission gave (slot, gauge) and leave the hub: the one way out,
        run as soon as the client leaves or the answer is done, only once."""
        self.hub.forget(self)
        if self.ticket is not None:
            self.ticket.release(**self.disconnect_fields())

    def disconnect_fields(self) -> dict[str, Any]:
        """What the disconnect line says besides the endpoint, address and duration."""
        return {}

    def on_connection_close(self) -> None:
        self.gone = True
        self.release()

    def on_finish(self) -> None:
        self.release()

    # Errors

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ClientError):
            status_code = STATUS.get(error.code, 400)
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not isinstance(value, ClientError):  # the client's mistake, not ours
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        body = json_error(self, kwargs)  # the API's one error model (handlers/errors.py)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(encode(body))

    def expect_json_body(self) -> None:
        """For a POST (call from ``prepare``): a body that is not ``application/json`` is
        refused (415: no cross-site HTML form can send JSON, and ``fetch()`` from another
        origin would need a CORS preflight, which is never granted), one over
        ``MAX_BODY_BYTES`` too (413, chunked bodies included: ``BaseHandler``); the rest is
        collected for ``body()``."""
        if not _JSON.fullmatch(self.request.headers.get("Content-Type", "").strip()):
            raise ClientError("unsupported_media_type", "Send the body as application/json.")
        self.check_body_length()

    def answer_json(self, body: bytes, status: int = 200) -> None:
        """Finish with a JSON body already encoded."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(body)

    def subscribe(self, topic: str) -> None:
        """Receive what is published on ``topic`` until unsubscribed or ended (nothing once
        the client has left: an await before it is open may outlast it)."""
        if self.ticket is not None and not self.ticket.released:
            self.hub.subscribe(topic, self)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""
        self.hub.unsubscribe(topic, self)


# The comment line every idle stream gets, in both framings.
_HEARTBEATS = {False: HEARTBEAT, True: chunk(HEARTBEAT)}


class EventStreamHandler(TransportHandler):
    """The base of every SSE endpoint; see the module docstring.

    Subclasses implement ``before_open(*path_args)``, ``opened(*path_args)`` and
    ``closed()``, plain or ``async``. ``before_open`` runs once the request is admitted,
    before the headers go out (a poll lookup); a ``ClientError`` it raises is a JSON error
    answer, and a client that leaves while it runs is let go at once: the stream never
    starts. One raised by ``opened`` is an ``error`` event, after which the stream ends.
    """

    _ended: "Optional[asyncio.Future[None]]" = None
    _response: Optional[tornado_internals.ResponseStream] = None

    def initialize(  # type: ignore[override]
        self, heartbeat: float = DEFAULT_HEARTBEAT, **base: Any
    ) -> None:
        """Args: ``heartbeat``, seconds between comment lines; the rest as
        ``TransportHandler``."""
        super().initialize(**base)
        self.heartbeat = heartbeat
        self._aborted = False  # closed as a slow consumer: cut the TCP connection
        self._closed_by_server = False  # close() ended it, not the client
        # Created here, not in get(): a client leaving before get() must find it to end.
        self._ended = asyncio.get_running_loop().create_future()

    # Hooks for subclasses.

    def before_open(self, *path_args: str) -> Optional[Awaitable[None]]:
        """Admitted, the headers not yet out: what the route must know first."""
        return None

    def opened(self, *path_args: str) -> Optional[Awaitable[None]]:
        """The headers are out: subscribe, write the first events."""
        return None

    def closed(self) -> Optional[Awaitable[None]]:
        """The stream is over and unsubscribed from everything."""
        return None

    # Writing.

    def send(self, message: Message, event_id: Optional[int] = None) -> bool:
        """Write one JSON frame as an event (with ``id:`` if given), after anything the hub
        still has queued for this stream."""
        envelope = Envelope.of(message)
        if event_id is not None:
            # This envelope is this stream's alone: its event is built here, with the id.
            envelope.form("sse", lambda _: sse_event(envelope.data, event_id))
        return self.hub.send(self, envelope)

    def send_error_event(self, code: str, message: str) -> bool:
        """Write an error event, as a socket writes an error frame."""
        self.metrics.errors.labels(code=code).inc()
        return self.send({"type": "error", "code": code, "message": message})

    def publish(self, topic: str, message: Message) -> None:
        """Send ``message`` to every subscriber of ``topic``."""
        self.hub.publish(topic, message)

    # The Subscriber protocol (realtime.pubsub.hub).

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        """Write the envelope's event unless the stream ended (CLOSED) or holds more than
        ``max_pending`` unsent bytes (STALLED)."""
        response = self._response
        if response is None or self._ended is None or self._ended.done():
            return delivery.CLOSED
        if response.unflushed() > max_pending:
            return delivery.STALLED
        data = sse_form(envelope, response.chunked)
        if not data:
            return delivery.WRITTEN  # nothing an event stream can carry (binary)
        return response.write(data)

    def unflushed_bytes(self) -> int:
        """Bytes written to this stream that the kernel has not taken yet."""
        return self._response.unflushed() if self._response is not None else 0

    def close_for(self, reason: CloseReason) -> None:
        """End the stream: a slow consumer's TCP connection is cut at once (what it holds
        is dropped); any other end (shutdown, a bug) finishes the response cleanly, and
        the browser reconnects."""
        if reason is CloseReason.SLOW:
            self._aborted = True
        if self._ended is not None and not self._ended.done():
            self._closed_by_server = True
        self._end()

    # Tornado's side.

    async def prepare(self) -> None:
        # Admitted before anything is awaited, so a client leaving during before_open()
        # gives its slot back at once (on_connection_close).
        self.check_origin()
        self.admit()
        pending = self.before_open(*self.path_args)
        if pending is not None:
            await pending

    async def get(self, *path_args: str) -> None:
        ticket = self.ticket
        if ticket is None or not ticket.open():
            return  # the client left while before_open() ran; all is given back
        heartbeat: Optional[PeriodicCallback] = None
        try:
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.set_header("X-Accel-Buffering", "no")  # nginx: never buffer this response
            self.flush()  # the headers, now: EventSource's open fires
            self._response = tornado_internals.ResponseStream(self)
            self.hub.register(self)
            if self.heartbeat > 0:
                heartbeat = PeriodicCallback(self._beat, self.heartbeat * 1000)
                heartbeat.start()
            await self._run_hook(self.opened, *path_args)
            await self._ended
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            self._end()
            self.release()
            if self._aborted and self._response is not None:
                self._response.stream.close()  # a slow consumer: what it holds goes
            await self._run_hook(self.closed)

    def disconnect_fields(self) -> dict[str, Any]:
        return {"by": "server" if self._closed_by_server else "client"}

    def head(self, *args: Any, **kwargs: Any) -> None:
        self.set_status(405)  # a HEAD would be a stream without a body

    def on_connection_close(self) -> None:
        self._end()
        super().on_connection_close()

    def _end(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _beat(self) -> None:
        """A comment line, so proxies see bytes; a stream that no longer reads is dropped."""
        response = self._response
        if response is None or self._ended is None or self._ended.done():
            return
        if response.unflushed() > self.hub.max_pending_bytes:
            self.hub.drop(self)
            return
        response.write(_HEARTBEATS[response.chunked])

    async def _run_hook(self, hook: Any, *args: Any) -> None:
        """Run a hook; a ``ClientError`` becomes an error event and ends the stream, any
        other exception is logged with its traceback and ends it."""
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except ClientError as error:
            if self._ended is not None and not self._ended.done():
                self.send_error_event(error.code, error.message)
                self._end()
        except Exception:
            log.exception("%s.%s failed; ending the stream", type(self).__name__, hook.__name__)
            self.metrics.internal_errors.inc()
            self._end()
