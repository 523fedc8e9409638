"""The real-time server: options, ``make_app(...)``, ``serve()`` and ``main()``.

Run ``python server.py --help`` for the options; each can also come from the environment as
``REALTIME_<OPTION>`` (``--max-message-size`` is ``REALTIME_MAX_MESSAGE_SIZE``), a flag
winning over the variable. ``make_app`` builds the Tornado application from a ``Config`` and
never reads the global options, so tests build a fresh app each time.
"""

import asyncio
import errno
import importlib.util
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import tornado.httpserver
import tornado.netutil
import tornado.options
import tornado.tcpserver
import tornado.web
from tornado.options import options
from tornado.web import url

from handlers.apps import app_routes
from handlers.chat import ChatPageHandler, ChatSocketHandler
from handlers.websocket import SocketHandler, abort_closing
from handlers.chathttp import (
    DEFAULT_LONG_POLL_TIMEOUT, ChatEventStreamHandler, ChatHistoryHandler, ChatLongPollHandler,
)
from handlers.echo import EchoSocketHandler
from handlers.pages import HealthHandler, MetricsHandler, NotFoundPageHandler, PageHandler
from handlers.tcp import ChatLineServer
from handlers.vote import (
    DuplicateApiHandler, JoinPageHandler, OwnerApiHandler, PollApiHandler, PollPageHandler,
    PollsApiHandler, PollStateApiHandler, PresentPageHandler, QrCodeHandler, QrCodes,
    ResultsCsvHandler, VoteApiHandler, VoteEventStreamHandler, VotePageHandler,
    VoteSocketHandler,
)
from handlers.http import DEFAULT_HEARTBEAT
from realtime.apps.counter import CounterSession
from realtime.apps.counter import NAME_PATTERN as COUNTER_NAME
from realtime.apps.state import AppState, EmbeddedAppState
from realtime.chat import rules
from realtime.chat.session import DEFAULT_SESSION_TIMEOUT, LongPollSessions, ReaderCounts
from realtime.chat.state import ChatState, EmbeddedChatState
from realtime.chat.store import ChatStore
from realtime.chat.store import DB_FILENAME as CHAT_DB_FILENAME
from realtime.limits import policy
from realtime.limits.admission import Admission
from realtime.limits.policy import IPConnections, RateLimit
from realtime.ops.accept import HTTPServer as AcceptingHTTPServer
from realtime.ops.commandline import (
    EXIT_USAGE, LOGGING_GROUP, ConfigError, help_requested, help_text, parse,
)
from realtime.ops.datalock import DataDirInUse, DataDirLock
from realtime.ops.fdlimit import raise_open_files_limit
from realtime.ops.lifecycle import Lifecycle
from realtime.ops import gcpolicy
from realtime.ops.logfmt import ThrottledLog, logfmt
from realtime.ops.metrics import ServerMetrics
from realtime.pubsub.brokers import Broker
from realtime.pubsub.delivery import CloseReason
from realtime.pubsub.hub import DEFAULT_MAX_PENDING_BYTES, Hub
from realtime.ops.options import define_options, option, values_from
from realtime.limits.origins import OriginPolicy
from realtime.limits.ratelimit import Clock, KeyedLimiter
from realtime.votes.participants import ParticipantCounts
from realtime.votes.session import poll_refresher
from realtime.votes.store import DB_FILENAME, Polls, PollStore

HERE = os.path.dirname(os.path.abspath(__file__))


def resource_dir() -> str:
    """Where ``templates/`` and ``static/`` are: beside this file in a checkout, or where
    ``pip install .`` puts them (``<prefix>/share/tornado-realtime``)."""
    if os.path.isdir(os.path.join(HERE, "templates")):
        return HERE
    return os.path.join(sys.prefix, "share", "tornado-realtime")


# Pending connections the kernel queues for us: room for every client of a restarted
# server reconnecting at once (the kernel caps it at net.core.somaxconn, 4096 by default
# since Linux 5.4). A connection that finds the queue full has its SYN dropped and comes
# back only after TCP's own retransmission, 1, 3, 7, 15, 31 s later: with 1024, the
# 10,000-page reconnect storm of bench/compare.py had pages waiting 70 s for a welcome,
# and 5,000 handshakes at once lost 496 connections to resets (bench/held_steps.py
# --concurrency 2500); at 4096 or more, none.
LISTEN_BACKLOG = 16384
# Seconds at most, at shutdown, for the kernel to take every WebSocket's close frame
# before the sockets still open are closed: a client that stopped reading gets no more.
DRAIN_SECONDS = 0.5

log = logging.getLogger("realtime.server")
access_log = logging.getLogger("realtime.access")


# The groups of --help, in this order.
NETWORK, LIMITS, CHAT, POLLS, REDIS, LOGGING = (
    "network", "limits", "chat", "polls and data", "Redis", LOGGING_GROUP)
HELP_GROUPS = (NETWORK, LIMITS, CHAT, POLLS, REDIS, LOGGING)


