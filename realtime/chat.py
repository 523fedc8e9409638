"""Chat rooms without I/O: nicknames, presence, message ids, history and replay.

The socket handler (``handlers/chat.py``) turns frames into calls on a ``Room`` and
publishes what they return; everything that decides *who may do what* lives here, so it is
tested without a server.

Ids: every message of a room, public or private, takes the next integer of one sequence. A
room's sequence starts at the current time in microseconds, so a room created after a
restart never reuses an id handed out before it, and an old ``since`` is recognised as
belonging to an earlier run.

Cookies: a nickname is held by the browser that took it, known by its chat cookie, or by the
one connection that took it when it sent no cookie. Connections with the same cookie share a
nickname (two tabs, or a reconnect while the old socket has not timed out yet); anyone else
gets ``nick_taken``.
"""

import time
import unicodedata
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

from realtime.messages import ClientError, Message

ROOM_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MAX_NICK_LENGTH = 32
MAX_TEXT_LENGTH = 4000
DEFAULT_HISTORY = 50  # messages in a welcome without ``since``
DEFAULT_REPLAY = 1000  # messages a room keeps for reconnecting clients
DEFAULT_MAX_ROOMS = 1000  # rooms held at once; the idle, empty ones are forgotten first

Cookie = str  # a browser's chat cookie
Connection = Hashable


def normalize_nick(raw: Any) -> str:
    """Return the stored, shown form of a nickname: trimmed and NFKC-normalised.

    Raises:
        ClientError: ``bad_nick`` if it is not a string, is empty or longer than 32 code
            points after normalisation, or contains a character of Unicode category C
            (controls, format characters such as zero-width and bidi marks, private use,
            unassigned).
    """
    if not isinstance(raw, str):
        raise ClientError("bad_nick", "A nickname must be a string.")
    nick = unicodedata.normalize("NFKC", raw.strip()).strip()
    if not nick:
        raise ClientError("bad_nick", "A nickname cannot be empty.")
    if len(nick) > MAX_NICK_LENGTH:
        raise ClientError("bad_nick", f"A nickname has at most {MAX_NICK_LENGTH} characters.")
    if any(unicodedata.category(char).startswith("C") for char in nick):
        raise ClientError(
            "bad_nick", "A nickname cannot contain control, format or unassigned characters."
        )
    return nick


def nick_key(nick: str) -> str:
    """The form two nicknames are compared in: casefolded, then NFKC again."""
    return unicodedata.normalize("NFKC", nick.casefold())


def check_text(raw: Any) -> str:
    """Return the text of a message if it may be sent.

    Raises:
        ClientError: ``bad_message`` if it is not a string or is blank, ``too_long`` past
            4,000 code points.
    """
    if not isinstance(raw, str):
        raise ClientError("bad_message", 'The "text" field must be a string.')
    if not raw.strip():
        raise ClientError("bad_message", 'A message needs a non-empty "text" string.')
    if len(raw) > MAX_TEXT_LENGTH:
        raise ClientError("too_long", f"A message has at most {MAX_TEXT_LENGTH} characters.")
    return raw


@dataclass
class Member:
    """A nickname in a room and the connections that speak under it."""

    nick: str
    cookie: Optional[Cookie]  # of the browser holding it; None: held by one connection
    connections: set[Connection] = field(default_factory=set)


@dataclass
class Joined:
    """What a join did: the nickname held now, whether the room gained a member (so a
    ``joined`` is due), and the nickname the connection gave up, if that one left."""

    nick: str
    gained: bool
    left: Optional[str]


@dataclass
class Stored:
    """A message as kept for history: its frame, and for a private one who may see it."""

    frame: Message
    # nick key -> the cookie holding that nick when sent; None for a public message.
    parties: Optional[dict[str, Optional[Cookie]]] = None

    @property
    def id(self) -> int:
        return int(self.frame["id"])

    def visible_to(self, key: Optional[str], cookie: Optional[Cookie]) -> bool:
        """Public messages are for everyone; a private one for its two nicks, and only for
        the browser that held the nick then (when it had a chat cookie)."""
        if self.parties is None:
            return True
        if key is None or key not in self.parties:
            return False
        held_by = self.parties[key]
        return held_by is None or held_by == cookie


