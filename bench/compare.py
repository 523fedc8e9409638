"""Side-by-side benchmark: the real server, a classic Tornado loop, ``websockets``, aiohttp.

    python bench/compare.py            # the full run: a few minutes
    python bench/compare.py --quick    # a smoke run with smaller N: about a minute
    python bench/compare.py --memory-only   # the memory row alone (with --quick: 1,000)
    python bench/compare.py --only echo --servers real,websockets   # echo rows alone: ~30 s
    python bench/compare.py --only fanout,tcp --servers real,aiohttp   # fan-out rows alone
    python bench/compare.py --only storm --servers real   # the reconnect storm alone: ~1 min
    python bench/compare.py --only held --servers real   # 50,000 held (or what the limit lets)

Starts four servers as subprocesses on free 127.0.0.1 ports (``servers.py``): this
project's ``server.py`` (temporary data directory, pings and every limit off, the raw TCP
chat on), a minimal Tornado server whose room publish is the classic ``for c in room:
c.write_message(text)`` (``peers/tornado_classic.py``), a minimal ``websockets`` server
using ``broadcast()`` (``peers/websockets_broadcast.py``) and a minimal aiohttp server
sending to each member in turn (``peers/aiohttp_broadcast.py``; left out, with a line on
stderr, where aiohttp is not installed). Each is driven in turn by load-client processes
(``loadclient.py``: a raw asyncio protocol, on uvloop when installed; not a WebSocket
library), the servers pinned to one core and the clients to the others when the machine
has two or more. Measured per server, in this order, on one server process:

* memory per idle connection: the server's RSS growth over M connections, read once its
  CPU has gone quiet (the real server: nicknamed chat connections, ``?nick=u<i>``, in rooms
  of 25; the peers: a bare WebSocket that does nothing);
* echo: round trips/s and p99 with 50 clients, each with one frame in flight;
* fan-out through ``/ws/chat/<room>`` to N subscribers (one of them publishes): a burst of
  B messages in one write, timed until every subscriber has every message (deliveries/s,
  the median of three bursts, and the server's CPU per delivery); the connection setup
  rate while the N opened; then the publish-to-receive latency at a steady 10 messages/s
  (p50/p99 over every delivery; a server slower than N x 10 deliveries/s falls behind, and
  its latency grows with the seconds published);
* loop lag during a burst to the largest N, seen from outside: the worst round trip of a
  probe echo client (its own process, a frame every millisecond after each reply) while
  the burst is delivered; for the real server also its own figure, from the loop-lag
  histogram it exports in ``/metrics`` (the peers export none);
* TCP fan-out, the real server only (the peers have no raw TCP chat: "n/a"): the fan-out
  bursts again, with N raw TCP chat connections (``--tcp-port``) that ``/join`` one room,
  one of them publishing lines (deliveries/s, median of the bursts, server CPU per
  delivery);
* held, on a server process restarted for it (one that held the earlier steps'
  connections keeps their memory): ``--held`` (50,000) idle connections open at once,
  the memory row's kind, from
  load-client processes of their own (10,000 each at most, each under its own descriptor
  limit), each from a loopback address of its own (127.0.0.2, 127.0.0.3, ...: ~28,000
  ephemeral ports each, so they never run out). One process can hold no more than its
  descriptor hard limit, which this bench (and the servers it starts) cannot raise: the
  step holds the hard limit less ``held_margin`` when that is fewer, and says so in the
  table ("held 19,800 of 50,000 (the descriptor hard limit here is 20,000)"). The server's
  RSS and its growth per connection, the time to open them (and the rate, and the server's
  CPU per connection), then, while they are all open, ``GET /healthz`` one request at a
  time on a new connection each (the real server; the peers have none: "n/a") and an echo
  probe in its own process (a frame every 5 ms): p50 and p99 of both. The real server's
  per-address cap is off (``--max-connections-per-ip 0``); it has no other connection cap.
* reconnect storm, last (it restarts the server): S chat pages (``?nick=``) in rooms of 50,
  from 200 loopback source addresses (127.0.0.2 and up, so no address is over the default
  per-address budgets, which the real server keeps for this row: many clients, as real
  pages come from many addresses); each room says a few messages, so every page has a
  newest id; then the server gets SIGTERM and is started again on the same port and data
  directory, and every page comes back as ``static/js/socket.js`` does (jittered doubling
  backoff from 500 ms, ``&since=`` its newest id). The time from the new server listening
  to the last welcome, p50/p99 of each page's, and the server's CPU per reconnect. The
  peers (no nicknames, no history) reconnect to their plain welcome.

Prints one Markdown table with ratios to the classic Tornado loop, the machine, and the
load clients' CPU (near 100% of their core, a row would measure the client, not the
server). Writes every number as JSON to ``bench/results/`` (not in git).

Every wait has a timeout; a step that times out shows it in its cell instead of hanging.
Loopback only; every process started here is stopped by its pid.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from loadclient import Worker, default_loop, raise_fd_limit  # noqa: E402
from procs import cpu_seconds, rss  # noqa: E402
from servers import PEERS, Server, build, with_default_admission  # noqa: E402

HOST = "127.0.0.1"
BASELINE = "Tornado classic"
NA = "n/a"  # a result {NA: why}: the measurement does not apply to that server
# What one run measures, in this order; "held" on a server process restarted for it,
# "storm" last (it restarts the server with its default admission budgets).
STEPS = ("memory", "echo", "fanout", "lag", "tcp", "held", "storm")
# Storm pages per source address: half the default --max-connections-per-ip and
# --handshake-rate-burst (100 each), as pages behind one office's address might be.
STORM_PER_SOURCE = 50
# Seconds the storm's server has to exit after SIGTERM before it is killed: its own
# --shutdown-timeout (4 s) and the exit, with 10,000 connections to close on a busy core.
STORM_STOP_TIMEOUT = 15.0


@dataclass
class Plan:
    """The sizes and durations of one run."""

    idle: int = 5000  # connections for the memory row
    echo_clients: int = 50
    echo_seconds: float = 5.0
    fanout: list[tuple[int, int]] = field(  # (subscribers, burst) per fan-out row
        default_factory=lambda: [(1000, 60), (5000, 10)])
    repeats: int = 3  # bursts per fan-out row; the row shows the median
    latency_seconds: dict[int, float] = field(  # subscribers -> seconds of steady publishing
        default_factory=lambda: {1000: 5.0, 5000: 2.0})
    rate: float = 10.0  # messages per second in the latency rows
    lag: tuple[int, int] = (10000, 5)  # (subscribers, burst) for the loop-lag row
    processes: int = 2  # load-client processes the connections are split over
    concurrency: int = 100  # handshakes in flight per load-client process
    room_size: int = 25  # nicknamed connections per room in the real server's memory row
    timeout: float = 60.0  # the most any one step may take, in seconds
    client_loop: str = "asyncio"  # the load clients' event loop: "asyncio" or "uvloop"
    steps: tuple[str, ...] = STEPS  # which of STEPS to measure (--only)
    storm: int = 10000  # pages reconnecting at once after a restart (the storm row)
    storm_room_size: int = 50  # pages per chat room in the storm
    # Loopback source addresses the storm's pages come from: enough that each holds fewer
    # connections than the default --max-connections-per-ip and --handshake-rate-burst.
    storm_sources: int = 10000 // STORM_PER_SOURCE
    storm_seed: int = 5  # messages said in each room before the restart (history, ?since=)
    held: int = 50000  # idle connections the "held" step opens at once (--held)
    # Descriptors a server keeps for itself (listening sockets, its database, log, epoll):
    # the held step opens at most the descriptor hard limit less this.
    held_margin: int = 200
    held_per_process: int = 10000  # held connections per load-client process, at most
    held_timeout: float = 180.0  # the most opening the held connections may take, in seconds
    health_requests: int = 200  # GET /healthz one at a time while they are held
    probe_seconds: float = 3.0  # the echo probe's round trips while held, for the peers


QUICK = Plan(idle=1000, echo_seconds=2.0, fanout=[(1000, 50)], repeats=1,
             latency_seconds={1000: 2.0}, lag=(2000, 10), held=2000, health_requests=50,
             probe_seconds=1.0, storm=2000, storm_sources=2000 // STORM_PER_SOURCE)


class Bench:
    """One run: the load-client processes, and the measurements of one server at a time."""

    def __init__(self, plan: Plan, client_cores: Optional[set[int]],
                 server_cores: Optional[set[int]] = None) -> None:
        self.plan = plan
        self.client_cores = client_cores
        self.server_cores = server_cores  # where a server restarted mid-run is pinned
        self.workers = [Worker(client_cores, plan.client_loop)
                        for _ in range(plan.processes)]
        # The probe has a process of its own: no subscriber traffic delays its replies.
        self.probe = Worker(client_cores, plan.client_loop)

    async def start(self) -> None:
        for worker in (*self.workers, self.probe):
            await worker.start()

    async def stop(self) -> None:
        for worker in (*self.workers, self.probe):
            await worker.stop()

    def clients_cpu(self) -> float:
        """CPU seconds the load-client processes have used so far."""
        return sum(cpu_seconds(worker.pid) for worker in (*self.workers, self.probe))

    async def _all(self, cmd: str, wait: float, **args: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(
            worker.call(cmd, wait, **args) for worker in self.workers)))

    async def open(self, server: Server, path: str, count: int, welcome: bool,
                   room_size: int = 1, ports: Optional[list[int]] = None,
                   tcp: bool = False, workers: Optional[list[Worker]] = None,
                   sources: Optional[list[str]] = None, track: bool = False,
                   wait: Optional[float] = None) -> dict[str, Any]:
        """Open ``count`` connections split over the workers; the setup rate. With
        ``ports``, worker i connects to ``ports[i % len(ports)]`` instead of the server's
        port (subscribers split over several processes). With ``tcp``, raw TCP chat
        connections to the ``ports`` given, joining the room ``path``. ``workers`` (default:
        the run's) open them, all within ``wait`` seconds (default: ``plan.timeout``).
        ``sources`` and ``track``: see ``loadclient.Session.open``."""
        plan = self.plan
        wait = wait or plan.timeout
        workers = workers or self.workers
        k = len(workers)
        ports = ports or [server.port]
        replies = await asyncio.gather(*(
            worker.call("open", wait + 10, host=HOST, port=ports[i % len(ports)],
                        path=path,
                        indices=list(range(i, count, k)), welcome=welcome,
                        concurrency=plan.concurrency, timeout=plan.timeout,
                        room_size=room_size, tcp=tcp, sources=sources, track=track)
            for i, worker in enumerate(workers)))
        # A worker's own errors come as a list; a call that got no answer, as one string.
        errors = [str(e) for reply in replies
                  for e in ([reply["error"]] if isinstance(reply.get("error"), str)
                            else reply.get("error") or []) if e]
        opened = sum(reply.get("opened", 0) for reply in replies)
        t0 = min((reply["t0"] for reply in replies if "t0" in reply), default=0)
        t1 = max((reply["t1"] for reply in replies if "t1" in reply), default=0)
        result = {"opened": opened, "wanted": count, "seconds": (t1 - t0) / 1e9,
                  "per_s": opened / ((t1 - t0) / 1e9) if t1 > t0 else None}
        if opened < count:
            result["error"] = f"{opened}/{count} opened: {errors[0] if errors else '?'}"
        return result

    async def close(self, server: Server) -> None:
        """Reset every connection; wait for the server to have dealt with it."""
        await self._all("close", self.plan.timeout)
        await wait_idle(server)

    async def burst(self, server: Server, tag: str, count: int, subscribers: int,
                    probe: bool = False) -> dict[str, Any]:
        """``count`` messages in one write; time until every subscriber has all of them.
        With ``probe``, a probe echo client's round trips run across the burst."""
        plan = self.plan
        await self._all("arm", plan.timeout, tag=tag, expect=count, timed=False)
        if probe:
            started = await self.probe.call("probe_start", 20, host=HOST, port=server.port,
                                            path=server.echo_path, interval=0.001,
                                            timeout=10.0)
            if "error" in started:
                return {"error": f"probe: {started['error']}"}
            await asyncio.sleep(1.0)  # the probe's round trips on a quiet server
        cpu, clients, wall = cpu_seconds(server.pid), self.clients_cpu(), time.monotonic()
        sent, replies = await asyncio.gather(
            self.workers[0].call("publish", plan.timeout, tag=tag, count=count, rate=0),
            self._all("wait", plan.timeout + 10, timeout=plan.timeout))
        wall = time.monotonic() - wall
        cpu = cpu_seconds(server.pid) - cpu
        result = completion(sent, replies)
        if "error" not in result:
            elapsed = (result["last_ns"] - sent["t0"]) / 1e9
            result["deliveries_per_s"] = subscribers * count / elapsed
            result["server_cpu_us"] = 1e6 * cpu / (subscribers * count)
        result["clients_cpu"] = 100 * (self.clients_cpu() - clients) / wall
        if probe:
            await asyncio.sleep(0.3)
            stopped = await self.probe.call("probe_stop", 20)
            result.update(lag(stopped.get("samples", []), sent.get("t0", 0),
                              result.get("last_ns") or time.monotonic_ns()))
        return result

    async def steady(self, server: Server, tag: str, seconds: float) -> dict[str, Any]:
        """``plan.rate`` messages per second for ``seconds``; the latency of every delivery."""
        plan = self.plan
        count = max(1, round(plan.rate * seconds))
        await self._all("arm", plan.timeout, tag=tag, expect=count, timed=True)
        clients, wall = self.clients_cpu(), time.monotonic()
        sent, replies = await asyncio.gather(
            self.workers[0].call("publish", seconds + plan.timeout, tag=tag, count=count,
                                 rate=plan.rate),
            self._all("wait", seconds + plan.timeout + 10, timeout=seconds + plan.timeout))
        wall = time.monotonic() - wall
        result = completion(sent, replies)
        latencies = sorted(x for reply in replies for x in reply.get("latencies_us", []))
        if latencies:
            result["p50_ms"] = percentile(latencies, 50) / 1000
            result["p99_ms"] = percentile(latencies, 99) / 1000
            result["samples"] = len(latencies)
        result["clients_cpu"] = 100 * (self.clients_cpu() - clients) / wall
        return result

    async def measure(self, server: Server, rows: dict[str, Any]) -> None:
        """Every row for one server into ``rows``, on one server process, memory first."""
        plan = self.plan
        if "memory" in plan.steps:
            await self.measure_memory(server, rows)
        if "echo" in plan.steps:
            await self.measure_echo(server, rows)
        if "fanout" in plan.steps:
            await self.measure_fanout(server, rows)
        if "lag" in plan.steps:
            await self.measure_lag(server, rows)
        if "tcp" in plan.steps:
            await self.measure_fanout(server, rows, tcp=True)
        if "held" in plan.steps:
            await self.measure_held(server, rows)
        if "storm" in plan.steps:  # last: it restarts the server
            await self.measure_storm(server, rows)

    async def measure_memory(self, server: Server, rows: dict[str, Any]) -> None:
        """RSS per idle connection, while the process has never held more connections."""
        plan = self.plan
        await wait_idle(server)
        before = rss(server.pid)
        opened = await self.open(server, server.idle_path, plan.idle, server.idle_welcome,
                                 server.idle_room_size)
        await wait_idle(server)
        after = rss(server.pid)
        memory = dict(opened, rss_before_mib=before / 2**20, rss_after_mib=after / 2**20)
        if opened["opened"]:
            memory["kib_per_conn"] = (after - before) / opened["opened"] / 1024
        rows["memory"] = memory
        await self.close(server)
        progress(f"{server.name}: memory done ({opened['per_s'] or 0:.0f} connections/s)")

    async def measure_echo(self, server: Server, rows: dict[str, Any]) -> None:
        """Echo, from one process: one frame in flight per client keeps it light."""
        plan = self.plan
        clients, cpu = self.clients_cpu(), cpu_seconds(server.pid)
        echo = await self.workers[0].call(
            "echo", plan.echo_seconds + plan.timeout + 10, host=HOST, port=server.port,
            path=server.echo_path, clients=plan.echo_clients, duration=plan.echo_seconds,
            size=100, timeout=10.0)
        if "round_trips" in echo:
            echo["per_s"] = echo["round_trips"] / echo["elapsed"]
            echo["clients_cpu"] = 100 * (self.clients_cpu() - clients) / echo["elapsed"]
            # Includes the 50 handshakes and closes: a few ms against seconds of echo.
            echo["server_cpu_us"] = 1e6 * (cpu_seconds(server.pid) - cpu) / echo["round_trips"]
        rows["echo"] = echo
        await wait_idle(server)
        progress(f"{server.name}: echo done")

    async def measure_fanout(self, server: Server, rows: dict[str, Any],
                             tcp: bool = False) -> None:
        """Bursts and steady publishing to each fan-out row's subscribers; with ``tcp``,
        bursts alone, to raw TCP chat subscribers (``n/a`` for a server without them)."""
        plan = self.plan
        for n, (subscribers, burst) in enumerate(plan.fanout):
            key = f"{'tcp ' if tcp else ''}fanout {subscribers}"
            if tcp and server.tcp_port is None:
                rows[key] = {NA: "no raw TCP chat"}
                continue
            if tcp:
                row = await self.open(server, f"tcpfan{n}", subscribers, True,
                                      ports=[server.tcp_port], tcp=True)
            else:
                row = await self.open(server, server.chat_path.format(room=f"fan{n}"),
                                      subscribers, True)
            if "error" not in row:
                await wait_idle(server)
                bursts = []
                for repeat in range(plan.repeats):
                    bursts.append(await self.burst(server, f"b{n}r{repeat}", burst,
                                                   subscribers))
                    await wait_idle(server)
                row["burst"] = median_burst(bursts)
                row["bursts"] = bursts
                seconds = None if tcp else plan.latency_seconds.get(subscribers)
                if seconds and "error" not in row["burst"]:
                    await wait_idle(server)
                    row["latency"] = await self.steady(server, f"l{n}", seconds)
            rows[key] = row
            await self.close(server)
            progress(f"{server.name}: {'TCP ' if tcp else ''}fan-out to {subscribers} done")

    async def measure_lag(self, server: Server, rows: dict[str, Any]) -> None:
        """The probe's worst round trip during a burst to the largest row of subscribers."""
        plan = self.plan
        subscribers, burst = plan.lag
        row = await self.open(server, server.chat_path.format(room="lag"), subscribers, True)
        if "error" not in row:
            await wait_idle(server)
            before = lag_histogram(server.port)
            row["burst"] = await self.burst(server, "g", burst, subscribers, probe=True)
            after = lag_histogram(server.port)
            if before and after:
                row["burst"]["server_lag_ms"] = worst_bucket_ms(before, after)
            elif server.key != "real":
                row["burst"]["server_lag_ms"] = {NA: "no loop-lag histogram"}
        rows["lag"] = row
        await self.close(server)
        progress(f"{server.name}: loop lag done")

    async def measure_held(self, server: Server, rows: dict[str, Any]) -> None:
        """``plan.held`` idle connections open at once (as many as the descriptor hard limit
        lets one process hold), from load clients of their own, each from a loopback address
        of its own (127.0.0.2, ...: ephemeral ports never run out); the RSS they cost, the
        time to open them, and, while they are all open, ``GET /healthz`` one request at a
        time and an echo probe's round trips from a separate client."""
        plan = self.plan
        hard = held_limit()
        count = min(plan.held, hard - plan.held_margin) if hard else plan.held
        row: dict[str, Any] = {"target": plan.held, "hard_limit": hard, "count": count}
        row["summary"] = f"held {{}} of {plan.held:,}" + (
            f" (the descriptor hard limit here is {hard:,})" if count < plan.held else "")
        k = max(2, -(-count // plan.held_per_process))
        workers = [Worker(self.client_cores, plan.client_loop) for _ in range(k)]
        if plan.steps != ("held",):
            # A fresh process: one that held the other steps' connections keeps that memory,
            # and the growth per held connection would come out near zero.
            server.stop()
            server.start(self.server_cores)
        try:
            for worker in workers:
                await worker.start()
            await wait_idle(server)
            before, cpu = rss(server.pid), cpu_seconds(server.pid)
            opened = await self.open(server, server.idle_path, count, server.idle_welcome,
                                     server.idle_room_size, workers=workers,
                                     sources=[f"127.0.0.{2 + i}" for i in range(k)],
                                     wait=plan.held_timeout)
            row.update(opened)
            row["summary"] = row["summary"].format(f"{opened['opened']:,}") + (
                f"; {opened['error']}" if "error" in opened else "")
            await wait_idle(server)
            after = rss(server.pid)
            row.update(rss_before_mib=before / 2**20, rss_after_mib=after / 2**20)
            if opened["opened"]:
                row["kib_per_conn"] = (after - before) / opened["opened"] / 1024
                row["server_cpu_us"] = 1e6 * (cpu_seconds(server.pid) - cpu) / opened["opened"]
            row.update(await self.while_held(server))
        finally:
            for worker in workers:
                await worker.stop()  # its connections go with it
        rows["held"] = row
        await wait_idle(server)
        progress(f"{server.name}: {row['summary']} ({row.get('seconds', 0):.1f} s to open)")

    async def while_held(self, server: Server) -> dict[str, Any]:
        """``GET /healthz`` one at a time (the real server; the peers have none) and an
        echo probe in its own process, at once; their p50/p99."""
        plan = self.plan
        started = await self.probe.call("probe_start", 20, host=HOST, port=server.port,
                                        path=server.echo_path, interval=0.005, timeout=10.0)
        if "error" in started:
            return {"echo": {"error": f"probe: {started['error']}"}}
        if server.key == "real":
            health = await self.probe.call(
                "health", plan.timeout, host=HOST, port=server.port, path="/healthz",
                count=plan.health_requests, timeout=10.0)
            if health.get("failed"):
                health["error"] = f"{health['failed']} failed: {health['error'][0]}"
            else:
                health.pop("error", None)
        else:
            health = {NA: "no /healthz (the echo probe answers for it)"}
            await asyncio.sleep(plan.probe_seconds)
        stopped = await self.probe.call("probe_stop", 20)
        rtts = sorted(rtt for _, rtt in stopped.get("samples", []))
        echo: dict[str, Any] = {"round_trips": len(rtts)}
        if rtts:
            echo.update(p50_us=percentile(rtts, 50), p99_us=percentile(rtts, 99),
                        max_us=rtts[-1])
        else:
            echo["error"] = "no echo round trip"
        return {"health": health, "echo": echo}

    async def measure_storm(self, server: Server, rows: dict[str, Any]) -> None:
        """A reconnect storm: ``plan.storm`` chat pages from ``plan.storm_sources``
        loopback addresses, the server restarted (SIGTERM, then started again on the same
        port and data), every page back with the page's jittered backoff; the time from
        the new server listening to the last welcome. The real server runs with its
        per-address admission budgets at their defaults for this row
        (``servers.with_default_admission``)."""
        plan = self.plan
        n, size = plan.storm, plan.storm_room_size
        sources = [f"127.0.{(k + 2) // 256}.{(k + 2) % 256}" for k in range(plan.storm_sources)]
        real = server.key == "real"
        if real:
            server.stop()
            server.argv = with_default_admission(server.argv)
            server.start(server.cores)
        # The page's URL: its nickname, and since= the newest id it saw (the peers take
        # neither, and would make every query string a room of its own).
        base = server.chat_path.format(room="storm{room}")
        path = base + "?nick=u{i}" if real else base
        row: dict[str, Any] = {"clients": n, "sources": len(sources), "room_size": size}
        row.update(await self.open(server, path, n, True, size, sources=sources, track=True))
        if "error" in row:
            rows["storm"] = row
            await self.close(server)
            return
        if real and plan.storm_seed:
            await self._all("seed", plan.timeout, tag="seed", count=plan.storm_seed,
                            room_size=size)
        await wait_idle(server)
        comeback = asyncio.gather(*(
            worker.call("reconnect", 2 * plan.timeout + 10, host=HOST, port=server.port,
                        path=path + ("{since}" if real else ""), room_size=size,
                        sources=sources, timeout=2 * plan.timeout)
            for worker in self.workers))
        await asyncio.sleep(0.5)  # every worker is listening for its closes
        stopping = time.monotonic_ns()
        server.stop(timeout=STORM_STOP_TIMEOUT)
        stopped = time.monotonic_ns()
        server.start(server.cores, poll=0.005)
        listening, cpu = time.monotonic_ns(), cpu_seconds(server.pid)
        row["stop_s"] = (stopped - stopping) / 1e9  # SIGTERM to exit: the pages back off
        row["down_s"] = (listening - stopping) / 1e9  # SIGTERM to listening again
        replies = await comeback
        await wait_idle(server)  # the joined frames and readers counts the storm caused
        row.update(storm_result(replies, listening, n))
        row["server_cpu_us"] = 1e6 * (cpu_seconds(server.pid) - cpu) / max(1, row["welcomed"])
        row["loadavg"] = os.getloadavg()
        rows["storm"] = row
        await self.close(server)
        progress(f"{server.name}: reconnect storm done ({row.get('storm_s') or 0:.1f} s)")


def held_limit() -> Optional[int]:
    """The descriptor hard limit every process started here inherits (None: no limit):
    no server process can hold more connections than this, less its own descriptors."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def storm_result(replies: list[dict[str, Any]], listening: int, wanted: int) -> dict[str, Any]:
    """The storm's figures from the workers' ``reconnect`` answers and the monotonic ns the
    new server was seen listening at."""
    welcomes = sorted(t for reply in replies for t in reply.get("welcome_ns", []))
    handshakes = sorted(t for reply in replies for t in reply.get("handshake_us", []))
    attempts = [a for reply in replies for a in reply.get("attempts", [])]
    errors = [str(e) for reply in replies for e in (reply.get("error") or []) if e]
    result: dict[str, Any] = {"welcomed": len(welcomes), "with_since": sum(
        reply.get("with_since", 0) for reply in replies)}
    if welcomes:
        after = [(t - listening) // 1000 for t in welcomes]  # µs, as percentile() takes
        result.update(
            storm_s=(welcomes[-1] - listening) / 1e9,
            welcome_p50_ms=percentile(after, 50) / 1000,
            welcome_p99_ms=percentile(after, 99) / 1000,
            handshake_p50_ms=percentile(handshakes, 50) / 1000,
            handshake_p99_ms=percentile(handshakes, 99) / 1000,
            attempts_mean=sum(attempts) / len(attempts))
    if len(welcomes) < wanted:
        result["error"] = (f"{len(welcomes)}/{wanted} welcomed: "
                           f"{errors[0] if errors else '?'}")
    return result


def lag_histogram(port: int) -> dict[float, float]:
    """The server's own loop-lag histogram (``realtime_event_loop_lag_seconds``) as
    {upper bound in seconds: cumulative count}; empty for a server without one (the peers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except (OSError, ValueError):
        return {}
    buckets = {}
    for match in re.finditer(
            r'^realtime_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M):
        buckets[float(match.group(1))] = float(match.group(2))
    return buckets


def worst_bucket_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound that holds every sample taken between the two reads: the
    worst lag the server measured during the burst was at most this (ms)."""
    total = after[float("inf")] - before[float("inf")]
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0.0) >= total:
            return bound * 1000
    return float("inf")


def completion(sent: dict[str, Any], replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether every subscriber got every marked message, and when the last one did."""
    errors = [reply["error"] for reply in (sent, *replies) if "error" in reply]
    if errors:
        return {"error": str(errors[0])}
    complete = sum(reply["complete"] for reply in replies)
    total = sum(reply["total"] for reply in replies)
    result: dict[str, Any] = {"complete": complete, "total": total,
                              "last_ns": max(reply["last_ns"] for reply in replies)}
    if complete < total:
        result["error"] = f"timeout: {complete}/{total} complete"
    return result


def median_burst(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """The burst with the median deliveries/s; the first error if any burst failed."""
    failed = [burst for burst in bursts if "error" in burst]
    if failed:
        return failed[0]
    ordered = sorted(bursts, key=lambda burst: burst["deliveries_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def lag(samples: list[list[int]], start: int, end: int) -> dict[str, Any]:
    """The probe's quiet round trip (median before ``start``) and its worst round trip
    overlapping ``[start, end]`` (monotonic ns)."""
    quiet = sorted(rtt for sent, rtt in samples if sent + rtt * 1000 < start)
    during = [rtt for sent, rtt in samples if sent <= end and sent + rtt * 1000 >= start]
    result: dict[str, Any] = {"probe_round_trips": len(samples)}
    if quiet:
        result["probe_quiet_ms"] = percentile(quiet, 50) / 1000
    if during:
        result["probe_worst_ms"] = max(during) / 1000
    return result


def percentile(ordered: list[int], p: float) -> int:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def wait_idle(server: Server, quiet: float = 0.3, timeout: float = 20.0) -> bool:
    """Until the server has used (almost) no CPU for ``quiet`` seconds, or ``timeout``."""
    deadline = time.monotonic() + timeout
    last, since = cpu_seconds(server.pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = cpu_seconds(server.pid)
        if now - last > 0.02:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


STARTED = time.monotonic()


def progress(text: str) -> None:
    """A line on stderr, with the seconds since the bench started."""
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


# The table: (label, how to get the number from a server's rows, unit format).
def rows_of(plan: Plan) -> list[tuple[str, Any]]:
    """The table's rows for ``plan``: a label and a function from a server's results to a
    number (None: not measured) or an error string."""
    def get(*keys: str) -> Any:
        def pick(results: dict[str, Any]) -> Any:
            node: Any = results
            for key in (*keys, None):
                if isinstance(node, dict) and NA in node:
                    return f"n/a: {node[NA]}"
                if key is None:
                    return node
                if not isinstance(node, dict):
                    return None
                if "error" in node and key not in node:
                    return str(node["error"])
                node = node.get(key)
            return node
        return pick

    rows: list[tuple[str, Any]] = []
    fanout = plan.fanout if "fanout" in plan.steps else []
    median = f", median of {plan.repeats}" if plan.repeats > 1 else ""

    def burst_rows(sizes: list[tuple[int, int]], kind: str, cpu: str) -> None:
        # The fan-out bursts' rows, through WebSockets (kind "") or raw TCP lines.
        for subscribers, burst in sizes:
            key = f"{'tcp ' if kind else ''}fanout {subscribers}"
            rows.append((f"{kind}fan-out deliveries/s, {subscribers:,} subscribers, burst of "
                         f"{burst}{median}", get(key, "burst", "deliveries_per_s")))
            rows.append((f"server CPU µs per {cpu}, {subscribers:,} subscribers",
                         get(key, "burst", "server_cpu_us")))

    burst_rows(fanout, "", "delivery")
    for subscribers, burst in fanout:
        if subscribers in plan.latency_seconds:
            key = f"fanout {subscribers}"
            for p in (50, 99):
                rows.append((f"publish-to-receive p{p} ms, {subscribers:,} subscribers, "
                             f"{plan.rate:g} msg/s for {plan.latency_seconds[subscribers]:g} s",
                             get(key, "latency", f"p{p}_ms")))
    if "echo" in plan.steps:
        rows.append((f"echo round trips/s, {plan.echo_clients} clients, one in flight each",
                     get("echo", "per_s")))
        rows.append(("echo round trip p99 ms", get("echo", "p99_us")))
        rows.append(("server CPU µs per echo round trip", get("echo", "server_cpu_us")))
    if "memory" in plan.steps:
        rows.append((f"KiB per idle connection (RSS growth over {plan.idle:,})",
                     get("memory", "kib_per_conn")))
    if fanout:
        biggest = max(fanout)[0]
        rows.append((f"connections/s, opening {biggest:,} room subscribers",
                     get(f"fanout {biggest}", "per_s")))
    if "lag" in plan.steps:
        subscribers, burst = plan.lag
        rows.append((f"fan-out deliveries/s, {subscribers:,} subscribers, burst of {burst}",
                     get("lag", "burst", "deliveries_per_s")))
        rows.append(("worst loop lag ms during that burst (probe echo round trip)",
                     get("lag", "burst", "probe_worst_ms")))
        rows.append(("worst loop lag ms during that burst, as the server measures it (at "
                     "most; histogram bucket bound)", get("lag", "burst", "server_lag_ms")))
    if "tcp" in plan.steps:
        burst_rows(plan.fanout, "raw TCP ", "raw TCP delivery")
    if "held" in plan.steps:
        rows.extend(held_rows(plan, get))
    if "storm" in plan.steps:
        who = (f"{plan.storm:,} pages from {plan.storm_sources} addresses, rooms of "
               f"{plan.storm_room_size}")
        rows.append((f"reconnect storm: s from the restarted server listening to the last "
                     f"welcome, {who}", get("storm", "storm_s")))
        for p in (50, 99):
            rows.append((f"reconnect storm: p{p} ms from listening to a page's welcome",
                         get("storm", f"welcome_p{p}_ms")))
        rows.append(("reconnect storm: p99 ms from a page's last attempt to its welcome",
                     get("storm", "handshake_p99_ms")))
        rows.append(("server CPU µs per reconnect (handshake, welcome, the joined frames)",
                     get("storm", "server_cpu_us")))
    return rows


def held_rows(plan: Plan, get: Any) -> list[tuple[str, Any]]:
    """The held step's rows (``get(*keys)`` picks a number from a server's results)."""
    def ms(pick: Any) -> Any:  # stored in µs
        return lambda results: (pick(results) / 1000
                                if isinstance(pick(results), (int, float)) else pick(results))
    return [
        (f"idle connections held at once, target {plan.held:,} (chat: nicknamed, rooms "
         f"of {plan.room_size})", get("held", "summary")),
        ("server RSS MiB while they are held", get("held", "rss_after_mib")),
        ("KiB per held connection (RSS growth)", get("held", "kib_per_conn")),
        ("seconds to open them", get("held", "seconds")),
        ("connections/s while opening them", get("held", "per_s")),
        ("server CPU µs per connection opened", get("held", "server_cpu_us")),
        *((f"GET /healthz p{p} ms while held ({plan.health_requests}, one at a time, a new "
           f"connection each)", ms(get("held", "health", f"p{p}_us"))) for p in (50, 99)),
        *((f"echo probe p{p} ms while held (one client of its own, a frame every 5 ms)",
           ms(get("held", "echo", f"p{p}_us"))) for p in (50, 99)),
    ]


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(plan: Plan, servers: list[Server], results: dict[str, dict[str, Any]]) -> str:
    """One Markdown table: a row per measurement, a column per server, ratios to the
    classic Tornado loop."""
    names = [server.name for server in servers]
    lines = ["| measurement | " + " | ".join(names) + " |",
             "| --- |" + " ---: |" * len(names)]
    for label, pick in rows_of(plan):
        values = {name: pick(results.get(name, {})) for name in names}
        if all(value is None for value in values.values()):
            continue  # not measured in this run (--memory-only)
        if "echo round trip p99" in label:  # stored in µs
            values = {k: v / 1000 if isinstance(v, (int, float)) else v
                      for k, v in values.items()}
        base = values.get(BASELINE)
        cells = []
        for name in names:
            value = values[name]
            if value is None:
                cells.append("—")
            elif isinstance(value, str):
                cells.append(value.replace("|", "/")[:80])
            else:
                notes = []
                if isinstance(base, (int, float)) and base:
                    notes.append(f"{value / base:.2f}x")
                if "loop lag" in label:
                    quiet = results[name]["lag"]["burst"].get("probe_quiet_ms")
                    if quiet is not None:
                        notes.append(f"quiet {fmt(quiet)}")
                cells.append(fmt(value) + (f" ({'; '.join(notes)})" if notes else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def clients_cpu(results: dict[str, dict[str, Any]]) -> list[tuple[float, str, str]]:
    """Every phase's load-client CPU (% of one core), as (percent, server, phase)."""
    found = []
    for name, rows in results.items():
        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("clients_cpu"), (int, float)):
                    found.append((node["clients_cpu"], name, path))
                for key, child in node.items():
                    walk(child, f"{path} {key}".strip())
        walk(rows, "")
    return sorted(found, reverse=True)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import importlib.metadata

    import tornado

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:  # bench/cluster.py runs without them
            return "not installed"
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "tornado": tornado.version,
            "websockets": version("websockets"), "aiohttp": version("aiohttp")}


def split_cores() -> tuple[Optional[set[int]], Optional[set[int]]]:
    """With two CPUs or more: the first for the servers, the others for the load clients
    and this controller (moved there now). With one: (None, None), nothing pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    server_cores, client_cores = {cpus[0]}, set(cpus[1:])
    os.sched_setaffinity(0, client_cores)  # the controller stays off the server's core
    return server_cores, client_cores


async def run(plan: Plan, chosen: set[str], results_dir: str) -> int:
    """Start everything, measure every server, print the table; stop everything."""
    limit = raise_fd_limit()
    need = max(plan.idle, plan.lag[0], *(n for n, _ in plan.fanout),
               plan.storm // plan.processes if "storm" in plan.steps else 0) + 200
    if limit < need:
        progress(f"warning: the descriptor limit is {limit}, the plan needs about {need}")
    server_cores, client_cores = split_cores()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        servers, flags, untouched, missing = build(tmp, plan.room_size)
        servers = [server for server in servers if server.key in chosen]
        for key in sorted(chosen & set(missing)):
            progress(f"{key}: left out, {missing[key]}")
        bench = Bench(plan, client_cores, server_cores)
        started = time.monotonic()
        try:
            await bench.start()
            for server in servers:
                server.start(server_cores)
            for server in servers:
                rows = results[server.name] = {}
                try:
                    await bench.measure(server, rows)
                except Exception as error:  # one server failing still prints the others
                    rows["error"] = f"{type(error).__name__}: {error}"
                    progress(f"{server.name}: {rows['error']}")
                if not server.alive():
                    results[server.name]["error"] = "the server died" + server.log_tail()
                    progress(results[server.name]["error"])
        finally:
            await bench.stop()
            for server in servers:
                server.stop()
        elapsed = time.monotonic() - started
        troubles = {server.name: server.log_errors() for server in servers}

    info = machine()
    busiest = clients_cpu(results)
    print(table(plan, servers, results))
    print()
    print(f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), Linux {info['kernel']}; "
          f"Python {info['python']}, Tornado {info['tornado']}, websockets "
          f"{info['websockets']}, aiohttp {info['aiohttp']}; load clients on "
          f"{plan.client_loop}. Servers pinned to CPU "
          f"{sorted(server_cores or [])}, "
          f"{plan.processes} load-client processes and a probe process to CPU "
          f"{sorted(client_cores or [])}; one run, {elapsed:.0f} s.")
    if busiest:
        top = busiest[0]
        print(f"Load clients' CPU (all their processes, % of one core): at most "
              f"{top[0]:.0f}% ({top[1]}, {top[2]}); "
              + ", ".join(f"{name} {phase} {pct:.0f}%" for pct, name, phase in busiest[1:6])
              + ".")
    shown = " ".join(f"--{k.replace('_', '-')}={v}" for k, v in flags.items()
                     if k not in ("port", "data_dir", "tcp_port"))
    print(f"Real server flags: {shown}"
          + (f"; limit-like options left at their defaults: {', '.join(untouched)}"
             if untouched else "") + ".")
    for name, count in troubles.items():
        if count:
            print(f"Warning: {name} logged {count} error line(s) or traceback(s) during the run.")
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, time.strftime("compare-%Y%m%d-%H%M%S.json"))
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"plan": asdict(plan), "machine": info, "real_server_flags": flags,
                   "results": results, "clients_cpu": busiest}, out, indent=1, default=str)
    progress(f"results: {os.path.relpath(path)}")
    return 0 if all("error" not in rows for rows in results.values()) else 1


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run with smaller N (about a minute)")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure only the memory per idle connection (the first row)")
    every = ["real", *(peer[0] for peer in PEERS)]
    parser.add_argument("--servers", default=",".join(every),
                        help="which servers to measure, comma-separated (ratios need tornado)")
    parser.add_argument("--processes", type=int, default=2,
                        help="load-client processes the connections are split over")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"which measurements to make, comma-separated among "
                        f"{', '.join(STEPS)} (default: all)")
    parser.add_argument("--held", type=int, default=Plan.held,
                        help="idle connections the held step opens at once (default: "
                        f"{Plan.held:,}; at most the descriptor hard limit less "
                        f"{Plan.held_margin})")
    parser.add_argument("--storm", type=int, default=None,
                        help="pages in the reconnect storm (default: 10,000; with --quick "
                        "2,000), 50 per source address")
    parser.add_argument("--client-loop", choices=["uvloop", "asyncio"],
                        default=default_loop(),
                        help="the load clients' event loop (default: uvloop if installed)")
    parser.add_argument("--results", default=os.path.join(HERE, "results"),
                        help="the directory the JSON of the run goes to (default: "
                        "bench/results)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    plan.processes = max(1, min(args.processes, 8))
    plan.client_loop = args.client_loop
    if args.held != Plan.held or not args.quick:
        plan.held = max(1, args.held)
    if args.storm is not None:
        plan.storm = max(1, args.storm)
        plan.storm_sources = min(250, -(-plan.storm // STORM_PER_SOURCE))
    plan.steps = tuple(step for step in STEPS if step in args.only.split(","))
    if not plan.steps or not set(args.only.split(",")) <= set(STEPS):
        parser.error(f"--only takes {', '.join(STEPS)}")
    if args.memory_only:  # the same as --only memory
        plan.steps = ("memory",)
    chosen = set(args.servers.split(","))
    if not chosen <= set(every):
        parser.error(f"--servers takes {', '.join(every)}")
    sys.exit(asyncio.run(run(plan, chosen, args.results)))


if __name__ == "__main__":
    main()
