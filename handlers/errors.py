"""The HTTP API's errors: one JSON model for every JSON endpoint (``/api/...``, ``/poll/...``,
``/sse/...``).

An error answers ``{"error": {"code": ..., "message": ...}}``: ``code`` is for programs (the
same snake_case codes the sockets' error frames carry), ``message`` for people, and
``"field"`` names the body's field at fault when there is one, and ``"errors"`` lists every
problem of a body that has several (each ``{"code", "message", "field"}``, the first being
the one the error itself names). Its status comes from the
handler: an ``ApiError`` carries its own; ``handlers.http.STATUS`` maps a
``ClientError``'s code; a store that does not answer is a 503 (``handlers.http``); anything
else is Tornado's status, with its reason phrase as the message. ``Retry-After`` goes with
every error that waiting cures: the wait a ``Refusal`` knows, or a few seconds for a 503.

Each family writes the body in its own JSON form, the one its successful answers use (the
API Tornado's ``write(dict)``, the transports ``realtime.wire.messages.encode``); this module
decides what the body and headers say.
"""

from typing import Any, Optional

import tornado.web

from realtime.limits.ratelimit import retry_after_header
from realtime.pubsub.tornado_internals import reason_phrase
from realtime.wire.messages import ClientError, Message, Refusal


RETRY_AFTER_UNAVAILABLE = "5"  # seconds: a Redis restart, a failover


class ApiError(tornado.web.HTTPError):
    """An API failure with its status, answered as ``{"error": {"code": ..., "message": ...}}``,
    with ``"field"`` too when it is about one field of the body.

    Args:
        status: the HTTP status.
        code: the snake_case error code.
        message: a sentence for people.
        headers: extra response headers (``Retry-After``).
        field: the request body's field at fault, if one is.
        errors: every problem of the body, when it has more than one field at fault.
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None,
        field: Optional[str] = None, errors: Optional[list[Message]] = None,
    ) -> None:
        super().__init__(status)
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.field = field
        self.errors = errors


def json_error(handler: tornado.web.RequestHandler, kwargs: dict[str, Any]) -> Message:
    """The body answering the error ``handler.write_error`` was called with (its ``kwargs``),
    once the headers that go with it (``Retry-After``) are set on ``handler``.

    Call it from ``write_error``, after Tornado has set the status.
    """
    error = kwargs.get("exc_info", (None, None, None))[1]
    body: dict[str, Any]
    if isinstance(error, ApiError):
        body = {"code": error.code, "message": error.message}
        if error.field is not None:
            body["field"] = error.field
        if error.errors is not None:
            body["errors"] = error.errors
        for name, value in error.headers.items():
            handler.set_header(name, value)
    elif isinstance(error, ClientError):
        body = {"code": error.code, "message": error.message}
        if isinstance(error, Refusal) and error.retry_after is not None:
            handler.set_header("Retry-After", retry_after_header(error.retry_after))
        elif handler.get_status() == 503:  # unavailable, shutting_down: a moment cures it
            handler.set_header("Retry-After", RETRY_AFTER_UNAVAILABLE)
    else:
        # Tornado's own errors (405, a 500 after a bug): the reason phrase, as a code too.
        reason = reason_phrase(handler)  # what send_error set: HTTPError's reason, or the phrase
        body = {"code": (reason or "error").lower().replace(" ", "_"), "message": reason}
    return {"error": body}
