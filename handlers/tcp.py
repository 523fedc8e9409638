"""The raw TCP chat (``--tcp-port``): the chat rooms as lines of text, for ``nc`` and ``telnet``.

``ChatLineServer`` is Tornado's ``TCPServer`` on the application's IOLoop; each connection it
accepts is a ``ChatLineConnection``, a subscriber of the application's hub like a WebSocket,
speaking to the application's ``ChatState``: a TCP client meets WebSocket clients in the
same rooms, under the same nickname rules, in the Redis mode too. The protocol itself (lines,
commands, how a frame is written) is ``realtime.chat.lines``; this module is the I/O around it.

What a WebSocket is held to, a TCP connection is held to as well, by the same admission
(``realtime.limits.admission``), sharing the budgets of its address: a connection cap and a
new-connection budget per address (checked on accept, and answered with one ``!`` line
before closing), the per-connection and per-address rate limits on every line
(``--rate-limit``, ``--ip-rate-limit``, ``--rate-limit-strikes``), the rooms' budget
(``--room-rate-limit``), and the output bound (``--max-pending-bytes``): a client that stops
reading is cut off once the server holds more than that for it. Lines are bounded
(``realtime.chat.lines.MAX_LINE_BYTES``) and a connection that has not joined a room within
``join_timeout`` is closed. TCP keepalive finds peers that vanished.

A connection is a cookie-less holder: its nickname is its own, never shared with a browser
or another connection, and its private history is its own for as long as it stays.
"""

import asyncio
import inspect
import logging
import socket
from typing import Any, Awaitable, Callable, Optional

import tornado.web
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer

from realtime.chat import lines
from realtime.chat.rules import nick_key, normalize_nick
from realtime.chat.session import ChatSession, ReaderCounts
from realtime.chat.state import ChatState, charge_room
from realtime.limits.admission import HANDSHAKE_RATE, TCP, Admission, Client, Refused, Ticket
from realtime.limits.ratelimit import KeyedLimiter
from realtime.ops.accept import PausingAccept
from realtime.pubsub.delivery import CLOSED, STALLED, WRITTEN, CloseReason
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.pubsub.tornado_internals import stream_unflushed_bytes
from realtime.wire.messages import ClientError, Message

log = logging.getLogger("realtime.tcp")

ENDPOINT = "tcp_chat"  # the connections' name in logs and metric labels
DEFAULT_JOIN_TIMEOUT = 60.0  # seconds a connection may stay without joining a room
CLOSE_GRACE = 5.0  # seconds a last line may take to leave before the connection is cut
READ_CHUNK = 64 * 1024  # bytes read at a time; one chunk's lines are handled before the next
# Bytes Tornado may hold unread for a connection; it only reads when asked, a chunk at a time.
MAX_READ_BUFFER = 1024 * 1024
# TCP keepalive: probe a silent peer after 30 s, every 10 s, give up after 3 unanswered:
# a vanished client (a cut cable, a sleeping laptop) lets go of its nickname within a minute.
KEEPALIVE = (30, 10, 3)

GREETING = ("hello: /nick <name> takes a nickname, /join <room> enters a room, /help lists "
            "the commands")


class ChatLineServer(PausingAccept, TCPServer):
    """Accepts raw TCP chat clients; ``for_app(app)`` builds one on ``make_app``'s pieces.

    Args:
        hub: the application's hub; every connection is its subscriber.
        chat: the application's chat state.
        admission: the process's one ``Admission``, shared with the WebSockets: lines per
            second per connection (with its strikes), the per-address connection cap,
            lines (and frames) and new connections per second per address, and the metrics
            where connections, lines and errors are counted. Without it: no limits,
            metrics of its own.
        room_rate: deliveries per second per room (public messages, joins).
        readers: tells rooms their count of anonymous readers.
        join_timeout: seconds a connection may stay without joining a room.
    """

    def __init__(
        self, hub: Hub, chat: ChatState, *, admission: Optional[Admission] = None,
        room_rate: Optional[KeyedLimiter] = None, readers: Optional[ReaderCounts] = None,
        join_timeout: float = DEFAULT_JOIN_TIMEOUT,
    ) -> None:
        super().__init__(max_buffer_size=MAX_READ_BUFFER, read_chunk_size=READ_CHUNK)
        self.hub = hub
        self.chat = chat
        self.admission = admission if admission is not None else Admission()
        self.room_rate = room_rate
        self.readers = readers
        self.metrics = self.admission.metrics
        self.join_timeout = join_timeout

    @classmethod
    def for_app(cls, app: tornado.web.Application, **options: Any) -> "ChatLineServer":
        """A server on the hub, chat state, limits and metrics of an app from ``make_app``;
        ``options`` as the constructor's (``join_timeout``)."""
        sockets = app.settings["sockets"]
        chats = app.settings["chats"]
        return cls(
            sockets["hub"], chats["chat"], admission=sockets["admission"],
            room_rate=chats["room_rate"], readers=chats["readers"], **options,
        )

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        ip = address[0] if isinstance(address, tuple) else str(address)
        try:
            ticket = self.admission.admit(Client(TCP, ENDPOINT, ip, has_origin=False))
        except Refused as refused:
            message = refused.message
            if refused.reason == HANDSHAKE_RATE:
                message = (f"Too many new connections from your address; connect again in "
                           f"{refused.retry_after or 0:.2f} s.")
            await self._refuse(stream, lines.error_line(refused.code, message))
            return
        _keep_alive(stream)
        await ChatLineConnection(self, stream, ticket).run()

    async def _refuse(self, stream: IOStream, line: str) -> None:
        """Answer a connection refused on accept with one line, then close it."""
        try:
            # A fresh socket's buffer takes one short line at once; never wait on it long.
            await asyncio.wait_for(stream.write(line.encode()), CLOSE_GRACE)
        except (StreamClosedError, asyncio.TimeoutError):
            pass
        stream.close()


