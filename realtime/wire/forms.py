"""The wire forms of the HTTP transports, each built at most once per publish.

A message published to a thousand Server-Sent-Event streams and held long-polls is one
``Envelope``; what each transport writes is one of its forms (``Envelope.form``), built by
the first subscriber that needs it and shared, the same bytes object, by every other:

* ``"id"``: the message id of a ``message`` or ``private`` frame as ASCII digits, empty for
  any other frame (presence, readers, tallies); the one JSON parse of the payload that the
  other forms need;
* ``"sse"``: a Server-Sent Event, ``id: <message id>`` (numbered frames only) and
  ``data: <the JSON frame>``, ending in a blank line;
* ``"sse.chunked"``: the same event as one HTTP/1.1 chunk, for responses Tornado frames
  in chunks;
* ``"poll"`` and ``"poll.lost"``: the whole body of a long-poll answered by this one
  message, ``{"messages": [<frame>], "last_id": <id>, "recovered": true}`` (``false`` for
  the second, whose requests gave a ``since`` that could not be recovered).

Pure: bytes in, bytes out; ``tests/wire/test_wireforms.py`` checks them without a server.
"""

import re
from typing import Iterable, Optional

import orjson

from realtime.pubsub.envelope import Envelope

# Frames that carry a message id: the ones a reconnect or a long-poll recovers by id.
NUMBERED = frozenset({"message", "private"})
# A comment line: browsers ignore it, proxies see bytes go by.
HEARTBEAT = b": keep-alive\n\n"
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def message_id(envelope: Envelope) -> Optional[int]:
    """The id of a ``message`` or ``private`` frame; None for any other payload."""
    digits = envelope.form("id", build_id)
    return int(digits) if digits else None


def build_id(envelope: Envelope) -> bytes:
    """The ``"id"`` form: a numbered frame's id as digits, else empty."""
    if envelope.binary:
        return b""
    try:
        frame = orjson.loads(envelope.data)
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(frame, dict) or frame.get("type") not in NUMBERED:
        return b""
    value = frame.get("id")
    if not isinstance(value, int) or isinstance(value, bool):
        return b""
    return str(value).encode()


def sse_event(data: bytes, event_id: Optional[int] = None) -> bytes:
    """One Server-Sent Event carrying ``data`` (UTF-8), with ``id:`` if ``event_id`` is given.

    Compact JSON has no raw line breaks; any other text is split into one ``data:`` line per
    line, which the browser joins back with ``\\n``.
    """
    head = b"id: %d\n" % event_id if event_id is not None else b""
    lines = _LINE_BREAK.split(data) if b"\n" in data or b"\r" in data else (data,)
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def build_sse(envelope: Envelope) -> bytes:
    """The ``"sse"`` form; empty for a binary payload, which an event stream cannot carry."""
    if envelope.binary:
        return b""
    return sse_event(envelope.data, message_id(envelope))


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk; empty stays empty (an empty chunk ends a body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def build_sse_chunk(envelope: Envelope) -> bytes:
    """The ``"sse.chunked"`` form."""
    return chunk(envelope.form("sse", build_sse))


def sse_form(envelope: Envelope, chunked: bool) -> bytes:
    """The event an SSE stream writes for ``envelope``, chunked or not."""
    if chunked:
        return envelope.form("sse.chunked", build_sse_chunk)
    return envelope.form("sse", build_sse)


def poll_answer(frames: Iterable[bytes], last_id: Optional[int], recovered: bool) -> bytes:
    """A long-poll's body from frames already encoded as JSON."""
    return b'{"messages":[%s],"last_id":%s,"recovered":%s}' % (
        b",".join(frames), b"null" if last_id is None else str(last_id).encode(),
        b"true" if recovered else b"false")


def build_poll(envelope: Envelope) -> bytes:
    """The ``"poll"`` form: the answer of a held long-poll woken by this message; empty for
    a frame without an id (a long-poll answers messages only)."""
    event_id = message_id(envelope)
    if event_id is None:
        return b""
    return poll_answer((envelope.data,), event_id, True)


def build_poll_lost(envelope: Envelope) -> bytes:
    """The ``"poll.lost"`` form: as ``"poll"``, for requests whose ``since`` could not be
    recovered (``"recovered": false``)."""
    event_id = message_id(envelope)
    if event_id is None:
        return b""
    return poll_answer((envelope.data,), event_id, False)


def poll_form(envelope: Envelope, recovered: bool) -> bytes:
    """The body a held long-poll answers when ``envelope`` wakes it (empty: not a message)."""
    if recovered:
        return envelope.form("poll", build_poll)
    return envelope.form("poll.lost", build_poll_lost)
