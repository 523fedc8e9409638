"""Chat over plain HTTP: Server-Sent Events and long-polling, for clients without WebSockets.

The rooms, rules and frames are those of ``/ws/chat/<room>`` (``handlers/chat.py``): every
transport asks the same ``ChatState`` and writes the same JSON frames, so a WebSocket, an
event stream and a long-poll in one room see each other's messages.

* ``GET /sse/chat/<room>`` (``ChatEventStreamHandler``) is a connection like a WebSocket:
  a welcome event, then every frame of the room as an event, numbered frames with ``id:``;
  ``?nick=`` joins; the browser's reconnect sends ``Last-Event-ID`` and gets what it missed.
  Closing it (its browser's last) is a socket's close: the nickname leaves, the room hears
  ``left``.
* ``GET /poll/chat/<room>?since=<id>`` (``ChatLongPollHandler``) answers the messages after
  ``since`` at once if there are any, else holds the request until one comes or
  ``--long-poll-timeout`` passes; ``POST`` sends a message.

Nicknames over HTTP belong to the chat cookie, as on sockets. A long-poll client has no
connection between two requests, so each browser (cookie) gets a **long-poll session** per room
(``LongPollSessions``): a connection of the chat state that its requests share, alive while one
of them is in flight and ``--long-poll-session-timeout`` seconds after the last ended. It is a
reader of the room, or a member once it takes a nickname (``?nick=`` on a GET, or ``nick``
in a POST), and it sees the private messages of that nickname. A request without the
cookie reads anonymously and may not take a nickname (``cookie_required``). An event stream
with the cookie reads through that session too (its POSTs speak through it), so a new stream
with another ``?nick=`` renames the browser (one ``renamed``); the browser's last stream
ending ends the session at once.
"""

import asyncio
import logging
from typing import Any, Optional

import tornado.web

from handlers.chat import (
    chat_cookie, delay_deliveries, issue_chat_cookie, parse_since, raw_query_argument,
    requested_latency,
)
from handlers.http import EventStreamHandler, TransportHandler
from realtime.chat.rules import (
    HISTORY_PAGE, MAX_HISTORY_PAGE, check_text, nick_key, normalize_nick,
)
from realtime.chat.session import ChatSession, LongPollSession, LongPollSessions, ReaderCounts
from realtime.chat.state import ChatState, room_topic
from realtime.limits.admission import LONG_POLL
from realtime.limits.ratelimit import KeyedLimiter
from realtime.pubsub import delivery
from realtime.pubsub.delivery import CloseReason
from realtime.pubsub.envelope import Envelope
from realtime.wire import messages
from realtime.wire.forms import message_id, poll_answer, poll_form
from realtime.wire.messages import ClientError, Message, encode

log = logging.getLogger("realtime.chat")

DEFAULT_LONG_POLL_TIMEOUT = 25.0  # seconds a long-poll is held without a message


class ChatEventStreamHandler(EventStreamHandler):
    """``GET /sse/chat/<room>``: the room as Server-Sent Events; see the module docstring.

    The same events as the socket's frames: a ``welcome`` first (its ``id:`` is the newest
    message id in its history, so a reconnect asks from there), then every frame of the
    room, ``message`` and ``private`` ones with their id as the event's ``id:``.
    """

    session: Optional[ChatSession] = None  # its own, without a cookie
    delay = 0.0  # seconds each event waits (?latency=, the /models rooms only)
    shared: Optional[LongPollSession] = None  # its browser's HTTP session, with one
    cookie: Optional[str] = None

    def initialize(  # type: ignore[override]
        self, chat: ChatState, sessions: Optional[LongPollSessions] = None,
        readers: Optional[ReaderCounts] = None, **base: Any
    ) -> None:
        super().initialize(**base)
        self.chat = chat
        self.sessions = sessions
        self.readers = readers

    def before_open(self, room: str) -> None:
        self.delay = requested_latency(self, room)  # a bad one: a JSON error, no stream
        self.cookie = issue_chat_cookie(self)  # before the headers go out with the stream

    async def opened(self, room: str) -> None:
        delay_deliveries(self, self.delay)  # before the welcome
        # The browser's reconnect says where it was; it wins over the URL's since.
        since = parse_since(self.request.headers.get("Last-Event-ID")
                            or raw_query_argument(self.request, "since"))
        raw_nick = raw_query_argument(self.request, "nick")
        if self.cookie is not None and self.sessions is not None:
            # The browser's session, shared with its POSTs and its other streams: a stream
            # opened with another ?nick= renames the browser, as a socket's join does.
            self.shared = await self.sessions.use(room, self.cookie, self.client(),
                                                  admitted=True)
            await self.shared.welcome(self, self._send_frame, self.send_error_event,
                                      raw_nick, since)
            return
        self.session = ChatSession(self.chat, self.hub, self, self._send_frame,
                                   self.send_error_event, readers=self.readers)
        await self.session.open(room, self.cookie, raw_nick, since)

    async def closed(self) -> None:
        if self.shared is not None and self.sessions is not None:
            self.shared.detach(self)
            self.sessions.done(self.shared, linger=0)  # the stream's end: the browser left
        if self.session is not None:
            await self.session.close()

    def _send_frame(self, frame: Message) -> None:
        if frame["type"] == "welcome":  # numbered: a reconnect asks from its newest message
            self.send(frame, event_id=max((each["id"] for each in frame["history"]),
                                          default=None))
        else:
            self.send(frame)


