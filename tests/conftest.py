"""Fixtures shared by every test: a fresh hub and a fresh application per test."""

from typing import Any, Awaitable, Callable, Iterator, Optional

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.websocket import WebSocketClientConnection as Client

from realtime.hub import Hub
from server import Config, make_app
from tests.support import connect


@pytest.fixture
def hub() -> Hub:
    """The hub behind the test's application."""
    return Hub()


@pytest.fixture
def config(hub: Hub) -> Config:
    """The configuration of the test's application; modules override it to change limits."""
    return Config(hub=hub)


@pytest.fixture
def app(config: Config) -> tornado.web.Application:
    """The application as ``server.py`` builds it, from the test's config."""
    return make_app(config)


@pytest.fixture
def ws_connect(http_server_client: Any) -> Iterator[Callable[..., Awaitable[Client]]]:
    """``await ws_connect(path)`` opens a real WebSocket to the test server; all close after."""
    opened: list[Client] = []

    async def open_socket(path: str, headers: Optional[dict[str, str]] = None) -> Client:
        conn = await connect(http_server_client, path, headers)
        opened.append(conn)
        return conn

    yield open_socket
    for conn in opened:
        conn.close()


@pytest.fixture
def start_server(io_loop: Any) -> Iterator[Callable[..., int]]:
    """``start_server(app, **server_options)`` serves ``app`` on a free loopback port and
    returns the port; for tests that need HTTPServer options (``xheaders``). Stopped after."""
    servers: list[tornado.httpserver.HTTPServer] = []

    def start(app: tornado.web.Application, **server_options: Any) -> int:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", backlog=1024)
        server = tornado.httpserver.HTTPServer(app, **server_options)
        server.add_sockets(sockets)
        servers.append(server)
        return int(sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.stop()
        io_loop.run_sync(server.close_all_connections, timeout=10)