class Room:
    """One chat room: members by nickname, the message sequence, and recent messages."""

    def __init__(
        self,
        name: str,
        history: int = DEFAULT_HISTORY,
        replay: int = DEFAULT_REPLAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.history_size = history
        self._clock = clock
        self._next_id = int(clock() * 1_000_000)
        self._messages: deque[Stored] = deque(maxlen=max(replay, history))
        self._members: dict[str, Member] = {}  # nick key -> member
        self._nick_of: dict[Connection, str] = {}  # connection -> nick key
        self._cookie_of: dict[Connection, Optional[Cookie]] = {}  # connection -> its chat cookie
        self._connections: set[Connection] = set()

    # Who is here.

    def enter(self, connection: Connection, cookie: Optional[Cookie]) -> None:
        """A connection opened on this room (anonymous until it joins)."""
        self._connections.add(connection)
        self._cookie_of[connection] = cookie

    def join(self, connection: Connection, raw_nick: Any) -> "Joined":
        """Give ``connection`` a nickname; one that had another leaves the old one.

        Raises:
            ClientError: ``bad_nick`` or ``nick_taken``.
        """
        nick = normalize_nick(raw_nick)
        key = nick_key(nick)
        member = self._members.get(key)
        if member is not None and self._nick_of.get(connection) == key:
            return Joined(member.nick, gained=False, left=None)
        cookie = self._cookie_of.get(connection)
        if member is not None and (cookie is None or cookie != member.cookie):
            raise ClientError("nick_taken", f"The nickname {nick} is taken in this room.")
        left = self.leave(connection)
        self._connections.add(connection)
        gained = member is None
        if member is None:
            member = self._members[key] = Member(nick, cookie)
        member.connections.add(connection)
        self._nick_of[connection] = key
        return Joined(member.nick, gained, left)

    def leave(self, connection: Connection) -> Optional[str]:
        """Take a connection out of the room; returns the nickname that left, if the member
        has no connection left."""
        self._connections.discard(connection)
        key = self._nick_of.pop(connection, None)
        if key is None:
            return None
        member = self._members[key]
        member.connections.discard(connection)
        if member.connections:
            return None
        del self._members[key]
        return member.nick

    def close(self, connection: Connection) -> Optional[str]:
        """A connection closed: it leaves, and its cookie is forgotten."""
        left = self.leave(connection)
        self._cookie_of.pop(connection, None)
        return left

    def nick(self, connection: Connection) -> Optional[str]:
        """The nickname a connection speaks under, or None if anonymous."""
        key = self._nick_of.get(connection)
        return self._members[key].nick if key is not None else None

    def member(self, raw_nick: Any) -> Optional[Member]:
        """The member holding a nickname, compared as nicknames are."""
        try:
            return self._members.get(nick_key(normalize_nick(raw_nick)))
        except ClientError:
            return None

    def online(self) -> list[str]:
        """The nicknames in the room, in the order they joined."""
        return [member.nick for member in self._members.values()]

    @property
    def empty(self) -> bool:
        """True when no connection is open on the room."""
        return not self._connections

    # Messages.

    def say(self, connection: Connection, raw_text: Any) -> Message:
        """Record a public message and return its frame.

        Raises:
            ClientError: ``bad_message`` or ``too_long``.
        """
        text = check_text(raw_text)
        frame = self._frame("message", self.nick(connection), text)
        self._messages.append(Stored(frame))
        return frame

    def whisper(self, connection: Connection, raw_to: Any, raw_text: Any) -> tuple[Message, Member]:
        """Record a private message; return its frame and the recipient.

        Raises:
            ClientError: ``bad_message``/``too_long`` (text), ``nick_required`` (anonymous
                sender), ``no_such_user`` (nobody holds that nickname here).
        """
        text = check_text(raw_text)
        if not isinstance(raw_to, str):
            raise ClientError("bad_message", 'The "to" field must be a nickname string.')
        sender_key = self._nick_of.get(connection)
        if sender_key is None:
            raise ClientError("nick_required", "Take a nickname before sending private messages.")
        recipient = self.member(raw_to)
        if recipient is None:
            raise ClientError(
                "no_such_user", f"Nobody called {raw_to.strip()[:MAX_NICK_LENGTH]} is in this room."
            )
        sender = self._members[sender_key]
        frame = self._frame("private", sender.nick, text, to=recipient.nick)
        parties = {sender_key: sender.cookie, nick_key(recipient.nick): recipient.cookie}
        self._messages.append(Stored(frame, parties))
        return frame, recipient

    def _frame(self, kind: str, sender: Optional[str], text: str, **extra: Any) -> Message:
        frame: Message = {"type": kind, "id": self._next_id, "room": self.name, "from": sender}
        frame.update(extra)
        frame["text"] = text
        frame["ts"] = int(self._clock() * 1000)
        self._next_id += 1
        return frame

    # History.

    def history(
        self, connection: Connection, since: Optional[int] = None
    ) -> tuple[list[Message], Optional[bool]]:
        """What a (re)connecting client should be shown, oldest first, and ``recovered``.

        Without ``since``: the newest messages it may see (up to the history size) and None.
        With ``since``: every message after it and True if the room still holds all of them;
        else the newest messages and False (too old, or from before a restart).
        """
        key = self._nick_of.get(connection)
        cookie = self._cookie_of.get(connection)
        visible = [m.frame for m in self._messages if m.visible_to(key, cookie)]
        if since is None:
            return visible[-self.history_size:], None
        first_held = self._messages[0].id if self._messages else self._next_id
        if first_held - 1 <= since < self._next_id:
            return [frame for frame in visible if frame["id"] > since], True
        return visible[-self.history_size:], False


class Rooms:
    """Every room of the process, created on first use; idle empty rooms are forgotten
    first once more than ``max_rooms`` exist, so memory stays bounded."""

    def __init__(
        self,
        history: int = DEFAULT_HISTORY,
        replay: int = DEFAULT_REPLAY,
        max_rooms: int = DEFAULT_MAX_ROOMS,
    ) -> None:
        self.history = history
        self.replay = replay
        self.max_rooms = max_rooms
        self._rooms: OrderedDict[str, Room] = OrderedDict()  # least recently used first

    def get(self, name: str) -> Room:
        """The room called ``name``, created if new."""
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name, self.history, self.replay)
            self._evict()
        self._rooms.move_to_end(name)
        return room

    def __len__(self) -> int:
        return len(self._rooms)

    def _evict(self) -> None:
        if len(self._rooms) <= self.max_rooms:
            return
        for name in [n for n, room in self._rooms.items() if room.empty]:
            del self._rooms[name]
            if len(self._rooms) <= self.max_rooms:
                return