@dataclass
class Config:
    """Everything ``make_app`` and ``serve`` need, and the one declaration of every option.

    Each ``option(...)`` field is a command-line flag, a ``REALTIME_*`` variable and a row of
    the options table of docs/options.md (``realtime.ops.options``); ``main()`` fills it from them.
    """

    port: int = option(8888, "TCP port to listen on", group=NETWORK, maximum=65535)
    tcp_port: int = option(
        0, "TCP port of the raw chat: the chat rooms as UTF-8 lines for `nc` or `telnet` (see "
        "Raw TCP), on `--address`; `0` (the default) for none", shown="`0` (off)",
        group=NETWORK, maximum=65535)
    address: str = option(
        "127.0.0.1", "address to bind; `0.0.0.0` for every interface", group=NETWORK)
    debug: bool = option(
        False, "reload on code changes, tracebacks in error pages (never in production)",
        group=LOGGING)
    xheaders: bool = option(
        False, "trust `X-Real-IP` / `X-Forwarded-For` / `X-Forwarded-Proto` for the client's "
        "address and scheme; only behind a proxy that sets them, with the server unreachable "
        "except through it", group=NETWORK)
    allowed_origins: tuple[str, ...] = option(
        (), "comma-separated exact origins (`https://app.example.com`, "
        "`http://localhost:3000`) whose pages may open WebSockets, besides pages of the same "
        "host (see Origins)", shown="none (same host only)", group=NETWORK)
    ping_interval: float = option(
        25.0, "seconds between WebSocket pings, so proxies with a 60 s idle timeout keep the "
        "connection and dead clients are found; `0` turns pings off", group=NETWORK)
    ping_timeout: float = option(
        10.0, "seconds to wait for the pong; no pong, the socket is closed (at most "
        "`--ping-interval`)", group=NETWORK)
    compression: bool = option(
        False, "offer permessage-deflate (RFC 7692) to WebSocket clients; a client that "
        "accepts gets its frames compressed, each one for it alone (no frame is built once "
        "for all subscribers), at some CPU and about 300 KB of zlib state per connection. "
        "Connections without it keep the fast path", group=NETWORK)
    max_message_size: int = option(
        64 * 1024, "bytes in one incoming WebSocket message (all fragments together); a "
        "message of exactly this size passes, a larger one closes the socket with 1009",
        group=LIMITS)
    rate_limit: float = option(
        policy.DEFAULT_RATE, "frames per second each WebSocket (or raw TCP line connection) "
        "may send, sustained (token bucket); `0` turns the limit off", group=LIMITS)
    rate_burst: int = option(
        policy.DEFAULT_BURST, "frames (or TCP lines) a connection may send at once after a "
        "pause", group=LIMITS)
    rate_limit_strikes: int = option(
        policy.DEFAULT_STRIKES, "frames refused in a row (each answered with `rate_limited`) "
        "before the socket is closed with 1008", group=LIMITS)
    ip_rate_limit: float = option(
        policy.DEFAULT_IP_RATE, "frames per second one client address may send over all its "
        "WebSockets, TCP lines and HTTP chat requests (every frame counts, as for "
        "`--rate-limit`); `0` turns it off", group=LIMITS)
    ip_rate_burst: int = option(
        policy.DEFAULT_IP_BURST, "frames one client address may send at once after a pause",
        group=LIMITS)
    room_rate_limit: float = option(
        policy.DEFAULT_ROOM_RATE, "deliveries per second one chat room's public messages and "
        "joins may cause (a message to N listeners costs N); over it the sender gets "
        "`rate_limited` and nothing is published; `0` turns it off", group=LIMITS)
    room_rate_burst: int = option(
        policy.DEFAULT_ROOM_BURST, "deliveries one chat room may cause at once after a pause",
        group=LIMITS)
    handshake_rate_limit: float = option(
        policy.DEFAULT_HANDSHAKE_RATE, "new WebSockets (and event streams, long-poll sessions, "
        "TCP connections) per second one client address may open, sustained; past it a "
        "handshake is refused with HTTP 429 and `Retry-After` (a reconnect storm costs a "
        "welcome per socket); `0` turns it off", group=LIMITS)
    http_rate_limit: float = option(
        policy.DEFAULT_HTTP_RATE, "plain HTTP requests per second one client address may make "
        "to pages, the poll API and QR codes (not `/healthz`, `/metrics`, static files or "
        "the transports, which have the budgets above), sustained; past it the answer is "
        "429 with `Retry-After` (JSON `rate_limited` on the API); `0` turns it off",
        group=LIMITS)
    http_rate_burst: int = option(
        policy.DEFAULT_HTTP_BURST, "plain HTTP requests one client address may make at once "
        "after a pause", group=LIMITS)
    handshake_rate_burst: int = option(
        policy.DEFAULT_HANDSHAKE_BURST, "new connections one client address may open at once "
        "after a pause (a restart brings every tab of an office back at once)", group=LIMITS)
    max_connections_per_ip: int = option(
        policy.DEFAULT_MAX_CONNECTIONS_PER_IP, "open WebSockets per client address, event "
        "streams, held long-polls, long-poll sessions and TCP connections included; the next "
        "handshake or request is refused with HTTP 429; `0` for no limit. Behind a proxy it "
        "needs `--xheaders`, or every client counts as the proxy's address", group=LIMITS)
    max_pending_bytes: int = option(
        DEFAULT_MAX_PENDING_BYTES, "bytes (frame headers included) that Tornado may still "
        "hold for a connection (WebSocket, event stream, TCP), not yet taken by the kernel, "
        "when a new frame is due; past it the frame is not written and the connection is "
        "dropped as a slow consumer (a WebSocket with close 1008). A stalled client costs at "
        "most this plus one frame; bytes the kernel took do not count, so a reading client "
        "may get a burst, or a single frame, larger than this", group=LIMITS)
    chat_history: int = option(
        rules.DEFAULT_HISTORY, "chat messages a newcomer gets in its welcome", group=CHAT)
    chat_replay: int = option(
        rules.DEFAULT_REPLAY, "chat messages each room keeps for clients that reconnect with "
        "`?since=`", group=CHAT)
    chat_max_rooms: int = option(
        rules.DEFAULT_MAX_ROOMS, "chat rooms held at once; past it, idle empty rooms (and "
        "their history) are forgotten first", group=CHAT)
    chat_room_history_bytes: int = option(
        rules.DEFAULT_ROOM_HISTORY_BYTES, "bytes of messages, measured as JSON, one chat room "
        "keeps; also the most a welcome's history holds (and at most half of "
        "`--max-pending-bytes`)", group=CHAT)
    chat_history_bytes: int = option(
        rules.DEFAULT_HISTORY_BYTES, "bytes of messages all chat rooms keep together, each "
        "message counting its JSON size (or its text's size in memory, if larger) plus 512 "
        "for its bookkeeping; past it the oldest message of any room goes first. The "
        "process's resident memory grows by about 1-2x this once it is full "
        "(`bench/history_rss.py`)", group=CHAT)
    long_poll_timeout: float = option(
        DEFAULT_LONG_POLL_TIMEOUT, "seconds a chat long-poll (`GET /poll/chat/<room>?since=`) "
        "with nothing new to answer is held, waiting for a message, before it is answered "
        "empty; below the read timeout of every proxy in front", group=CHAT)
    long_poll_session_timeout: float = option(
        DEFAULT_SESSION_TIMEOUT, "seconds a long-polling browser keeps its place in a chat "
        "room (its nickname, its presence) after its last request ended; above "
        "`--long-poll-timeout`, so a client that polls again in time never leaves",
        aliases=("poll_session_timeout",), group=CHAT)
    sse_heartbeat: float = option(
        DEFAULT_HEARTBEAT, "seconds between comment lines on a Server-Sent Events stream, so "
        "proxies keep an idle one open; `0` turns them off", group=CHAT)
    # Where the poll database and the generated cookie secret live; None keeps polls in
    # memory and draws a new cookie secret (tests, throwaway servers).
    data_dir: Optional[str] = option(
        None, "where the poll database (`polls.sqlite3`), the chat history (`chat.sqlite3`), "
        "both in WAL mode, and the generated cookie secret live; relative to the working "
        "directory. One process per directory: a second one started on it refuses to start "
        "(a lock on `server.lock`)", served="data", shown="`./data`", group=POLLS)
    public_url: Optional[str] = option(
        None, "the origin clients reach the server at (`https://polls.example.org`, no "
        "path): absolute URLs (a poll's QR code and share link) are built from it alone. "
        "Unset: from the request's scheme and its `Host`, when that is a host name (else "
        "400 `bad_host`)", shown="unset", group=NETWORK)
    redis_url: Optional[str] = option(
        None, "share chat rooms, nicknames, presence, history, polls and the apps' state "
        "with the other processes using this Redis (`redis://host:port/db`), or this Redis "
        "Cluster (`redis+cluster://host:port`, any of its nodes; sharded pub/sub, Redis 7 or "
        "later), for several processes behind one proxy; needs `pip install .[redis]`. Unset: "
        "everything stays in "
        "this process (SQLite in the data directory; the apps' state in memory)",
        shown="unset", group=REDIS)
    redis_prefix: str = option(
        "realtime:", "put before every Redis key and channel name, so deployments can share "
        "one Redis", group=REDIS)
    redis_nick_lease: float = option(
        30.0, "with `--redis-url`: seconds a nickname stays held after its process last "
        "renewed it (every third of this), so a crashed process's nicknames free themselves",
        group=REDIS)
    redis_batch: int = option(
        500, "with `--redis-url`: the most script calls (chat messages, votes, nickname "
        "leases) sent to Redis in one pipeline; the calls made in one event-loop turn share "
        "a pipeline (a burst two, back to back), in order, two pipelines on their way at "
        "once (1 MiB of arguments at most). `1` turns pipelining off: one round trip per "
        "call", group=REDIS)
    cookie_secret_file: Optional[str] = option(
        None, "file holding the secret that signs voter cookies; generated (mode 0600) if "
        "missing, safely when several processes start at once. Keep it, and give every "
        "process of a deployment the same one: another secret makes every browser a new "
        "voter",
        shown="`<data-dir>/cookie_secret`", group=POLLS)
    polls_per_hour: float = option(
        60.0, "polls one client IP may create per hour, on average", group=POLLS)
    poll_burst: int = option(
        10, "polls one client IP may create at once before the hourly rate applies (then 429)",
        group=POLLS)
    shutdown_timeout: float = option(
        4.0, "seconds from SIGTERM/SIGINT to exit, closing sockets and shutdown closers "
        "included", group=NETWORK)
    # HTTP connection hygiene (serve()): Tornado has one timer for an idle keep-alive
    # connection and a slow request head; above nginx's upstream keepalive_timeout (60 s) so
    # the proxy, not us, ends idle upstream connections.
    idle_connection_timeout: float = option(
        75.0, "seconds an HTTP connection may go without a complete request head (idle "
        "keep-alive or slow headers) before it is closed; WebSockets are not affected",
        group=NETWORK)
    body_timeout: float = option(
        30.0, "seconds to receive a whole HTTP request body before the connection is closed",
        group=NETWORK)
    # Not options: objects and secrets handed in by code (tests, embedders).
    cookie_secret: Optional[str] = field(default=None, repr=False)  # None: see data_dir
    hub: Optional[Hub] = field(default=None, repr=False)  # a ready hub, e.g. a test's
    # A ready poll store (e.g. a RedisPollStore); None: SQLite in data_dir (or in memory).
    polls: Optional[Polls] = field(default=None, repr=False)
    lifecycle: Optional[Lifecycle] = field(default=None, repr=False)  # a ready one, for tests
    # Monotonic clock of rate limits and /healthz uptime; None: time.monotonic. For tests.
    clock: Optional[Clock] = field(default=None, repr=False)


