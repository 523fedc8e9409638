"""Chat rooms without I/O: nicknames, presence, message ids, history and replay.

The socket handler (``handlers/chat.py``) turns frames into calls on a ``Room`` and
publishes what they return; everything that decides *who may do what* lives here, so it is
tested without a server.

Ids: every message of a room, public or private, takes the next integer of one sequence. A
room's sequence starts at the current time in microseconds, so a room created after a
restart never reuses an id handed out before it, and an old ``since`` is recognised as
belonging to an earlier run.

Holders: a nickname is held by the browser that took it, known by its chat cookie, or by the
one connection that took it when it sent no cookie (known by a serial number the room gives
each connection). Connections with the same cookie share a nickname (two tabs, or a
reconnect while the old socket has not timed out yet); anyone else gets ``nick_taken``. A
private message is kept for the holders of its two nicknames when it was sent, so it is
replayed to that browser, or to that one connection, and never to whoever takes the
nickname later.

History is bounded by count and by bytes, per room and across rooms (``realtime.chat.history``);
a welcome's history is bounded by bytes too, so it always fits what the hub lets a
connection have unflushed. Empty rooms whose history is gone are forgotten at once.

Persistence: a ``Journal`` (``realtime.chat.store``) hears of every message a room stores and
of every one it drops, and writes them to disk off the event loop; ``Rooms.restore`` puts a
journal's messages back at startup. Without a journal, history lives in memory only.
"""

import functools
import hashlib
import itertools
import sys
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator, Optional, Protocol, Union

from realtime.chat import nickprofile
from realtime.chat.history import Budget, History
from realtime.wire.messages import ClientError, Message, encode

ROOM_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MAX_NICK_LENGTH = 32
MAX_TEXT_LENGTH = 4000
DEFAULT_HISTORY = 50  # messages in a welcome without ``since``
DEFAULT_REPLAY = 1000  # messages a room keeps for reconnecting clients
DEFAULT_MAX_ROOMS = 1000  # rooms held at once; the idle, empty ones are forgotten first
DEFAULT_ROOM_HISTORY_BYTES = 256 * 1024  # bytes of messages (as JSON) one room keeps
DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024  # bytes of messages every room together keeps
HISTORY_PAGE = 50  # messages one "load earlier" answer holds unless the client asks fewer
MAX_HISTORY_PAGE = 100  # messages one "load earlier" answer holds at most

LOCAL_PROCESS = "local"  # the process part of a cookie-less holder's tag, in one process
Cookie = str  # a browser's chat cookie
# Who holds a nickname: a browser's cookie (str), or for a connection without one the serial
# number its room gave it (int), which no cookie can equal.
Holder = Union[Cookie, int]
Connection = Hashable
# Who holds each nickname of a private message. A holder from an earlier run of the server
# that was a connection's serial is kept as None: it can never match anyone again.
Parties = dict[str, Optional[Holder]]


def holder_tag(holder: Holder, process: str) -> str:
    """A holder as text that never shows the cookie: a digest of a cookie, or the
    cookie-less connection's serial with the id of the process that gave it."""
    if isinstance(holder, str):
        return "b" + hashlib.sha256(holder.encode()).hexdigest()[:32]
    return f"c{process}.{holder}"


# Pure, and asked for every message an anonymous sender sends: remembered, so such a
# message costs one digest fewer (a bounded cache; a tag is itself a digest).
@functools.lru_cache(maxsize=4096)
def guest_label(tag: str) -> str:
    """What a message without a nickname is shown as from (its ``from_label``): ``guest-``
    and four hex digits of a digest of its holder's tag, the same for every message of one
    browser (or one cookie-less connection), which tells nothing of the cookie."""
    return "guest-" + hashlib.sha256(b"guest:" + tag.encode()).hexdigest()[:4]


