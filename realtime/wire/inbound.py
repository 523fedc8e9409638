"""The frames a WebSocket client sends, parsed: bytes in, events out, no socket.

``FrameReader`` takes whatever the connection read, in pieces of any size (several frames
in one piece, one frame over many), and returns one event per frame it completed. It
applies every rule of RFC 6455 a server must check on what a client sends, so that the
I/O glue (``realtime.pubsub.tornado_internals``) only reads bytes and acts on events:

* the reserved bits (RSV1-3) clear: no extension is negotiated on this path (1002);
* every client frame masked (1002);
* a known opcode: continuation, text, binary, close, ping, pong (1002);
* a control frame at most 125 bytes and not fragmented (1002);
* a continuation only inside a fragmented message, a new message only after the last
  one ended (1002);
* a 64-bit length with its top bit clear (1002);
* a message, its fragments together, at most ``max_message_size`` bytes (1009), refused
  as soon as the header that passes the limit arrives, before its payload is buffered;
* text that is UTF-8 (1007), checked fragment by fragment, so an invalid byte fails
  the message at once rather than at its end;
* a close frame that is empty or has a valid code and a UTF-8 reason
  (``closecodes.close_frame_problem``: 1002, 1007).

The design is python-websockets' (a sans-I/O protocol): the rules are tested on bytes
alone, in ``tests/wire/test_inbound.py``.
"""

import codecs
from typing import Any, Callable, Optional, Union

from realtime.wire.closecodes import CloseCode, close_frame_problem

# Event kinds. A frame's opcode where there is one; FRAGMENT and FAILED are not opcodes
# a client can send as events (a continuation is reported as FRAGMENT or as its message).
FRAGMENT = 0x0  # a data frame that does not end its message; payload None
TEXT = 0x1  # a whole text message; payload str
BINARY = 0x2  # a whole binary message; payload bytes
CLOSE = 0x8  # a valid close frame; payload its bytes (code and reason), maybe empty
PING = 0x9  # payload bytes
PONG = 0xA  # payload bytes
FAILED = -1  # the connection must fail; payload (CloseCode, reason); always the last event

Payload = Union[None, str, bytes, tuple[CloseCode, str]]
Event = tuple[int, Payload]
Unmask = Callable[[bytes, bytes], bytes]  # (4-byte mask, masked payload) -> payload

_FIN = 0x80
_RSV = 0x70
_OPCODE = 0x0F
_MASKED = 0x80
_LENGTH = 0x7F
_CONTROL = 0x8
_WHOLE_TEXT = _FIN | TEXT  # a first byte: FIN, no reserved bit, text
_WHOLE_BINARY = _FIN | BINARY
_MAX_CONTROL_PAYLOAD = 125


