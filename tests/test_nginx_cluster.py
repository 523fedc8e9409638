"""The shipped deploy/nginx-cluster.conf, run by a real nginx in front of two real server
processes that share a real redis-server, each started with the command line of
deploy/realtime@.service.

The servers run the template's ExecStart for their port, with only the
virtual environment's programs (``python server.py`` from this checkout) and the state
directory (the test's) swapped in; the environment file's variables (Redis URL, pings,
allowed origin) reach them as systemd would pass them. nginx runs the shipped site with
its listen address, the two test ports instead of the four documented ones, and a
shortened read timeout. Which process nginx chose for a socket is read from each
process's own ``/healthz`` (its ``connections``), never from an answer that went through
nginx.
"""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.websocket import WebSocketClientConnection as Client

from tests.deploy import (
    DEPLOY, command, nginx_main_config, nginx_path, read_unit, rewrite, the_value,
    unit_environment,
)
from tests.support import (
    TIMEOUT, closed, connect_url, free_port, poll_until, receive_json, receive_type, send_json,
    wait_listening,
)

NGINX_HOST = "127.0.0.2"
CLIENT_IP = "127.0.0.3"
READ_TIMEOUT = 1  # seconds: nginx's proxy_read_timeout, shortened from 75
PING_INTERVAL = 0.25  # the servers' pings, well inside READ_TIMEOUT
MAX_SOCKETS = 8  # opened through nginx, at most, until both processes have one
PAGES = 30  # chat pages through nginx during the rolling restart
# A page's first retry comes within 0.5 s (static/js/socket.js); the test's pages keep that
# pace instead of backing off, so a page still out is one nginx refuses, not one waiting.
RETRY_DELAY = 0.25
RECONNECTED_WITHIN = 10  # seconds after the last restart: every page has a socket again


def render_site(nginx_port: int, ports: list[int]) -> str:
    """deploy/nginx-cluster.conf listening on the test's address, in front of ``ports``."""
    first, second = ports
    return rewrite((DEPLOY / "nginx-cluster.conf").read_text(), [
        (r"listen 80;", f"listen {NGINX_HOST}:{nginx_port};"),
        (r"server 127\.0\.0\.1:8001\b", f"server 127.0.0.1:{first}"),
        (r"server 127\.0\.0\.1:8002\b", f"server 127.0.0.1:{second}"),
        (r"\n *server 127\.0\.0\.1:8003\b[^\n]*", ""),
        (r"\n *server 127\.0\.0\.1:8004\b[^\n]*", ""),
        (r"proxy_read_timeout 75s;", f"proxy_read_timeout {READ_TIMEOUT}s;"),
    ], "deploy/nginx-cluster.conf")


