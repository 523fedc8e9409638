"""The raw TCP chat's line protocol, without sockets: bytes in, commands out, frames as lines.

``handlers/tcp.py`` is the thin I/O around it. A client sends UTF-8 lines, each ended by
``\\n`` (``\\r\\n`` too): a command (``/nick alice``, ``/join lobby``, ``/msg bob hi``, ``/who``,
``/help``, ``/quit``) or, otherwise, a message to the room. The server writes UTF-8 lines
ended by ``\\n``, told apart by their first characters:

* ``[room] ...``: a message: ``[lobby] alice: hi`` (``anonymous`` for a sender without a
  nickname), a private one as its recipient sees it, ``[lobby] alice -> you: hi``, and as its
  sender does, ``[lobby] you -> bob: hi``;
* ``* ...``: news and answers: presence (``* alice joined lobby``, ``* alice left lobby``,
  ``* alice is now alicia in lobby``), the welcome of a room, ``/who`` and ``/help``;
* ``  ↳ ...``: the rest of the line before, past 80 columns (``fitted``);
* ``! <code>: <message>``: an error, ``code`` one of the WebSocket's error codes or a few of
  the line protocol's own (``unknown_command``, ``not_joined``, ``bad_room``...).

Here: ``LineSplitter`` cuts the bytes read into lines of at most ``MAX_LINE_BYTES``, the rest
of a longer line discarded up to its newline, so a client can never make the server buffer
more; ``decode`` and ``parse`` turn one line into a command or refuse it with a
``ClientError``; ``frame_line`` writes a chat frame as a line, with control characters made
visible and bidi controls neutralised so no text can end a line early, turn it around or
drive the reader's terminal, and cut into rows of 80 columns (``fitted``) so no text can
start a row of the terminal that reads as another line; ``line_of`` is how
a connection gets its line from a published ``Envelope``, each form built once per publish
whatever the number of connections (``LINE``; a private message has a second form,
``LINE_SENT``, for its sender).
"""

import re
import unicodedata
from dataclasses import dataclass
from typing import Optional, Union

import orjson

from realtime.chat.rules import ROOM_PATTERN, nick_key
from realtime.pubsub.envelope import Envelope
from realtime.wire.messages import ClientError, Message

# The longest line a client may send, in bytes before its newline: every message the
# WebSocket takes (4,000 code points, 4 bytes each at most) fits, with a /msg and a quoted
# nickname of 32 code points before it.
MAX_LINE_BYTES = 16 * 1024

ANONYMOUS = "anonymous"  # who a message from a connection without a nickname is from

# The envelope forms of the line transport (``Envelope.form``).
LINE = "line"  # what every connection sees, but the sender of a private message
LINE_SENT = "line.sent"  # a private message as its sender sees it
LINE_SENDER = "line.sender"  # a private message's sender, as a nick key (UTF-8); else b""

# The commands, in the order /help lists them: name -> (usage, what it does).
COMMANDS: dict[str, tuple[str, str]] = {
    "nick": ("/nick <name>", "take a nickname, or change yours (before /join: for the room "
             "you join)"),
    "join": ("/join <room>", "enter a room (leaving the one you are in)"),
    "msg": ("/msg <nick> <text>", 'a private message; put a nickname with spaces in "quotes"'),
    "who": ("/who", "who is in the room"),
    "help": ("/help", "this list"),
    "quit": ("/quit", "say goodbye and close the connection"),
}

_ROOM = re.compile(ROOM_PATTERN)
_COMMAND = re.compile(r"/(\S+)(?:\s+(.*))?", re.DOTALL)
_PRIVATE = re.compile(r'\s*(?:"([^"]+)"|([^"\s]\S*))\s+(.*)', re.DOTALL)
# What a client's line may not hold: C0 controls but tab (a lone \r too), DEL, C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# What the server's lines never hold: each of those characters (tab aside) is written as its
# Unicode control picture (NUL as U+2400, ESC as U+241B, DEL as U+2421), a C1 control as
# U+FFFD, and the line and paragraph separators as U+2424. A WebSocket message may carry
# any of them; written raw, a newline would end the line early and an escape sequence would
# drive the reader's terminal.
_VISIBLE = {code: 0x2400 + code for code in range(0x20) if code != 0x09}
_VISIBLE.update({0x7F: 0x2421, 0x2028: 0x2424, 0x2029: 0x2424})
_VISIBLE.update({code: 0xFFFD for code in range(0x80, 0xA0)})
# The bidi controls (Unicode's Bidi_Control: marks, embeddings, overrides, isolates) become
# U+FFFD too: written raw, a right-to-left override (U+202E) would turn the rest of the line
# around on the reader's screen, so that a text could show as someone else's words.
BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_VISIBLE.update({code: 0xFFFD for code in BIDI_CONTROLS})

