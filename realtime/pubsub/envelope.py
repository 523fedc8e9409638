"""One published message and its wire forms, each built at most once per publish.

A publish to ten thousand subscribers is one ``Envelope``: the payload bytes and their kind
(text or binary, said explicitly, never guessed from a Python type). Each transport takes
the form it writes from the envelope; the first subscriber of a kind builds it and every
other one reuses the same bytes object, so the per-subscriber work is the write alone.

Forms: ``ws_frame``, the unmasked, uncompressed WebSocket frame (header and payload, what a
server sends, RFC 6455 section 5.2); any other transport's form through
``form(kind, build)``, which calls ``build(envelope)`` for the first subscriber of that kind
and hands every later one the same bytes (a Server-Sent Event, a line of text).
"""

import struct
from typing import Callable, Optional, Union

from realtime.wire.messages import Message, encode

_OPCODE_TEXT = 0x1
_OPCODE_BINARY = 0x2
_FIN = 0x80


def websocket_frame(payload: bytes, binary: bool) -> bytes:
    """A whole server-to-client WebSocket frame: FIN set, no mask, no compression."""
    first = _FIN | (_OPCODE_BINARY if binary else _OPCODE_TEXT)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


class Envelope:
    """A message as published: ``data`` (the payload bytes) and whether it is ``binary``.

    Build one with ``Envelope.of(...)``; read a wire form through its property.
    """

    __slots__ = ("data", "binary", "_ws_frame", "_forms")

    def __init__(self, data: bytes, binary: bool = False) -> None:
        self.data = data  # text payloads are UTF-8
        self.binary = binary
        self._ws_frame: Optional[bytes] = None
        self._forms: Optional[dict[str, bytes]] = None  # kind -> wire form, built once

    @classmethod
    def of(cls, message: Union["Envelope", Message, str, bytes]) -> "Envelope":
        """An envelope for ``message``: a dict as JSON text, ``str`` as text, ``bytes`` as
        binary (the kinds Tornado hands an echo), an envelope as it is."""
        if isinstance(message, Envelope):
            return message
        if isinstance(message, dict):
            return cls(encode(message))
        if isinstance(message, str):
            return cls(message.encode("utf-8"))
        return cls(bytes(message), binary=True)

    @property
    def ws_frame(self) -> bytes:
        """The WebSocket frame for uncompressed connections, built on first use."""
        frame = self._ws_frame
        if frame is None:
            frame = self._ws_frame = websocket_frame(self.data, self.binary)
        return frame

    def form(self, kind: str, build: Callable[["Envelope"], bytes]) -> bytes:
        """The wire form called ``kind`` (``"sse"``, ``"line"``...): ``build(self)`` the first
        time it is asked for, the same bytes object every time after."""
        forms = self._forms
        if forms is None:
            forms = self._forms = {}
        built = forms.get(kind)
        if built is None:
            built = forms[kind] = build(self)
        return built

    @property
    def text(self) -> str:
        """A text payload as ``str`` (for transports that write text, and for tests)."""
        if self.binary:
            raise ValueError("a binary envelope has no text")
        return self.data.decode("utf-8")

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        kind = "binary" if self.binary else "text"
        return f"<Envelope {kind} {len(self.data)} bytes>"
