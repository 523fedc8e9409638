"""Cross-process fan-out: one chat room on one process, then on two processes sharing Redis.

    python bench/cluster.py            # 1,000 subscribers: about a minute and a half
    python bench/cluster.py --quick    # 200 subscribers, one burst: about 40 s

Starts a ``redis-server`` of its own (its own directory, a free loopback port, nothing
kept on disk: ``tests/redis_server.py``), and measures, one setup after the other, each
on fresh ``server.py`` processes with every limit off (``servers.real_server``):

* (a) **1 process**: N subscribers of one chat room on one process, no Redis;
* (b) **2 processes + Redis**: the same N, half on process A and half on process B, both
  with ``--redis-url``; the publisher is on A, so B's half gets every message through
  Redis;
* (c) **1 process + Redis**: as (a), but with ``--redis-url``: what Redis costs a
  process even when nothing else listens (``--no-single-redis`` leaves it out).

For each: a burst of B messages in one write, timed until every subscriber has every
message (deliveries/s, the median of R bursts); the publish-to-receive latency of every
delivery at a steady 10 messages/s (p50/p99); the CPU every server process used, per
delivery. Then, in a room of two (one subscriber on each process in (b)), P messages at a
steady rate: the CPU per publish of the server processes and of ``redis-server``, from
/proc (``procs.cpu_seconds``; the kernel counts in 10 ms ticks, hence P in the thousands),
which is what Redis adds to a publish.

Last, the messages one process can append and publish per second on Redis, with
pipelining off (``--redis-batch 1``: one round trip per message) and on (``--redis-batch
500``), one after the other in the same run, each on two fresh processes: S chat
connections on process A, each in a room of its own, send M messages each, all at once;
a subscriber of each room on process B counts them arriving (messages/s: from the first
write to the last arrival). With it, the CPU per message of ``redis-server`` (from its
``INFO cpu``: ``used_cpu_sys`` + ``used_cpu_user``) and of process A. A second table shows
both, with the ratio of on to off (``--no-appends`` leaves it out). Through WebSockets,
the appending process also parses, checks, echoes and writes every message: that work,
not Redis, bounds this row on one core.

And the same without the WebSocket layer (``appendrate.py``; ``--no-direct`` leaves it
out): one process runs R rooms of S senders that call ``RedisChatState.say`` in its own
loop, M messages each, one after the other, all senders at once, pipelining off then on;
another process, subscribed to every chat channel on a connection of its own, counts
every message published (messages/s: from the first ``say`` to the last arrival). This is
the rate the 10x target of pipelining is about: what one process can append and publish
per second on Redis. With it, the CPU per message of ``redis-server`` and of the appending
process. For these two rows, with two CPUs or more, ``redis-server`` and the appending
process each have a core of their own, as a deployment runs them: the appending process
is pinned to the servers' CPU (no server runs then) and ``redis-server`` is moved to the
load clients' (idle then), with the counter, and back afterwards. On one core together,
each waits for the other's turn of the CPU at every pipeline, which caps the ratio near
5x.

The subscribers are the raw load clients of ``compare.py`` (``loadclient.py``, two
processes: with (b), the first connects to A and the second to B). With two CPUs or more,
the servers and ``redis-server`` share the first CPU and the clients get the others, as in
``compare.py``: on a 2-core machine the second process adds no CPU, so (b) shows what
crossing processes costs, not what more cores would gain. Prints one Markdown table with
ratios to (a), the machine and its load average; writes the numbers to ``bench/results/``
(not in git).

Needs ``redis-server`` (or ``$REDIS_SERVER``) and the ``redis`` extra, and runs in the test
environment (``tests/redis_server.py`` is shared with the tests); ``uvloop``
(requirements/bench.txt) makes the load clients cheaper. Every step has a timeout, at most
2,000 subscribers, loopback only; every process is stopped by its pid.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from compare import (  # noqa: E402
    HOST, Bench, Plan, completion, fmt, machine, median_burst, progress, split_cores, wait_idle,
)
from loadclient import default_loop, raise_fd_limit  # noqa: E402
from procs import cpu_seconds  # noqa: E402
from servers import Server, real_server  # noqa: E402

MAX_SUBSCRIBERS = 2000
BASELINE = "a"


@dataclass
class ClusterPlan:
    """The sizes and durations of one run."""

    subscribers: int = 1000  # in the fan-out room, over every process
    burst: int = 50  # messages per burst, in one write
    repeats: int = 3  # bursts; the table shows the median
    rate: float = 10.0  # messages per second while the latency is measured
    latency_seconds: float = 5.0
    publishes: int = 3000  # messages in the room of two, for the CPU per publish
    publish_rate: float = 1000.0  # their rate, per second
    single_redis: bool = True  # measure (c), one process with --redis-url
    appends: bool = True  # measure the appends per second, pipelining off and on
    senders: int = 200  # chat connections sending at once on the appending process
    messages_each: int = 50  # messages each of them sends
    pipeline_batch: int = 500  # --redis-batch with pipelining on
    direct: bool = True  # measure the appends per second without sockets, off and on
    direct_rooms: int = 20  # rooms of the appending process, without sockets
    direct_senders: int = 10  # senders in each of them
    direct_messages: int = 50  # messages each sender sends, one after the other
    timeout: float = 60.0  # the most any one step may take, in seconds
    client_loop: str = "asyncio"


QUICK = ClusterPlan(subscribers=200, burst=20, repeats=1, latency_seconds=1.0,
                    publishes=1000, publish_rate=1000.0, senders=50, messages_each=20,
                    direct_rooms=10, direct_messages=50)


@dataclass
class Setup:
    """One column of the table: how many processes, with Redis or not."""

    key: str
    title: str
    processes: int
    redis: bool


SETUPS = [
    Setup("a", "1 process", 1, False),
    Setup("b", "2 processes + Redis", 2, True),
    Setup("c", "1 process + Redis", 1, True),
]


@dataclass
class Mode:
    """One column of the appends table: pipelining off or on."""

    key: str
    title: str


def modes(plan: ClusterPlan) -> list[Mode]:
    """Pipelining off, then on: the columns of the appends table."""
    return [Mode("off", "pipelining off (`--redis-batch 1`)"),
            Mode("on", f"pipelining on (`--redis-batch {plan.pipeline_batch}`)")]


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each named process has used so far."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def used(before: dict[str, float], pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each named process used since ``before``."""
    return {name: seconds - before[name] for name, seconds in cpu_of(pids).items()}