def _keep_alive(stream: IOStream) -> None:
    """Turn on TCP keepalive with ``KEEPALIVE``'s timing where the system has the knobs."""
    sock = stream.socket
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle, interval, count = KEEPALIVE
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                            ("TCP_KEEPCNT", count)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass  # the client is already gone; the first read says so


class ChatLineConnection:
    """One raw TCP chat client: the hub's subscriber, and the commands it sends.

    ``run()`` reads lines and handles them one at a time, in order: an async command (a join
    on Redis) finishes before the next line is read. Each ``/command`` has a method
    ``handle_<command>(argument)``; a line that is no command is ``say(text)``. A
    ``ClientError`` from any of them is answered with an ``!`` line and the connection stays;
    any other exception is logged with its traceback and ends the connection with one
    ``! internal_error`` line.
    """

    def __init__(self, server: ChatLineServer, stream: IOStream, ticket: Ticket) -> None:
        self.server = server
        self.hub = server.hub
        self.chat = server.chat
        self.metrics = server.metrics
        self.stream = stream
        self.ticket = ticket  # admitted; released the moment the socket closes
        self.ip = ticket.client.ip
        self.room: Optional[str] = None  # the room joined, if any
        self.session: Optional[ChatSession] = None  # the chat in that room (one per room)
        self.wanted: Optional[str] = None  # the nickname to take in each room joined
        self._me = b""  # nick key (UTF-8) of the nickname held in the room; b"" for none
        self._splitter = lines.LineSplitter()
        self._ending: Optional[str] = None  # why the server ends the connection, once it does
        self._idle: Optional[object] = None  # the join timeout, until a room is joined
        self._lines_in = self.metrics.messages_in.labels(endpoint=ENDPOINT)

    # The hub's subscriber.

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        """Write the envelope's line (``realtime.chat.lines.line_of``) unless the connection is
        ending (``CLOSED``) or holds more than ``max_pending`` unsent bytes (``STALLED``)."""
        stream = self.stream
        if self._ending is not None or stream.closed():
            return CLOSED
        if stream_unflushed_bytes(stream) > max_pending:
            return STALLED
        data = lines.line_of(envelope, self._me)
        if data:
            stream.write(data)  # Tornado retrieves the error of a write the client cut short
        return WRITTEN

    def unflushed_bytes(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        return stream_unflushed_bytes(self.stream)

    def close_for(self, reason: CloseReason) -> None:
        """The hub's way to end the connection: a slow consumer is cut at once; a server
        going away, failing to write or unable to give messages it missed says so in a
        last line."""
        if reason is CloseReason.SLOW:
            self.end("slow_consumer")
        elif reason is CloseReason.SHUTDOWN:
            self.end("shutdown", lines.info("the server is shutting down; connect again in a "
                                            "moment"))
        elif reason is CloseReason.GAP:
            self.end("gap", lines.info("messages of this room were missed while the server "
                                       "lost its link to the others; connect again"))
        else:
            self.end("internal_error", self._internal_error_line())

    def end(self, why: str, last: Optional[str] = None) -> None:
        """End the connection (``why`` goes to the log): nothing more is written but ``last``,
        and the socket is closed once that has left, or after ``CLOSE_GRACE`` seconds."""
        if self._ending is not None:
            return
        self._ending = why
        self._stop_idle_timer()
        for topic in self.hub.topics(self):
            self.hub.unsubscribe(topic, self)
        stream = self.stream
        if stream.closed():
            return
        if last is None or stream_unflushed_bytes(stream) > self.hub.max_pending_bytes:
            stream.close()
            return
        loop = IOLoop.current()
        cut = loop.call_later(CLOSE_GRACE, stream.close)

        def sent(_: "asyncio.Future[None]") -> None:
            loop.remove_timeout(cut)
            stream.close()

        stream.write(last.encode("utf-8")).add_done_callback(sent)

    # Reading.

    async def run(self) -> None:
        """Serve the connection until it closes, then leave its room."""
        # A client leaving while a command awaits (a join on Redis) is noticed at once, not
        # when the command is done and the next read fails.
        self.stream.set_close_callback(self._let_go)
        if self.stream.closed() or not self.ticket.open():
            self._let_go()
            return
        self.hub.register(self)
        self._idle = IOLoop.current().call_later(self.server.join_timeout, self._idle_timeout)
        self.send(lines.info(GREETING))
        try:
            while True:
                data = await self.stream.read_bytes(READ_CHUNK, partial=True)
                if self._ending is not None:
                    continue  # read and dropped until the last line is out and the socket shut
                for event in self._splitter.feed(data):
                    if self._ending is not None:
                        break
                    await self._line(event)
        except StreamClosedError:
            pass
        except Exception:
            log.exception("the raw TCP chat's read loop failed")
            self.metrics.internal_errors.inc()
        finally:
            await self._closed()

    async def _line(self, line: "bytes | lines.Overflow") -> None:
        """Handle one line inside the error boundary; every line is charged to the limits."""
        self._lines_in.inc()
        if not self._allowed():
            return
        try:
            if isinstance(line, lines.Overflow):
                if line.first:
                    raise ClientError("too_long", (
                        f"A line has at most {lines.MAX_LINE_BYTES} bytes; this one was "
                        f"dropped, up to its end."))
                return
            parsed = lines.parse(lines.decode(line))
            if parsed is None:
                return
            name, argument = parsed
            handler: Callable[[str], Optional[Awaitable[None]]] = (
                getattr(self, "handle_" + name) if name else self.say)
            pending = handler(argument)
            if pending is not None and inspect.isawaitable(pending):
                await pending
        except ClientError as error:
            self.send_error(error.code, error.message)
        except Exception:
            log.exception("a raw TCP chat command failed; closing the connection")
            self.metrics.internal_errors.inc()
            self.end("internal_error", self._internal_error_line())

    def _allowed(self) -> bool:
        """Charge one line to this connection's budget, then to its address's; False (after
        the strike policy has answered) if either is spent."""
        over = self.ticket.charge()
        if over is None:
            return True
        if over.close:
            self.metrics.errors.labels(code="rate_limited").inc()
            self.end("rate_limited", lines.error_line(
                "rate_limited", "Too many lines over the rate limit in a row; closing."))
        else:
            why = ("Too many lines and messages from your address (all its connections "
                   "together)" if over.per_address else "Too many lines")
            self.send_error("rate_limited", f"{why}; this one was dropped. Send again in "
                                            f"{over.retry_after:.2f} s or less often.")
        return False

    def _idle_timeout(self) -> None:
        self._idle = None
        if self.room is None:
            self.end("join_timeout", lines.error_line("join_timeout", (
                f"No /join within {self.server.join_timeout:g} s; closing.")))

    def _stop_idle_timer(self) -> None:
        if self._idle is not None:
            IOLoop.current().remove_timeout(self._idle)
            self._idle = None

    async def _closed(self) -> None:
        """The socket is closed: leave the room, forget the connection, log it."""
        self._stop_idle_timer()
        if not self.stream.closed():
            self.stream.close()
        self._let_go()
        try:
            await self._leave()
        except Exception:
            log.exception("leaving a chat room failed")
        self.hub.forget(self)  # a command that was still awaiting may have subscribed

    def _let_go(self) -> None:
        """Give back the slot and gauge and stop listening: the one way out, run the moment
        the socket closes (the hub forgets the connection once it has left its room)."""
        for topic in self.hub.topics(self):
            self.hub.unsubscribe(topic, self)
        self.ticket.release(by="client" if self._ending is None else "server",
                            reason=self._ending)

    # Writing.

    def send(self, text: str) -> bool:
        """Write lines of the server's own (``text`` ends with its newline), after anything
        the hub still has queued for this connection."""
        return self.hub.send(self, lines.written(text))

    def send_error(self, code: str, message: str) -> bool:
        """Write an ``! code: message`` line."""
        self.metrics.errors.labels(code=code).inc()
        return self.send(lines.error_line(code, message))

    def _internal_error_line(self) -> str:
        self.metrics.errors.labels(code="internal_error").inc()
        return lines.error_line("internal_error", "Something went wrong on the server; the "
                                "error is in its log. Closing; connect again.")

    # Commands.

    async def handle_nick(self, argument: str) -> None:
        """``/nick <name>``: take a nickname in the room, or change it; before ``/join``,
        the nickname to take in the room joined."""
        nick = normalize_nick(argument)
        room = self.room
        if room is None:
            self.wanted = nick
            self.send(lines.info(f"you will be {lines.printable(nick)} in the room you join"))
            return
        joined = await self._session().join(nick)
        self.wanted = joined.nick
        self._me = nick_key(joined.nick).encode("utf-8")

    async def handle_join(self, argument: str) -> None:
        """``/join <room>``: leave the room joined, if any, and enter this one, under the
        nickname asked for; the welcome says who is there and what was said."""
        room = lines.room_name(argument)
        if room == self.room:
            self.send(lines.info(f"you are in {room} already"))
            return
        if self.wanted is not None:
            # A join with a nickname is a presence notice to the room.
            charge_room(self.server.room_rate, self.hub, room)
        await self._leave()
        await self._enter(room)

    async def handle_msg(self, argument: str) -> None:
        """``/msg <nick> <text>``: a private message; its recipient and its sender see it."""
        session = self._session()
        to, text = lines.private_arguments(argument)
        await session.whisper(to, text)

    async def handle_who(self, argument: str) -> None:
        """``/who``: who is in the room, and how many read it anonymously."""
        room = self._joined()
        online = await self.chat.online(room)
        self.send(lines.who_line(room, online, self.chat.readers(room)))

    def handle_help(self, argument: str) -> None:
        """``/help``: the commands."""
        self.send(lines.help_lines())

    def handle_quit(self, argument: str) -> None:
        """``/quit``: say goodbye and close."""
        self.end("quit", lines.info("bye"))

    async def say(self, text: str) -> None:
        """A line that is no command: a public message to the room."""
        await self._session().say(text)

    # Rooms.

    async def _enter(self, room: str) -> None:
        """Enter ``room`` (anonymous, then under ``wanted`` if free) and write its welcome
        (``ChatSession.open``)."""
        server = self.server
        self.room = room
        self.session = ChatSession(self.chat, self.hub, self, self._send_frame, self.send_error,
                                   readers=server.readers, room_rate=server.room_rate,
                                   lost=self._forget_nick)
        await self.session.open(room, None, self.wanted)
        self._stop_idle_timer()

    def _send_frame(self, frame: Message) -> None:
        """A frame for this connection alone, as lines: the welcome, or its own join."""
        if frame["type"] == "welcome":
            nick = frame["nick"]
            self._me = nick_key(nick).encode("utf-8") if nick is not None else b""
            self.send(lines.welcome(frame["room"], nick, frame["online"], frame["readers"],
                                    frame["history"]))
            return
        line = lines.frame_line(frame)
        if line is not None:
            self.send(line + "\n")

    def _forget_nick(self, nick: str) -> None:
        """The nickname was taken from this connection (``nick_lost``): private messages are
        no longer shown as its own, and a /join does not ask for it again."""
        self._me = b""
        self.wanted = None

    async def _leave(self) -> None:
        """Leave the room joined, if any: unsubscribed, and its presence told."""
        session, self.session, self.room, self._me = self.session, None, None, b""
        if session is not None:
            await session.close()

    def _session(self) -> ChatSession:
        """The session of the room joined.

        Raises:
            ClientError: ``not_joined`` before ``/join``.
        """
        self._joined()
        assert self.session is not None
        return self.session

    def subscribe(self, topic: str) -> None:
        """Listen to ``topic``, unless the client has left (a join may outlast it)."""
        if not self.ticket.released:
            self.hub.subscribe(topic, self)

    def unsubscribe(self, topic: str) -> None:
        """Stop listening to ``topic``."""
        self.hub.unsubscribe(topic, self)

    def _joined(self) -> str:
        """The room joined.

        Raises:
            ClientError: ``not_joined`` before ``/join``.
        """
        if self.room is None:
            raise ClientError("not_joined", "Join a room first: /join <room>.")
        return self.room

    def __repr__(self) -> str:
        return f"<ChatLineConnection {self.ip} room={self.room}>"
