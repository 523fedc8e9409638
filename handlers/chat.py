"""The chat endpoint over WebSockets, and what every chat transport shares of HTTP.

``/ws/chat/<room>`` speaks the chat of ``realtime.chat.session.ChatSession`` (which holds
the whole conversation with the chat state, written once for every transport) in JSON
frames. The rules live in ``realtime/chat/rules.py``; topics are ``realtime.chat.state``'s.

The chat cookie (``chat_id``, ``__Host-chat_id`` over HTTPS: ``handlers/cookies.py``) and
the raw query arguments (``nick``, ``since``) are read here for every HTTP-borne transport
alike (``handlers/chathttp.py`` too).
"""

import asyncio
import logging
import re
import secrets
from typing import Any, Optional

from handlers.cookies import read_cookie, write_cookie
from handlers.pages import PageHandler
from handlers.websocket import JsonSocketHandler
from realtime.chat.latency import parse_latency
from realtime.chat.session import ChatSession, ReaderCounts
from realtime.chat.state import ChatState
from realtime.limits.ratelimit import KeyedLimiter
from realtime.pubsub.delayed import DelayedWrites
from realtime.wire.closecodes import CloseCode
from realtime.wire.messages import ClientError, Message

log = logging.getLogger("realtime.chat")

CHAT_COOKIE = "chat_id"
_COOKIE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SINCE_PATTERN = re.compile(r"-?[0-9]{1,18}")


def raw_query_argument(request: Any, name: str) -> Optional[str]:
    """The last value of a query argument, undecoded bytes kept as lone surrogates (which
    nickname checks refuse). Tornado's own getter turns control characters into spaces,
    which would let "a\x00b" pass as the nickname "a b"."""
    values = request.query_arguments.get(name)
    if not values:
        return None
    return values[-1].decode("utf-8", errors="surrogateescape")


def parse_since(raw: Optional[str]) -> Optional[int]:
    """A ``since`` (a query argument, ``Last-Event-ID``), read alike by every transport:
    None when absent, the id when it is one exactly (digits, maybe a leading ``-``, no
    spaces around), else -1 (an id nothing is recovered from: the newest history, with
    ``recovered: false``)."""
    if raw is None:
        return None
    return int(raw) if _SINCE_PATTERN.fullmatch(raw) else -1


def requested_latency(handler: Any, room: str) -> float:
    """The seconds a chat request asks each delivery to wait (``?latency=``, the
    ``/models`` rooms only: ``realtime.chat.latency``); 0 without one.

    Raises:
        ClientError: ``bad_latency``, ``latency_not_allowed``.
    """
    return parse_latency(raw_query_argument(handler.request, "latency"), room)


def delay_deliveries(subscriber: Any, delay: float) -> None:
    """Make the hub's every write to ``subscriber`` (a socket, an event stream) wait
    ``delay`` seconds first; nothing changes for a delay of 0."""
    if delay <= 0:
        return
    delayed = DelayedWrites(subscriber.write_envelope, delay,
                            lambda: subscriber.hub.drop(subscriber))
    subscriber.write_envelope = delayed.write


class ChatPageHandler(PageHandler):
    """``/chat``: the chat page; gives the browser its chat cookie if it has none.

    The cookie is a random token, not a secret about the user: it only lets the tabs and
    reconnects of one browser share a nickname.
    """

    def get(self) -> None:
        issue_chat_cookie(self)
        super().get()


def chat_cookie(handler: Any) -> Optional[str]:
    """The request's chat cookie if it sent a valid one (``__Host-chat_id`` over HTTPS, else
    the old ``chat_id``: ``handlers.cookies``), else None."""
    cookie = read_cookie(handler, CHAT_COOKIE)[0]
    return cookie if cookie and _COOKIE_PATTERN.fullmatch(cookie) else None


def issue_chat_cookie(handler: Any) -> Optional[str]:
    """Give the browser a chat cookie unless the request has a valid one under the current
    name (one under the old name is written again under the new one, the same identity);
    return the one it has (None if it had none: the new one counts from its next
    request)."""
    cookie, current = read_cookie(handler, CHAT_COOKIE)
    if cookie is not None and not _COOKIE_PATTERN.fullmatch(cookie):
        cookie, current = None, False
    if cookie is None or not current:
        write_cookie(handler, CHAT_COOKIE, cookie or secrets.token_urlsafe(24),
                     expires_days=365)
    return cookie


class ChatSocketHandler(JsonSocketHandler):
    """``/ws/chat/<room>``: group and private chat; see docs/protocol.md for the messages.

    The room's state (nicknames, presence, history) is the ``ChatState``'s and the
    conversation with it the ``ChatSession``'s; this object reads frames and writes them.
    """

    __slots__ = ("chat", "room_rate", "readers", "session")  # see SocketHandler.__slots__

    def initialize(
        self, chat: ChatState, room_rate: Optional[KeyedLimiter] = None,
        readers: Optional[ReaderCounts] = None, **base: Any
    ) -> None:
        super().initialize(**base)
        self.session: Optional[ChatSession] = None
        self.chat = chat
        self.room_rate = room_rate  # deliveries per second per room; None: no budget
        self.readers = readers  # tells rooms their anonymous readers; None: welcome only

    async def connected(self, room: str) -> None:
        try:
            delay = requested_latency(self, room)
        except ClientError as error:  # a bad query: say why, and close (no session)
            self.send_error_frame(error.code, error.message)
            self.close(CloseCode.POLICY_VIOLATION, error.code)
            return
        delay_deliveries(self, delay)  # after open() chose the writer, before the welcome
        self.session = ChatSession(
            self.chat, self.hub, self, self.send, self.send_error_frame,
            readers=self.readers, room_rate=self.room_rate)
        await self.session.open(
            room, chat_cookie(self), raw_query_argument(self.request, "nick"),
            parse_since(raw_query_argument(self.request, "since")))

    async def handle_join(self, message: Message) -> None:
        """``{"type": "join", "nick": ...}``: take a nickname (or change it)."""
        await self._session().join(message.get("nick"))

    async def handle_message(self, message: Message) -> None:
        """``{"type": "message", "text": ..., "to"?: nick}``: say something, maybe privately."""
        to = message.get("to")
        if to is None:
            await self._session().say(message.get("text"))
        else:
            await self._session().whisper(to, message.get("text"))

    def disconnected(self) -> None:
        if self.session is None:
            return
        # The state may need a round trip (Redis); the presence notice follows it.
        leaving = asyncio.ensure_future(self.session.close())
        leaving.add_done_callback(_log_failure)

    @property
    def nick(self) -> Optional[str]:
        """The nickname this connection speaks under, or None."""
        return None if self.session is None else self.session.nick

    def _session(self) -> ChatSession:
        assert self.session is not None, "a message before connected()"
        return self.session


def _log_failure(task: "asyncio.Future[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("leaving a chat room failed", exc_info=task.exception())
