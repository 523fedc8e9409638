"""The chat endpoint: rooms, nicknames, public and private messages, presence, replay.

The rules live in ``realtime/chat.py``; this handler reads the URL, turns frames into calls
on the room and publishes what they return. Topics: ``chat.<room>`` for everyone in a room,
``chat.<room>.nick.<nick key>`` for the connections of one nickname (private messages).

Each room has a publish budget (``--room-rate-limit``) weighed in deliveries: a public
message or a join costs one per listener of the room, because what a publish costs the
server is its fan-out. Counting publishes instead would let a room of 1,000 take the whole
process at a rate that is harmless in a room of 10. Over the budget, the request gets
``rate_limited`` and nothing is published or changed.

Presence: a member changing nickname is one ``renamed`` frame, not ``left`` then
``joined``. The count of anonymous readers reaches the room in ``readers`` frames,
coalesced per room (``ReaderCounts``), so a wave of reconnects is a few fan-outs, not one
per socket.
"""

import math
import re
import secrets
import time
from typing import Any, Callable, Optional

from tornado.ioloop import IOLoop

from handlers.base import JsonSocketHandler
from handlers.pages import PageHandler
from realtime.chat import Joined, Room, Rooms, nick_key
from realtime.hub import Hub
from realtime.messages import ClientError, Message
from realtime.ratelimit import KeyedLimiter

CHAT_COOKIE = "chat_id"
_COOKIE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SINCE_PATTERN = re.compile(r"-?[0-9]{1,18}")


def room_topic(room: str) -> str:
    """The topic every connection of a room listens to."""
    return f"chat.{room}"


def nick_topic(room: str, nick: str) -> str:
    """The topic the connections holding ``nick`` in ``room`` listen to."""
    return f"chat.{room}.nick.{nick_key(nick)}"


DEFAULT_READERS_INTERVAL = 1.0  # seconds between two readers frames of one room


