"""The HTTP API's one JSON error model (handlers/errors.py), without a server."""

from typing import Any
from unittest import mock

import tornado.web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from handlers.errors import ApiError, json_error
from handlers.errors import RETRY_AFTER_UNAVAILABLE
from realtime.wire.messages import ClientError, Refusal


def handler(status: int) -> tornado.web.RequestHandler:
    """A handler answering a GET with ``status`` set, as Tornado's send_error leaves it."""
    request = HTTPServerRequest(
        start_line=RequestStartLine("GET", "/", "HTTP/1.1"),
        headers=HTTPHeaders({"Host": "127.0.0.1"}), connection=mock.Mock(),
    )
    answering = tornado.web.RequestHandler(tornado.web.Application(), request)
    answering.set_status(status)
    return answering


def raised(error: BaseException) -> dict[str, Any]:
    """``write_error``'s keyword arguments for ``error``."""
    return {"exc_info": (type(error), error, None)}


def test_a_client_error_answers_its_code_and_message():
    """A ClientError's code and message are the body; nothing says to wait."""
    answering = handler(400)
    body = json_error(answering, raised(ClientError("bad_json", "Not JSON.")))
    assert body == {"error": {"code": "bad_json", "message": "Not JSON."}}
    assert "Retry-After" not in answering._headers


def test_a_refusal_sends_its_wait_as_retry_after_in_whole_seconds():
    """A Refusal that knows its wait sends it as Retry-After, rounded up."""
    answering = handler(429)
    json_error(answering, raised(Refusal("rate_limited", "Slow down.", 2.2)))
    assert answering._headers["Retry-After"] == "3"


def test_a_client_error_answered_with_503_says_to_retry_shortly():
    """A ClientError answered 503 (unavailable, shutting_down) gets the short Retry-After."""
    answering = handler(503)
    json_error(answering, raised(ClientError("unavailable", "Down.")))
    assert answering._headers["Retry-After"] == RETRY_AFTER_UNAVAILABLE


def test_an_api_error_answers_its_field_and_its_headers():
    """An ApiError adds the field at fault to the body and sets the headers it carries."""
    answering = handler(429)
    error = ApiError(429, "rate_limited", "Later.", {"Retry-After": "60"}, field="title")
    body = json_error(answering, raised(error))
    assert body == {"error": {"code": "rate_limited", "message": "Later.", "field": "title"}}
    assert answering._headers["Retry-After"] == "60"


def test_any_other_error_answers_the_reason_phrase_as_code_and_message():
    """Tornado's own errors (a 405, a 500) answer the reason phrase, snake_cased as the
    code, and no Retry-After even at 503."""
    answering = handler(405)
    body = json_error(answering, raised(tornado.web.HTTPError(405)))
    assert body == {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}}
    down = handler(503)
    json_error(down, raised(RuntimeError("bug")))
    assert "Retry-After" not in down._headers
