"""One connection's chat, whatever carries it: ``ChatSession``.

Every chat transport (the WebSocket ``/ws/chat``, the event stream ``/sse/chat``, a
long-polling browser's long-poll session, a raw TCP line connection) is the same conversation
with the chat state and the hub: enter a room, subscribe before the history is read, take
a nickname while listening to its private topic, build the welcome while the hub holds
what is published meanwhile, write what the welcome does not hold, tell the room who came
and went. ``ChatSession`` is that choreography, written once. It does no I/O of its own:
it awaits the ``ChatState`` (which may be Redis), subscribes a ``Subscriber`` to the hub,
and hands the frames meant for its connection alone to the ``send`` and ``send_error``
callables it was given, which each transport turns into its own wire form (a JSON frame, an
event, a text line). So it is tested without a server (tests/chat/test_chatsession.py).

The count of anonymous readers reaches a room in ``readers`` frames, coalesced per room
(``ReaderCounts``), so a wave of reconnects is a few fan-outs, not one per connection.
"""

import asyncio
import logging
import math
import time
from typing import Any, Callable, Iterator, Optional

from tornado.ioloop import IOLoop

from realtime.chat.rules import Joined, normalize_nick
from realtime.chat.state import ChatState, charge_room, new_connection_id, room_topic
from realtime.limits.admission import LONG_POLL_SESSION, Admission, Client, Ticket
from realtime.limits.ratelimit import KeyedLimiter
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Connection, Hub, Send
from realtime.wire.forms import message_id
from realtime.wire.messages import NICK_LOST, ClientError, Message

log = logging.getLogger("realtime.chat")

DEFAULT_READERS_INTERVAL = 1.0  # seconds between two readers frames of one room
DEFAULT_SESSION_TIMEOUT = 35.0  # seconds a long-long-poll session outlives its last request
SESSION_ENDPOINT = "long_poll_session"  # long-long-poll sessions' name in logs and the gauge

SendError = Callable[[str, str], Any]  # an error for this connection alone: code, message