# Where a frame's line wraps: the server cuts it into rows of at most LINE_WIDTH terminal
# columns, each row after the first starting with CONTINUATION. A terminal at least that
# wide never wraps a line itself, so every row it shows starts with what the server chose
# ([room], *, ! or the marker), and no text, however padded, can start a row that reads as
# another message (`[lobby] admin: ...`).
LINE_WIDTH = 80
CONTINUATION = "  ↳ "
_TAB_WIDTH = 8  # a tab takes up to 8 columns: counted as 8, so a row is never too wide


@dataclass(frozen=True)
class Overflow:
    """What ``LineSplitter`` reports for a line longer than its bound: ``first`` when the line
    passes the bound (answer it once), then one with ``first`` False for each further
    ``max_bytes`` discarded (charge it like a line, so an endless line meets the rate limit)."""

    first: bool


TOO_LONG = Overflow(first=True)
STILL_TOO_LONG = Overflow(first=False)


class LineSplitter:
    """Cuts a byte stream into lines of at most ``max_bytes`` bytes (before the ``\\n``).

    It holds at most ``max_bytes`` of an unfinished line; past that the line is discarded up
    to its newline, never buffered.

    Args:
        max_bytes: the longest line, counting a ``\\r`` before its ``\\n``.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._partial = bytearray()  # the unfinished line, at most max_bytes
        self._discarding = False  # inside a line past the bound: drop until its newline
        self._discarded = 0  # bytes dropped of that line since it was last reported

    def feed(self, data: bytes) -> list[Union[bytes, Overflow]]:
        """The lines ``data`` completes, in order, each without its ``\\n`` and a ``\\r``
        before it, and an ``Overflow`` where a line passed the bound."""
        events: list[Union[bytes, Overflow]] = []
        view = memoryview(data)
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            stop = len(data) if end < 0 else end
            self._take(view[start:stop], events)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
                self._discarded = 0
            else:
                line = bytes(self._partial)
                self._partial.clear()
                events.append(line[:-1] if line.endswith(b"\r") else line)
            start = end + 1
        return events

    def _take(self, piece: memoryview, events: list[Union[bytes, Overflow]]) -> None:
        if not self._discarding:
            if len(self._partial) + len(piece) <= self.max_bytes:
                self._partial += piece
                return
            events.append(TOO_LONG)
            self._discarding = True
            self._discarded = len(self._partial) + len(piece) - self.max_bytes
            self._partial.clear()
        else:
            self._discarded += len(piece)
        while self._discarded >= self.max_bytes:
            events.append(STILL_TOO_LONG)
            self._discarded -= self.max_bytes


def decode(raw: bytes) -> str:
    """One line's text.

    Raises:
        ClientError: ``bad_message`` if it is not UTF-8, or holds a control character other
            than tab (NUL, escape, a lone carriage return...).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError(
            "bad_message", "A line must be UTF-8 text; this one was not and was dropped."
        ) from None
    if _CONTROL.search(text):
        raise ClientError("bad_message", "A line cannot hold control characters (NUL, escape "
                          "and the like; tab is fine); this one was dropped.")
    return text


def parse(text: str) -> Optional[tuple[str, str]]:
    """``(command, argument)`` for one line: a command's name (a key of ``COMMANDS``) and
    what follows it, or ``("", text)`` for a message to the room (``//text`` sends
    ``/text``); None for a blank line, which does nothing.

    Raises:
        ClientError: ``unknown_command`` for a ``/word`` that is no command.
    """
    if not text.strip():
        return None
    if text.startswith("//"):
        return "", text[1:]
    if not text.startswith("/"):
        return "", text
    match = _COMMAND.fullmatch(text)
    name = match[1].lower() if match else ""
    if name not in COMMANDS:
        shown = printable(name[:32]) + ("..." if len(name) > 32 else "")
        raise ClientError("unknown_command", f"There is no command /{shown}; /help lists "
                          "them (start a message with // to send a text starting with /).")
    assert match is not None
    return name, match[2] or ""