async def settle(servers: list[Server]) -> None:
    """Until every server process has gone quiet (``compare.wait_idle``, each in turn)."""
    for server in servers:
        await wait_idle(server)


class Cluster:
    """One run: the load clients, the Redis server, and one setup's processes at a time."""

    def __init__(self, plan: ClusterPlan, tmp: str, redis: Any,
                 server_cores: Optional[set[int]], client_cores: Optional[set[int]]) -> None:
        self.plan = plan
        self.tmp = tmp
        self.redis = redis
        self.server_cores = server_cores
        self.client_cores = client_cores
        # Two load-client processes: with two server processes, one connects to each.
        self.steps = Plan(processes=2, timeout=plan.timeout, rate=plan.rate,
                          client_loop=plan.client_loop)
        self.bench = Bench(self.steps, client_cores)
        self.redis_pid = redis.process.pid

    async def measure(self, setup: Setup) -> dict[str, Any]:
        """Every row of one setup, on fresh server processes stopped afterwards."""
        options = {"redis_url": self.redis.url} if setup.redis else {}
        servers = [real_server(self.tmp, key=f"{setup.key}{i}", name=f"{setup.key}{i}",
                               **options)[0] for i in range(setup.processes)]
        return await self._on(servers, lambda result: self._measure(setup, servers, result))

    async def appends(self, mode: Mode) -> dict[str, Any]:
        """The appends row of one mode, on two fresh server processes stopped afterwards."""
        batch = self.plan.pipeline_batch if mode.key == "on" else 1
        servers = [real_server(self.tmp, key=f"{mode.key}{i}", name=f"{mode.key}{i}",
                               redis_url=self.redis.url, redis_batch=batch)[0]
                   for i in range(2)]
        return await self._on(servers, lambda result: self._appends(mode, servers, result))

    async def _on(self, servers: list[Server],
                  measure: Callable[[dict[str, Any]], Awaitable[None]]) -> dict[str, Any]:
        """Start ``servers``, run ``measure`` into a result, stop them; their errors and
        error log lines go in the result."""
        result: dict[str, Any] = {}
        try:
            for server in servers:
                server.start(self.server_cores)
            await measure(result)
        finally:
            for server in servers:
                if not server.alive():
                    result.setdefault("error", f"{server.name} died{server.log_tail()}")
                server.stop()
            errors = [f"{server.name}: {line}" for server in servers
                      for line in server.error_lines()]
            if errors:
                result["log_errors"] = errors
        return result

    async def _measure(self, setup: Setup, servers: list[Server],
                       result: dict[str, Any]) -> None:
        plan, bench = self.plan, self.bench
        ports = [server.port for server in servers]
        pids = {server.name: server.pid for server in servers}
        if setup.redis:
            pids["redis"] = self.redis_pid
        first = servers[0]  # the publisher's process

        # Fan-out to N subscribers: bursts, then the latency at a steady rate.
        opened = await bench.open(first, f"/ws/chat/fan-{setup.key}", plan.subscribers, True,
                                  ports=ports)
        result["open"] = opened
        if "error" in opened:
            result["error"] = opened["error"]
            return
        await settle(servers)
        bursts = []
        for repeat in range(plan.repeats):
            before = cpu_of(pids)
            burst = await bench.burst(first, f"b{setup.key}{repeat}", plan.burst,
                                      plan.subscribers)
            burst["cpu_s"] = used(before, pids)
            bursts.append(burst)
            await settle(servers)
        result["burst"] = median_burst(bursts)
        result["bursts"] = bursts
        progress(f"({setup.key}) {setup.title}: bursts done")
        if "error" not in result["burst"]:
            before = cpu_of(pids)
            result["latency"] = await bench.steady(first, f"l{setup.key}",
                                                   plan.latency_seconds)
            result["latency"]["cpu_s"] = used(before, pids)
            progress(f"({setup.key}) {setup.title}: latency done")
        await bench.close(first)
        await settle(servers)

        # The CPU per publish, in a room of two.
        opened = await bench.open(first, f"/ws/chat/cost-{setup.key}", 2, True, ports=ports)
        if "error" in opened:
            result["cost"] = {"error": opened["error"]}
            return
        await settle(servers)
        bench.plan = dataclasses.replace(self.steps, rate=plan.publish_rate)
        try:
            before = cpu_of(pids)
            cost = await bench.steady(first, f"p{setup.key}",
                                      plan.publishes / plan.publish_rate)
            cost["cpu_s"] = used(before, pids)
        finally:
            bench.plan = self.steps
        result["cost"] = cost
        await bench.close(first)
        progress(f"({setup.key}) {setup.title}: CPU per publish done")

    async def _appends(self, mode: Mode, servers: list[Server],
                       result: dict[str, Any]) -> None:
        """Senders on the first process, a subscriber per room on the second: how fast
        the messages cross."""
        plan = self.plan
        sender, receiver = self.bench.workers
        path = f"/ws/chat/append-{mode.key}-{{i}}"  # a room per sender
        for worker, server in ((sender, servers[0]), (receiver, servers[1])):
            opened = await worker.call(
                "open", plan.timeout + 10, host=HOST, port=server.port, path=path,
                indices=list(range(plan.senders)), welcome=True, concurrency=100,
                timeout=plan.timeout)
            if opened.get("opened") != plan.senders:
                result["error"] = (f"{opened.get('opened')}/{plan.senders} opened: "
                                   f"{(opened.get('error') or ['?'])[0]}")
                return
        await settle(servers)
        tag = f"append{mode.key}"
        await receiver.call("arm", plan.timeout, tag=tag, expect=plan.messages_each,
                            timed=False)
        pids = {"publisher": servers[0].pid, "other": servers[1].pid}
        before, redis_before = cpu_of(pids), await self.redis_cpu()
        sent, got = await asyncio.gather(
            sender.call("publish_each", plan.timeout, tag=tag, count=plan.messages_each),
            receiver.call("wait", plan.timeout + 10, timeout=plan.timeout))
        result["cpu_s"] = dict(used(before, pids), redis=await self.redis_cpu() - redis_before)
        result.update(completion(sent, [got]))
        if "error" not in result:
            messages = plan.senders * plan.messages_each
            result["messages"] = messages
            result["messages_per_s"] = messages / ((result["last_ns"] - sent["t0"]) / 1e9)
            result["redis_cpu_us"] = 1e6 * result["cpu_s"]["redis"] / messages
            result["publisher_cpu_us"] = 1e6 * result["cpu_s"]["publisher"] / messages
        for worker in (sender, receiver):
            await worker.call("close", plan.timeout)
        await settle(servers)
        progress(f"appends, {mode.title}: done")

    async def direct(self, mode: Mode) -> dict[str, Any]:
        """The appends of one mode without sockets (``appendrate.py``): one process's
        senders call ``RedisChatState.say``, pinned like the servers; a counter on another
        process, subscribed to every chat channel, sees each message published."""
        plan = self.plan
        batch = self.plan.pipeline_batch if mode.key == "on" else 1
        expect = plan.direct_rooms * plan.direct_senders * plan.direct_messages
        prefix = f"direct-{mode.key}:"  # keys and channels of their own, per mode
        script = os.path.join(HERE, "appendrate.py")
        common = ["--url", self.redis.url, "--prefix", prefix, "--timeout", str(plan.timeout)]
        counter = await asyncio.create_subprocess_exec(
            sys.executable, script, "count", *common, "--expect", str(expect),
            stdout=asyncio.subprocess.PIPE)
        sender: Optional[asyncio.subprocess.Process] = None
        result: dict[str, Any] = {}
        # redis-server gets a core of its own, the appending process the other (as a
        # deployment runs them): moved to the load clients' cores, idle meanwhile, with
        # the counter, back to the servers' afterwards.
        apart = bool(self.server_cores and self.client_cores)
        if apart:
            os.sched_setaffinity(self.redis_pid, self.client_cores)  # type: ignore[arg-type]
        try:
            assert counter.stdout is not None
            ready = await asyncio.wait_for(counter.stdout.readline(), plan.timeout)
            if ready.strip() != b"ready":
                return {"error": f"the counter said {ready!r}"}
            redis_before = await self.redis_cpu()
            sender = await asyncio.create_subprocess_exec(
                sys.executable, script, "send", *common, "--batch", str(batch),
                "--rooms", str(plan.direct_rooms), "--senders", str(plan.direct_senders),
                "--messages", str(plan.direct_messages), stdout=asyncio.subprocess.PIPE)
            if self.server_cores:
                os.sched_setaffinity(sender.pid, self.server_cores)
            sent_out, _ = await asyncio.wait_for(sender.communicate(), plan.timeout + 30)
            counted_out, _ = await asyncio.wait_for(counter.communicate(), plan.timeout + 10)
            redis_cpu = await self.redis_cpu() - redis_before
            sent, counted = json.loads(sent_out), json.loads(counted_out)
        except (asyncio.TimeoutError, ValueError) as error:
            return {"error": f"{type(error).__name__}: {error}"}
        finally:
            if apart:
                os.sched_setaffinity(self.redis_pid, self.server_cores)  # type: ignore[arg-type]
            for process in (counter, sender):
                if process is not None and process.returncode is None:
                    process.kill()
                    await process.wait()
        result.update(sent=sent, counted=counted)
        if counted["received"] != sent["messages"] or sent["unshared"]:
            result["error"] = (f"{counted['received']}/{sent['messages']} published, "
                               f"{sent['unshared']} kept local")
            return result
        messages = sent["messages"]
        result["messages"] = messages
        result["messages_per_s"] = messages / (counted["last"] - sent["t0"])
        result["redis_cpu_us"] = 1e6 * redis_cpu / messages
        result["publisher_cpu_us"] = 1e6 * sent["cpu_s"] / messages
        progress(f"appends without sockets, {mode.title}: done")
        return result

    async def redis_cpu(self) -> float:
        """CPU seconds ``redis-server`` has used so far, as its ``INFO cpu`` says."""
        import redis.asyncio  # the bench needs the `redis` extra anyway

        client = redis.asyncio.Redis.from_url(self.redis.url)
        try:
            info = await client.info("cpu")
        finally:
            await client.aclose()
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def server_seconds(cpu: dict[str, float]) -> float:
    """CPU seconds of the server processes (not Redis) in a ``cpu_s`` record."""
    return sum(seconds for name, seconds in cpu.items() if name != "redis")


