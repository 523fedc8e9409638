"""The chat endpoint: rooms, nicknames, public and private messages, presence, replay.

The rules live in ``realtime/chat.py``; this handler reads the URL, turns frames into calls
on the room and publishes what they return. Topics: ``chat.<room>`` for everyone in a room,
``chat.<room>.nick.<nick key>`` for the connections of one nickname (private messages).

Each room has a publish budget (``--room-rate-limit``) weighed in deliveries: a public
message or a join costs one per listener of the room, because what a publish costs the
server is its fan-out. Counting publishes instead would let a room of 1,000 take the whole
process at a rate that is harmless in a room of 10. Over the budget, the request gets
``rate_limited`` and nothing is published or changed.
"""

import re
import secrets
from typing import Any, Optional

from handlers.base import JsonSocketHandler
from handlers.pages import PageHandler
from realtime.chat import Joined, Room, Rooms, nick_key
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
        self, rooms: Rooms, room_rate: Optional[KeyedLimiter] = None, **base: Any
    ) -> None:
        super().initialize(**base)
        self.rooms = rooms
        self.room_rate = room_rate  # deliveries per second per room; None: no budget

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
            "history": history,
        }
        if recovered is not None:
            welcome["recovered"] = recovered
        self.send(welcome)
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
        if joined.left is not None:
            self.publish(room_topic(room.name), self._presence("left", joined.left))
        self._announce_join(joined)

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