def unmask(mask: bytes, data: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``mask`` repeated: one big-integer XOR over the whole
    payload, no loop per byte (the portable fallback; the glue passes a C one if there)."""
    size = len(data)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


class FrameReader:
    """Parses a client's frames across reads; one instance per connection.

    Args:
        max_message_size: the most bytes a message may have, its fragments together.
        unmask: how payloads are unmasked (``unmask`` above by default).
    """

    __slots__ = ("max_message_size", "_unmask", "_pending", "_opcode", "_parts", "_size",
                 "_decoder", "_done")

    def __init__(self, max_message_size: int, unmask: Unmask = unmask) -> None:
        self.max_message_size = max_message_size
        self._unmask = unmask
        self._pending = bytearray()  # the start of a frame not yet complete
        self._opcode = 0  # the opcode of the fragmented message under way, 0 if none
        self._parts: list[Any] = []  # its fragments: str (text, decoded) or bytes
        self._size = 0  # its bytes so far, for max_message_size
        self._decoder: Any = None  # its incremental UTF-8 decoder (text only)
        self._done = False  # a close frame or a failure ended the stream of frames

    def feed(self, data: bytes) -> list[Event]:
        """The events of every frame ``data`` completes, in order; what is left of an
        unfinished frame waits for the next call. After a CLOSE or FAILED event nothing
        more is parsed: what follows is ignored."""
        if self._done:
            return []
        pending = self._pending
        if pending:
            pending += data
            buffer: Union[bytes, bytearray] = pending
        else:
            buffer = data
        events: list[Event] = []
        position = 0
        end = len(buffer)
        while end - position >= 2:
            first = buffer[position]
            second = buffer[position + 1]
            opcode = first & _OPCODE
            length = second & _LENGTH
            start = position + 2
            if length == 126:
                if end - start < 2:
                    break
                length = int.from_bytes(buffer[start:start + 2], "big")
                start += 2
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(buffer[start:start + 8], "big")
                start += 8
            # The common frame, a whole text or binary message within the size limit
            # outside any fragmented one, is checked and decoded here without a call.
            whole = ((first == _WHOLE_TEXT or first == _WHOLE_BINARY) and second & _MASKED
                     and not self._opcode and length <= self.max_message_size)
            if not whole:
                problem = self._header_problem(first, second, opcode, length)
                if problem is not None:
                    events.append((FAILED, problem))
                    self._done = True
                    break
            if end - start < 4 + length:
                break
            mask = bytes(buffer[start:start + 4])
            start += 4
            position = start + length
            payload = self._unmask(mask, bytes(buffer[start:position]))
            if whole:
                if first == _WHOLE_BINARY:
                    events.append((BINARY, payload))
                    continue
                try:
                    events.append((TEXT, payload.decode("utf-8")))
                    continue
                except UnicodeDecodeError:
                    event: Optional[Event] = (FAILED, (CloseCode.INVALID_DATA,
                                                       "text that is not UTF-8"))
            else:
                event = self._event(first & _FIN, opcode, payload)
            if event is not None:
                events.append(event)
                if event[0] == CLOSE or event[0] == FAILED:
                    self._done = True
                    break
        if self._done:
            self._pending = bytearray()
        elif buffer is pending:
            del pending[:position]
        elif position < end:
            self._pending = bytearray(buffer[position:])
        return events

    def _header_problem(self, first: int, second: int, opcode: int,
                        length: int) -> Optional[tuple[CloseCode, str]]:
        """What makes a frame's header invalid, known before its payload arrives."""
        if first & _RSV:
            return CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension"
        if not second & _MASKED:
            return CloseCode.PROTOCOL_ERROR, "frame from a client not masked"
        if length >> 63:
            return CloseCode.PROTOCOL_ERROR, "frame length with its top bit set"
        if opcode & _CONTROL:
            if opcode > PONG:
                return CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}"
            if length > _MAX_CONTROL_PAYLOAD:
                return CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes"
            if not first & _FIN:
                return CloseCode.PROTOCOL_ERROR, "fragmented control frame"
            return None
        if opcode > BINARY:
            return CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}"
        if opcode == 0:
            if not self._opcode:
                return CloseCode.PROTOCOL_ERROR, "continuation frame outside a message"
        elif self._opcode:
            return CloseCode.PROTOCOL_ERROR, "new message before the last one ended"
        if self._size + length > self.max_message_size:
            return CloseCode.MESSAGE_TOO_BIG, "message too big"
        return None

    def _event(self, fin: int, opcode: int, payload: bytes) -> Optional[Event]:
        """The event of one whole, valid frame (an invalid UTF-8 or close is FAILED)."""
        if opcode & _CONTROL:
            if opcode == CLOSE:
                problem = close_frame_problem(payload)
                return (CLOSE, payload) if problem is None else (FAILED, problem)
            return opcode, payload
        if opcode and fin:  # a whole message in one frame: the common case
            if opcode == BINARY:
                return BINARY, payload
            try:
                return TEXT, payload.decode("utf-8")
            except UnicodeDecodeError:
                return FAILED, (CloseCode.INVALID_DATA, "text that is not UTF-8")
        if opcode:  # the first fragment
            self._opcode = opcode
            self._parts = []
            self._size = 0
            self._decoder = codecs.getincrementaldecoder("utf-8")() if opcode == TEXT else None
        self._size += len(payload)
        decoder = self._decoder
        try:
            self._parts.append(decoder.decode(payload, bool(fin)) if decoder else payload)
        except UnicodeDecodeError:
            return FAILED, (CloseCode.INVALID_DATA, "text that is not UTF-8")
        if not fin:
            return FRAGMENT, None
        kind, parts = self._opcode, self._parts
        self._opcode, self._parts, self._size, self._decoder = 0, [], 0, None
        return (TEXT, "".join(parts)) if kind == TEXT else (BINARY, b"".join(parts))
