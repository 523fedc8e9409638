"""Where chat state lives: the ``ChatState`` interface and its embedded implementation.

The socket handler (``handlers/chat.py``) never touches rooms directly: it asks a chat
state, keyed by room names and connection-id strings, to let a connection in, give it a
nickname, store and publish a message, and tell a (re)connecting client what it missed.
Two implementations:

* ``EmbeddedChatState`` (the default): the rooms of ``realtime.chat.rules`` in this process, with
  their history journaled to SQLite by ``realtime.chat.store``. Its methods never wait on
  anything, so a message is handled within the turn of the loop that read it.
* ``realtime.chat.redisstate.RedisChatState`` (``--redis-url``): nickname ownership, presence,
  ids and history in Redis, shared by every process of a deployment.

The rules (``normalize_nick``, ``check_text``, who may see a private message) are the pure
functions of ``realtime.chat.rules``, the same for both.

Topics: ``chat.<room>`` for everyone in a room; ``chat.<room>.to.<nick key>.<holder tag>``
for the connections holding one nickname for one holder (a browser's cookie, or one
cookie-less connection). The holder is part of the topic, so a private message published
to the holder of a nickname reaches nobody who takes that nickname later, in any process,
even one that subscribes while the message is on its way.
"""

import hashlib
import itertools
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from realtime.chat.rules import Holder, Joined, Rooms, nick_key
from realtime.chat.store import ChatStore
from realtime.limits.ratelimit import KeyedLimiter
from realtime.pubsub.hub import Hub
from realtime.wire.messages import Message, Refusal


def room_topic(room: str) -> str:
    """The topic every connection of a room listens to."""
    return f"chat.{room}"


def private_topic(room: str, nick: str, holder_tag: str) -> str:
    """The topic of the connections holding ``nick`` in ``room`` for one holder."""
    return private_topic_of_key(room, nick_key(nick), holder_tag)


def private_topic_of_key(room: str, key: str, holder_tag: str) -> str:
    """``private_topic`` from the nickname's key (``nick_key``), as a private message's
    parties are stored."""
    return f"chat.{room}.to.{key}.{holder_tag}"


def room_of_topic(topic: str) -> Optional[str]:
    """The room of a chat topic (its room's or a private one), or None for another topic.
    Room names have no dots (``realtime.chat.rules``), so the first part after ``chat.``
    is the room."""
    if not topic.startswith("chat."):
        return None
    return topic[len("chat."):].split(".", 1)[0] or None


def holder_tag(holder: Holder, process: str) -> str:
    """A holder as text that never shows the cookie: a digest of a cookie, or the
    cookie-less connection's serial with the id of the process that gave it."""
    if isinstance(holder, str):
        return "b" + hashlib.sha256(holder.encode()).hexdigest()[:32]
    return f"c{process}.{holder}"


def charge_room(budget: Optional[KeyedLimiter], hub: Hub, room: str) -> None:
    """Spend one publish to the whole room from its budget (``--room-rate-limit``), before
    anything changes: a publish costs one delivery per local listener of the room.

    Raises:
        Refusal: ``rate_limited``, with the wait, if the room's budget is spent.
    """
    if budget is None:
        return
    listeners = max(1, hub.subscriber_count(room_topic(room)))
    if not budget.take(room, listeners):
        wait = budget.retry_after(room, listeners)
        raise Refusal("rate_limited", (
            f"This room is getting more messages than it can deliver; yours was not "
            f"sent. Send again in {wait:.2f} s."), wait)


# What a connection is told when the state takes its nickname away (the nickname it lost).
Lost = Callable[[str], None]

_connection_ids = itertools.count(1)


def new_connection_id() -> str:
    """A connection id unique in this process (the chat state keys connections by it)."""
    return str(next(_connection_ids))


@dataclass
class Replay:
    """What a (re)connecting client is shown: the history it may see, oldest first, and
    ``recovered`` (None without ``since``; see ``realtime.chat.rules.Room.history``)."""

    history: list[Message]
    recovered: Optional[bool]