def room_name(argument: str) -> str:
    """The room a ``/join`` names.

    Raises:
        ClientError: ``bad_room`` unless it is 1-64 characters of ``A-Z a-z 0-9 _ -``.
    """
    room = argument.strip()
    if not _ROOM.fullmatch(room):
        raise ClientError("bad_room", "A room name is 1 to 64 characters of A-Z, a-z, 0-9, "
                          "_ and -: /join <room>.")
    return room


def private_arguments(argument: str) -> tuple[str, str]:
    """``(nick, text)`` of a ``/msg``: the first word, or a nickname in double quotes, then
    the text.

    Raises:
        ClientError: ``bad_message`` if either is missing.
    """
    match = _PRIVATE.fullmatch(argument)
    if match is None or not match[3].strip():
        raise ClientError("bad_message", 'A private message is /msg <nick> <text> (a nickname '
                          'with spaces in "quotes").')
    return match[1] or match[2], match[3]


def printable(text: str) -> str:
    """``text`` with no character that could end a line or drive a terminal (see above)."""
    return text.translate(_VISIBLE)


def fitted(line: str) -> str:
    """``line`` cut into rows of at most ``LINE_WIDTH`` columns, joined by newlines, each
    row after the first starting with ``CONTINUATION``. A wide (East Asian) character counts
    two columns, a tab eight, anything else one (a combining mark too, so a row is never
    wider than counted); a row never ends before a combining mark."""
    if "\t" not in line:
        if len(line) * 2 <= LINE_WIDTH:  # no row of it can be too wide
            return line
        if line.isascii():  # one column a character (controls are pictures by now)
            if len(line) <= LINE_WIDTH:
                return line
            step = LINE_WIDTH - len(CONTINUATION)
            rows = [line[:LINE_WIDTH]]
            rows += (line[start:start + step] for start in range(LINE_WIDTH, len(line), step))
            return ("\n" + CONTINUATION).join(rows)
    rows: list[str] = []
    start = 0  # where the current row's text starts in line
    used = 0  # columns the current row takes so far
    for index, char in enumerate(line):
        width = _columns(char)
        if used + width > LINE_WIDTH and index > start and not unicodedata.combining(char):
            rows.append(line[start:index])
            start = index
            used = len(CONTINUATION)
        used += width
    rows.append(line[start:])
    return ("\n" + CONTINUATION).join(rows)


def _columns(char: str) -> int:
    if char == "\t":
        return _TAB_WIDTH
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def frame_line(frame: Message, sent: bool = False) -> Optional[str]:
    """The line (without its final newline) for a chat frame, None for a frame not shown as
    a line (``readers`` counts). ``sent``: a private message as its sender sees it. A line
    wider than ``LINE_WIDTH`` continues on rows of its own (``fitted``)."""
    line = _unfitted(frame, sent)
    return None if line is None else fitted(line)


def _unfitted(frame: Message, sent: bool) -> Optional[str]:
    kind = frame.get("type")
    room = _shown(frame.get("room"))
    if kind == "message":
        sender = frame.get("from")
        name = _shown(sender) if sender is not None else ANONYMOUS
        return f"[{room}] {name}: {_shown(frame.get('text'))}"
    if kind == "private":
        if sent:
            return f"[{room}] you -> {_shown(frame.get('to'))}: {_shown(frame.get('text'))}"
        return f"[{room}] {_shown(frame.get('from'))} -> you: {_shown(frame.get('text'))}"
    if kind == "joined":
        return f"* {_shown(frame.get('nick'))} joined {room}"
    if kind == "left":
        return f"* {_shown(frame.get('nick'))} left {room}"
    if kind == "renamed":
        return f"* {_shown(frame.get('from'))} is now {_shown(frame.get('to'))} in {room}"
    if kind == "online" and isinstance(frame.get("online"), list):
        names = ", ".join(_shown(nick) for nick in frame["online"]) or "nobody"
        return f"* online in {room}: {names}"
    return None


