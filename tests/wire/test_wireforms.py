"""The HTTP transports' wire forms, without a server: SSE events, chunks, long-poll bodies."""

import json

from realtime.pubsub.envelope import Envelope
from realtime.wire.forms import (
    chunk, message_id, poll_answer, poll_form, sse_event, sse_form,
)

MESSAGE = {"type": "message", "id": 17, "room": "lobby", "from": None, "text": "a\nb", "ts": 1}


def test_a_numbered_frame_is_an_event_with_its_id():
    """A message frame becomes id: and one data: line holding the JSON as published."""
    envelope = Envelope.of(MESSAGE)
    assert sse_form(envelope, chunked=False) == b"id: 17\ndata: " + envelope.data + b"\n\n"


def test_other_frames_have_no_id():
    """Presence, readers and tallies are events without an id."""
    envelope = Envelope.of({"type": "joined", "room": "lobby", "nick": "alice"})
    assert message_id(envelope) is None
    assert sse_form(envelope, chunked=False) == b"data: " + envelope.data + b"\n\n"


def test_text_with_line_breaks_is_one_data_line_per_line():
    """A payload with CR, LF or CRLF becomes several data: lines (the browser joins them)."""
    assert sse_event(b"one\r\ntwo\rthree\nfour") == (
        b"data: one\ndata: two\ndata: three\ndata: four\n\n")


def test_the_chunked_form_is_the_event_as_one_chunk():
    """The chunked form is the event with its size in hex before it, CRLF after."""
    envelope = Envelope.of(MESSAGE)
    event = sse_form(envelope, chunked=False)
    assert sse_form(envelope, chunked=True) == b"%x\r\n" % len(event) + event + b"\r\n"
    assert chunk(b"") == b""


def test_each_form_is_built_once_and_shared():
    """Asking twice gives the very same bytes object."""
    envelope = Envelope.of(MESSAGE)
    assert sse_form(envelope, chunked=True) is sse_form(envelope, chunked=True)
    assert poll_form(envelope, True) is poll_form(envelope, True)


def test_a_binary_payload_has_no_event():
    """An event stream cannot carry bytes: nothing is written for them."""
    assert sse_form(Envelope.of(b"\x00\x01"), chunked=False) == b""


def test_the_poll_forms_are_whole_answers():
    """A message's poll forms are the long-poll bodies it answers, recovered or not; other
    frames have none."""
    envelope = Envelope.of(MESSAGE)
    assert json.loads(poll_form(envelope, True)) == {
        "messages": [MESSAGE], "last_id": 17, "recovered": True}
    assert json.loads(poll_form(envelope, False))["recovered"] is False
    assert poll_form(Envelope.of({"type": "readers", "count": 1}), True) == b""
    assert json.loads(poll_answer((), None, False)) == {
        "messages": [], "last_id": None, "recovered": False}


def test_ids_must_be_integers():
    """A frame whose id is not an integer (or a boolean) has no event id."""
    for value in ("17", 1.5, True, None):
        assert message_id(Envelope.of({**MESSAGE, "id": value})) is None