def normalize_nick(raw: Any) -> str:
    """Return the stored, shown form of a nickname: trimmed and NFKC-normalised.

    Raises:
        ClientError: ``bad_nick`` if it is not a string, is empty or longer than 32 code
            points after normalisation, contains a character of Unicode category C
            (controls, format characters such as zero-width and bidi controls, private use,
            unassigned) or a separator other than space (U+2028, U+2029), or is outside
            the identifier security profile (``realtime.chat.nickprofile``: a symbol, mixed
            scripts, mixed digits).
    """
    if not isinstance(raw, str):
        raise ClientError("bad_nick", "A nickname must be a string.")
    nick = unicodedata.normalize("NFKC", raw.strip()).strip()
    if not nick:
        raise ClientError("bad_nick", "A nickname cannot be empty.")
    if len(nick) > MAX_NICK_LENGTH:
        raise ClientError("bad_nick", f"A nickname has at most {MAX_NICK_LENGTH} characters.")
    # str.isprintable() is False exactly for Unicode's "Other" and "Separator" categories
    # but the ASCII space: the characters refused here, tested in C rather than one
    # unicodedata.category() call per character (a reconnect storm normalises every nick).
    if not nick.isprintable():
        raise ClientError("bad_nick", "A nickname cannot contain control, format (bidi, "
                          "zero-width), separator or unassigned characters.")
    why = nickprofile.refusal(nick)
    if why is not None:
        raise ClientError("bad_nick", why)
    return nick


def nick_key(nick: str) -> str:
    """The form two nicknames are compared in (and named by in Redis): their confusable
    skeleton after case folding (``realtime.chat.nickprofile.skeleton``), so nicknames that
    look alike are one."""
    return nickprofile.skeleton(nick)


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
    holder: Holder  # the browser's cookie, or the serial of the one connection holding it
    connections: set[Connection] = field(default_factory=set)


@dataclass
class Joined:
    """What a join did: the nickname held now, whether the room gained a member (so a
    ``joined`` is due), and the nickname the connection gave up, if that one left."""

    nick: str
    gained: bool
    left: Optional[str]


@dataclass(eq=False)
class Stored:
    """A message as kept for history: its frame, its size, and for a private one who may
    see it."""

    frame: Message
    # nick key -> the holder of that nick when sent; None for a public message.
    parties: Optional[Parties] = None
    size: int = 0  # bytes of the frame as JSON (UTF-8); measured on creation
    held: bool = False  # whether the room's history still holds it
    # Bytes its text takes in memory, which the process-wide budget counts when more than
    # ``size`` (a text with an emoji is kept in 4 bytes a character: history.entry_cost).
    memory: int = 0

    def __post_init__(self) -> None:
        self.size = len(encode(self.frame))
        text = self.frame.get("text")
        self.memory = sys.getsizeof(text) if isinstance(text, str) else 0

    @property
    def id(self) -> int:
        return int(self.frame["id"])

    def visible_to(self, key: Optional[str], holder: Optional[Holder]) -> bool:
        """Public messages are for everyone; a private one only for a connection holding one
        of its two nicknames for the holder that held it when it was sent: the same browser
        (cookie), or the very same connection (no cookie)."""
        if self.parties is None:
            return True
        return key is not None and holder is not None and self.parties.get(key) == holder


def visible_to_browser(parties: Optional[Parties], holder: Optional[Holder]) -> bool:
    """Whether a message with these ``parties`` (None: public) may be shown to the browser
    ``holder`` (its chat cookie; None: public messages only): a private one only to a
    browser that held one of its two nicknames when it was sent."""
    if parties is None:
        return True
    return holder is not None and holder in parties.values()


def newest_fitting(sized: list[tuple[Message, int]], count: int, max_bytes: int) -> list[Message]:
    """The frames of the newest ``count`` of ``(frame, size)`` (oldest first) that fit in
    ``max_bytes`` as a JSON list (a comma between two), oldest first."""
    taken: list[Message] = []
    room_left = max_bytes
    for frame, size in reversed(sized[-count:] if count > 0 else []):
        room_left -= size + 1
        if room_left < 0:
            break
        taken.append(frame)
    taken.reverse()
    return taken


class Journal(Protocol):
    """What keeps rooms' messages beyond the process (``realtime.chat.store.ChatStore``)."""

    def admit(self, room: "Room") -> None:
        """Called before a message takes an id.

        Raises:
            ClientError: if the journal takes no more messages (the server is stopping).
        """

    def added(self, room: "Room") -> None:
        """``room`` stored a new message (held, or refused for its size)."""

    def dropped(self, room: "Room") -> None:
        """``room`` dropped messages (a bound, the budget, or the room being forgotten)."""


