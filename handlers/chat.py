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

import asyncio
import logging
import math
import re
import secrets
import time
from typing import Any, Callable, Iterator, Optional

from tornado.ioloop import IOLoop

from handlers.base import JsonSocketHandler
from handlers.pages import PageHandler
from realtime import streams
from realtime.chat import Joined, normalize_nick
from realtime.chatstate import ChatState, charge_room, new_connection_id, room_topic
from realtime.envelope import Envelope
from realtime.hub import Hub
from realtime.messages import ClientError, Message
from realtime.ratelimit import KeyedLimiter
from realtime.wireforms import message_id

log = logging.getLogger("realtime.chat")

CHAT_COOKIE = "chat_id"
_COOKIE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SINCE_PATTERN = re.compile(r"-?[0-9]{1,18}")


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
        state: the chat state that counts each room's readers.
        interval: the shortest time, in seconds, between two frames of one room.
        clock: monotonic seconds, for tests.
    """

    def __init__(
        self, hub: Hub, state: ChatState, interval: float = DEFAULT_READERS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.state = state
        self.interval = interval
        self._clock = clock
        self._told: dict[str, int] = {}  # room -> the count it was last told
        self._sent_at: dict[str, float] = {}  # room -> when its last frame went out
        self._due: set[str] = set()  # rooms with a frame scheduled

    def settle(self, room: str) -> None:
        """The room's count is known to all its connections (the only one just got it in
        its welcome): nothing to send until it changes."""
        self._told[room] = self.state.readers(room)

    def changed(self, room: str) -> None:
        """The count of ``room`` may have changed: tell the room, coalesced."""
        if room in self._due:
            return
        self._due.add(room)
        last = self._sent_at.get(room, -math.inf)
        wait = max(0.0, last + self.interval - self._clock())
        IOLoop.current().call_later(wait, self._flush, room)

    def _flush(self, room: str) -> None:
        self._due.discard(room)
        if self.state.empty(room):  # nobody to tell; forget the room (it may be gone already)
            self._told.pop(room, None)
            self._sent_at.pop(room, None)
            return
        count = self.state.readers(room)
        if self._told.get(room) == count:
            return
        self._told[room] = count
        self._sent_at[room] = self._clock()
        self.hub.publish(room_topic(room), {"type": "readers", "room": room, "count": count})


# What every chat transport (this socket, the HTTP ones in handlers/chathttp.py, the raw
# TCP lines in handlers/tcp.py) does alike around the chat state.

Listen = Callable[[str], None]


async def take_nick(
    chat: ChatState, room: str, connection: str, raw_nick: Any, current: Optional[str],
    listen: Listen, unlisten: Listen,
) -> tuple[Joined, Optional[str]]:
    """Join ``connection`` under ``raw_nick``: listening to the nickname's private topic
    before it is anyone's to write to, and to that topic only once it is taken.

    Returns what the join did and the connection's private topic now.
    """
    nick = normalize_nick(raw_nick)
    wanted = chat.private_topic(room, connection, nick)
    if wanted is not None and wanted != current:
        listen(wanted)
    try:
        joined = await chat.join(room, connection, nick)
    except BaseException:
        if wanted is not None and wanted != current:
            unlisten(wanted)
        raise
    private = chat.private_topic(room, connection)
    for topic in {current, wanted}:
        if topic is not None and topic != private:
            unlisten(topic)
    if private is not None:
        listen(private)
    return joined, private


def announce(hub: Hub, room: str, joined: Joined) -> Optional[Message]:
    """Publish what a join changed: ``renamed`` for a member under a new name, else ``left``
    and ``joined`` as they happened. Returns the ``joined`` frame only the joiner needs
    (its browser already held the nickname), else None."""
    frame = {"type": "joined", "room": room, "nick": joined.nick}
    if joined.left is not None and joined.gained:
        hub.publish(room_topic(room), {
            "type": "renamed", "room": room, "from": joined.left, "to": joined.nick})
        return None
    if joined.left is not None:
        hub.publish(room_topic(room), {"type": "left", "room": room, "nick": joined.left})
    if joined.gained:
        hub.publish(room_topic(room), frame)
        return None
    return frame


async def leave(chat: ChatState, hub: Hub, readers: Optional[ReaderCounts], room: str,
                connection: str) -> None:
    """A connection of the room is over: the state forgets it, the room hears ``left`` if
    its nickname has no connection left, and the readers count follows."""
    left = await chat.close(room, connection)
    if left is not None:
        hub.publish(room_topic(room), {"type": "left", "room": room, "nick": left})
    if readers is not None:
        readers.changed(room)


def parse_since(raw: Optional[str]) -> Optional[int]:
    """A ``since`` (a query argument, ``Last-Event-ID``), read alike by every transport:
    None when absent, the id when it is one exactly (digits, maybe a leading ``-``, no
    spaces around), else -1 (an id nothing is recovered from: the newest history, with
    ``recovered: false``)."""
    if raw is None:
        return None
    return int(raw) if _SINCE_PATTERN.fullmatch(raw) else -1


def still_due(held: list[Envelope], history: list[Message]) -> Iterator[Envelope]:
    """The frames held while a welcome was built, in order, less those its ``history``
    holds already (read from history after they were published)."""
    newest = max((frame["id"] for frame in history), default=None)
    for envelope in held:
        held_id = message_id(envelope)
        if newest is None or held_id is None or held_id > newest:
            yield envelope


class ChatPageHandler(PageHandler):
    """``/chat``: the chat page; gives the browser its chat cookie if it has none.

    The cookie is a random token, not a secret about the user: it only lets the tabs and
    reconnects of one browser share a nickname.
    """

    def get(self) -> None:
        issue_chat_cookie(self)
        super().get()


def chat_cookie(handler: Any) -> Optional[str]:
    """The request's chat cookie if it sent a valid one, else None."""
    cookie = handler.get_cookie(CHAT_COOKIE)
    return cookie if cookie and _COOKIE_PATTERN.fullmatch(cookie) else None