def numbers(plan: ClusterPlan, result: dict[str, Any]) -> dict[str, Any]:
    """The table's values for one setup: a number, None (not measured) or an error."""
    out: dict[str, Any] = {}
    if "error" in result and "burst" not in result:
        return {"error": result["error"]}
    burst = result.get("burst", {})
    if "error" in burst:
        out["deliveries_per_s"] = out["cpu_per_delivery_us"] = burst["error"]
    elif burst:
        deliveries = plan.subscribers * plan.burst
        out["deliveries_per_s"] = burst["deliveries_per_s"]
        out["cpu_per_delivery_us"] = 1e6 * server_seconds(burst["cpu_s"]) / deliveries
    latency = result.get("latency", {})
    for p in (50, 99):
        out[f"p{p}_ms"] = latency.get("error") or latency.get(f"p{p}_ms")
    cost = result.get("cost", {})
    if "error" in cost:
        for key in ("publish_cpu_us", "publisher_cpu_us", "redis_cpu_us", "others_cpu_us"):
            out[key] = cost["error"]
    elif cost:
        cpu, count = cost["cpu_s"], plan.publishes
        names = [name for name in cpu if name != "redis"]
        out["publish_cpu_us"] = 1e6 * server_seconds(cpu) / count
        out["publisher_cpu_us"] = 1e6 * cpu[names[0]] / count
        out["others_cpu_us"] = (1e6 * sum(cpu[name] for name in names[1:]) / count
                                if len(names) > 1 else None)
        out["redis_cpu_us"] = 1e6 * cpu["redis"] / count if "redis" in cpu else None
    return out