class ReaderCounts:
    """Tells each room how many anonymous readers it has, at most once per ``interval``.

    A change (an anonymous socket opens or closes, or takes a nickname) schedules one
    ``readers`` frame for its room: on the next turn of the loop if the room was not told
    within ``interval``, else when the interval is up, with the count as it is then. A
    count that ends where the room was last told sends nothing. So 500 reconnects within a
    second cost one or two fan-outs, not 500. The count is this process's connections.

    Args:
        hub: where the frames are published (``chat.<room>``).
        interval: the shortest time, in seconds, between two frames of one room.
        clock: monotonic seconds, for tests.
    """

    def __init__(
        self, hub: Hub, interval: float = DEFAULT_READERS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.interval = interval
        self._clock = clock
        self._told: dict[str, int] = {}  # room -> the count it was last told
        self._sent_at: dict[str, float] = {}  # room -> when its last frame went out
        self._due: set[str] = set()  # rooms with a frame scheduled

    def settle(self, room: Room) -> None:
        """The room's count is known to all its connections (the only one just got it in
        its welcome): nothing to send until it changes."""
        self._told[room.name] = room.readers()

    def changed(self, room: Room) -> None:
        """The count of ``room`` may have changed: tell the room, coalesced."""
        if room.name in self._due:
            return
        self._due.add(room.name)
        last = self._sent_at.get(room.name, -math.inf)
        wait = max(0.0, last + self.interval - self._clock())
        IOLoop.current().call_later(wait, self._flush, room)

    def _flush(self, room: Room) -> None:
        name = room.name
        self._due.discard(name)
        if room.empty:  # nobody to tell; forget the room (it may be gone already)
            self._told.pop(name, None)
            self._sent_at.pop(name, None)
            return
        count = room.readers()
        if self._told.get(name) == count:
            return
        self._told[name] = count
        self._sent_at[name] = self._clock()
        self.hub.publish(room_topic(name), {"type": "readers", "room": name, "count": count})


class ChatPageHandler(PageHandler):
    """``/chat``: the chat page; gives the browser its chat cookie if it has none.

    The cookie is a random token, not a secret about the user: it only lets the tabs and
    reconnects of one browser share a nickname.
    """

    def get(self) -> None:
        if not _COOKIE_PATTERN.fullmatch(self.get_cookie(CHAT_COOKIE) or ""):
            self.set_cookie(
                CHAT_COOKIE, secrets.token_urlsafe(24), httponly=True, samesite="Lax",
                expires_days=365,
            )
        super().get()


class ChatSocketHandler(JsonSocketHandler):
    """``/ws/chat/<room>``: group and private chat; see the README for the messages."""

    room: Optional[Room] = None

    def initialize(
        self, rooms: Rooms, room_rate: Optional[KeyedLimiter] = None,
        readers: Optional[ReaderCounts] = None, **base: Any
    ) -> None:
        super().initialize(**base)
        self.rooms = rooms
        self.room_rate = room_rate  # deliveries per second per room; None: no budget
        self.readers = readers  # tells rooms their anonymous readers; None: welcome only

    def connected(self, room_name: str) -> None:
        room = self.room = self.rooms.get(room_name)
        cookie = self.get_cookie(CHAT_COOKIE)
        room.enter(self, cookie if cookie and _COOKIE_PATTERN.fullmatch(cookie) else None)
        self.subscribe(room_topic(room.name))

        error: Optional[ClientError] = None
        joined = None
        raw_nick = self._raw_query_argument("nick")
        if raw_nick is not None:
            try:
                joined = room.join(self, raw_nick)
                self.subscribe(nick_topic(room.name, joined.nick))
            except ClientError as refused:
                error = refused

        raw_since = self._raw_query_argument("since")
        since = None
        if raw_since is not None:
            since = int(raw_since) if _SINCE_PATTERN.fullmatch(raw_since) else -1
        history, recovered = room.history(self, since)
        welcome: Message = {
            "type": "welcome",
            "room": room.name,
            "nick": room.nick(self),
            "online": room.online(),
            "readers": room.readers(),
            "history": history,
        }
        if recovered is not None:
            welcome["recovered"] = recovered
        self.send(welcome)
        if self.readers is not None:
            if self.hub.subscriber_count(room_topic(room.name)) <= 1:
                self.readers.settle(room)  # the welcome told the only one listening
            else:
                self.readers.changed(room)
        if error is not None:
            self.send_error_frame(error.code, error.message)
        if joined is not None:
            self._announce_join(joined)

    def handle_join(self, message: Message) -> None:
        """``{"type": "join", "nick": ...}``: take a nickname (or change it)."""
        room = self._room()
        self._charge_room(room)
        old = room.nick(self)
        joined = room.join(self, message.get("nick"))
        if old is not None and nick_key(old) != nick_key(joined.nick):
            self.unsubscribe(nick_topic(room.name, old))
        self.subscribe(nick_topic(room.name, joined.nick))
        if joined.left is not None and joined.gained:
            # One member under a new name: one notice, not "left" and "joined".
            self.publish(room_topic(room.name), {
                "type": "renamed", "room": room.name, "from": joined.left, "to": joined.nick,
            })
        else:
            if joined.left is not None:
                self.publish(room_topic(room.name), self._presence("left", joined.left))
            self._announce_join(joined)
        if old is None and self.readers is not None:
            self.readers.changed(room)  # one reader fewer

    def handle_message(self, message: Message) -> None:
        """``{"type": "message", "text": ..., "to"?: nick}``: say something, maybe privately."""
        room = self._room()
        to = message.get("to")
        if to is None:
            self._charge_room(room)
            self.publish(room_topic(room.name), room.say(self, message.get("text")))
            return
        frame, recipient = room.whisper(self, to, message.get("text"))
        payload = self.hub.publish(nick_topic(room.name, recipient.nick), frame)
        sender = frame["from"]
        if nick_key(sender) != nick_key(recipient.nick):
            self.hub.publish(nick_topic(room.name, sender), payload)

    def disconnected(self) -> None:
        if self.room is None:
            return
        left = self.room.close(self)
        if left is not None:
            self.publish(room_topic(self.room.name), self._presence("left", left))
        if self.readers is not None:
            self.readers.changed(self.room)  # also forgets an emptied room's count

    def _charge_room(self, room: Room) -> None:
        """Spend one publish to the whole room from its budget, before anything changes.

        Raises:
            ClientError: ``rate_limited`` if the room's budget is spent.
        """
        if self.room_rate is None:
            return
        listeners = max(1, self.hub.subscriber_count(room_topic(room.name)))
        if not self.room_rate.take(room.name, listeners):
            wait = self.room_rate.retry_after(room.name, listeners)
            raise ClientError("rate_limited", (
                f"This room is getting more messages than it can deliver; yours was not "
                f"sent. Send again in {wait:.2f} s."
            ))

    def _announce_join(self, joined: Joined) -> None:
        frame = self._presence("joined", joined.nick)
        if joined.gained:
            self.publish(room_topic(self._room().name), frame)
        else:
            self.send(frame)  # a second tab of the same nickname: only it needs to know

    def _presence(self, kind: str, nick: str) -> Message:
        return {"type": kind, "room": self._room().name, "nick": nick}

    def _room(self) -> Room:
        assert self.room is not None, "a message before connected()"
        return self.room

    def _raw_query_argument(self, name: str) -> Optional[str]:
        # Tornado's get_query_argument turns control characters into spaces, which would
        # let "a\x00b" pass as the nickname "a b"; nicknames are checked on the raw text.
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        # Undecodable bytes become lone surrogates, which nickname checks refuse.
        return values[-1].decode("utf-8", errors="surrogateescape")
