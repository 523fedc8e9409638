"""The real-time server: options, ``make_app(...)``, ``serve()`` and ``main()``.

Run ``python server.py --help`` for the options; each can also come from the environment as
``REALTIME_<OPTION>`` (``--max-message-size`` is ``REALTIME_MAX_MESSAGE_SIZE``), a flag
winning over the variable. ``make_app`` builds the Tornado application from a ``Config`` and
never reads the global options, so tests build a fresh app each time.
"""

import asyncio
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import tornado.httpserver
import tornado.netutil
import tornado.options
import tornado.web
from tornado.options import define, options
from tornado.web import url

from handlers.base import SocketHandler
from handlers.chat import ChatPageHandler, ChatSocketHandler
from handlers.echo import EchoSocketHandler
from handlers.pages import HealthHandler, MetricsHandler, NotFoundPageHandler, PageHandler
from handlers.vote import (
    PollApiHandler, PollPageHandler, PollsApiHandler, VotePageHandler, VoteSocketHandler,
)
from realtime import chat, limits
from realtime.closecodes import CloseCode
from realtime.hub import DEFAULT_MAX_PENDING_BYTES, Hub
from realtime.lifecycle import Lifecycle
from realtime.limits import IPConnections, RateLimit
from realtime.logfmt import logfmt
from realtime.metrics import Registry, ServerMetrics
from realtime.origins import OriginPolicy
from realtime.polls import DB_FILENAME, PollStore
from realtime.ratelimit import Clock, KeyedLimiter

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_PREFIX = "REALTIME_"
# Pending connections the kernel queues for us: room for every client of a restarted
# server reconnecting at once (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024

log = logging.getLogger("realtime.server")
access_log = logging.getLogger("realtime.access")


@dataclass
class Config:
    """Everything ``make_app`` and ``serve`` need; ``main()`` fills it from the options."""

    port: int = 8888
    address: str = "127.0.0.1"
    debug: bool = False
    xheaders: bool = False  # trust X-Real-IP / X-Forwarded-* (only behind a proxy)
    allowed_origins: tuple[str, ...] = ()  # besides the same host; exact scheme://host[:port]
    ping_interval: float = 25.0  # seconds between server pings; 0: never ping
    ping_timeout: float = 10.0  # seconds to wait for the pong before closing
    max_message_size: int = 64 * 1024  # bytes of one incoming message; more closes with 1009
    rate_limit: float = limits.DEFAULT_RATE  # frames per second per connection; 0: no limit
    rate_burst: int = limits.DEFAULT_BURST
    rate_limit_strikes: int = limits.DEFAULT_STRIKES
    ip_rate_limit: float = limits.DEFAULT_IP_RATE  # frames/s per client address; 0: no limit
    ip_rate_burst: int = limits.DEFAULT_IP_BURST
    room_rate_limit: float = limits.DEFAULT_ROOM_RATE  # deliveries/s per chat room; 0: none
    room_rate_burst: int = limits.DEFAULT_ROOM_BURST
    max_connections_per_ip: int = limits.DEFAULT_MAX_CONNECTIONS_PER_IP  # 0: no limit
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    shutdown_timeout: float = 4.0  # seconds from SIGTERM to exit, closers included
    chat_history: int = chat.DEFAULT_HISTORY
    chat_replay: int = chat.DEFAULT_REPLAY
    chat_max_rooms: int = chat.DEFAULT_MAX_ROOMS
    # Where the poll database and the generated cookie secret live; None keeps polls in
    # memory and draws a new cookie secret (tests, throwaway servers). main() always sets it.
    data_dir: Optional[str] = None
    cookie_secret: Optional[str] = field(default=None, repr=False)  # None: see data_dir
    polls_per_hour: float = 60.0  # polls one client IP may create per hour, on average
    poll_burst: int = 10  # polls one client IP may create at once
    hub: Optional[Hub] = field(default=None, repr=False)  # a ready hub, e.g. a test's
    lifecycle: Optional[Lifecycle] = field(default=None, repr=False)  # a ready one, for tests
    clock: Optional[Clock] = field(default=None, repr=False)  # rate-limit clock, for tests