@tornado.web.stream_request_body
class ChatLongPollHandler(TransportHandler):
    """``GET`` and ``POST /poll/chat/<room>``: long-polling, short polling and sending.

    A held ``GET`` is a hub subscriber until it is answered: the first message after its
    ``since`` wakes it, and its answer is that message's ``"poll"`` form, one body built
    once per publish for every request it wakes (``realtime.wire.forms``).
    """

    transport = LONG_POLL
    cookie: Optional[str] = None
    # Resolved to answer a held GET; made in prepare(), so a client that leaves at any
    # await before the hold wakes it at once.
    _wake: "Optional[asyncio.Future[Optional[Envelope]]]" = None
    _since = 0
    _delay = 0.0  # seconds a GET's answer waits (?latency=, the /models rooms only)

    def initialize(  # type: ignore[override]
        self, chat: ChatState, sessions: LongPollSessions, room_rate: Optional[KeyedLimiter] = None,
        readers: Optional[ReaderCounts] = None, timeout: float = DEFAULT_LONG_POLL_TIMEOUT,
        **base: Any,
    ) -> None:
        super().initialize(**base)
        self.chat = chat
        self.sessions = sessions
        self.room_rate = room_rate
        self.readers = readers
        self.timeout = timeout

    def prepare(self) -> None:
        self.check_origin()
        self.cookie = issue_chat_cookie(self)
        if self.request.method != "POST":
            if self._holds():
                # A request to hold takes its slot before its first await (the session,
                # the nickname), so a client leaving at any of them gives it back at once.
                self.admit(new=False)
                self._wake = asyncio.get_running_loop().create_future()
            return
        self.expect_json_body()

    def head(self, *args: Any, **kwargs: Any) -> None:
        raise tornado.web.HTTPError(405)

    # GET: the messages after since, at once or when one comes.

    def _holds(self) -> bool:
        """Whether this GET waits for a message when there is none yet."""
        return (raw_query_argument(self.request, "since") is not None
                and raw_query_argument(self.request, "wait") != "0")

    async def get(self, room: str) -> None:
        self.charge_request()
        self._delay = requested_latency(self, room)
        raw_nick = raw_query_argument(self.request, "nick")
        since = parse_since(raw_query_argument(self.request, "since"))
        hold = self.ticket is not None
        session = await self._session(room, needed=raw_nick is not None)
        try:
            if raw_nick is not None:
                assert session is not None
                await self._join(session, raw_nick)
            if session is not None:
                await self._answer(room, session.connection, session, since, hold)
                return
            # Without a cookie: a connection for this request alone, a reader of the room
            # while it is held.
            visit = await self._visit(room)
            try:
                if hold and self.readers is not None:
                    self.readers.changed(room)
                await self._answer(room, visit.connection, None, since, hold)
            finally:
                await visit.close()
                if hold and self.readers is not None:
                    self.readers.changed(room)
        finally:
            if session is not None:
                self.sessions.done(session)

    async def _answer(self, room: str, connection: str, session: Optional[LongPollSession],
                      since: Optional[int], hold: bool) -> None:
        topics = session.topics() if session is not None else [room_topic(room)]
        if hold:
            assert self.ticket is not None
            if not self.ticket.open(announce=False):
                return  # the client left while the session was found or the nick taken
            self._since = since if since is not None else 0
            for topic in topics:  # before the history is read: nothing after it is missed
                self.hub.subscribe(topic, self)
            if session is not None:
                session.held.add(self)
        try:
            if hold:
                await self.hub.subscribed(*topics)
            replay = await self.chat.replay(room, connection, since)
            recovered = bool(replay.recovered)
            wake = self._wake
            if replay.history or not hold or wake is None:
                newest = max((frame["id"] for frame in replay.history), default=since)
                await self._reply(poll_answer(map(encode, replay.history), newest, recovered))
                return
            timer = asyncio.get_running_loop().call_later(self.timeout, self._wake_up, None)
            try:
                woken = await wake
            finally:
                timer.cancel()
            if self.gone:
                return  # nobody to answer
            if woken is None:
                await self._reply(poll_answer((), since, recovered))
            else:
                await self._reply(poll_form(woken, recovered))
        finally:
            if hold:
                self._wake_up(None)
                if session is not None:
                    session.held.discard(self)
                self.release()

    async def _reply(self, body: bytes) -> None:
        """Answer the GET with ``body``, after its added latency if it asked for one."""
        if self._delay > 0:
            await asyncio.sleep(self._delay)
            if self.gone:
                return  # nobody to answer
        self.answer_json(body)

    # POST: send a message.

    async def post(self, room: str) -> None:
        self.metrics.messages_in.labels(endpoint=self.endpoint).inc()
        self.charge_request()
        message = self._body()
        raw_nick, to, text = message.get("nick"), message.get("to"), message.get("text")
        check_text(text)  # before any join: a refused message changes nothing
        if to is not None and not isinstance(to, str):
            raise ClientError("bad_message", 'The "to" field must be a nickname string.')
        session = await self._session(room, needed=raw_nick is not None)
        try:
            if raw_nick is not None:
                assert session is not None
                await self._join(session, raw_nick)
            speaker = session if session is not None else await self._visit(room)
            try:
                if to is None:
                    frame = await speaker.say(text)
                else:
                    frame = await speaker.whisper(to, text)
            finally:
                if session is None:
                    await speaker.close()
        finally:
            if session is not None:
                self.sessions.done(session)
        self.answer_json(encode(frame))

    def _body(self) -> Message:
        message = messages.loads(self.body(), "body")  # as the socket reads a frame
        if not isinstance(message, dict):
            raise ClientError("bad_message", "The body must be a JSON object.")
        return message

    # Sessions and connections.

    async def _session(self, room: str, needed: bool) -> Optional[LongPollSession]:
        """This browser's session in the room (opened if new); None without a cookie.

        Raises:
            ClientError: ``cookie_required`` if ``needed`` (a nickname) and there is no
                cookie; a refusal of a new session.
        """
        if self.cookie is None:
            if needed:
                raise ClientError("cookie_required", (
                    "Holding a nickname over HTTP needs the chat_id cookie; this answer "
                    "set one: send it back."))
            return None
        return await self.sessions.use(room, self.cookie, self.client())

    async def _join(self, session: LongPollSession, raw_nick: Any) -> None:
        """The session takes ``raw_nick`` unless it holds it already; a new nickname is
        charged to the room like a socket's join."""
        nick = normalize_nick(raw_nick)
        current = session.nick
        if current is not None and nick_key(current) == nick_key(nick):
            return
        await self.sessions.join(session, nick)

    async def _visit(self, room: str) -> ChatSession:
        """A session for this request alone (no cookie: anonymous)."""
        visit = ChatSession(self.chat, self.hub, None, room_rate=self.room_rate)
        await visit.enter(room, None)
        return visit

    # The Subscriber protocol (realtime.pubsub.hub), while a GET is held.

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        """Wake the request with the first message after its ``since``; other frames
        (presence, readers) are not for a long-poll."""
        wake = self._wake
        if wake is None or wake.done():
            return delivery.CLOSED
        event_id = message_id(envelope)
        if event_id is not None and event_id > self._since:
            wake.set_result(envelope)
        return delivery.WRITTEN

    def unflushed_bytes(self) -> int:
        return 0  # nothing is written until the answer

    def close_for(self, reason: CloseReason) -> None:
        """Answer now, whatever the reason: an empty answer, the client polls again."""
        self._wake_up(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._wake_up(None)

    def _wake_up(self, envelope: Optional[Envelope]) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(envelope)


class ChatHistoryHandler(TransportHandler):
    """``GET /api/chat/<room>/history?before=<id>&limit=<n>``: "load earlier messages".

    Answers ``{"messages": [...], "more": bool}``: the newest ``limit`` messages (default 50,
    at most 100) with an id below ``before`` that this browser may see, oldest first, at
    most ``--chat-room-history-bytes`` of them as JSON; ``more`` is false once the start of
    what the room keeps is reached. Private messages are in it only for a browser (chat
    cookie) that was one of their two parties. The same for every transport, and on
    either chat state; charged to the address's request budget like a POST.
    """

    transport = LONG_POLL

    def initialize(self, chat: ChatState, **base: Any) -> None:  # type: ignore[override]
        super().initialize(**base)
        self.chat = chat

    def prepare(self) -> None:
        self.check_origin()

    async def get(self, room: str) -> None:
        self.charge_request()
        self._delay = requested_latency(self, room)
        before = _query_int(self.request, "before", None)
        limit = _query_int(self.request, "limit", HISTORY_PAGE)
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise ClientError("bad_query", f'"limit" is from 1 to {MAX_HISTORY_PAGE}.')
        page = await self.chat.earlier(room, chat_cookie(self), before, limit)
        self.answer_json(b'{"messages":[%s],"more":%s}' % (
            b",".join(map(encode, page.messages)), b"true" if page.more else b"false"))


def _query_int(request: Any, name: str, default: Optional[int]) -> int:
    """A whole-number query argument, exactly its digits; ``default`` when absent (None:
    it is required).

    Raises:
        ClientError: ``bad_query``.
    """
    raw = raw_query_argument(request, name)
    if raw is None and default is not None:
        return default
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ClientError("bad_query", f'"{name}" must be a whole number (digits only).')
    return int(raw)
