"""Property tests of the JSON message parser and dispatch: whatever a client sends, the
answer is a valid dispatch or an error frame that can be sent, never an exception."""

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.wire import messages
from realtime.wire.messages import ClientError
from tests.probe import ProbeSocketHandler

CODES = {"bad_json", "bad_message", "unknown_type"}

json_values = st.recursive(
    # Numbers as JSON carries them: 64-bit integers and finite doubles.
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Objects that look like messages: a "type" that is sometimes a known one, other fields.
message_like = st.dictionaries(
    st.text(max_size=8), json_values, max_size=4
).flatmap(lambda fields: st.fixed_dictionaries(
    {"type": st.sampled_from(["say", "ping", "nope", "", "handle_say", "__init__"])
     | st.text(max_size=10) | json_values},
).map(lambda head: {**fields, **head}))
# JSON text with escapes a generator of valid values would not write: lone surrogates.
escaped = st.builds(
    lambda kind, code: f'{{"type": "{kind}", "text": "\\u{code:04x}"}}',
    st.sampled_from(["say", "x"]), st.integers(0, 0xFFFF),
)
frames = st.one_of(
    st.text(),
    st.binary(),
    json_values.map(json.dumps),
    message_like.map(json.dumps),
    escaped,
)


def answer(frame: Any) -> tuple[str, Any]:
    """What the endpoint does with ``frame``: ("dispatch", method) or ("error", frame)."""
    try:
        name, message = ProbeSocketHandler.resolve(frame)
    except ClientError as error:
        return "error", messages.error_frame(error.code, error.message)
    return "dispatch", (name, message)


@settings(max_examples=300, deadline=None)
@given(frames)
def test_any_frame_gets_a_dispatch_or_a_sendable_error_frame(frame):
    """Every input resolves to a handle_ method for its type, or to an error frame with a
    known code that encodes to UTF-8; nothing else escapes."""
    kind, result = answer(frame)
    if kind == "error":
        assert result["code"] in CODES
        messages.encode(result)
    else:
        name, message = result
        assert name == "handle_" + message["type"]
        assert callable(getattr(ProbeSocketHandler, name))
        messages.encode(message)  # anything parsed can be sent on


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_non_objects_are_bad_message(value):
    """Valid JSON that is not an object is always bad_message."""
    if isinstance(value, dict):
        return
    kind, result = answer(json.dumps(value))
    assert (kind, result["code"]) == ("error", "bad_message")


@settings(max_examples=100, deadline=None)
@given(message_like)
def test_parse_returns_the_object_it_was_given(message):
    """A parsed message equals the object that was serialized, when it is accepted."""
    try:
        parsed = messages.parse(json.dumps(message))
    except ClientError as error:
        assert error.code == "bad_message"
        assert not (isinstance(message["type"], str) and message["type"])
        return
    assert parsed == message


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 100_000))
def test_deep_nesting_is_bad_json_or_bad_message_not_a_crash(depth):
    """Arrays nested deeper than the stack are refused, not a RecursionError."""
    try:
        messages.parse("[" * depth + "]" * depth)
    except ClientError as error:
        assert error.code in {"bad_json", "bad_message"}


def test_numbers_json_cannot_carry_are_bad_json():
    """NaN, Infinity and numbers past a double's range are not JSON: bad_json, as for any
    broken frame."""
    for text in ['{"type":"say","n":NaN}', '{"type":"say","n":Infinity}',
                 '{"type":"say","n":1e400}']:
        kind, frame = answer(text)
        assert (kind, frame["code"]) == ("error", "bad_json"), text
