"""A real Redis Cluster for the tests: three masters with one replica each, on free
loopback ports, each ``redis-server`` in a directory of its own.

``await RedisClusterServers(tmp_path / "rc").start()`` starts six ``redis-server --cluster-enabled
yes`` (``tests/redis_server.RedisServer`` with cluster settings: a small
``cluster-node-timeout`` so a replica takes over a killed master within seconds, AOF on),
joins them with ``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``, and
waits until every node reports ``cluster_state:ok``. ``url`` is what ``--redis-url`` takes
(``redis+cluster://127.0.0.1:<port>``); ``master_of(key)`` is the server holding a key's slot
now, to ``kill()`` it (a replica takes its slots over within seconds), ``replicas_of``
its replicas.
``kill()`` and ``restart()`` do to every node what ``RedisServer``'s do to one (a whole
cluster down, then back with its data and its ``nodes.conf``), so the ``Cluster`` fixture's
outage tests run on either. ``stop()`` ends every process by its pid.
"""

import asyncio
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Union

import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from tests.redis_server import RedisServer
from tests.support import find_program

MASTERS = 3
NODE_TIMEOUT_MS = 1000  # how long a master may be silent before its replica takes over
SETTLE_TIMEOUT = 30.0  # seconds for the cluster to form, or to fail over
BUS_OFFSET = 10000  # a node's cluster bus listens on its port plus this


def cluster_port() -> int:
    """A loopback port free now whose cluster bus port (10000 above) is free too; at most
    55535, as Redis requires."""
    while True:
        port = random.randrange(20000, 55535)
        try:
            for each in (port, port + BUS_OFFSET):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", each))
        except OSError:
            continue
        return port


class RedisClusterServers:
    """Six ``redis-server`` processes forming one cluster; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        config = {
            "cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(NODE_TIMEOUT_MS), "appendonly": "yes",
            # A replica may take over at once, however long it was cut off.
            "cluster-replica-validity-factor": "0",
        }
        self.servers = [RedisServer(directory / f"node{i}", config, cluster_port())
                        for i in range(2 * MASTERS)]

    @property
    def url(self) -> str:
        """The ``--redis-url`` of the cluster: any node; the client finds the others."""
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    async def start(self) -> "RedisClusterServers":
        """Start every node, create the cluster, wait until it is ok; on failure, every
        node started is stopped by ``stop()`` (the caller's)."""
        for server in self.servers:
            await server.restart()  # starts it, waiting without blocking the loop
        cli = await asyncio.create_subprocess_exec(
            find_program("REDIS_CLI", "redis-cli"), "--cluster", "create",
            *(f"127.0.0.1:{s.port}" for s in self.servers), "--cluster-replicas", "1",
            "--cluster-yes", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        output, _ = await asyncio.wait_for(cli.communicate(), SETTLE_TIMEOUT)
        assert cli.returncode == 0, f"redis-cli --cluster create failed:\n{output.decode()}"
        await self._wait_ok(self.servers)
        return self

    async def _wait_ok(self, servers: list[RedisServer]) -> None:
        """Until every one of ``servers`` says ``cluster_state:ok`` and agrees all slots
        are served, and each master among them has its replica online (in sync: a vote
        on a cluster waits for a replica to have it)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        for server in servers:
            async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as node:
                while True:
                    info = (await node.execute_command("CLUSTER", "INFO")).decode()
                    replication = await node.info("replication")
                    synced = (replication["role"] == "slave"
                              or replication.get("slave0", {}).get("state") == "online")
                    if "cluster_state:ok" in info and "cluster_slots_ok:16384" in info \
                            and synced:
                        break
                    assert time.monotonic() < deadline, f"cluster not ok:\n{info}"
                    await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL every node, as a power cut would."""
        for server in self.alive():
            server.kill()

    async def restart(self) -> None:
        """Start every node again on its port and wait, without blocking the loop, until
        the cluster is ok."""
        for server in self.servers:
            if server not in self.alive():
                await server.restart()
        await self._wait_ok(self.servers)

    async def subscribers(self, channel: bytes) -> int:
        """How many connections listen to shard channel ``channel`` on its master."""
        master = await self.master_of(channel)
        async with redis.asyncio.Redis(host="127.0.0.1", port=master.port) as node:
            _, found = await node.execute_command("PUBSUB", "SHARDNUMSUB", channel)
            return int(found)

    async def master_of(self, key: Union[str, bytes]) -> RedisServer:
        """The server that is the master of ``key``'s slot right now."""
        async with RedisCluster(host="127.0.0.1", port=self.alive()[0].port) as client:
            node = client.get_node_from_key(key)
            return next(s for s in self.servers if s.port == int(node.port))

    async def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        """The servers replicating ``master`` right now."""
        async with redis.asyncio.Redis(host="127.0.0.1", port=master.port) as node:
            role = await node.execute_command("ROLE")
        if role[0] != b"master":
            return []
        ports = {int(replica[1]) for replica in role[2]}
        return [s for s in self.servers if s.port in ports]

    async def move_slot(self, slot: int, target: RedisServer) -> None:
        """Migrate ``slot`` with its keys to the master ``target``, as ``redis-cli --cluster
        reshard`` does: IMPORTING, MIGRATING, MIGRATE of its keys, then SETSLOT NODE on
        every master."""
        async with RedisCluster(host="127.0.0.1", port=target.port) as client:
            source_port = int(client.nodes_manager.slots_cache[slot][0].port)
        source = next(s for s in self.servers if s.port == source_port)
        masters = await self.masters()

        async def on(server: RedisServer, *command: object) -> object:
            async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as node:
                return await node.execute_command(*command)

        source_id = (await on(source, "CLUSTER", "MYID")).decode()  # type: ignore[attr-defined]
        target_id = (await on(target, "CLUSTER", "MYID")).decode()  # type: ignore[attr-defined]
        await on(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await on(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := await on(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            await on(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                     "KEYS", *keys)  # type: ignore[misc]
        for server in [target, source, *(m for m in masters if m not in (source, target))]:
            await on(server, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

    async def masters(self) -> list[RedisServer]:
        """The running servers that are masters right now."""
        found = []
        for server in self.alive():
            async with redis.asyncio.Redis(host="127.0.0.1", port=server.port) as node:
                if (await node.info("replication"))["role"] == "master":
                    found.append(server)
        return found

    def alive(self) -> list[RedisServer]:
        """The servers whose process runs."""
        return [s for s in self.servers if s.process is not None and s.process.poll() is None]

    def stop(self) -> None:
        """End every node by its pid."""
        for server in self.servers:
            server.stop()
