"""The real-time server: options, ``make_app(...)`` and ``main()``.

Run ``python server.py --help`` for the options. ``make_app`` builds the Tornado application
from a ``Config`` and never reads the global options, so tests build a fresh app each time.
"""

import asyncio
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from typing import Optional

import tornado.httpserver
import tornado.options
import tornado.web
from tornado.options import define, options
from tornado.web import url

from handlers.chat import ChatPageHandler, ChatSocketHandler
from handlers.echo import EchoSocketHandler
from handlers.pages import HealthHandler, NotFoundPageHandler, PageHandler
from handlers.vote import (
    PollApiHandler, PollPageHandler, PollsApiHandler, VotePageHandler, VoteSocketHandler,
)
from realtime import chat
from realtime.closecodes import CloseCode
from realtime.hub import DEFAULT_MAX_PENDING_BYTES, Hub
from realtime.polls import DB_FILENAME, PollStore
from realtime.ratelimit import KeyedLimiter

HERE = os.path.dirname(os.path.abspath(__file__))
log = logging.getLogger("realtime.server")


@dataclass
class Config:
    """Everything ``make_app`` needs; ``main()`` fills it from the command line."""

    debug: bool = False
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    chat_history: int = chat.DEFAULT_HISTORY
    chat_replay: int = chat.DEFAULT_REPLAY
    chat_max_rooms: int = chat.DEFAULT_MAX_ROOMS
    hub: Optional[Hub] = field(default=None, repr=False)  # a ready hub, e.g. a test's
    # Where the poll database and the generated cookie secret live; None keeps polls in
    # memory and draws a new cookie secret (tests, throwaway servers). main() always sets it.
    data_dir: Optional[str] = None
    cookie_secret: Optional[str] = field(default=None, repr=False)  # None: see data_dir
    polls_per_hour: float = 60.0  # polls one client IP may create per hour, on average
    poll_burst: int = 10  # polls one client IP may create at once


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
    """Build the application: pages, health check and WebSocket endpoints on one hub.

    The poll store is in ``app.settings["polls"]``; whoever built the app closes it.
    """
    config = config or Config()
    hub = config.hub or Hub(max_pending_bytes=config.max_pending_bytes)
    rooms = chat.Rooms(config.chat_history, config.chat_replay, config.chat_max_rooms)
    sockets = dict(hub=hub)
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
    votes = dict(store=store)
    poll_limiter = KeyedLimiter(rate=config.polls_per_hour / 3600, burst=config.poll_burst)
    routes = [
        url(r"/", PageHandler, dict(template="index.html"), name="index"),
        url(r"/echo", PageHandler, dict(template="echo.html"), name="echo"),
        url(r"/chat", ChatPageHandler, dict(template="chat.html"), name="chat"),
        url(r"/healthz", HealthHandler, dict(hub=hub), name="healthz"),
        url(r"/ws/echo", EchoSocketHandler, sockets, name="ws_echo"),
        url(rf"/ws/chat/({chat.ROOM_PATTERN})", ChatSocketHandler, dict(sockets, rooms=rooms),
            name="ws_chat"),
        url(r"/vote", VotePageHandler, votes, name="vote"),
        url(r"/vote/([^/]+)", PollPageHandler, votes, name="vote_poll"),
        url(r"/api/polls", PollsApiHandler, dict(votes, limiter=poll_limiter), name="api_polls"),
        url(r"/api/polls/([^/]+)", PollApiHandler, votes, name="api_poll"),
        url(r"/ws/vote/([^/]+)", VoteSocketHandler, dict(sockets, store=store), name="ws_vote"),
    ]
    app = tornado.web.Application(
        routes,
        template_path=os.path.join(HERE, "templates"),
        static_path=os.path.join(HERE, "static"),
        default_handler_class=NotFoundPageHandler,
        debug=config.debug,
        xsrf_cookies=False,  # no HTML form posts back to us; the JSON API is checked apart
        cookie_secret=cookie_secret or secrets.token_urlsafe(48),
    )
    # For main()'s shutdown; handlers get them through initialize().
    app.settings["hub"] = hub
    app.settings["polls"] = store
    return app


define("port", default=8888, type=int, help="TCP port to listen on")
define("address", default="127.0.0.1", help="address to bind; 0.0.0.0 for every interface")
define("debug", default=False, type=bool, help="reload on code change, show tracebacks in pages")
define("max_pending_bytes", default=DEFAULT_MAX_PENDING_BYTES, type=int,
       help="unflushed bytes a WebSocket may have before it is dropped as a slow consumer")
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
    """The Config the command line asks for."""
    secret_file = options.cookie_secret_file
    cookie_secret = load_cookie_secret(secret_file) if secret_file else None
    return Config(
        debug=options.debug,
        max_pending_bytes=options.max_pending_bytes,
        data_dir=options.data_dir,
        cookie_secret=cookie_secret,
        polls_per_hour=options.polls_per_hour,
        chat_history=options.chat_history,
        chat_replay=options.chat_replay,
        chat_max_rooms=options.chat_max_rooms,
        poll_burst=options.poll_burst,
    )


async def serve() -> None:
    """Serve until SIGINT or SIGTERM, then close every socket with 1001 and return."""
    app = make_app(config_from_options())
    store: PollStore = app.settings["polls"]
    await store.start()  # a database that cannot open stops us here, not at the first vote
    server = tornado.httpserver.HTTPServer(app)
    server.listen(options.port, options.address)
    host = "127.0.0.1" if options.address in ("", "0.0.0.0", "::") else options.address
    log.info("serving on http://%s:%d/ (Ctrl-C to stop)", host, options.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("shutting down")
    server.stop()
    app.settings["hub"].close_all(CloseCode.GOING_AWAY, "server shutting down")
    await server.close_all_connections()
    store.close()  # after the last handler: queued votes are committed first


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


def main() -> None:
    """Parse the command line and serve."""
    tornado.options.parse_command_line(join_option_values(sys.argv))
    asyncio.run(serve())


if __name__ == "__main__":
    main()