class ChatState(Protocol):
    """Rooms, nicknames, presence and history, keyed by room name and connection id.

    Every method that changes state raises ``ClientError`` (``bad_nick``, ``nick_taken``,
    ``bad_message``, ``too_long``, ``nick_required``, ``no_such_user``, ``unavailable``,
    ``nick_lost``) before anything changed.
    """

    name: str

    async def start(self) -> None:
        """Load or connect what the state needs, before the server accepts clients."""

    async def aclose(self) -> None:
        """Write or release everything, at shutdown."""

    def healthy(self) -> bool:
        """Whether the state is shared as configured right now (``/healthz``)."""

    async def enter(self, room: str, connection: str, cookie: Optional[str],
                    lost: Optional[Lost] = None) -> None:
        """A connection opened on ``room``, anonymous; ``cookie`` is its browser's chat
        cookie, if it sent a valid one. ``lost`` is called with the nickname if the state
        ever takes it from the connection (the connection is anonymous by then): a shared
        state does when this process can no longer prove it holds the nickname."""

    async def join(self, room: str, connection: str, raw_nick: object) -> Joined:
        """Give the connection a nickname (or change it)."""

    async def close(self, room: str, connection: str) -> Optional[str]:
        """The connection closed; returns the nickname that left the room, if any."""

    async def say(self, room: str, connection: str, raw_text: object) -> Message:
        """Store a public message and publish it on ``room_topic(room)``; returns its frame."""

    async def whisper(
        self, room: str, connection: str, raw_to: object, raw_text: object
    ) -> Message:
        """Store a private message and publish it to the sender's and the recipient's
        private topics; returns its frame."""

    async def replay(self, room: str, connection: str, since: Optional[int]) -> Replay:
        """What the connection should be shown on (re)connecting."""

    async def online(self, room: str) -> list[str]:
        """The nicknames in the room, in the order they joined."""

    def nick(self, room: str, connection: str) -> Optional[str]:
        """The nickname the connection speaks under, or None."""

    def private_topic(
        self, room: str, connection: str, nick: Optional[str] = None
    ) -> Optional[str]:
        """The topic of the connection's private messages: for its nickname, or for
        ``nick`` if given (to listen before taking it); None if it has neither."""

    def readers(self, room: str) -> int:
        """Anonymous connections of the room in this process."""

    def empty(self, room: str) -> bool:
        """Whether this process has no connection open on the room."""


class EmbeddedChatState:
    """The chat state of one process: ``realtime.chat.rules.Rooms``, journaled to SQLite.

    Args:
        rooms: the rooms (bounds and all); ``store`` journals them.
        hub: where messages are published.
        store: the history on disk (``start`` restores it, ``aclose`` writes the rest).
    """

    name = "embedded"
    process = "local"  # cookie-less holders are only ever compared within this process

    def __init__(self, rooms: Rooms, hub: Hub, store: Optional[ChatStore] = None) -> None:
        self.rooms = rooms
        self.hub = hub
        self.store = store if store is not None else ChatStore(None, rooms)

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.aclose()

    def healthy(self) -> bool:
        return True

    async def enter(self, room: str, connection: str, cookie: Optional[str],
                    lost: Optional[Lost] = None) -> None:
        # One process grants every nickname and never takes one back: ``lost`` is not needed.
        self.rooms.get(room).enter(connection, cookie)

    async def join(self, room: str, connection: str, raw_nick: object) -> Joined:
        return self.rooms.get(room).join(connection, raw_nick)

    async def close(self, room: str, connection: str) -> Optional[str]:
        if room not in self.rooms:
            return None
        return self.rooms.get(room).close(connection)

    async def say(self, room: str, connection: str, raw_text: object) -> Message:
        frame = self.rooms.get(room).say(connection, raw_text)
        self.hub.publish(room_topic(room), frame)
        return frame

    async def whisper(
        self, room: str, connection: str, raw_to: object, raw_text: object
    ) -> Message:
        chat_room = self.rooms.get(room)
        frame, recipient = chat_room.whisper(connection, raw_to, raw_text)
        to = private_topic(room, recipient.nick, holder_tag(recipient.holder, self.process))
        envelope = self.hub.publish(to, frame)
        mine = self.private_topic(room, connection)
        if mine is not None and mine != to:
            self.hub.publish(mine, envelope)
        return frame

    async def replay(self, room: str, connection: str, since: Optional[int]) -> Replay:
        history, recovered = self.rooms.get(room).history(connection, since)
        return Replay(history, recovered)

    async def online(self, room: str) -> list[str]:
        return self.rooms.get(room).online()

    def nick(self, room: str, connection: str) -> Optional[str]:
        return self.rooms.get(room).nick(connection) if room in self.rooms else None

    def private_topic(
        self, room: str, connection: str, nick: Optional[str] = None
    ) -> Optional[str]:
        if room not in self.rooms:
            return None
        chat_room = self.rooms.get(room)
        nick = nick if nick is not None else chat_room.nick(connection)
        holder = chat_room.holder(connection)
        if nick is None or holder is None:
            return None
        return private_topic(room, nick, holder_tag(holder, self.process))

    def readers(self, room: str) -> int:
        return self.rooms.get(room).readers() if room in self.rooms else 0

    def empty(self, room: str) -> bool:
        return room not in self.rooms or self.rooms.get(room).empty