def issue_chat_cookie(handler: Any) -> Optional[str]:
    """Give the browser a chat cookie unless the request has a valid one; return the one it
    has (None if it had none: the new one counts from its next request)."""
    cookie = chat_cookie(handler)
    if cookie is None:
        handler.set_cookie(
            CHAT_COOKIE, secrets.token_urlsafe(24), httponly=True, samesite="Lax",
            expires_days=365,
        )
    return cookie


class ChatSocketHandler(JsonSocketHandler):
    """``/ws/chat/<room>``: group and private chat; see the README for the messages.

    The state of the room (nicknames, presence, history) is the ``ChatState``'s; this
    object only knows its room's name, its connection id and which private topic it
    listens to.
    """

    room: Optional[str] = None
    connection_id = ""
    _private: Optional[str] = None  # the private topic subscribed to, if any
    _held: Optional[list[Envelope]] = None  # frames due while the welcome is being built
    _held_bytes = 0

    def initialize(
        self, chat: ChatState, room_rate: Optional[KeyedLimiter] = None,
        readers: Optional[ReaderCounts] = None, **base: Any
    ) -> None:
        super().initialize(**base)
        self.chat = chat
        self.room_rate = room_rate  # deliveries per second per room; None: no budget
        self.readers = readers  # tells rooms their anonymous readers; None: welcome only

    async def connected(self, room: str) -> None:
        chat = self.chat
        self.room = room
        self.connection_id = new_connection_id()
        cookie = self.get_cookie(CHAT_COOKIE)
        await chat.enter(room, self.connection_id,
                         cookie if cookie and _COOKIE_PATTERN.fullmatch(cookie) else None)
        # Subscribed before the history is read, so nothing published from now on is
        # missed; what arrives before the welcome is held and written after it.
        self._hold()
        try:
            self.subscribe(room_topic(room))
            error: Optional[ClientError] = None
            joined = None
            raw_nick = self._raw_query_argument("nick")
            if raw_nick is not None:
                try:
                    joined = await self._take_nick(raw_nick)
                except ClientError as refused:
                    error = refused
            await self.hub.subscribed(*self.hub.topics(self))
            since = parse_since(self._raw_query_argument("since"))
            replay = await chat.replay(room, self.connection_id, since)
            welcome: Message = {
                "type": "welcome",
                "room": room,
                "nick": chat.nick(room, self.connection_id),
                "online": await chat.online(room),
                "readers": chat.readers(room),
                "history": replay.history,
            }
            if replay.recovered is not None:
                welcome["recovered"] = replay.recovered
        except BaseException:
            self._release(None)
            raise
        self._release(welcome)
        if self.readers is not None:
            if self.hub.subscriber_count(room_topic(room)) <= 1:
                self.readers.settle(room)  # the welcome told the only one listening
            else:
                self.readers.changed(room)
        if error is not None:
            self.send_error_frame(error.code, error.message)
        if joined is not None:
            self._announce(joined)

    async def handle_join(self, message: Message) -> None:
        """``{"type": "join", "nick": ...}``: take a nickname (or change it)."""
        room = self._room()
        charge_room(self.room_rate, self.hub, room)
        was_anonymous = self.chat.nick(room, self.connection_id) is None
        self._announce(await self._take_nick(message.get("nick")))
        if was_anonymous and self.readers is not None:
            self.readers.changed(room)  # one reader fewer

    async def handle_message(self, message: Message) -> None:
        """``{"type": "message", "text": ..., "to"?: nick}``: say something, maybe privately."""
        room = self._room()
        to = message.get("to")
        if to is None:
            charge_room(self.room_rate, self.hub, room)
            await self.chat.say(room, self.connection_id, message.get("text"))
            return
        await self.chat.whisper(room, self.connection_id, to, message.get("text"))

    def disconnected(self) -> None:
        if self.room is None or not self.connection_id:
            return
        # The state may need a round trip (Redis); the presence notice follows it.
        leaving = asyncio.ensure_future(
            leave(self.chat, self.hub, self.readers, self.room, self.connection_id))
        leaving.add_done_callback(_log_failure)

    async def _take_nick(self, raw_nick: Any) -> Joined:
        """Join under ``raw_nick``, listening to its private topic before the nickname is
        anyone's to write to, and to that topic only once it is taken."""
        joined, self._private = await take_nick(
            self.chat, self._room(), self.connection_id, raw_nick, self._private,
            self.subscribe, self.unsubscribe)
        if self._private is not None:
            await self.hub.subscribed(self._private)  # its first private one may follow
        return joined

    @property
    def nick(self) -> Optional[str]:
        """The nickname this connection speaks under, or None."""
        return None if self.room is None else self.chat.nick(self.room, self.connection_id)

    def _hold(self) -> None:
        """Keep the frames the hub writes from now on, until ``_release``."""
        self._held, self._held_bytes = [], 0
        write = self.write_envelope

        def hold(envelope: Envelope, max_pending: int) -> int:
            if self._held is None:  # released meanwhile: a queued fan-out still had us
                return write(envelope, max_pending)
            self._held_bytes += len(envelope.data)
            if self._held_bytes > max_pending:
                return streams.STALLED
            self._held.append(envelope)
            return streams.WRITTEN

        self._write_before_hold = write
        self.write_envelope = hold  # type: ignore[method-assign]

    def _release(self, welcome: Optional[Message]) -> None:
        """Send the welcome, then the frames held meanwhile that it does not hold."""
        held, self._held = self._held or [], None
        self.write_envelope = self._write_before_hold  # type: ignore[method-assign]
        if welcome is None:
            return
        self.send(welcome)
        for envelope in still_due(held, welcome["history"]):
            if not self.hub.send(self, envelope):
                return

    def _announce(self, joined: Joined) -> None:
        """Tell the room what a join changed; a ``joined`` only this connection needs (a
        second tab of the same nickname) goes to it alone."""
        mine = announce(self.hub, self._room(), joined)
        if mine is not None:
            self.send(mine)

    def _room(self) -> str:
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


def _log_failure(task: "asyncio.Future[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("leaving a chat room failed", exc_info=task.exception())