COOKIE_SECRET_FILENAME = "cookie_secret"


def load_cookie_secret(path: str) -> str:
    """The cookie secret kept in ``path``, generated (readable by the owner only) if missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="ascii") as file:
            secret = file.read().strip()
        if len(secret) < 32:
            raise ValueError(f"{path}: a cookie secret needs 32 characters or more")
        return secret
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secret + "\n")
    return secret


def make_app(config: Optional[Config] = None) -> tornado.web.Application:
    """Build the application: pages, health, metrics and WebSocket endpoints on one hub.

    ``app.settings`` carries ``hub``, ``metrics``, ``lifecycle`` and ``polls`` (the poll
    store) for ``serve()`` (register async closers with ``lifecycle.on_shutdown(...)`` where
    a component is built here) and ``sockets``, the dependencies of every socket route, for
    routes added afterwards. Whoever builds the app without ``serve()`` closes the store.
    """
    config = config or Config()
    hub = config.hub or Hub(max_pending_bytes=config.max_pending_bytes)
    lifecycle = config.lifecycle or Lifecycle()
    registry = Registry()
    metrics = ServerMetrics(registry, hub)
    # What every socket route gets; routes with more dependencies pass dict(sockets, ...).
    sockets = dict(
        hub=hub,
        origins=OriginPolicy(config.allowed_origins),
        rate_limit=RateLimit(config.rate_limit, config.rate_burst, config.rate_limit_strikes,
                             clock=config.clock),
        ip_connections=IPConnections(config.max_connections_per_ip),
        metrics=metrics,
        ip_rate=keyed_limiter(config.ip_rate_limit, config.ip_rate_burst, config.clock),
    )
    room_rate = keyed_limiter(config.room_rate_limit, config.room_rate_burst, config.clock)
    rooms = chat.Rooms(config.chat_history, config.chat_replay, config.chat_max_rooms)
    cookie_secret = config.cookie_secret
    db_path = None
    if config.data_dir is not None:
        os.makedirs(config.data_dir, exist_ok=True)
        db_path = os.path.join(config.data_dir, DB_FILENAME)
        if cookie_secret is None:
            cookie_secret = load_cookie_secret(
                os.path.join(config.data_dir, COOKIE_SECRET_FILENAME)
            )
    store = PollStore(db_path)
    lifecycle.on_shutdown(store.aclose, "poll store")  # pending votes are committed first
    votes = dict(store=store)
    poll_limiter = KeyedLimiter(rate=config.polls_per_hour / 3600, burst=config.poll_burst)
    routes = name_socket_endpoints([
        url(r"/", PageHandler, dict(template="index.html"), name="index"),
        url(r"/echo", PageHandler, dict(template="echo.html"), name="echo"),
        url(r"/chat", ChatPageHandler, dict(template="chat.html"), name="chat"),
        url(r"/vote", VotePageHandler, votes, name="vote"),
        url(r"/vote/([^/]+)", PollPageHandler, votes, name="vote_poll"),
        url(r"/api/polls", PollsApiHandler, dict(votes, limiter=poll_limiter), name="api_polls"),
        url(r"/api/polls/([^/]+)", PollApiHandler, votes, name="api_poll"),
        url(r"/healthz", HealthHandler, dict(hub=hub), name="healthz"),
        url(r"/metrics", MetricsHandler, dict(registry=registry), name="metrics"),
        url(r"/ws/echo", EchoSocketHandler, sockets, name="ws_echo"),
        url(rf"/ws/chat/({chat.ROOM_PATTERN})", ChatSocketHandler,
            dict(sockets, rooms=rooms, room_rate=room_rate), name="ws_chat"),
        url(r"/ws/vote/([^/]+)", VoteSocketHandler, dict(sockets, store=store), name="ws_vote"),
    ])
    app = tornado.web.Application(
        routes,
        template_path=os.path.join(HERE, "templates"),
        static_path=os.path.join(HERE, "static"),
        default_handler_class=NotFoundPageHandler,
        debug=config.debug,
        xsrf_cookies=False,  # no HTML form posts back to us; the JSON API is checked apart
        log_function=log_request,
        websocket_ping_interval=config.ping_interval or None,
        websocket_ping_timeout=config.ping_timeout or None,
        websocket_max_message_size=config.max_message_size,
        cookie_secret=cookie_secret or secrets.token_urlsafe(48),
    )
    # For serve() and for routes added later (tests); handlers get their dependencies
    # through initialize().
    app.settings.update(
        hub=hub, metrics=metrics, lifecycle=lifecycle, sockets=sockets, polls=store
    )
    return app


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


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log: one ``key=value`` line per request (the path, never the query)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    access_log.log(level, logfmt(
        method=request.method, path=request.path, status=status,
        duration_ms=1000.0 * request.request_time(), ip=request.remote_ip,
    ))


define("port", default=8888, type=int, help="TCP port to listen on")
define("address", default="127.0.0.1", help="address to bind; 0.0.0.0 for every interface")
define("debug", default=False, type=bool, help="reload on code change, show tracebacks in pages")
define("xheaders", default=False, type=bool,
       help="trust X-Real-IP / X-Forwarded-For / X-Forwarded-Proto (only behind a proxy)")
define("allowed_origins", default=[], type=str, multiple=True,
       help="comma-separated origins (scheme://host[:port]) that may open WebSockets, "
            "besides pages of the same host")
define("ping_interval", default=25.0, type=float,
       help="seconds between WebSocket pings (keeps proxies from cutting idle sockets); 0: off")
define("ping_timeout", default=10.0, type=float,
       help="seconds to wait for a pong before closing the socket (at most --ping-interval)")
define("max_message_size", default=64 * 1024, type=int,
       help="largest incoming WebSocket message in bytes; larger closes with 1009")
define("rate_limit", default=limits.DEFAULT_RATE, type=float,
       help="frames per second each WebSocket may send, sustained; 0: no limit")
define("rate_burst", default=limits.DEFAULT_BURST, type=int,
       help="frames a WebSocket may send at once after a pause")
define("rate_limit_strikes", default=limits.DEFAULT_STRIKES, type=int,
       help="rate-limited frames in a row after which the socket is closed with 1008")
define("ip_rate_limit", default=limits.DEFAULT_IP_RATE, type=float,
       help="frames per second one client address may send over all its WebSockets; 0: no limit")
define("ip_rate_burst", default=limits.DEFAULT_IP_BURST, type=int,
       help="frames one client address may send at once after a pause")
define("room_rate_limit", default=limits.DEFAULT_ROOM_RATE, type=float,
       help="deliveries per second one chat room may cause (a message to N listeners costs N); "
            "0: no limit")
define("room_rate_burst", default=limits.DEFAULT_ROOM_BURST, type=int,
       help="deliveries one chat room may cause at once after a pause")
define("max_connections_per_ip", default=limits.DEFAULT_MAX_CONNECTIONS_PER_IP, type=int,
       help="open WebSockets per client address; more are refused with 429; 0: no limit")
define("max_pending_bytes", default=DEFAULT_MAX_PENDING_BYTES, type=int,
       help="unflushed bytes a WebSocket may have before it is dropped as a slow consumer")
define("shutdown_timeout", default=4.0, type=float,
       help="seconds from SIGTERM/SIGINT to exit, closing sockets and closers included")
define("chat_history", default=chat.DEFAULT_HISTORY, type=int,
       help="chat messages a newcomer is shown")
define("chat_replay", default=chat.DEFAULT_REPLAY, type=int,
       help="chat messages each room keeps for clients that reconnect with ?since=")
define("chat_max_rooms", default=chat.DEFAULT_MAX_ROOMS, type=int,
       help="chat rooms held at once; idle empty rooms are forgotten first past it")
define("data_dir", default=os.path.join(HERE, "data"),
       help="directory of the poll database and the generated cookie secret")
define("cookie_secret_file", default="",
       help="file holding the secret that signs voter cookies; generated if missing "
       "(default: cookie_secret in data_dir)")
define("polls_per_hour", default=60.0, type=float,
       help="polls one client IP may create per hour, on average")
define("poll_burst", default=10, type=int, help="polls one client IP may create at once")


def config_from_options() -> Config:
    """The Config the parsed command line (and environment) describes."""
    return Config(
        port=options.port,
        address=options.address,
        debug=options.debug,
        xheaders=options.xheaders,
        allowed_origins=tuple(options.allowed_origins),
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        max_message_size=options.max_message_size,
        rate_limit=options.rate_limit,
        rate_burst=options.rate_burst,
        rate_limit_strikes=options.rate_limit_strikes,
        ip_rate_limit=options.ip_rate_limit,
        ip_rate_burst=options.ip_rate_burst,
        room_rate_limit=options.room_rate_limit,
        room_rate_burst=options.room_rate_burst,
        max_connections_per_ip=options.max_connections_per_ip,
        max_pending_bytes=options.max_pending_bytes,
        shutdown_timeout=options.shutdown_timeout,
        chat_history=options.chat_history,
        chat_replay=options.chat_replay,
        chat_max_rooms=options.chat_max_rooms,
        data_dir=options.data_dir,
        cookie_secret=(
            load_cookie_secret(options.cookie_secret_file) if options.cookie_secret_file else None
        ),
        polls_per_hour=options.polls_per_hour,
        poll_burst=options.poll_burst,
    )


async def serve(config: Config, app: Optional[tornado.web.Application] = None) -> int:
    """Serve ``app`` (default: ``make_app(config)``) until SIGINT or SIGTERM, then shut down
    gracefully; return the exit status."""
    # Signals first: a SIGTERM arriving as soon as the port accepts is already graceful.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    app = app or make_app(config)
    # A database that cannot open stops us here, not at the first vote.
    await app.settings["polls"].start()
    server = tornado.httpserver.HTTPServer(app, xheaders=config.xheaders)
    server.add_sockets(
        tornado.netutil.bind_sockets(config.port, config.address, backlog=LISTEN_BACKLOG)
    )
    host = "127.0.0.1" if config.address in ("", "0.0.0.0", "::") else config.address
    log.info("serving on http://%s:%d/ (Ctrl-C to stop)", host, config.port)
    await stop.wait()
    return await shutdown(server, app, config.shutdown_timeout)


async def shutdown(
    server: tornado.httpserver.HTTPServer, app: tornado.web.Application, timeout: float
) -> int:
    """Stop accepting, close every WebSocket with 1001, run the closers; 0 if all went well.

    Everything happens within ``timeout`` seconds: sockets get up to half of it to finish
    their closing handshakes, the closers what is left (``realtime.lifecycle``).
    """
    deadline = time.monotonic() + timeout
    hub: Hub = app.settings["hub"]
    lifecycle: Lifecycle = app.settings["lifecycle"]
    log.info("shutting down: closing %d WebSocket(s)", len(hub.connections))
    server.stop()
    hub.close_all(CloseCode.GOING_AWAY, "server shutting down")
    await wait_until(lambda: not hub.connections, time.monotonic() + timeout / 2)
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


def join_option_values(argv: list[str]) -> list[str]:
    """Turn ``--port 9000`` into ``--port=9000``: tornado.options only takes the second form."""
    joined: list[str] = []
    args = iter(argv)
    for arg in args:
        name = arg[2:].replace("-", "_")
        takes_value = name in options and not isinstance(getattr(options, name), bool)
        if arg.startswith("--") and "=" not in arg and takes_value:
            value = next(args, None)
            joined.append(arg if value is None else f"{arg}={value}")
        else:
            joined.append(arg)
    return joined


def environment_args(environ: dict[str, str]) -> list[str]:
    """``REALTIME_PORT=9000`` as ``--port=9000``, for every defined option set in ``environ``."""
    args = []
    for name in sorted(options.as_dict()):
        value = environ.get(ENV_PREFIX + name.upper().replace("-", "_"))
        if value is not None:
            args.append(f"--{name}={value}")
    return args


def main() -> None:
    """Parse the environment and the command line (which wins), serve, exit with the status."""
    argv = [sys.argv[0], *environment_args(dict(os.environ)),
            *join_option_values(sys.argv[1:])]
    tornado.options.parse_command_line(argv)
    sys.exit(asyncio.run(serve(config_from_options())))


if __name__ == "__main__":
    main()
