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
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import WebSocketClientConnection as Client

from tests.deploy import (
    DEPLOY, command, nginx_main_config, nginx_path, read_unit, rewrite, the_value,
    unit_environment,
)
from tests.support import (
    closed, free_port, poll_until, receive_json, receive_type, send_json, wait_listening,
)

NGINX_HOST = "127.0.0.2"
CLIENT_IP = "127.0.0.3"
READ_TIMEOUT = 1  # seconds: nginx's proxy_read_timeout, shortened from 75
PING_INTERVAL = 0.25  # the servers' pings, well inside READ_TIMEOUT
MAX_SOCKETS = 8  # opened through nginx, at most, until both processes have one


def render_site(nginx_port: int, ports: list[int]) -> str:
    """deploy/nginx-cluster.conf listening on the test's address, in front of ``ports``."""
    first, second = ports
    return rewrite((DEPLOY / "nginx-cluster.conf").read_text(), [
        (r"listen 80;", f"listen {NGINX_HOST}:{nginx_port};"),
        (r"server 127\.0\.0\.1:8001;", f"server 127.0.0.1:{first};"),
        (r"server 127\.0\.0\.1:8002;", f"server 127.0.0.1:{second};"),
        (r"\n *server 127\.0\.0\.1:8003;[^\n]*", ""),
        (r"\n *server 127\.0\.0\.1:8004;[^\n]*", ""),
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
            self.servers[port] = self.spawn(f"server{port}", command(
                the_value(unit, "Service", "ExecStart"), str(port), env, programs, paths),
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
