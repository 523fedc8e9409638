"""Fixtures shared by every test: a fresh hub and a fresh application per test."""

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Optional

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.websocket import WebSocketClientConnection as Client

from realtime.pubsub.hub import Hub
from server import Config, make_app, start_components
from tests.cluster import Cluster
from tests.redis_server import RedisServer
from tests.support import connect_url, stop_process, ws_url


@pytest.fixture
def hub() -> Hub:
    """The hub behind the test's application."""
    return Hub()


@pytest.fixture
def config(hub: Hub, tmp_path: Path) -> Config:
    """The test application's settings: the test's hub and a fresh data directory."""
    return Config(hub=hub, data_dir=str(tmp_path / "data"))


@pytest.fixture
def app(config: Config, io_loop: Any) -> Iterator[tornado.web.Application]:
    """The application as ``server.py`` builds it, from the test's config."""
    app = make_app(config)
    yield app
    io_loop.run_sync(app.settings["polls"].aclose, timeout=10)  # SQLite's or Redis's


@pytest.fixture
def http_server_client(http_server_client: Any, app: tornado.web.Application) -> Any:
    """pytest-tornasync's client of the test's server. Its server asks for ``app`` only at
    run time; naming it here lets a parametrized config (``polls_on``) parametrize every test
    that talks to the server."""
    return http_server_client


@pytest.fixture(scope="session")
def session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real ``redis-server`` for the whole run, for the suites that run on Redis too
    (``polls_on``); each test keeps to a key prefix of its own."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


PREFIXES = itertools.count()  # a Redis key prefix per test: tests share session_redis


@pytest.fixture(params=["embedded", "redis"])
def polls_on(
    request: pytest.FixtureRequest, hub: Hub, tmp_path: Path, io_loop: Any
) -> Iterator[dict[str, Any]]:
    """``Config`` arguments that put the test's polls and tallies on each backend in turn:
    ``embedded`` (SQLite in a fresh data directory, the in-process broker) and ``redis``
    (``RedisPollStore`` and ``RedisBroker``, started, on ``session_redis`` under a prefix of
    the test's own). A suite runs on both with ``def config(polls_on): return
    Config(**polls_on)``; a test about SQLite alone stays embedded with
    ``@pytest.mark.parametrize("polls_on", ["embedded"], indirect=True)`` and a comment
    saying why."""
    data_dir = str(tmp_path / "data")
    if request.param == "embedded":
        yield dict(hub=hub, data_dir=data_dir)
        return
    from realtime.pubsub.redisbroker import RedisBroker  # the optional `redis` extra
    from realtime.votes.redisstore import RedisPollStore

    url = request.getfixturevalue("session_redis").url
    prefix = f"test{next(PREFIXES)}:"
    broker = RedisBroker(url, prefix)
    store = RedisPollStore(url, prefix)
    io_loop.run_sync(broker.start, timeout=10)
    try:
        yield dict(hub=Hub(broker=broker), polls=store, data_dir=data_dir)
    finally:
        io_loop.run_sync(broker.close, timeout=10)
        io_loop.run_sync(store.aclose, timeout=10)  # harmless if the app closed it


@pytest.fixture
def ws_open() -> Iterator[Callable[..., Awaitable[Client]]]:
    """``await ws_open(url, headers, source_ip)`` opens a real WebSocket to any ws:// URL
    (a server process, nginx); every one is closed after the test."""
    opened: list[Client] = []

    async def open_socket(url: str, headers: Optional[dict[str, str]] = None,
                          source_ip: Optional[str] = None) -> Client:
        conn = await connect_url(url, headers, source_ip)
        opened.append(conn)
        return conn

    yield open_socket
    for conn in opened:
        conn.close()


@pytest.fixture
def ws_connect(
    http_server_client: Any, ws_open: Callable[..., Awaitable[Client]]
) -> Callable[..., Awaitable[Client]]:
    """``await ws_connect(path)`` opens a real WebSocket to the test server; all close after."""

    async def open_socket(path: str, headers: Optional[dict[str, str]] = None) -> Client:
        return await ws_open(ws_url(http_server_client, path), headers)

    return open_socket


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


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:  # type: ignore[type-arg]
    """``spawn(name, argv)`` starts a process in the repository root, its stdout and stderr
    going to ``tmp_path/<name>.log``; every process still running is killed after the test."""
    processes: list[subprocess.Popen] = []  # type: ignore[type-arg]

    def start(name: str, argv: list[str], env: Optional[dict[str, str]] = None) -> Any:
        log = open(tmp_path / f"{name}.log", "wb")
        process = subprocess.Popen(
            argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        )
        log.close()
        processes.append(process)
        return process

    yield start
    for process in processes:
        stop_process(process)


@pytest.fixture
def python() -> str:
    """The interpreter running the tests, for subprocesses."""
    return sys.executable


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` of the test's own (tests/redis_server.py), answering PING;
    stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


def backend_settings(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """``Config`` arguments for a chat and poll backend: none for ``"embedded"``; for
    ``"redis"``, ``--redis-url`` on ``session_redis`` under a key prefix of the test's own."""
    if backend == "embedded":
        return {}
    return dict(redis_url=request.getfixturevalue("session_redis").url,
                redis_prefix=f"test{next(PREFIXES)}:")


@pytest.fixture
def running_app(config: Config, io_loop: Any) -> Iterator[tornado.web.Application]:
    """The application from the test's config with its stores and broker started, as
    ``serve()`` starts them; its lifecycle shuts it down after the test. A module whose
    tests need it defines ``app`` as this."""
    app = make_app(config)
    io_loop.run_sync(lambda: start_components(app), timeout=15)
    yield app
    io_loop.run_sync(lambda: app.settings["lifecycle"].shutdown(10), timeout=15)


@pytest.fixture
def redis_kind() -> str:
    """The Redis the ``cluster`` fixture starts: ``"single"``; a test marked
    ``on_both_redis`` (tests/cluster.py) runs on ``"cluster"`` too."""
    return "single"


@pytest.fixture
def cluster(tmp_path: Path, python: str, redis_kind: str) -> Iterator[Cluster]:
    """Real ``server.py`` processes sharing one real ``redis-server`` (or Redis Cluster:
    ``redis_kind``) and one cookie secret (tests/cluster.py): ``a, b = await
    cluster.start(2)``; all stopped by pid after the test."""
    cluster = Cluster(tmp_path / "cluster", python, redis_kind)
    try:
        yield cluster
    finally:
        cluster.stop()
