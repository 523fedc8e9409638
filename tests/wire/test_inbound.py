"""The inbound frame parser (``realtime.wire.inbound``) on bytes alone: every rule of RFC 6455
a server checks on a client's frames, whatever way the bytes are cut into reads."""

import os
import struct
from typing import Any, Optional

import pytest

from realtime.wire.closecodes import CloseCode
from realtime.wire.inbound import (
    BINARY, CLOSE, FAILED, FRAGMENT, PING, PONG, TEXT, FrameReader, unmask,
)

LIMIT = 1000  # max_message_size of every reader here

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
          masked: bool = True, mask: Optional[bytes] = None, length: Optional[int] = None,
          wide: Optional[int] = None) -> bytes:
    """One client frame. ``length`` overrides the announced length; ``wide`` forces the
    16-bit (126) or 64-bit (127) length form."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if masked else 0
    if wide == 127 or (wide is None and size >= 1 << 16):
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    elif wide == 126 or (wide is None and size >= 126):
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | size])
    if not masked:
        return head + payload
    mask = os.urandom(4) if mask is None else mask
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse(data: bytes, limit: int = LIMIT) -> list[tuple[int, Any]]:
    """The events of ``data`` fed in one read."""
    return FrameReader(limit).feed(data)


def parse_split(data: bytes, cut: int, limit: int = LIMIT) -> list[tuple[int, Any]]:
    """The events of ``data`` fed as two reads, cut after ``cut`` bytes."""
    reader = FrameReader(limit)
    return reader.feed(data[:cut]) + reader.feed(data[cut:])


def failure(events: list[tuple[int, Any]]) -> tuple[int, str]:
    """The close a FAILED last event asks for: (code, reason)."""
    kind, payload = events[-1]
    assert kind == FAILED, f"no failure among {events}"
    return payload


# Valid traffic: what comes out, however the bytes are cut.

FRAGMENTED_TEXT = (frame(OP_TEXT, "héllo ".encode()[:2], fin=False)
                   + frame(OP_CONTINUATION, "héllo ".encode()[2:], fin=False)
                   + frame(OP_PING, b"in between")
                   + frame(OP_CONTINUATION, "wörld".encode()))
VALID = [
    ("text", frame(OP_TEXT, "héllo".encode()), [(TEXT, "héllo")]),
    ("empty text", frame(OP_TEXT), [(TEXT, "")]),
    ("binary", frame(OP_BINARY, b"\x00\xff\x80"), [(BINARY, b"\x00\xff\x80")]),
    ("ping", frame(OP_PING, b"p"), [(PING, b"p")]),
    ("pong", frame(OP_PONG, b"q"), [(PONG, b"q")]),
    ("control frame of 125 bytes", frame(OP_PING, b"x" * 125), [(PING, b"x" * 125)]),
    ("16-bit length", frame(OP_BINARY, b"y" * 300), [(BINARY, b"y" * 300)]),
    ("64-bit length form for a small payload", frame(OP_TEXT, b"z" * 5, wide=127),
     [(TEXT, "zzzzz")]),
    ("16-bit length form for a small payload", frame(OP_TEXT, b"w", wide=126),
     [(TEXT, "w")]),
    ("message of exactly the limit", frame(OP_BINARY, b"m" * LIMIT),
     [(BINARY, b"m" * LIMIT)]),
    ("several frames in one read", frame(OP_TEXT, b"a") + frame(OP_BINARY, b"b")
     + frame(OP_PONG) + frame(OP_TEXT, b"c"),
     [(TEXT, "a"), (BINARY, b"b"), (PONG, b""), (TEXT, "c")]),
    ("fragmented text, a character split between fragments, a ping between",
     FRAGMENTED_TEXT, [(FRAGMENT, None), (FRAGMENT, None), (PING, b"in between"),
                       (TEXT, "héllo wörld")]),
    ("fragmented binary with an empty fragment",
     frame(OP_BINARY, b"12", fin=False) + frame(OP_CONTINUATION, b"", fin=False)
     + frame(OP_CONTINUATION, b"34"),
     [(FRAGMENT, None), (FRAGMENT, None), (BINARY, b"1234")]),
    ("fragments adding up to exactly the limit",
     frame(OP_TEXT, b"f" * 600, fin=False) + frame(OP_CONTINUATION, b"f" * 400),
     [(FRAGMENT, None), (TEXT, "f" * LIMIT)]),
    ("a message after a fragmented one",
     frame(OP_TEXT, b"1", fin=False) + frame(OP_CONTINUATION, b"2") + frame(OP_TEXT, b"3"),
     [(FRAGMENT, None), (TEXT, "12"), (TEXT, "3")]),
    ("empty close", frame(OP_CLOSE), [(CLOSE, b"")]),
    ("close with a code and a reason", frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye"),
     [(CLOSE, struct.pack("!H", 1000) + b"bye")]),
    ("nothing read after a close", frame(OP_CLOSE) + frame(OP_TEXT, b"late"),
     [(CLOSE, b"")]),
]


@pytest.mark.parametrize("data, expected", [case[1:] for case in VALID],
                         ids=[case[0] for case in VALID])
def test_valid_frames_give_their_events(data, expected):
    """Each valid sequence of frames gives one event per frame, in order."""
    assert parse(data) == expected


@pytest.mark.parametrize("data, expected", [case[1:] for case in VALID],
                         ids=[case[0] for case in VALID])
def test_valid_frames_give_the_same_events_cut_at_every_byte(data, expected):
    """Cut into two reads at any byte, the frames give the same events."""
    for cut in range(len(data) + 1):
        assert parse_split(data, cut) == expected, f"cut after {cut} bytes"


def test_frames_fed_one_byte_at_a_time_give_the_same_events():
    """A read of one byte at a time gives the same events as one read of everything."""
    data = b"".join(case[1] for case in VALID if case[0] != "empty close"
                    and not case[0].startswith(("close", "nothing")))
    reader = FrameReader(LIMIT)
    events = []
    for n in range(len(data)):
        events += reader.feed(data[n:n + 1])
    assert events == parse(data)


def test_a_payload_is_unmasked_with_its_own_mask():
    """Each frame is unmasked with the key in its header, whatever the key."""
    masks = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"]
    data = b"".join(frame(OP_BINARY, bytes(range(256)) * 2, mask=mask) for mask in masks)
    assert parse(data) == [(BINARY, bytes(range(256)) * 2)] * 3


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 127, 1024])
def test_unmask_undoes_a_mask_of_any_length(size):
    """unmask() XORs the payload with the mask repeated, for any length."""
    data, mask = os.urandom(size), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert unmask(mask, masked) == data


def test_a_custom_unmask_is_used():
    """The reader unmasks through the function it is given (the C one, in the server)."""
    seen = []

    def recording(mask: bytes, data: bytes) -> bytes:
        seen.append(mask)
        return unmask(mask, data)

    assert FrameReader(LIMIT, recording).feed(frame(OP_TEXT, b"hi", mask=b"abcd")) == [
        (TEXT, "hi")]
    assert seen == [b"abcd"]


def test_a_partial_frame_waits_for_the_rest():
    """Until its last byte arrives a frame gives nothing; then it gives its event."""
    data = frame(OP_BINARY, b"x" * 70_000, wide=127)
    reader = FrameReader(100_000)
    assert reader.feed(data[:-1]) == []
    assert reader.feed(data[-1:]) == [(BINARY, b"x" * 70_000)]
    assert reader.feed(frame(OP_TEXT, b"next")) == [(TEXT, "next")]


# Broken rules: the connection fails with the rule's code.

PROTOCOL = CloseCode.PROTOCOL_ERROR
BROKEN = [
    ("RSV1 set", frame(OP_TEXT, b"x", rsv=4), PROTOCOL),
    ("RSV2 set", frame(OP_TEXT, b"x", rsv=2), PROTOCOL),
    ("RSV3 set", frame(OP_PING, rsv=1), PROTOCOL),
    ("unmasked frame", frame(OP_TEXT, b"x", masked=False), PROTOCOL),
    ("data opcode 3", frame(0x3, b"x"), PROTOCOL),
    ("data opcode 7", frame(0x7), PROTOCOL),
    ("control opcode 0xB", frame(0xB), PROTOCOL),
    ("control opcode 0xF", frame(0xF, b"x"), PROTOCOL),
    ("ping of 126 bytes", frame(OP_PING, b"x" * 126), PROTOCOL),
    ("close of 126 bytes", frame(OP_CLOSE, struct.pack("!H", 1000) + b"x" * 124), PROTOCOL),
    ("fragmented ping", frame(OP_PING, b"x", fin=False), PROTOCOL),
    ("fragmented close", frame(OP_CLOSE, fin=False), PROTOCOL),
    ("continuation outside a message", frame(OP_CONTINUATION, b"x"), PROTOCOL),
    ("continuation after a message ended",
     frame(OP_TEXT, b"a", fin=False) + frame(OP_CONTINUATION, b"b")
     + frame(OP_CONTINUATION, b"c"), PROTOCOL),
    ("new message inside a fragmented one",
     frame(OP_TEXT, b"a", fin=False) + frame(OP_BINARY, b"b"), PROTOCOL),
    ("64-bit length with its top bit set", frame(OP_BINARY, length=1 << 63, wide=127)[:10]
     + b"\x00" * 4, PROTOCOL),
    ("message one byte over the limit", frame(OP_BINARY, b"m" * (LIMIT + 1)),
     CloseCode.MESSAGE_TOO_BIG),
    ("fragments adding up past the limit",
     frame(OP_TEXT, b"f" * 600, fin=False) + frame(OP_CONTINUATION, b"f" * 401),
     CloseCode.MESSAGE_TOO_BIG),
    ("invalid UTF-8", frame(OP_TEXT, b"\xff\xfe"), CloseCode.INVALID_DATA),
    ("a UTF-16 surrogate encoded in UTF-8", frame(OP_TEXT, b"\xed\xa0\x80"),
     CloseCode.INVALID_DATA),
    ("a character cut short at the end of a message", frame(OP_TEXT, "é".encode()[:1]),
     CloseCode.INVALID_DATA),
    ("invalid UTF-8 split across fragments",
     frame(OP_TEXT, b"ok \xf0\x90", fin=False) + frame(OP_CONTINUATION, b"\x28\x8c"),
     CloseCode.INVALID_DATA),
    ("a character cut short at the end of a fragmented message",
     frame(OP_TEXT, b"ok", fin=False) + frame(OP_CONTINUATION, "é".encode()[:1]),
     CloseCode.INVALID_DATA),
    ("close payload of 1 byte", frame(OP_CLOSE, b"\x03"), PROTOCOL),
    ("close code 1005", frame(OP_CLOSE, struct.pack("!H", 1005)), PROTOCOL),
    ("close code 999", frame(OP_CLOSE, struct.pack("!H", 999)), PROTOCOL),
    ("close code 5000", frame(OP_CLOSE, struct.pack("!H", 5000)), PROTOCOL),
    ("close reason not UTF-8", frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"),
     CloseCode.INVALID_DATA),
]


@pytest.mark.parametrize("data, code", [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_a_broken_rule_fails_the_connection_with_its_code(data, code):
    """A frame breaking a rule ends the events with FAILED and the rule's close code."""
    assert failure(parse(data))[0] == code