class Room:
    """One chat room: members by nickname, the message sequence, and recent messages."""

    def __init__(
        self,
        name: str,
        history: int = DEFAULT_HISTORY,
        replay: int = DEFAULT_REPLAY,
        clock: Callable[[], float] = time.time,
        history_bytes: int = DEFAULT_ROOM_HISTORY_BYTES,
        welcome_bytes: Optional[int] = None,
        budget: Optional[Budget] = None,
        first_id: int = 0,
        on_idle: Optional[Callable[["Room"], None]] = None,
        journal: Optional[Journal] = None,
        serials: Optional[Iterator[int]] = None,
    ) -> None:
        """Args:
            history: messages in a welcome without ``since``.
            replay: messages the room keeps for replay.
            history_bytes: bytes of messages (as JSON) the room keeps.
            welcome_bytes: bytes of messages a welcome holds at most; default
                ``history_bytes``.
            budget: the byte bound shared with every other room, if any.
            first_id: the lowest id to hand out (above any a forgotten room of this name
                gave); the clock in microseconds, if higher, wins.
            on_idle: called when the room has no connection and no message left.
            journal: told of every message stored and dropped, if any.
            serials: where the holders of connections without a cookie come from; default
                the room's own count from 1. A room whose history outlives it (on Redis)
                needs a source no later room of the name starts again.
        """
        self.name = name
        self.history_size = history
        self.welcome_bytes = history_bytes if welcome_bytes is None else welcome_bytes
        self._clock = clock
        self._on_idle = on_idle
        self._journal = journal
        self._next_id = max(int(clock() * 1_000_000), first_id)
        # The newest id no longer held (dropped, or never held); a since below it missed
        # something. Ids before the room's first are from a forgotten room or an earlier run.
        self._lost_through = self._next_id - 1
        # No message of this room was dropped since it began (or was restored): a
        # ``since`` of 0, a client that has seen nothing, then misses nothing.
        self._intact = True
        self._messages: History[Stored] = History(
            max(replay, history), history_bytes, budget, on_drop=self._dropped
        )
        self._members: dict[str, Member] = {}  # nick key -> member
        self._nick_of: dict[Connection, str] = {}  # connection -> nick key
        self._holder_of: dict[Connection, Holder] = {}  # connection -> its cookie or serial
        self._connections: set[Connection] = set()
        # For connections without a cookie.
        self._serials = serials if serials is not None else itertools.count(1)
        self._restoring = False  # True while restore() puts messages back

    @property
    def next_id(self) -> int:
        """The id the next message will take."""
        return self._next_id

    @property
    def history_bytes(self) -> int:
        """Bytes of the messages the room holds now."""
        return self._messages.bytes

    @property
    def lost_through(self) -> int:
        """The newest id whose message the room no longer holds (or never held)."""
        return self._lost_through

    @property
    def oldest_id(self) -> Optional[int]:
        """The id of the oldest message held, or None if the room holds none."""
        oldest = self._messages.oldest()
        return None if oldest is None else oldest.id

    def held_after(self, after: Optional[int]) -> list[Stored]:
        """The messages held with an id above ``after`` (all if None), oldest first."""
        newer: list[Stored] = []
        for message in reversed(self._messages):
            if after is not None and message.id <= after:
                break
            newer.append(message)
        newer.reverse()
        return newer

    def restore(self, lost_through: Optional[int], messages: Iterable[Stored]) -> None:
        """Hold messages of an earlier run again, oldest first (a journal's, at startup).

        Args:
            lost_through: what ``lost_through`` was when they were written; None if that
                run may have lost messages it never wrote (then no ``since`` from it is
                answered as recovered).
        """
        if lost_through is not None:
            self._lost_through = lost_through
        else:
            self._intact = False
        self._restoring = True  # not idle halfway, even if every message so far was dropped
        try:
            for message in messages:
                newest = self._messages.newest()
                if newest is not None and message.id <= newest.id:
                    raise ValueError(f"room {self.name}: stored ids out of order")
                if message.id >= self._next_id:
                    raise ValueError(f"room {self.name}: stored id {message.id} not below next")
                self._messages.append(message)  # bounds and budget apply as to a new one
        finally:
            self._restoring = False
        self._check_idle()

    # Who is here.

    def enter(self, connection: Connection, cookie: Optional[Cookie]) -> None:
        """A connection opened on this room (anonymous until it joins)."""
        self._connections.add(connection)
        self._holder_of[connection] = cookie if cookie is not None else next(self._serials)

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
        holder = self._holder_of.get(connection)
        if holder is None:
            holder = self._holder_of[connection] = next(self._serials)  # join before enter
        # Another connection with the same cookie may share the nickname; a serial is one
        # connection's own, so a cookie-less holder never shares.
        if member is not None and holder != member.holder:
            raise ClientError("nick_taken", f"The nickname {nick} is taken in this room.")
        left = self.leave(connection)
        self._connections.add(connection)
        gained = member is None
        if member is None:
            member = self._members[key] = Member(nick, holder)
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

    def unname(self, key: str) -> Optional[tuple[str, list[Connection]]]:
        """The member whose nick key is ``key`` loses its nickname: each of its connections
        stays in the room, anonymous. Returns the nickname and those connections, or None if
        nobody holds it here."""
        member = self._members.pop(key, None)
        if member is None:
            return None
        for connection in member.connections:
            self._nick_of.pop(connection, None)
        return member.nick, list(member.connections)

    def close(self, connection: Connection) -> Optional[str]:
        """A connection closed: it leaves, and its cookie is forgotten. The last one to
        close a room without messages makes it idle."""
        left = self.leave(connection)
        self._holder_of.pop(connection, None)
        self._check_idle()
        return left

    def nick(self, connection: Connection) -> Optional[str]:
        """The nickname a connection speaks under, or None if anonymous."""
        key = self._nick_of.get(connection)
        return self._members[key].nick if key is not None else None

    def holder(self, connection: Connection) -> Optional[Holder]:
        """Who the connection speaks for: its browser's cookie, or its own serial; None
        for a connection the room does not know."""
        return self._holder_of.get(connection)

    def member(self, raw_nick: Any) -> Optional[Member]:
        """The member holding a nickname, compared as nicknames are."""
        try:
            return self._members.get(nick_key(normalize_nick(raw_nick)))
        except ClientError:
            return None

    def members(self) -> list[Member]:
        """The members of the room, in the order they joined."""
        return list(self._members.values())

    def online(self) -> list[str]:
        """The nicknames in the room, in the order they joined."""
        return [member.nick for member in self._members.values()]

    def readers(self) -> int:
        """How many open connections of the room hold no nickname (anonymous readers)."""
        return len(self._connections) - len(self._nick_of)

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
        self._admit()
        nick = self.nick(connection)
        if nick is None:
            holder = self._holder_of.get(connection)
            if holder is None:
                holder = self._holder_of[connection] = next(self._serials)
            label = guest_label(holder_tag(holder, LOCAL_PROCESS))
            frame = self._frame("message", None, text, from_label=label)
        else:
            frame = self._frame("message", nick, text)
        self._store(Stored(frame))
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
        self._admit()
        frame = self._frame("private", sender.nick, text, to=recipient.nick)
        parties: Parties = {sender_key: sender.holder, nick_key(recipient.nick): recipient.holder}
        self._store(Stored(frame, parties))
        return frame, recipient

    def forget_history(self) -> None:
        """Drop every message (the room is being forgotten), freeing the shared budget."""
        self._messages.clear()

    def _admit(self) -> None:
        if self._journal is not None:
            self._journal.admit(self)

    def _store(self, message: Stored) -> None:
        self._messages.append(message)
        if self._journal is not None:
            self._journal.added(self)

    def _dropped(self, message: Stored) -> None:
        self._lost_through = max(self._lost_through, message.id)
        self._intact = False
        if self._journal is not None:
            self._journal.dropped(self)
        self._check_idle()

    def _check_idle(self) -> None:
        if self._restoring:
            return
        if self._on_idle is not None and not self._connections and not self._messages:
            self._on_idle(self)

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
        With ``since``: every message after it that it may see, and True, if the room still
        holds all of them and they fit in ``welcome_bytes``; else the newest messages and
        False (too old, cut by a bound, or from before a restart). A ``since`` equal to the
        newest id is True with no message; ``since=0`` (a client that has seen nothing, such
        as a long-poll that started in an empty room) is True while the room has dropped no
        message since it began or was restored. Either way the messages,
        as JSON, take at most ``welcome_bytes`` (the oldest are left out).
        """
        key = self._nick_of.get(connection)
        holder = self._holder_of.get(connection)
        visible = [m for m in self._messages if m.visible_to(key, holder)]
        if since is not None:
            if self._lost_through <= since < self._next_id or (since == 0 and self._intact):
                missed = [m for m in visible if m.id > since]
                fitting = self._newest_fitting(missed, len(missed))
                if len(fitting) == len(missed):
                    return fitting, True
        newest = self._newest_fitting(visible, self.history_size)
        return newest, None if since is None else False

    def earlier(self, holder: Optional[Holder], before: int,
                limit: int = HISTORY_PAGE) -> tuple[list[Message], bool]:
        """A page of history for "load earlier": the newest ``limit`` messages held with an
        id below ``before`` that the browser ``holder`` may see (``visible_to_browser``),
        oldest first, at most ``welcome_bytes`` of them, and whether older ones remain."""
        visible = [m for m in self._messages
                   if m.id < before and visible_to_browser(m.parties, holder)]
        page = newest_fitting([(m.frame, m.size) for m in visible], limit, self.welcome_bytes)
        return page, len(page) < len(visible)

    def _newest_fitting(self, messages: list[Stored], count: int) -> list[Message]:
        """The frames of the newest ``count`` messages that fit in ``welcome_bytes``
        (a comma between two), oldest first."""
        return newest_fitting([(m.frame, m.size) for m in messages], count, self.welcome_bytes)


class Rooms:
    """Every room of the process, created on first use, sharing one history byte budget.

    A room with no connection and no message left is forgotten at once; past
    ``max_rooms``, empty rooms are forgotten least recently used first, history and all.
    A room created again under a forgotten one's name starts its ids above the ones that
    room handed out, so a client's ``since`` is never mistaken for the new room's.

    Args:
        history, replay: messages in a welcome, and kept per room for replay.
        max_rooms: rooms held at once (more only while every room has a connection).
        room_history_bytes: bytes of messages (as JSON) one room keeps.
        history_bytes: bytes of messages every room together keeps; past it the oldest
            message of any room goes first.
        welcome_bytes: bytes of messages one welcome holds at most; default
            ``room_history_bytes``.
        clock: the rooms' clock, for tests.
        journal: told of every message stored and dropped (``realtime.chat.store``); may
            be set later, before any room is created.
    """

    def __init__(
        self,
        history: int = DEFAULT_HISTORY,
        replay: int = DEFAULT_REPLAY,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        room_history_bytes: int = DEFAULT_ROOM_HISTORY_BYTES,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        welcome_bytes: Optional[int] = None,
        clock: Callable[[], float] = time.time,
        journal: Optional[Journal] = None,
    ) -> None:
        self.history = history
        self.replay = replay
        self.max_rooms = max_rooms
        self.room_history_bytes = room_history_bytes
        self.welcome_bytes = welcome_bytes
        self.budget = Budget(history_bytes)
        self._clock = clock
        self.journal = journal
        self._rooms: OrderedDict[str, Room] = OrderedDict()  # least recently used first
        self._id_floor = 0  # above every id a forgotten room handed out

    def get(self, name: str) -> Room:
        """The room called ``name``, created if new."""
        room = self._rooms.get(name)
        if room is None:
            room = Room(
                name, self.history, self.replay, self._clock, history_bytes=self.room_history_bytes,
                welcome_bytes=self.welcome_bytes, budget=self.budget, first_id=self._id_floor,
                on_idle=self._forget, journal=self.journal,
            )
            self._evict()  # before adding: the new room is not one to forget
            self._rooms[name] = room
        self._rooms.move_to_end(name)
        return room

    def restore(
        self, id_floor: int, rooms: Iterable[tuple[str, Optional[int], list[Stored]]]
    ) -> None:
        """Put back the rooms of an earlier run (a journal's, at startup, before serving).

        Args:
            id_floor: above every id the earlier run handed out; every room, restored or
                new, starts its ids there or higher.
            rooms: ``(name, lost_through, messages)`` per room, the least recently active
                first; see ``Room.restore``. Past ``max_rooms`` the first ones are
                forgotten again, and past the bounds the oldest messages go, as at run time.
        """
        self._id_floor = max(self._id_floor, id_floor)
        for name, lost_through, messages in rooms:
            self.get(name).restore(lost_through, messages)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, name: object) -> bool:
        return name in self._rooms

    def _forget(self, room: Room) -> None:
        if self._rooms.get(room.name) is not room:
            return  # already forgotten
        del self._rooms[room.name]
        self._id_floor = max(self._id_floor, room.next_id)
        room.forget_history()

    def _evict(self) -> None:
        # Called with one room about to be added: make space for it if an empty room can go.
        if len(self._rooms) < self.max_rooms:
            return
        # The least recently used empty room; none: every room is in use, so go over.
        victim = next((room for room in self._rooms.values() if room.empty), None)
        if victim is not None:
            self._forget(victim)