def sent_by(frame: Message, nick: Optional[str]) -> bool:
    """Whether ``frame`` is a private message whose sender is ``nick``."""
    sender = frame.get("from")
    return (nick is not None and frame.get("type") == "private" and isinstance(sender, str)
            and nick_key(sender) == nick_key(nick))


def _shown(value: object) -> str:
    return printable(value) if isinstance(value, str) else ""


# The envelope forms: each built at most once per publish, for every connection.

def _frame_of(envelope: Envelope) -> Optional[Message]:
    if envelope.binary:
        return None
    try:
        frame = orjson.loads(envelope.data)
    except orjson.JSONDecodeError:
        return None
    return frame if isinstance(frame, dict) else None


def _encoded(line: Optional[str]) -> bytes:
    return b"" if line is None else (line + "\n").encode("utf-8")


def received_line(envelope: Envelope) -> bytes:
    """The ``LINE`` form: the published frame's line as everyone sees it, or b"" (none)."""
    frame = _frame_of(envelope)
    return b"" if frame is None else _encoded(frame_line(frame))


def sent_line(envelope: Envelope) -> bytes:
    """The ``LINE_SENT`` form: a private message's line as its sender sees it."""
    frame = _frame_of(envelope)
    return b"" if frame is None else _encoded(frame_line(frame, sent=True))


def private_sender(envelope: Envelope) -> bytes:
    """The ``LINE_SENDER`` form: the nick key of a private message's sender, else b""."""
    frame = _frame_of(envelope)
    if frame is None or frame.get("type") != "private" or not isinstance(frame.get("from"), str):
        return b""
    return nick_key(frame["from"]).encode("utf-8")


def line_of(envelope: Envelope, me: bytes) -> bytes:
    """What a connection writes for ``envelope``: its line, b"" for none. ``me`` is the nick
    key (UTF-8) of the nickname the connection holds, b"" if none."""
    if me and envelope.form(LINE_SENDER, private_sender) == me:
        return envelope.form(LINE_SENT, sent_line)
    return envelope.form(LINE, received_line)


def written(text: str) -> Envelope:
    """An envelope whose line is ``text`` as it is: lines the server writes to one
    connection (answers, errors, a welcome), sent through the hub like any other."""
    data = text.encode("utf-8")
    envelope = Envelope(data)
    envelope.form(LINE_SENDER, lambda _: b"")
    envelope.form(LINE, lambda _: data)
    return envelope


# The server's own lines, each with its newline.

def info(text: str) -> str:
    """A ``* text`` line."""
    return f"* {text}\n"


def error_line(code: str, message: str) -> str:
    """An ``! code: message`` line."""
    return f"! {code}: {printable(message)}\n"


def who_line(room: str, online: list[str], readers: int) -> str:
    """The answer to ``/who``: the nicknames in the room and how many read anonymously."""
    names = ", ".join(printable(nick) for nick in online) or "nobody"
    return info(f"online in {room}: {names}; anonymous readers: {readers}")


def welcome(room: str, nick: Optional[str], online: list[str], readers: int,
            history: list[Message]) -> str:
    """The lines a connection gets on joining a room: under which nickname, who is there, and
    the recent messages it may see, oldest first (``history``, the WebSocket welcome's)."""
    if nick is not None:
        text = info(f"you are in {room} as {printable(nick)}")
    else:
        text = info(f"you are in {room} without a nickname (/nick <name> takes one)")
    text += who_line(room, online, readers)
    shown = [line for line in (frame_line(frame, sent_by(frame, nick)) for frame in history)
             if line is not None]
    if shown:
        text += info(f"{len(shown)} recent message{'' if len(shown) == 1 else 's'}:")
        text += "".join(line + "\n" for line in shown)
    return text


def help_lines() -> str:
    """The answer to ``/help``."""
    width = max(len(usage) for usage, _ in COMMANDS.values())
    text = info("commands:")
    for usage, what in COMMANDS.values():
        text += info(f"  {usage.ljust(width)}  {what}")
    text += info(f"  {'<text>'.ljust(width)}  say it to the room (//text for a text starting "
                 "with /)")
    return text