class Cluster:
    """Two server processes of the template unit behind nginx, sharing a redis-server."""

    def __init__(self, spawn: Any, python: str, tmp_path: Path, redis_url: str) -> None:
        self.spawn, self.python, self.tmp_path = spawn, python, tmp_path
        self.redis_url = redis_url
        self.ports = [free_port(), free_port()]
        self.nginx_port = free_port(NGINX_HOST)
        self.servers: dict[int, Any] = {}
        self.commands: dict[int, tuple[list[str], dict[str, str]]] = {}  # argv, env file

    async def start(self, ping_interval: float = PING_INTERVAL) -> None:
        """Run ExecStart for each port, then nginx; wait until all listen."""
        unit = read_unit(DEPLOY / "realtime@.service")
        env_file = {
            "REALTIME_REDIS_URL": self.redis_url,
            "REALTIME_PING_INTERVAL": str(ping_interval),
            "REALTIME_PING_TIMEOUT": str(ping_interval),
            "REALTIME_ALLOWED_ORIGINS": f"http://{NGINX_HOST}:{self.nginx_port}",
        }
        env = unit_environment(unit, env_file)
        state = self.tmp_path / "state"  # systemd's StateDirectory=realtime
        state.mkdir()
        programs = {"/opt/realtime/venv/bin/tornado-realtime": [self.python, "server.py"]}
        paths = {"/var/lib/realtime": str(state)}
        for port in self.ports:
            self.commands[port] = (command(the_value(unit, "Service", "ExecStart"), str(port),
                                           env, programs, paths), env_file)
            self.servers[port] = self.spawn(f"server{port}", self.commands[port][0],
                                            env=env_file)
        site = self.tmp_path / "realtime.conf"
        site.write_text(render_site(self.nginx_port, self.ports))
        conf = self.tmp_path / "nginx.conf"
        conf.write_text(nginx_main_config(self.tmp_path, site))
        proxy = self.spawn("nginx", [nginx_path(), "-e", "stderr", "-p", str(self.tmp_path),
                                     "-c", str(conf)])
        for port, server in self.servers.items():
            await wait_listening("127.0.0.1", port, server)
        await wait_listening(NGINX_HOST, self.nginx_port, proxy)

    async def health(self, port: int) -> dict[str, Any]:
        """One process's own /healthz, fetched directly (not through nginx)."""
        answer = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz",
                                               raise_error=False)
        return json.loads(answer.body)

    async def healthy(self, port: int) -> bool:
        """Whether one process's own /healthz answers 200 (not through nginx)."""
        try:
            answer = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz",
                                                   raise_error=False)
        except OSError:  # not listening (yet)
            return False
        return answer.code == 200

    async def restart(self, port: int) -> None:
        """Restart one process as systemd does (SIGTERM, it exits 0 once its sockets are
        closed, then the same command again) and return once its /healthz answers 200, as
        the rolling restart of docs/scaling.md waits."""
        server = self.servers[port]
        server.terminate()
        await poll_until(lambda: server.poll() is not None, timeout=10)
        assert server.returncode == 0
        argv, env_file = self.commands[port]
        self.servers[port] = server = self.spawn(f"server{port}-restarted", argv, env=env_file)
        deadline = time.monotonic() + 10
        while not await self.healthy(port):  # no event announces it: ask, as curl would
            assert server.poll() is None, f"the process on {port} exited"
            assert time.monotonic() < deadline, f"no 200 from {port}/healthz after 10 s"
            await asyncio.sleep(0.05)

    async def open(self, ws_open: Any, path: str) -> Client:
        """A socket to ``path`` through nginx, from CLIENT_IP, as a page of the site opens it;
        returned once its first frame (welcome, or the poll) has arrived."""
        conn = await ws_open(f"ws://{NGINX_HOST}:{self.nginx_port}{path}",
                             {"Origin": f"http://{NGINX_HOST}:{self.nginx_port}"}, CLIENT_IP)
        await receive_json(conn)
        return conn

    async def one_socket_on_each(self, ws_open: Any, path: str) -> dict[int, Client]:
        """Open sockets through nginx until each process holds one; {port: a socket nginx
        routed to it}. A socket's process is the one whose connection count went up."""
        found: dict[int, Client] = {}
        counts = {port: (await self.health(port))["connections"] for port in self.ports}
        for _ in range(MAX_SOCKETS):
            conn = await self.open(ws_open, path)
            now = {port: (await self.health(port))["connections"] for port in self.ports}
            grew = [port for port in self.ports if now[port] > counts[port]]
            assert len(grew) == 1, f"connections went from {counts} to {now}"
            found.setdefault(grew[0], conn)
            counts = now
            if len(found) == len(self.ports):
                return found
        raise AssertionError(f"{MAX_SOCKETS} sockets through nginx all reached {list(found)}")


class Pages:
    """``count`` chat pages through nginx from CLIENT_IP, each keeping a socket open as
    static/js/socket.js does: whenever its socket closes or a handshake fails it tries again,
    RETRY_DELAY later, until a welcome comes. Counts the handshakes nginx answers with 502."""

    def __init__(self, cluster: Cluster, path: str, count: int) -> None:
        self.origin = f"http://{NGINX_HOST}:{cluster.nginx_port}"
        self.url = f"ws://{NGINX_HOST}:{cluster.nginx_port}{path}"
        self.welcomed = [False] * count  # page i has a socket open, its welcome received
        self.refused: list[float] = []  # when a handshake was answered 502 (monotonic)
        self.changed = asyncio.Event()  # set on every change of ``welcomed``
        self.tasks = [asyncio.create_task(self.keep_open(page)) for page in range(count)]
        for task in self.tasks:  # a page that crashed ends the wait, to be reported
            task.add_done_callback(lambda _: self.changed.set())

    def mark(self, page: int, welcomed: bool) -> None:
        self.welcomed[page] = welcomed
        self.changed.set()

    async def keep_open(self, page: int) -> None:
        """One page's loop: connect, wait for the welcome, hold the socket until it closes."""
        while True:
            try:
                conn = await connect_url(self.url, {"Origin": self.origin}, CLIENT_IP)
            except HTTPClientError as error:  # nginx's 502, or the server's refusal
                if error.code == 502:
                    self.refused.append(time.monotonic())
                await asyncio.sleep(RETRY_DELAY)
                continue
            try:
                first = await asyncio.wait_for(conn.read_message(), TIMEOUT)
                if isinstance(first, str) and json.loads(first)["type"] == "welcome":
                    self.mark(page, True)
                    while await conn.read_message() is not None:  # until the server closes
                        pass
            finally:
                conn.close()
                self.mark(page, False)
            await asyncio.sleep(RETRY_DELAY)

    async def all_welcomed(self, timeout: float) -> bool:
        """Whether every page has a welcomed socket open within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not all(self.welcomed):
            for task in self.tasks:
                if task.done():
                    task.result()  # raises what crashed the page
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                return False
        return True

    async def close(self) -> None:
        """Stop every page, closing its socket."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
