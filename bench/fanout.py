"""Fan-out benchmark: one publish to N real WebSocket clients, and server memory per socket.

    python bench/fanout.py                 # N = 10, 100, 1000; about half a minute
    python bench/fanout.py --clients 10 100 --rounds 50 --burst 100

Starts the server in a subprocess on a free 127.0.0.1 port (``make_app`` plus a bench-only
endpoint ``/ws/bench`` that subscribes every socket to one topic and publishes on request),
opens N clients from this process, and measures:

* latency: one client sends ``publish``; time until the last of the N clients has the frame
  (median and worst over ``--rounds`` rounds) and the median client's time;
* throughput: ``--burst`` publishes back to back; frames delivered per second until every
  client has every frame;
* server cost: the server process's CPU time during the burst, per delivered frame (the
  clock ticks at 10 ms, so small N gives coarse numbers);
* memory: the server's RSS before and after the N sockets opened, per socket.

Everything is bounded: at most 2000 clients, every wait has a timeout, loopback only. The
clients run in one Python process on the same machine, so at large N the numbers include
the clients' own parsing; they are a floor for the server, not its ceiling.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

from procs import cpu_seconds, free_port, rss, wait_accepting

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TOPIC = "bench.all"
WAIT = 60.0  # seconds: the most any single step may take
MAX_CLIENTS = 2000


def serve(port: int) -> None:
    """The server side: make_app with the bench endpoint, limits off, no pings."""
    from tornado.web import url

    from handlers.websocket import JsonSocketHandler
    from realtime.wire.messages import Message
    from server import Config, make_app, name_socket_endpoints, serve as run

    class BenchSocketHandler(JsonSocketHandler):
        """``/ws/bench``: everyone listens; ``publish`` sends one frame to everyone."""

        def connected(self) -> None:
            self.subscribe(TOPIC)

        def handle_publish(self, message: Message) -> None:
            self.publish(TOPIC, {"type": "tick", "seq": message.get("seq")})

    config = Config(port=port, rate_limit=0, max_connections_per_ip=0, ping_interval=0,
                    max_pending_bytes=16 * 1024 * 1024)
    app = make_app(config)
    app.add_handlers(r".*", name_socket_endpoints([
        url(r"/ws/bench", BenchSocketHandler, app.settings["sockets"], name="ws_bench"),
    ]))
    sys.exit(asyncio.run(run(config, app)))


class Clients:
    """N WebSocket clients, each recording when it received which seq."""

    def __init__(self) -> None:
        self.conns: list[Any] = []
        self.seen: list[dict[int, float]] = []  # per client: seq -> perf_counter at arrival
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self, url: str, count: int) -> None:
        from tornado.websocket import websocket_connect

        async def one() -> None:
            conn = await websocket_connect(url)
            index = len(self.conns)
            self.conns.append(conn)
            self.seen.append({})
            self.tasks.append(asyncio.create_task(self._read(conn, self.seen[index])))

        for start in range(0, count, 100):  # in waves, like a page full of tabs
            await asyncio.wait_for(
                asyncio.gather(*(one() for _ in range(min(100, count - start)))), WAIT)

    async def _read(self, conn: Any, seen: dict[int, float]) -> None:
        while (frame := await conn.read_message()) is not None:
            seen[json.loads(frame)["seq"]] = time.perf_counter()
            self.changed.set()

    async def wait_all(self, seqs: range) -> None:
        """Until every client has every seq in ``seqs``."""
        async def check() -> None:
            while not all(seq in seen for seen in self.seen for seq in seqs):
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(check(), WAIT)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for task in self.tasks:
            task.cancel()


async def measure(count: int, rounds: int, burst: int) -> dict[str, float]:
    """Start a server, connect ``count`` clients, measure; the server is stopped after."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients = Clients()
    try:
        await wait_accepting(port, lambda: process.poll() is not None, WAIT)
        await asyncio.sleep(0.2)  # let the server settle before the baseline reading
        before = rss(process.pid)
        await clients.open(f"ws://127.0.0.1:{port}/ws/bench", count)
        await asyncio.sleep(0.2)
        after = rss(process.pid)
        publisher = clients.conns[0]

        last, median = [], []
        for seq in range(rounds):
            sent = time.perf_counter()
            await publisher.write_message(json.dumps({"type": "publish", "seq": seq}))
            await clients.wait_all(range(seq, seq + 1))
            arrivals = sorted(seen[seq] - sent for seen in clients.seen)
            last.append(arrivals[-1])
            median.append(arrivals[len(arrivals) // 2])

        first = rounds
        cpu = cpu_seconds(process.pid)
        sent = time.perf_counter()
        for seq in range(first, first + burst):
            publisher.write_message(json.dumps({"type": "publish", "seq": seq}))
        await clients.wait_all(range(first, first + burst))
        elapsed = time.perf_counter() - sent
        cpu = cpu_seconds(process.pid) - cpu
        return {
            "clients": count,
            "median_client_ms": 1000 * statistics.median(median),
            "last_client_ms": 1000 * statistics.median(last),
            "worst_last_ms": 1000 * max(last),
            "deliveries_per_s": count * burst / elapsed,
            "server_us_per_delivery": 1e6 * cpu / (count * burst),
            "rss_per_conn_kib": (after - before) / count / 1024,
            "rss_mib": after / 2**20,
        }
    finally:
        clients.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def table(rows: list[dict[str, float]]) -> str:
    """The results as a Markdown table."""
    head = ["clients", "median client ms", "last client ms (median)", "last client ms (worst)",
            "deliveries/s", "server CPU µs per delivery", "RSS per socket KiB",
            "server RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        lines.append(
            f"| {row['clients']:.0f} | {row['median_client_ms']:.2f} | "
            f"{row['last_client_ms']:.2f} | {row['worst_last_ms']:.2f} | "
            f"{row['deliveries_per_s']:,.0f} | {row['server_us_per_delivery']:.1f} | "
            f"{row['rss_per_conn_kib']:.1f} | "
            f"{row['rss_mib']:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds per N")
    parser.add_argument("--burst", type=int, default=200, help="publishes in the throughput run")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    if max(args.clients) > MAX_CLIENTS or args.rounds > 1000 or args.burst > 1000:
        parser.error(f"at most {MAX_CLIENTS} clients, 1000 rounds, 1000 publishes per burst")
    rows = []
    for count in args.clients:
        rows.append(asyncio.run(measure(count, args.rounds, args.burst)))
        print(f"N={count} done", file=sys.stderr)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, clients in one process, "
          f"{args.rounds} latency rounds, bursts of {args.burst}")
    print(table(rows))


if __name__ == "__main__":
    main()
