"""The JSON message format every JSON WebSocket endpoint speaks.

A client frame is a JSON object with a ``"type"`` string. Anything else is answered with an
error frame ``{"type": "error", "code": ..., "message": ...}``: ``code`` is for programs,
``message`` for people. Parsing is pure (text in, dict or ClientError out) so it is tested
without a server.
"""

import json
from typing import Any, Optional, Union

import orjson

Message = dict[str, Any]

# Longest piece of client text quoted back in an error message.
_QUOTE_LIMIT = 40


class ClientError(Exception):
    """A request the client got wrong: it becomes an error frame and the connection stays open.

    Args:
        code: machine-readable snake_case code, e.g. ``"nick_taken"``.
        message: a sentence for people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Refusal(ClientError):
    """A ``ClientError`` that says how long to wait before trying again (an HTTP answer's
    ``Retry-After``; a socket's error frame carries the wait in its message)."""

    def __init__(self, code: str, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


def encode(message: Message) -> bytes:
    """Serialize a message to the compact JSON sent on the wire, as UTF-8 bytes.

    ``orjson``: several times faster than the standard library, and straight to the bytes a
    frame carries, with no separate UTF-8 step.
    """
    return orjson.dumps(message)


UNAVAILABLE = "unavailable"  # a store or broker the request needs does not answer now
# A nickname a process could no longer prove it held (another process holds it now, or its
# lease could not be renewed in time): the connection is anonymous again.
NICK_LOST = "nick_lost"


def is_unavailable(error: object) -> bool:
    """Whether ``error`` says a backing service is down (an HTTP 503, not a bug)."""
    return isinstance(error, ClientError) and error.code == UNAVAILABLE


def error_frame(code: str, message: str) -> Message:
    """Build the error frame for ``code`` with a human ``message``."""
    return {"type": "error", "code": code, "message": message}


def quote(value: str) -> str:
    """Quote client-supplied text for an error message, cut short if long."""
    if len(value) > _QUOTE_LIMIT:
        value = value[:_QUOTE_LIMIT] + "…"
    return json.dumps(value, ensure_ascii=False)


def parse(text: str) -> Message:
    """Parse one client text frame into a message with a ``type``.

    Raises:
        ClientError: ``bad_json`` if the text is not JSON, ``bad_message`` if it is not an
            object with a non-empty ``"type"`` string, or if a string in it holds an unpaired
            surrogate escape such as ``"\\ud800"`` (not a character: it could never be sent
            on, and quoting it back in an error frame would fail).
    """
    value = loads(text)
    if not isinstance(value, dict):
        raise ClientError("bad_message", "A message must be a JSON object.")
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise ClientError("bad_message", 'A message needs a "type" field holding a string.')
    return value


def loads(data: Union[str, bytes], what: str = "frame") -> Any:
    """Read JSON from a client, a socket's frame or an HTTP body alike: what orjson reads.

    So ``NaN``, ``Infinity`` and a leading byte order mark are ``bad_json`` on every
    transport (the standard library would take them).

    Raises:
        ClientError: ``bad_json`` (the message names ``what``), or ``bad_message`` for an
            unpaired surrogate escape.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses an unpaired surrogate escape ("\udc00") like broken JSON; it is
        # legal JSON, only no UTF-8 encoding exists to send it on, and the client is told so.
        text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
        if "\\u" in text and _has_lone_surrogate(_stdlib_loads(text)):
            raise ClientError(
                "bad_message", "A string holds an unpaired surrogate escape.") from None
        raise ClientError("bad_json", f"The {what} is not valid JSON.") from None


def _stdlib_loads(text: str) -> Any:
    """The standard library's reading of ``text``, or None where it fails too (only on the
    error path, to tell a lone surrogate from broken JSON)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the interpreter's stack, e.g. "[[[[...".
        return None


def _has_lone_surrogate(value: Any) -> bool:
    pending = [value]  # a loop, not recursion: nesting depth is the client's choice
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def require_str(message: Message, field: str) -> str:
    """Return ``message[field]`` if it is a string.

    Raises:
        ClientError: ``bad_message`` if the field is missing or not a string.
    """
    value = message.get(field)
    if not isinstance(value, str):
        raise ClientError("bad_message", f'The "{field}" field must be a string.')
    return value


HANDLER_PREFIX = "handle_"  # ``handle_<type>`` handles messages of that type (never ``on_``)


def handlers_by_type(cls: type) -> dict[str, str]:
    """The message types ``cls`` handles, each with the name of its ``handle_<type>``
    method: how a socket handler or an app session dispatches a message."""
    return {
        name[len(HANDLER_PREFIX):]: name
        for name in dir(cls)
        if name.startswith(HANDLER_PREFIX) and callable(getattr(cls, name))
    }