@pytest.mark.parametrize("data, code", [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_a_broken_rule_is_found_however_the_bytes_are_cut(data, code):
    """Cut into two reads at any byte, the same frame fails with the same code."""
    for cut in range(len(data) + 1):
        assert failure(parse_split(data, cut))[0] == code, f"cut after {cut} bytes"


def test_frames_before_a_broken_one_are_delivered_first():
    """What came before the broken frame is handed out, then FAILED, then nothing more."""
    reader = FrameReader(LIMIT)
    events = reader.feed(frame(OP_TEXT, b"fine") + frame(OP_TEXT, b"x", rsv=4)
                         + frame(OP_TEXT, b"never"))
    assert events[0] == (TEXT, "fine") and len(events) == 2
    assert failure(events)[0] == PROTOCOL
    assert reader.feed(frame(OP_TEXT, b"later")) == []


def test_an_oversized_message_fails_on_its_header_before_its_payload():
    """A header announcing more than the limit fails at once, before any payload."""
    header = frame(OP_BINARY, length=10 * 2**20, wide=127)[:14]
    assert failure(FrameReader(LIMIT).feed(header)) == (
        CloseCode.MESSAGE_TOO_BIG, "message too big")


def test_invalid_utf8_fails_on_the_fragment_that_holds_it():
    """Invalid UTF-8 in a first fragment fails the message without waiting for its end."""
    events = parse(frame(OP_TEXT, b"\xc3\x28", fin=False))
    assert failure(events)[0] == CloseCode.INVALID_DATA


def test_an_unmasked_frame_fails_on_its_header():
    """A client's frame without a mask fails as soon as its first two bytes arrive."""
    assert failure(FrameReader(LIMIT).feed(b"\x81\x05")) == (
        CloseCode.PROTOCOL_ERROR, "frame from a client not masked")