COOKIE_SECRET_FILENAME = "cookie_secret"


def load_cookie_secret(path: str) -> str:
    """The cookie secret kept in ``path``, generated (readable by the owner only) if missing.

    Several processes may share the file (every process of a deployment must sign voter
    cookies alike) and start at the same moment: a new secret is written whole to a file of
    its own and then hard-linked to ``path``, which fails if another process linked first,
    so ``path`` never holds a partial secret and every process ends up with the one there.
    """
    try:
        return read_cookie_secret(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    fd, draft = tempfile.mkstemp(prefix=".cookie_secret.", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())  # whole on disk before any process can read it
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process's secret won; everyone uses that one
    finally:
        os.unlink(draft)
    return read_cookie_secret(path)


def read_cookie_secret(path: str) -> str:
    """The secret in ``path``.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: it holds fewer than 32 characters.
    """
    with open(path, encoding="ascii") as file:
        secret = file.read().strip()
    if len(secret) < 32:
        raise ValueError(f"{path}: a cookie secret needs 32 characters or more")
    return secret


def make_app(config: Optional[Config] = None) -> tornado.web.Application:
    """Build the application: pages, health, metrics and WebSocket endpoints on one hub.

    ``app.settings`` carries ``hub``, ``metrics``, ``lifecycle``, ``polls`` (the poll
    store) and ``chat`` (the chat state) for ``serve()`` (register async closers with
    ``lifecycle.on_shutdown(...)`` where a component is built here), ``sockets``, the
    dependencies of every socket route, for routes added afterwards, and ``chats``, what
    every chat transport adds to them (the chat state, the rooms' budget, the readers'
    counts), for the raw TCP chat (``handlers.tcp.ChatLineServer.for_app``), and
    ``apps``, what every real-time app's routes get (``handlers.apps.app_routes``), with
    ``app_state``, the state they share. Whoever
    builds the app without ``serve()`` closes the poll store; chat history stays in memory
    unless they ``await app.settings["chat"].start()`` before serving (and ``aclose()`` it).
    """
    config = config or Config()
    public_url = public_origin(config.public_url)  # a bad one stops us before anything opens
    hub = config.hub or Hub(
        broker=shared_broker(config), max_pending_bytes=config.max_pending_bytes)
    lifecycle = config.lifecycle or Lifecycle()
    clock = config.clock or time.monotonic
    metrics = ServerMetrics(hub=hub)
    # The one admission of every transport (realtime.limits.admission): origins, caps, budgets
    # and the metrics they count in, so a new admission rule is added to it alone.
    admission = Admission(
        origins=OriginPolicy(config.allowed_origins),
        ip_connections=IPConnections(config.max_connections_per_ip),
        handshake_rate=keyed_limiter(
            config.handshake_rate_limit, config.handshake_rate_burst, config.clock),
        ip_rate=keyed_limiter(config.ip_rate_limit, config.ip_rate_burst, config.clock),
        rate_limit=RateLimit(config.rate_limit, config.rate_burst, config.rate_limit_strikes,
                             clock=config.clock),
        metrics=metrics,
    )
    # What every socket route gets; routes with more dependencies pass dict(sockets, ...).
    sockets = dict(hub=hub, admission=admission)
    room_rate = keyed_limiter(config.room_rate_limit, config.room_rate_burst, config.clock)
    rooms = rules.Rooms(
        config.chat_history, config.chat_replay, config.chat_max_rooms,
        room_history_bytes=config.chat_room_history_bytes,
        history_bytes=config.chat_history_bytes,
        # A welcome must never be what gets a reader dropped as a slow consumer.
        welcome_bytes=min(config.chat_room_history_bytes, config.max_pending_bytes // 2),
    )
    cookie_secret = config.cookie_secret
    if cookie_secret is None and config.cookie_secret_file:
        cookie_secret = load_cookie_secret(config.cookie_secret_file)
    db_path = chat_path = None
    if config.data_dir is not None:
        os.makedirs(config.data_dir, exist_ok=True)
        db_path = os.path.join(config.data_dir, DB_FILENAME)
        chat_path = os.path.join(config.data_dir, CHAT_DB_FILENAME)
        if cookie_secret is None:
            cookie_secret = load_cookie_secret(
                os.path.join(config.data_dir, COOKIE_SECRET_FILENAME)
            )
    store = config.polls or shared_polls(config) or PollStore(db_path)
    hub.on_gap(poll_refresher(store, hub))  # a fresh tally after a broker's gap
    # The voters and viewers of each poll, told to its pages (the ``participants`` frame); they stop
    # before the store closes.
    participants = ParticipantCounts(hub, store)
    lifecycle.on_shutdown(participants.aclose, "participant counts")
    lifecycle.on_shutdown(store.aclose, "poll store")  # pending votes are committed first
    chat_state = shared_chat(config, hub) or EmbeddedChatState(
        rooms, hub, ChatStore(chat_path, rooms))
    readers = ReaderCounts(hub, chat_state)
    # Long-polling browsers' places in rooms; they leave before the chat state closes.
    sessions = LongPollSessions(hub, chat_state, readers, config.long_poll_session_timeout,
                                admission, room_rate)
    lifecycle.on_shutdown(sessions.aclose, "long-poll sessions")
    lifecycle.on_shutdown(chat_state.aclose, "chat state")  # writes the last batch
    # What every chat transport shares besides the sockets' dependencies: the WebSocket
    # route, the raw TCP lines (handlers/tcp.py), the event streams and the long-polls
    # (handlers/chathttp.py) meet in the same rooms under one budget.
    chats = dict(chat=chat_state, room_rate=room_rate, readers=readers)
    metrics.watch_chat(chat_state)
    lifecycle.on_shutdown(hub.broker.close, "broker")
    lifecycle.on_shutdown(metrics.loop_lag.aclose, "loop lag sampling")
    votes = dict(store=store)
    event_streams = dict(sockets, heartbeat=config.sse_heartbeat)  # what /sse/ routes get
    # What every real-time app's routes get (handlers/apps.py): the sockets' and streams'
    # dependencies, and the state apps share (on Redis with --redis-url).
    app_state = shared_app_state(config) or EmbeddedAppState()
    lifecycle.on_shutdown(app_state.aclose, "app state")
    apps = dict(event_streams, state=app_state)
    poll_limiter = KeyedLimiter(rate=config.polls_per_hour / 3600, burst=config.poll_burst)
    routes = sockets_first(name_socket_endpoints([
        url(r"/", PageHandler, dict(template="index.html"), name="index"),
        url(r"/echo", PageHandler, dict(template="echo.html"), name="echo"),
        url(r"/chat", ChatPageHandler, dict(template="chat.html"), name="chat"),
        url(r"/models", PageHandler, dict(template="models.html"), name="models"),
        url(r"/counter", PageHandler, dict(template="counter.html"), name="counter"),
        url(r"/vote", VotePageHandler, votes, name="vote"),
        url(r"/j/([^/]+)", JoinPageHandler, votes, name="vote_join"),
        url(r"/vote/([^/]+)", PollPageHandler, votes, name="vote_poll"),
        url(r"/vote/([^/]+)/present", PresentPageHandler, votes, name="vote_present"),
        url(r"/vote/([^/]+)/qr\.svg", QrCodeHandler, dict(votes, codes=QrCodes()),
            name="vote_qr"),
        url(r"/api/polls", PollsApiHandler, dict(votes, limiter=poll_limiter), name="api_polls"),
        url(r"/api/polls/([^/]+)", PollApiHandler, dict(votes, hub=hub), name="api_poll"),
        url(r"/api/polls/([^/]+)/(close|reopen|reveal)", PollStateApiHandler, dict(votes, hub=hub),
            name="api_poll_state"),
        url(r"/api/polls/([^/]+)/owner", OwnerApiHandler, dict(votes, hub=hub),
            name="api_poll_owner"),
        url(r"/api/polls/([^/]+)/duplicate", DuplicateApiHandler,
            dict(votes, hub=hub, limiter=poll_limiter), name="api_poll_duplicate"),
        url(r"/api/polls/([^/]+)/results\.csv", ResultsCsvHandler, dict(votes, hub=hub),
            name="api_poll_csv"),
        url(r"/api/polls/([^/]+)/vote", VoteApiHandler,
            dict(votes, hub=hub, metrics=metrics, participants=participants),
            name="api_poll_vote"),
        url(r"/healthz", HealthHandler,
            dict(hub=hub, started=clock(), clock=clock, chat=chat_state, sessions=sessions),
            name="healthz"),
        url(r"/metrics", MetricsHandler, dict(registry=metrics.registry), name="metrics"),
        url(r"/ws/echo", EchoSocketHandler, sockets, name="ws_echo"),
        url(rf"/ws/chat/({rules.ROOM_PATTERN})", ChatSocketHandler, dict(sockets, **chats),
            name="ws_chat"),
        url(r"/ws/vote/([^/]+)", VoteSocketHandler,
            dict(sockets, store=store, participants=participants), name="ws_vote"),
        url(rf"/sse/chat/({rules.ROOM_PATTERN})", ChatEventStreamHandler,
            dict(event_streams, **chats, sessions=sessions, endpoint="sse_chat"), name="sse_chat"),
        url(r"/sse/vote/([^/]+)", VoteEventStreamHandler,
            dict(event_streams, store=store, participants=participants, endpoint="sse_vote"),
            name="sse_vote"),
        url(rf"/api/chat/({rules.ROOM_PATTERN})/history", ChatHistoryHandler,
            dict(sockets, chat=chat_state, endpoint="chat_history"), name="chat_history"),
        url(rf"/poll/chat/({rules.ROOM_PATTERN})", ChatLongPollHandler,
            dict(sockets, **chats, sessions=sessions, timeout=config.long_poll_timeout,
                 endpoint="poll_chat"),
            name="poll_chat"),
        *app_routes(rf"/counter/({COUNTER_NAME})", CounterSession, apps),
    ]))
    resources = resource_dir()
    app = tornado.web.Application(
        routes,
        template_path=os.path.join(resources, "templates"),
        static_path=os.path.join(resources, "static"),
        default_handler_class=NotFoundPageHandler,
        debug=config.debug,
        xsrf_cookies=False,  # no HTML form posts back to us; the JSON API is checked apart
        log_function=log_request,
        websocket_ping_interval=config.ping_interval or None,
        websocket_ping_timeout=config.ping_timeout or None,
        websocket_max_message_size=config.max_message_size,
        websocket_compression=config.compression,  # read by SocketHandler
        cookie_secret=cookie_secret or secrets.token_urlsafe(48),
        # What every page handler reads (handlers.http.BaseHandler), the 404 page included.
        http_rate=keyed_limiter(config.http_rate_limit, config.http_rate_burst, config.clock),
        public_url=public_url,
        failures=ThrottledLog(logging.getLogger("realtime.handlers")),
    )
    # For serve() and for routes added later (tests); handlers get their dependencies
    # through initialize().
    app.settings.update(
        hub=hub, metrics=metrics, lifecycle=lifecycle, sockets=sockets, polls=store,
        chat=chat_state, chats=chats, app_state=app_state, apps=apps,
    )
    return app


def public_origin(public_url: Optional[str]) -> Optional[str]:
    """``--public-url`` as an origin (``https://host[:port]``, no trailing slash), or None.

    Raises:
        ValueError: it is not an http(s) origin.
    """
    if not public_url:
        return None
    parts = urllib.parse.urlsplit(public_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") \
            or parts.query or parts.fragment:
        raise ValueError(f"--public-url must be an origin like https://example.org, "
                         f"not {public_url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def shared_broker(config: Config) -> Optional[Broker]:
    """The Redis broker when ``--redis-url`` is set, else None (this process only)."""
    if not config.redis_url:
        return None
    from realtime.pubsub.redisbroker import RedisBroker  # the optional `redis` extra

    return RedisBroker(config.redis_url, config.redis_prefix)


def shared_polls(config: Config) -> Optional[Polls]:
    """Polls on Redis when ``--redis-url`` is set, else None (SQLite in the data dir)."""
    if not config.redis_url:
        return None
    from realtime.votes.redisstore import RedisPollStore  # the optional `redis` extra

    return RedisPollStore(config.redis_url, config.redis_prefix, batch=config.redis_batch)


def shared_app_state(config: Config) -> Optional[AppState]:
    """The apps' state on Redis when ``--redis-url`` is set, else None (this process)."""
    if not config.redis_url:
        return None
    from realtime.apps.redisstate import RedisAppState  # the optional `redis` extra

    return RedisAppState(config.redis_url, config.redis_prefix)


def shared_chat(config: Config, hub: Hub) -> Optional[ChatState]:
    """Chat state on Redis when ``--redis-url`` is set, else None (this process, SQLite)."""
    if not config.redis_url:
        return None
    from realtime.chat.redisstate import RedisChatState  # the optional `redis` extra

    return RedisChatState(
        config.redis_url, hub, config.redis_prefix, history=config.chat_history,
        replay=config.chat_replay, lease=config.redis_nick_lease, batch=config.redis_batch,
        welcome_bytes=min(config.chat_room_history_bytes, config.max_pending_bytes // 2),
    )


def keyed_limiter(rate: float, burst: int, clock: Optional[Clock]) -> Optional[KeyedLimiter]:
    """A ``KeyedLimiter`` for a budget option, or None when its rate is 0 (no limit)."""
    if rate <= 0:
        return None
    return KeyedLimiter(rate, burst, clock=clock or time.monotonic)


def name_socket_endpoints(routes: list[tornado.web.URLSpec]) -> list[tornado.web.URLSpec]:
    """The routes, each named socket route given its name as ``endpoint`` (its log field and
    metric label), so adding a route stays one line."""
    named = []
    for route in routes:
        target = route.target
        if isinstance(target, type) and issubclass(target, SocketHandler) and route.name:
            kwargs = dict(route.kwargs, endpoint=route.name)
            route = url(route.regex.pattern, target, kwargs, name=route.name)
        named.append(route)
    return named


def sockets_first(routes: list[tornado.web.URLSpec]) -> list[tornado.web.URLSpec]:
    """The routes with the WebSocket ones first, each group in its own order.

    Tornado tries the patterns in order, one regex each, for every request; a reconnect
    storm is all WebSocket handshakes, which otherwise tried some twenty page and API
    patterns first. Which route a path reaches does not change: every socket pattern
    starts with ``/ws/``, which no other route's does or could match
    (``tests/test_handshake.py``).
    """
    def is_socket(route: tornado.web.URLSpec) -> bool:
        return isinstance(route.target, type) and issubclass(route.target, SocketHandler)

    return [r for r in routes if is_socket(r)] + [r for r in routes if not is_socket(r)]


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log: one ``key=value`` line per request (the path, never the query)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    access_log.log(level, logfmt(
        method=request.method, path=request.path, status=status,
        duration_ms=1000.0 * request.request_time(), ip=request.remote_ip,
    ))


define_options(Config, options, group="tornado-realtime (each also a REALTIME_<OPTION> variable)")


def config_from_options() -> Config:
    """The Config the parsed command line (and environment) describes."""
    return Config(**values_from(Config, options))


async def start_components(app: tornado.web.Application) -> None:
    """Open the stores and connect the broker of an app from ``make_app``, before it
    serves (``serve()`` does it; so do tests serving an app themselves). Undone by the
    app's lifecycle: ``await app.settings["lifecycle"].shutdown(timeout)``."""
    # A database that cannot open stops us here, not at the first vote.
    await app.settings["polls"].start()
    # The broker before the chat state, whose scripts publish on the broker's channels.
    # Either, unable to reach Redis, logs a warning and starts degraded.
    await app.settings["hub"].broker.start()
    # Chat history back into the rooms (or Redis reached) before any client can open one.
    await app.settings["chat"].start()
    await app.settings["app_state"].start()


def check_config(config: Config) -> None:
    """What the options ask for that this installation cannot give.

    Raises:
        ConfigError: ``--redis-url`` without the ``redis`` package (the optional extra).
    """
    if config.redis_url and importlib.util.find_spec("redis") is None:
        raise ConfigError("--redis-url needs the redis package, which is not installed: "
                          "pip install '.[redis]' (or pip install 'tornado-realtime[redis]')")


def bind(port: int, address: str, what: str) -> list[socket.socket]:
    """The listening sockets of ``port`` on ``address`` (``what`` names the flag in errors).

    Raises:
        ConfigError: the port is taken, needs privileges, or the address is not this
            machine's.
    """
    try:
        return tornado.netutil.bind_sockets(port, address, backlog=LISTEN_BACKLOG)
    except socket.gaierror as error:
        raise ConfigError(f"--address {address}: not a known address ({error.strerror})") \
            from None
    except OSError as error:
        where = f"{address}:{port}"
        if error.errno == errno.EADDRINUSE:
            problem = (f"{where} is already in use (another server running?); stop it or "
                       f"choose another {what}")
        elif error.errno == errno.EACCES:
            problem = f"not allowed to listen on {where} (ports below 1024 need privileges)"
        elif error.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--address {address}: not an address of this machine") \
                from None
        else:
            problem = f"cannot listen on {where} ({error.strerror})"
        raise ConfigError(f"{what} {port}: {problem}") from None


async def serve(config: Config, app: Optional[tornado.web.Application] = None) -> int:
    """Serve ``app`` (default: ``make_app(config)``) until SIGINT or SIGTERM, then shut down
    gracefully; return the exit status.

    Raises:
        ConfigError: the data directory is another process's, or a port cannot be listened
            on (before anything is opened or served).
    """
    if config.data_dir is None:
        return await serve_locked(config, app)
    try:
        lock = DataDirLock(config.data_dir)
        lock.acquire()
    except DataDirInUse as error:
        raise ConfigError(str(error)) from None
    try:
        return await serve_locked(config, app)
    finally:
        lock.release()


async def serve_locked(config: Config, app: Optional[tornado.web.Application] = None) -> int:
    """``serve()`` once the data directory is ours."""
    # Signals first: a SIGTERM arriving as soon as the port accepts is already graceful.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # The descriptor limit before the port accepts: connections may queue from then on.
    before, soft, hard = raise_open_files_limit()
    # Ports before anything else: a port in use is one line, not a half-started server.
    # Clients connecting meanwhile wait in the listen queue until we accept.
    http_sockets = bind(config.port, config.address, "--port")
    line_sockets = bind(config.tcp_port, config.address, "--tcp-port") if config.tcp_port else []
    log.info(logfmt(event="open_files_limit", before=before, soft=soft, hard=hard))

    app = app or make_app(config)
    await start_components(app)
    app.settings["metrics"].loop_lag.start()
    # What start-up built lives on; collections are rarer (realtime.ops.gcpolicy).
    young, middle, old = gcpolicy.settle()
    log.info(logfmt(event="gc_thresholds", gen0=young, gen1=middle, gen2=old))
    # Tornado's HTTPServer with an accept loop that pauses, instead of spinning, when the
    # process runs out of descriptors (realtime/ops/accept.py).
    server = AcceptingHTTPServer(
        app, xheaders=config.xheaders,
        idle_connection_timeout=config.idle_connection_timeout,
        body_timeout=config.body_timeout,
    )
    server.add_sockets(http_sockets)
    host = "127.0.0.1" if config.address in ("", "0.0.0.0", "::") else config.address
    others: list[tornado.tcpserver.TCPServer] = []
    if line_sockets:
        lines = ChatLineServer.for_app(app)
        lines.add_sockets(line_sockets)
        others.append(lines)
        log.info("raw TCP chat on %s:%d (nc %s %d)", host, config.tcp_port, host,
                 config.tcp_port)
    log.info("serving on http://%s:%d/ (Ctrl-C to stop)", host, config.port)
    await stop.wait()
    return await shutdown(server, app, config.shutdown_timeout, others)


async def shutdown(
    server: tornado.httpserver.HTTPServer, app: tornado.web.Application, timeout: float,
    others: Sequence[tornado.tcpserver.TCPServer] = (),
) -> int:
    """Stop accepting, close every WebSocket with 1001, run the closers; 0 if all went well.

    ``others`` (the raw TCP chat) stop accepting with ``server``; their connections are the
    hub's, told the server is going away and closed with the WebSockets. Everything happens
    within ``timeout`` seconds: sockets get up to half of it to finish their closing
    handshakes, the closers what is left (``realtime.ops.lifecycle``).

    A WebSocket is not given time for its client's close reply: every close frame is
    written in one pass, the kernel gets up to ``DRAIN_SECONDS`` to take them, and the
    sockets still open are then closed (``handlers.websocket.abort_closing``), so the
    shutdown of many connections costs a send and a close each, no timer.
    """
    started = time.monotonic()
    deadline = started + timeout
    hub: Hub = app.settings["hub"]
    lifecycle: Lifecycle = app.settings["lifecycle"]
    gcpolicy.shutting_down()  # 10,000 connections: a full collection costs 0.1 s or more
    # Every kind: WebSockets, event streams, held requests, TCP lines.
    log.info("shutting down: closing %d connection(s)", len(hub.connections))
    server.stop()
    for other in others:
        other.stop()
    hub.close_all(CloseReason.SHUTDOWN)
    await wait_until(lambda: not any(c.unflushed_bytes() for c in hub.connections),
                     time.monotonic() + min(DRAIN_SECONDS, timeout / 4))
    aborted = abort_closing(list(hub.connections))
    await wait_until(lambda: not hub.connections, started + timeout / 2)
    log.info(logfmt(event="connections_closed", aborted=aborted,
                    seconds=round(time.monotonic() - started, 3)))
    clean = await lifecycle.shutdown(max(deadline - time.monotonic(), 0.1))
    try:
        remaining = max(deadline - time.monotonic(), 0.1)
        await asyncio.wait_for(server.close_all_connections(), remaining)
    except asyncio.TimeoutError:
        log.warning("shutdown: some HTTP connections were still open at the deadline")
    log.info("stopped%s", "" if clean else " (a shutdown closer failed; see above)")
    return 0 if clean else 1


async def wait_until(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll ``condition`` until it holds or the monotonic ``deadline`` passes."""
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


USAGE = """usage: tornado-realtime [--option VALUE ...]   (in a checkout: python server.py ...)

A real-time server on Tornado: echo, chat and live polls over WebSockets, event streams,
long-polling and raw TCP. Without options it serves http://127.0.0.1:8888/."""


def main() -> None:
    """Parse the environment and the command line (which wins), serve, exit with the status.

    ``--help`` prints the options and exits 0; a mistake in the options prints one line on
    stderr and exits with 2 (``realtime.ops.commandline``).
    """
    if help_requested(sys.argv[1:]):
        sys.stdout.write(help_text(Config, options, USAGE, HELP_GROUPS))
        sys.exit(0)
    try:
        parse(Config, options, sys.argv[1:], os.environ)
        config = config_from_options()
        check_config(config)
        status = asyncio.run(serve(config))
    except ConfigError as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(status)


if __name__ == "__main__":
    main()
