"""Fixtures shared by every test: a fresh hub and a fresh application per test."""

from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Optional

import pytest
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
def config(hub: Hub, tmp_path: Path) -> Config:
    """The test application's settings: the test's hub and a fresh data directory."""
    return Config(hub=hub, data_dir=str(tmp_path / "data"))


@pytest.fixture
def app(config: Config) -> Iterator[tornado.web.Application]:
    """The application as ``server.py`` builds it, from the test's config."""
    app = make_app(config)
    yield app
    app.settings["polls"].close()


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