def rows(plan: ClusterPlan) -> list[tuple[str, str]]:
    """(label, key of ``numbers``) for every row of the table."""
    steady = f"{plan.rate:g} msg/s for {plan.latency_seconds:g} s"
    cost = f"room of 2, {plan.publishes:,} messages at {plan.publish_rate:,.0f}/s"
    median = f", median of {plan.repeats}" if plan.repeats > 1 else ""
    return [
        (f"fan-out deliveries/s, {plan.subscribers:,} subscribers, burst of {plan.burst}"
         f"{median}", "deliveries_per_s"),
        ("server CPU µs per delivery (every server process)", "cpu_per_delivery_us"),
        (f"publish-to-receive p50 ms, {plan.subscribers:,} subscribers, {steady}", "p50_ms"),
        (f"publish-to-receive p99 ms, {plan.subscribers:,} subscribers, {steady}", "p99_ms"),
        (f"server CPU µs per publish, {cost} (every server process)", "publish_cpu_us"),
        ("... of which the publishing process", "publisher_cpu_us"),
        ("... of which the other process (one subscriber, reached through Redis)",
         "others_cpu_us"),
        ("redis-server CPU µs per publish, same run", "redis_cpu_us"),
    ]


def table(plan: ClusterPlan, setups: list[Setup], values: dict[str, dict[str, Any]]) -> str:
    """One Markdown table: a row per measurement, a column per setup, ratios to (a)."""
    lines = ["| measurement | " + " | ".join(f"({s.key}) {s.title}" for s in setups) + " |",
             "| --- |" + " ---: |" * len(setups)]
    for label, key in rows(plan):
        base = values.get(BASELINE, {}).get(key)
        cells = []
        for setup in setups:
            value = values[setup.key].get(key, values[setup.key].get("error"))
            if value is None:
                cells.append("—")
            elif isinstance(value, str):
                cells.append(value.replace("|", "/")[:60])
            elif setup.key != BASELINE and isinstance(base, (int, float)) and base:
                cells.append(f"{fmt(value)} ({value / base:.2f}x)")
            else:
                cells.append(fmt(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def redis_cost(values: dict[str, dict[str, Any]]) -> Optional[str]:
    """The cost Redis adds per publish, in words, from the room-of-two rows."""
    a, b, c = (values.get(key, {}) for key in "abc")
    parts = []
    if all(isinstance(v.get("publisher_cpu_us"), float) for v in (a, c)):
        parts.append(f"{c['publisher_cpu_us'] - a['publisher_cpu_us']:+.0f} µs of CPU in the "
                     f"publishing process ((c) {c['publisher_cpu_us']:.0f} against (a) "
                     f"{a['publisher_cpu_us']:.0f})")
    if isinstance(b.get("others_cpu_us"), float):
        parts.append(f"{b['others_cpu_us']:.0f} µs in each other process the room has "
                     f"subscribers on (its delivery included; (b))")
    redis = [v["redis_cpu_us"] for v in (c, b) if isinstance(v.get("redis_cpu_us"), float)]
    if redis:
        parts.append("{} µs in redis-server ({})".format(
            " / ".join(f"{us:.0f}" for us in redis),
            " / ".join(key for key, v in (("(c)", c), ("(b)", b))
                       if isinstance(v.get("redis_cpu_us"), float))))
    return "The cost Redis adds per publish: " + "; ".join(parts) + "." if parts else None


@dataclass
class AppendsTable:
    """One appends table: its header, its rows ((key, label)), and the sizes its labels
    name, taken from the plan."""

    header: str
    rows: list[tuple[str, str]]
    sizes: Callable[[ClusterPlan], dict[str, int]]


SOCKETS_TABLE = AppendsTable("Redis appends, through WebSockets", [
    ("messages_per_s", "messages/s one process appends and publishes, counted arriving on "
     "the other process ({senders:,} senders × {each:,} messages, all at once)"),
    ("redis_cpu_us", "redis-server CPU µs per message (`INFO cpu`, sys + user)"),
    ("publisher_cpu_us", "appending process CPU µs per message"),
], lambda plan: dict(senders=plan.senders, each=plan.messages_each))
DIRECT_TABLE = AppendsTable("Redis appends, no sockets", [
    ("messages_per_s", "messages/s one process appends and publishes on Redis, no sockets "
     "({rooms:,} rooms × {senders:,} senders × {each:,} messages, calling "
     "`RedisChatState.say`), counted arriving on another connection"),
    ("redis_cpu_us", "redis-server CPU µs per message (`INFO cpu`, sys + user)"),
    ("publisher_cpu_us", "appending process CPU µs per message"),
], lambda plan: dict(rooms=plan.direct_rooms, senders=plan.direct_senders,
                     each=plan.direct_messages))


def appends_table(plan: ClusterPlan, results: dict[str, dict[str, Any]],
                  which: AppendsTable = SOCKETS_TABLE) -> str:
    """An appends table: a row per measurement, pipelining off and on, on's ratio to off."""
    columns = modes(plan)
    lines = [f"| {which.header} | " + " | ".join(mode.title for mode in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    sizes = which.sizes(plan)
    for key, label in which.rows:
        base = results.get("off", {}).get(key)
        cells = []
        for mode in columns:
            result = results.get(mode.key, {})
            value = result.get(key, result.get("error"))
            if value is None:
                cells.append("—")
            elif isinstance(value, str):
                cells.append(value.replace("|", "/")[:60])
            elif mode.key != "off" and isinstance(base, (int, float)) and base:
                cells.append(f"{fmt(value)} ({value / base:.2f}x)")
            else:
                cells.append(fmt(value))
        lines.append(f"| {label.format(**sizes)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_appends(plan: ClusterPlan, results: dict[str, dict[str, Any]],
                  which: AppendsTable, what: str, target: str) -> None:
    """Print an appends table and, under it, pipelining's gain in words."""
    print()
    print(appends_table(plan, results, which))
    print()
    gain = pipelining_gain(results, what, target)
    if gain:
        print(gain)


def pipelining_gain(results: dict[str, dict[str, Any]], what: str,
                    target: str) -> Optional[str]:
    """The appends per second with pipelining on against off, in words."""
    off, on = (results.get(key, {}).get("messages_per_s") for key in ("off", "on"))
    if not (isinstance(off, float) and isinstance(on, float)):
        return None
    return (f"{what}: {on / off:.1f}x the messages per second of pipelining off "
            f"({on:,.0f} against {off:,.0f}; {target}).")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


async def run(plan: ClusterPlan, results_dir: str) -> int:
    """Start Redis and the load clients, measure every setup, print the table."""
    sys.path.insert(0, ROOT)
    from tests.redis_server import RedisServer  # the tests' own: one way to start Redis

    raise_fd_limit()
    server_cores, client_cores = split_cores()
    setups = [setup for setup in SETUPS if plan.single_redis or setup.key != "c"]
    load_before, started = load_average(), time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    appends: dict[str, dict[str, Any]] = {}  # pipelining off and on
    direct: dict[str, dict[str, Any]] = {}  # the same without sockets
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        try:
            redis.start()
            if server_cores:
                os.sched_setaffinity(redis.process.pid, server_cores)
            cluster = Cluster(plan, tmp, redis, server_cores, client_cores)
            await cluster.bench.start()
            try:
                for setup in setups:
                    try:
                        results[setup.key] = await cluster.measure(setup)
                    except Exception as error:  # one setup failing still prints the others
                        results[setup.key] = {"error": f"{type(error).__name__}: {error}"}
                    if "error" in results[setup.key]:
                        progress(f"({setup.key}) {setup.title}: {results[setup.key]['error']}")
                for mode in modes(plan) if plan.appends else []:
                    try:
                        appends[mode.key] = await cluster.appends(mode)
                    except Exception as error:  # one mode failing still prints the other
                        appends[mode.key] = {"error": f"{type(error).__name__}: {error}"}
                    if "error" in appends[mode.key]:
                        progress(f"appends, {mode.title}: {appends[mode.key]['error']}")
                for mode in modes(plan) if plan.direct else []:
                    try:
                        direct[mode.key] = await cluster.direct(mode)
                    except Exception as error:  # one mode failing still prints the other
                        direct[mode.key] = {"error": f"{type(error).__name__}: {error}"}
                    if "error" in direct[mode.key]:
                        progress(f"appends without sockets, {mode.title}: "
                                 f"{direct[mode.key]['error']}")
            finally:
                await cluster.bench.stop()
        finally:
            redis.stop()
    elapsed, load_after = time.monotonic() - started, load_average()

    values = {setup.key: numbers(plan, results.get(setup.key, {})) for setup in setups}
    info = machine()
    print(table(plan, setups, values))
    print()
    cost = redis_cost(values)
    if cost:
        print(cost)
    if direct:
        print_appends(plan, direct, DIRECT_TABLE, "Pipelining, no sockets",
                      "the target is 10x")
    if appends:
        print_appends(plan, appends, SOCKETS_TABLE, "Pipelining, through WebSockets",
                      "bounded by the WebSocket and JSON work per message")
    print(f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), Linux {info['kernel']}; "
          f"Python {info['python']}, Tornado {info['tornado']}; load clients on "
          f"{plan.client_loop}. Servers and redis-server pinned to CPU "
          f"{sorted(server_cores or [])}, 2 load-client processes to CPU "
          f"{sorted(client_cores or [])}"
          + (f" (the appends without sockets: the appending process on CPU "
             f"{sorted(server_cores)}, redis-server and the counter on CPU "
             f"{sorted(client_cores)})" if direct and server_cores and client_cores else "")
          + f"; one run, {elapsed:.0f} s. Load average "
          f"(1, 5, 15 min): {load_before} at the start, {load_after} at the end.")
    for key, result in [*results.items(), *appends.items()]:
        errors = result.get("log_errors", [])
        if errors:
            print(f"Warning: the servers of ({key}) logged {len(errors)} error line(s) or "
                  f"traceback(s), the first: {errors[0][:300]}")
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, time.strftime("cluster-%Y%m%d-%H%M%S.json"))
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"plan": asdict(plan), "machine": info, "load_average":
                   [load_before, load_after], "results": results, "table": values,
                   "appends": appends, "direct": direct},
                  out, indent=1, default=str)
    progress(f"results: {os.path.relpath(path)}")
    return 0 if all("error" not in result
                    for result in [*results.values(), *appends.values(),
                                   *direct.values()]) else 1


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="200 subscribers, one burst, shorter runs (about 40 s)")
    parser.add_argument("--subscribers", type=int,
                        help=f"subscribers in the fan-out room (default 1000, at most "
                             f"{MAX_SUBSCRIBERS})")
    parser.add_argument("--no-single-redis", action="store_true",
                        help="leave out (c), one process with --redis-url")
    parser.add_argument("--no-appends", action="store_true",
                        help="leave out the appends per second, pipelining off and on")
    parser.add_argument("--no-direct", action="store_true",
                        help="leave out the appends per second without sockets, "
                             "pipelining off and on")
    parser.add_argument("--results", default=os.path.join(HERE, "results"),
                        help="where the JSON of the run goes (default: bench/results)")
    parser.add_argument("--client-loop", choices=["uvloop", "asyncio"], default=default_loop(),
                        help="the load clients' event loop (default: uvloop if installed)")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(QUICK if args.quick else ClusterPlan(),
                               single_redis=not args.no_single_redis,
                               appends=not args.no_appends, direct=not args.no_direct,
                               client_loop=args.client_loop)
    if args.subscribers is not None:
        if not 2 <= args.subscribers <= MAX_SUBSCRIBERS:
            parser.error(f"--subscribers takes 2 to {MAX_SUBSCRIBERS}")
        plan.subscribers = args.subscribers
    if not (os.environ.get("REDIS_SERVER") or shutil.which("redis-server")):
        parser.error("redis-server is not installed (apt-get install redis-server, or set "
                     "$REDIS_SERVER)")
    sys.exit(asyncio.run(run(plan, args.results)))


if __name__ == "__main__":
    main()