def cluster(spawn, python, tmp_path, redis_server) -> Cluster:
    """Two processes of the template unit behind nginx-cluster.conf (call ``start()``)."""
    return Cluster(spawn, python, tmp_path, redis_server.url)


async def test_processes_share_redis_and_report_healthy(cluster):
    """Both processes run with the Redis broker and are healthy, nginx passes /healthz."""
    await cluster.start()
    for port in cluster.ports:
        assert (await cluster.health(port))["broker"] == {"name": "redis", "ok": True}
    answer = await AsyncHTTPClient().fetch(
        f"http://{NGINX_HOST}:{cluster.nginx_port}/healthz", network_interface=CLIENT_IP)
    assert json.loads(answer.body)["status"] == "ok"


async def test_chat_messages_cross_processes_through_nginx(cluster, ws_open):
    """nginx spreads sockets of one room over both processes, and a public message sent on
    either reaches the socket on the other."""
    await cluster.start()
    first, second = cluster.ports
    sockets = await cluster.one_socket_on_each(ws_open, "/ws/chat/lobby")
    for sender, receiver in ((first, second), (second, first)):
        text = f"from the process on {sender}"
        await send_json(sockets[sender], {"type": "message", "text": text})
        message = await receive_type(sockets[receiver], "message")
        assert (message["from"], message["text"]) == (None, text)
        assert (await receive_type(sockets[sender], "message"))["text"] == text


async def test_idle_sockets_on_both_processes_outlive_the_read_timeout(cluster, ws_open):
    """Sockets idle for three nginx read timeouts are still open on both processes (their
    pings keep them) and still carry messages from one process to the other."""
    await cluster.start()
    first, second = cluster.ports
    sockets = await cluster.one_socket_on_each(ws_open, "/ws/chat/idle")
    await asyncio.sleep(3 * READ_TIMEOUT)  # the idle period is the test
    await send_json(sockets[first], {"type": "message", "text": "still here"})
    assert (await receive_type(sockets[second], "message"))["text"] == "still here"


async def test_handshakes_go_to_the_other_process_when_one_stops(cluster, ws_open):
    """A process stopping closes its sockets with 1001; nginx sends the reconnects, and
    every new socket, to the process still running, which serves them."""
    await cluster.start()
    first, second = cluster.ports
    sockets = await cluster.one_socket_on_each(ws_open, "/ws/chat/lobby")
    cluster.servers[second].terminate()
    assert await closed(sockets[second]) == 1001
    await poll_until(lambda: cluster.servers[second].poll() is not None, timeout=10)
    assert cluster.servers[second].returncode == 0
    before = (await cluster.health(first))["connections"]
    for _ in range(4):
        await cluster.open(ws_open, "/ws/chat/lobby")
    assert (await cluster.health(first))["connections"] == before + 4


async def test_rolling_restart_readmits_every_page_at_once(cluster):
    """After a rolling restart paced by /healthz, every page is back within 10 s, no 502."""
    await cluster.start()
    pages = Pages(cluster, "/ws/chat/restart", PAGES)
    try:
        assert await pages.all_welcomed(TIMEOUT), "the pages never all connected"
        first, second = cluster.ports
        await cluster.restart(first)  # its pages go to the other process
        healthy_since = time.monotonic()
        await cluster.restart(second)  # every page now needs the first process
        reconnected = await pages.all_welcomed(RECONNECTED_WITHIN)
        out = pages.welcomed.count(False)
        refused = sum(1 for when in pages.refused if when > healthy_since)
        assert (reconnected, refused) == (True, 0), (
            f"{out} of {PAGES} pages without a socket {RECONNECTED_WITHIN} s after the last "
            f"restart; {refused} handshakes answered 502 after the first restarted process "
            f"answered /healthz ({len(pages.refused)} in all)")
    finally:
        await pages.close()
