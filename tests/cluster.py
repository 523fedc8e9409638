"""Several real ``server.py`` processes sharing one real ``redis-server``, as a deployment
runs them behind its proxy: for tests of what crosses processes.

The ``cluster`` fixture (``tests/conftest.py``) hands a test an empty ``Cluster``::

    async def test_tally_crosses(cluster, ws_open):
        a, b = await cluster.start(2)
        conn = await ws_open(b.ws_url("/ws/vote/demo"))
        ...
        cluster.redis.kill()          # SIGKILL Redis mid-run
        await cluster.redis.restart()  # back on the same port, with the same directory

``start(n)`` starts the ``redis-server`` (``tests/redis_server.RedisServer``: a free loopback
port, its own directory, settings from ``redis_config``, e.g. ``shipped_settings(...)``) on
its first call, or with ``Cluster(..., redis_kind="cluster")`` a Redis Cluster of three
masters and three replicas (``tests/redis_cluster.RedisClusterServers``, ``redis+cluster://``;
``redis.kill()`` and ``redis.restart()`` then act on all six). A test runs on both with the
``on_both_redis`` mark (it parametrizes the ``redis_kind`` fixture). Then it starts ``n``
processes at once, each ``python server.py --port <free>
--address 127.0.0.1 --redis-url <that Redis> --data-dir <its own> --cookie-secret-file
<one shared file>`` plus the test's ``options``, run from the repository root, its output in
``<directory>/server<i>.log``; it returns once every one listens. ``stop()`` ends every
process by its pid (SIGTERM to all, then each waited for, SIGKILL after 5 s), then Redis;
the fixture calls it after the test, passed or failed.
"""

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest
import redis.asyncio

from realtime.storage.rediskeys import topic_channel
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer
from tests.support import TIMEOUT, free_port, stop_process, wait_listening

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PREFIX = "realtime:"  # server.py's --redis-prefix
REDIS_KINDS = ["single", "cluster"]  # one redis-server; a Redis Cluster of three masters
# Runs a test on one Redis and on a Redis Cluster (the ``redis_kind`` fixture).
on_both_redis = pytest.mark.parametrize("redis_kind", REDIS_KINDS)


@dataclass
class Node:
    """One server process of the cluster."""

    name: str  # "server0", "server1", ...
    process: subprocess.Popen  # type: ignore[type-arg]
    port: int
    data_dir: Path
    log: Path  # its stdout and stderr

    def url(self, path: str = "/") -> str:
        """The http:// URL of ``path`` on this process."""
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        """The ws:// URL of ``path`` on this process."""
        return f"ws://127.0.0.1:{self.port}{path}"


class Cluster:
    """A Redis and the server processes sharing it; see the module docstring.

    Args:
        directory: where Redis, the data directories, the shared cookie secret and the logs
            go (created).
        python: the interpreter that runs ``server.py``.
        redis_kind: ``"single"``, one ``redis-server``, or ``"cluster"``, a Redis Cluster.
    """

    def __init__(self, directory: Path, python: str = sys.executable,
                 redis_kind: str = "single") -> None:
        assert redis_kind in REDIS_KINDS, redis_kind
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.redis_kind = redis_kind
        self.redis: Optional[Union[RedisServer, RedisClusterServers]] = None  # once started
        self.nodes: list[Node] = []
        # Not created here: the processes create it, racing, as a deployment's would.
        self.cookie_secret_file = directory / "cookie_secret"

    async def start(self, n: int, *options: str,
                    redis_config: Optional[dict[str, str]] = None) -> list[Node]:
        """Start Redis (first call only; ``redis_config`` applies then) and ``n`` more server
        processes with ``options``; return those processes once each listens."""
        if self.redis is None and self.redis_kind == "cluster":
            assert redis_config is None, "settings for a cluster's nodes: not supported yet"
            self.redis = RedisClusterServers(self.directory / "redis")  # stop() ends it
            await self.redis.start()
        elif self.redis is None:
            self.redis = RedisServer(self.directory / "redis", redis_config).start()
        started = []
        for _ in range(n):
            name = f"server{len(self.nodes)}"
            port = free_port()
            data_dir = self.directory / name
            log = self.directory / f"{name}.log"
            argv = [self.python, "server.py", "--port", str(port), "--address", "127.0.0.1",
                    "--redis-url", self.redis.url, "--data-dir", str(data_dir),
                    "--cookie-secret-file", str(self.cookie_secret_file), *options]
            with open(log, "wb") as output:
                process = subprocess.Popen(
                    argv, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
            node = Node(name, process, port, data_dir, log)
            self.nodes.append(node)  # stop() ends it even if it never listens
            started.append(node)
        await asyncio.gather(*map(self._listening, started))
        return started

    async def _listening(self, node: Node) -> None:
        try:
            await wait_listening("127.0.0.1", node.port, node.process)
        except AssertionError as error:
            tail = node.log.read_text()[-3000:]
            raise AssertionError(f"{node.name}: {error}; its log ends:\n{tail}") from None

    async def wait_subscribed(self, topic: str, processes: int,
                              timeout: float = TIMEOUT) -> None:
        """Wait until exactly ``processes`` processes listen to ``topic`` on Redis (each
        process SUBSCRIBEs a topic's channel a moment after its first local subscriber;
        with the default ``--redis-prefix``)."""
        assert self.redis is not None, "start() first"
        channel = topic_channel(DEFAULT_PREFIX, topic)
        deadline = time.monotonic() + timeout
        while True:
            found = await self._subscribers(channel)
            if found == processes:
                return
            assert time.monotonic() < deadline, (
                f"{found} processes subscribed to {channel!r} after {timeout} s, "
                f"not {processes}")
            await asyncio.sleep(0.01)

    async def _subscribers(self, channel: bytes) -> int:
        """Connections listening to ``channel`` (a shard channel on a cluster)."""
        if isinstance(self.redis, RedisClusterServers):
            return await self.redis.subscribers(channel)
        assert self.redis is not None
        async with redis.asyncio.Redis.from_url(self.redis.url) as admin:
            [(_, found)] = await admin.pubsub_numsub(channel)
            return int(found)

    def stop(self) -> None:
        """End every server process (SIGTERM to all at once, then each waited for, SIGKILL
        after 5 s), then Redis."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            stop_process(node.process)
        if self.redis is not None:
            self.redis.stop()