class ReaderCounts:
    """Tells each room how many anonymous readers it has, at most once per ``interval``.

    A change (an anonymous connection opens or closes, or takes a nickname) schedules one
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


def still_due(held: list[Envelope], history: list[Message]) -> Iterator[Envelope]:
    """The frames held while a welcome was built, in order, less those its ``history``
    holds already (read from history after they were published)."""
    newest = max((frame["id"] for frame in history), default=None)
    for envelope in held:
        held_id = message_id(envelope)
        if newest is None or held_id is None or held_id > newest:
            yield envelope


def _ignore(*_: Any) -> None:
    """Where frames for a connection that has none go (a long-poll session between requests)."""


class ChatSession:
    """One connection's chat in one room; see the module docstring.

    A room's publish budget (``room_rate``, ``--room-rate-limit``) is weighed in deliveries:
    a public message or a join costs one per listener of the room, because what a publish
    costs the server is its fan-out. Over the budget, the request gets ``rate_limited`` and
    nothing is published or changed.

    Args:
        chat: the chat state (rooms, nicknames, history).
        hub: where the room's frames are published and the connection subscribes.
        subscriber: the connection as the hub knows it; None for a session whose listening
            is its own (``listen``/``unlisten`` overridden: a long-poll session's waiters).
        send: writes a frame to this connection alone (the welcome, a ``joined`` for it).
        send_error: writes an error to this connection alone.
        readers: tells rooms their anonymous readers; None: the welcome only tells.
        room_rate: deliveries per second per room; None: no budget.
        lost: called with the nickname after the state took it from the connection (and
            the client was told, ``nick_lost``), for what the transport keeps of it.
    """

    def __init__(
        self, chat: ChatState, hub: Hub, subscriber: Optional[Connection],
        send: Send = _ignore, send_error: SendError = _ignore, *,
        readers: Optional[ReaderCounts] = None, room_rate: Optional[KeyedLimiter] = None,
        lost: Callable[[str], Any] = _ignore,
    ) -> None:
        self.chat = chat
        self.hub = hub
        self.subscriber = subscriber
        self.send = send
        self.send_error = send_error
        self.readers = readers
        self.room_rate = room_rate
        self.on_lost = lost
        self.room: Optional[str] = None  # the room entered, until closed
        self.connection = ""  # its connection id in the chat state
        self.private: Optional[str] = None  # the private topic listened to, if any

    @property
    def nick(self) -> Optional[str]:
        """The nickname this connection speaks under, or None."""
        return None if self.room is None else self.chat.nick(self.room, self.connection)

    # Entering

    async def enter(self, room: str, cookie: Optional[str]) -> None:
        """Become a connection of ``room`` in the chat state (a reader, no welcome)."""
        self.room, self.connection = room, new_connection_id()
        await self.chat.enter(room, self.connection, cookie, self._lost)

    async def open(self, room: str, cookie: Optional[str], raw_nick: Optional[str] = None,
                   since: Optional[int] = None) -> Message:
        """Enter ``room``, under ``raw_nick`` if given and free, and send the welcome: who is
        there, and the history (after ``since``, a client's last id, if given).

        Subscribed before the history is read, so nothing published from then on is
        missed; the hub holds what arrives before the welcome, written after it less what
        its history already has. A refused nickname is an error after the welcome (the
        connection stays, anonymous). Returns the welcome.
        """
        assert self.subscriber is not None, "a session without a subscriber has no welcome"
        await self.enter(room, cookie)
        hub, chat, connection = self.hub, self.chat, self.connection
        hub.hold(self.subscriber)
        try:
            self.listen(room_topic(room))
            refused: Optional[ClientError] = None
            joined = None
            if raw_nick is not None:
                try:
                    joined = await self._take_nick(raw_nick)
                except ClientError as error:
                    refused = error
            await hub.subscribed(*hub.topics(self.subscriber))
            replay = await chat.replay(room, connection, since)
            welcome: Message = {
                "type": "welcome",
                "room": room,
                "nick": chat.nick(room, connection),
                "online": await chat.online(room),
                "readers": chat.readers(room),
                "history": replay.history,
            }
            if replay.recovered is not None:
                welcome["recovered"] = replay.recovered
        finally:
            held = hub.release(self.subscriber)
        self.send(welcome)
        for envelope in still_due(held, replay.history):
            if not hub.send(self.subscriber, envelope):
                break
        if self.readers is not None:
            if hub.subscriber_count(room_topic(room)) <= 1:
                self.readers.settle(room)  # the welcome told the only one listening
            else:
                self.readers.changed(room)
        if refused is not None:
            self.send_error(refused.code, refused.message)
        if joined is not None:
            self._announce(joined)
        return welcome

    # What a client asks

    async def join(self, raw_nick: Any) -> Joined:
        """Take a nickname (or change it), charged to the room's budget; the room hears
        it (``joined``, or ``renamed`` for a member).

        Raises:
            ClientError: ``bad_nick``, ``nick_taken``, ``rate_limited``, ``unavailable``.
        """
        room = self._room()
        charge_room(self.room_rate, self.hub, room)
        was_anonymous = self.nick is None
        joined = await self._take_nick(raw_nick)
        self._announce(joined)
        if was_anonymous and self.readers is not None:
            self.readers.changed(room)  # one reader fewer
        return joined

    async def say(self, raw_text: Any) -> Message:
        """A public message, charged to the room's budget; returns it as published."""
        room = self._room()
        charge_room(self.room_rate, self.hub, room)
        return await self.chat.say(room, self.connection, raw_text)

    async def whisper(self, to: Any, raw_text: Any) -> Message:
        """A private message to the holder of nickname ``to``; returns it as published."""
        return await self.chat.whisper(self._room(), self.connection, to, raw_text)

    async def close(self) -> None:
        """The connection is over (or leaves the room): the state forgets it, the room hears
        ``left`` if its nickname has no connection left, and the readers count follows.
        Closing twice is closing once."""
        room, connection = self.room, self.connection
        if room is None or not connection:
            return
        self.room, self.connection = None, ""
        for topic in (room_topic(room), self.private):
            if topic is not None:
                self.unlisten(topic)
        self.private = None
        left = await self.chat.close(room, connection)
        if left is not None:
            self.hub.publish(room_topic(room), {"type": "left", "room": room, "nick": left})
        if self.readers is not None:
            self.readers.changed(room)

    # Listening: what the connection receives from the hub.

    def listen(self, topic: str) -> None:
        """Receive what is published on ``topic`` (through the connection, which subscribes
        nothing once its client has left: an await here may outlast it)."""
        assert self.subscriber is not None
        self.subscriber.subscribe(topic)

    def unlisten(self, topic: str) -> None:
        """Stop receiving ``topic``."""
        if self.subscriber is not None:
            self.subscriber.unsubscribe(topic)

    # Internals

    async def _take_nick(self, raw_nick: Any) -> Joined:
        """Join under ``raw_nick``: listening to the nickname's private topic before it is
        anyone's to write to, and to that topic only once it is taken."""
        room, chat, connection = self._room(), self.chat, self.connection
        nick = normalize_nick(raw_nick)
        current = self.private
        wanted = chat.private_topic(room, connection, nick)
        if wanted is not None and wanted != current:
            self.listen(wanted)
        try:
            joined = await chat.join(room, connection, nick)
        except BaseException:
            if wanted is not None and wanted != current:
                self.unlisten(wanted)
            raise
        private = chat.private_topic(room, connection)
        for topic in {current, wanted}:
            if topic is not None and topic != private:
                self.unlisten(topic)
        if private is not None:
            self.listen(private)
        self.private = private
        if private is not None and self.hub.subscriber_count(private):
            await self.hub.subscribed(private)  # its first private message may follow
        return joined

    def _announce(self, joined: Joined) -> None:
        """Publish what a join changed: ``renamed`` for a member under a new name, else
        ``left`` and ``joined`` as they happened. A ``joined`` only this connection needs
        (its browser held the nickname already) goes to it alone."""
        room, hub = self._room(), self.hub
        frame = {"type": "joined", "room": room, "nick": joined.nick}
        if joined.left is not None and joined.gained:
            hub.publish(room_topic(room), {
                "type": "renamed", "room": room, "from": joined.left, "to": joined.nick})
            return
        if joined.left is not None:
            hub.publish(room_topic(room), {"type": "left", "room": room, "nick": joined.left})
        if joined.gained:
            hub.publish(room_topic(room), frame)
        else:
            self.send(frame)

    def _lost(self, nick: str) -> None:
        """The state took ``nick`` from this connection (another process holds it now, or
        this one could not renew its lease): it is anonymous, stops listening to the
        nickname's private messages, and its client is told."""
        room = self.room
        if room is None:
            return
        if self.private is not None:
            self.unlisten(self.private)
            self.private = None
        self.send_error(NICK_LOST, (
            f"You no longer hold the nickname {nick}: this server could not prove it was "
            "still yours (it may have been given to someone else). You are anonymous now; "
            "pick a nickname again."))
        self.on_lost(nick)
        if self.readers is not None:
            self.readers.changed(room)  # one reader more

    def _room(self) -> str:
        if self.room is None:
            raise ClientError("not_joined", "Join a room first.")
        return self.room


class LongPollSession(ChatSession):
    """One browser's presence in one room between its long-poll requests: a chat session
    whose listening is that of the requests held on it (``held``), whichever they are.

    Args:
        room: its room.
        cookie: the browser's chat cookie.
        ticket: its slot of its address, and its place in the gauge.
    """

    def __init__(self, chat: ChatState, hub: Hub, room: str, cookie: str, ticket: Ticket,
                 readers: Optional[ReaderCounts], room_rate: Optional[KeyedLimiter]) -> None:
        super().__init__(chat, hub, None, readers=readers, room_rate=room_rate)
        self.key = (room, cookie)  # in LongPollSessions
        self.ticket = ticket
        self.entered: Optional[asyncio.Future[None]] = None  # the chat state knows it
        self.active = 0  # requests using it now
        self.held: set[Connection] = set()  # requests waiting on it
        self.listening: set[str] = set()  # private topics its waiters follow
        self.lock = asyncio.Lock()  # one join at a time
        self.timer: Optional[asyncio.TimerHandle] = None  # its end, once no request uses it

    def topics(self) -> list[str]:
        """What a request waiting on this session listens to."""
        return [room_topic(self.key[0]), *sorted(self.listening)]

    def listen(self, topic: str) -> None:
        self.listening.add(topic)
        for waiter in self.held:
            waiter.subscribe(topic)

    def unlisten(self, topic: str) -> None:
        self.listening.discard(topic)
        for waiter in self.held:
            waiter.unsubscribe(topic)


class LongPollSessions:
    """The long-poll sessions of this process, by room and chat cookie; see the module docstring.

    Args:
        hub: where presence is published and waiters subscribe.
        chat: the chat state the sessions are connections of.
        readers: told when a room's count of anonymous connections may have changed.
        timeout: seconds a session lives after its last request ended.
        admission: each session is a connection of its address, admitted like one (new
            connection budget, slot, refusals counted and logged, the gauge).
        room_rate: the rooms' budget a new nickname is charged to.
    """

    def __init__(
        self, hub: Hub, chat: ChatState, readers: Optional[ReaderCounts] = None,
        timeout: float = DEFAULT_SESSION_TIMEOUT, admission: Optional[Admission] = None,
        room_rate: Optional[KeyedLimiter] = None,
    ) -> None:
        self.hub = hub
        self.chat = chat
        self.readers = readers
        self.timeout = timeout
        self.admission = admission if admission is not None else Admission()
        self.room_rate = room_rate
        self._sessions: dict[tuple[str, str], LongPollSession] = {}
        self._leaving: set["asyncio.Future[None]"] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def find(self, room: str, cookie: str) -> Optional[LongPollSession]:
        """The live session of this browser in this room, or None."""
        return self._sessions.get((room, cookie))

    async def use(self, room: str, cookie: str, client: Client) -> LongPollSession:
        """The session of this browser in this room, opened if there is none (admitted
        first, as ``client``); in use until ``done(session)``.

        Raises:
            Refused: ``rate_limited`` or ``too_many_connections``.
        """
        key = (room, cookie)
        session = self._sessions.get(key)
        opened = session is None
        if session is None:
            ticket = self.admission.admit(Client(
                LONG_POLL_SESSION, SESSION_ENDPOINT, client.ip, client.origin))
            ticket.open(announce=False)
            session = self._sessions[key] = LongPollSession(
                self.chat, self.hub, room, cookie, ticket, self.readers, self.room_rate)
            session.entered = asyncio.ensure_future(session.enter(room, cookie))
        session.active += 1
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        assert session.entered is not None
        try:
            await asyncio.shield(session.entered)
        except BaseException:
            self.done(session)
            raise
        if opened and self.readers is not None:
            self.readers.changed(room)  # one reader more
        return session

    def done(self, session: LongPollSession) -> None:
        """A request is done with ``session``: the last one starts its timeout."""
        session.active -= 1
        if session.active == 0 and self._sessions.get(session.key) is session:
            session.timer = asyncio.get_running_loop().call_later(
                self.timeout, self._expire, session)

    async def join(self, session: LongPollSession, raw_nick: Any) -> None:
        """Give the session a nickname (or change it); the room hears it as from a socket,
        and the session's waiters follow the nickname's private messages from the start.

        Raises:
            ClientError: ``bad_nick``, ``nick_taken``, ``rate_limited``, ``unavailable``.
        """
        async with session.lock:
            await session.join(raw_nick)

    async def aclose(self) -> None:
        """End every session now (shutdown): nicknames are given back, leases too."""
        for session in list(self._sessions.values()):
            if session.timer is not None:
                session.timer.cancel()
            self._expire(session, force=True)
        if self._leaving:
            await asyncio.wait(self._leaving)

    def _expire(self, session: LongPollSession, force: bool = False) -> None:
        if (session.active and not force) or self._sessions.get(session.key) is not session:
            return
        del self._sessions[session.key]
        session.ticket.release()
        leaving = asyncio.ensure_future(self._leave(session))
        self._leaving.add(leaving)
        leaving.add_done_callback(self._left)

    async def _leave(self, session: LongPollSession) -> None:
        assert session.entered is not None
        await session.entered
        await session.close()

    def _left(self, task: "asyncio.Future[None]") -> None:
        self._leaving.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ending a long-poll session failed", exc_info=task.exception())
