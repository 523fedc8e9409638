"""Connections held by the real server, opened in steps: what each step costs, what holding
them costs, and how long the server takes to stop with them open.

    python bench/held_steps.py                          # 2 steps of 9,900: about 2 min
    python bench/held_steps.py --step 2000 --steps 9    # does the cost per connection grow?
    python bench/held_steps.py --hold 30 -- --ping-interval=25   # pings on while held

Starts ``server.py`` as ``compare.py`` does (``servers.real_server``: pings and every limit
off; options after ``--`` are added to its command line), pinned to the first CPU, and two
load-client processes (``loadclient.py``) on the others, each from a loopback address of
its own. Opens ``--step`` idle nicknamed chat connections at a time (rooms of 25, each
waiting for its welcome) and prints, per step, the wall time, the server's CPU per
connection and its RSS. Then the time ``/metrics`` and ``/healthz`` take to answer, and,
with ``--hold S``, the server's CPU and its own loop-lag histogram
(``realtime_event_loop_lag_seconds``) over S seconds of holding them idle. Last, it sends
SIGTERM and prints the seconds until the server exits and its exit status (non-zero: a
shutdown closer failed or ran out of ``--shutdown-timeout``). Every process started here is
stopped by its pid; loopback only.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from compare import lag_histogram, split_cores  # noqa: E402
from loadclient import Worker, default_loop, raise_fd_limit  # noqa: E402
from procs import cpu_seconds, rss  # noqa: E402
from servers import real_server  # noqa: E402

ROOM_SIZE = 25
PATH = "/ws/chat/idle{room}?nick=u{i}"  # compare.py's memory and held rows' connection


def fetch_ms(port: int, path: str) -> float:
    """Milliseconds ``GET path`` takes to answer in full."""
    start = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        answer.read()
    return (time.monotonic() - start) * 1000


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    server_cores, client_cores = split_cores()
    with tempfile.TemporaryDirectory(prefix="bench-held-") as tmp:
        server, _, _ = real_server(tmp)
        server.argv += args.server_options
        server.start(server_cores)
        workers = [Worker(client_cores, default_loop()) for _ in range(2)]
        status = 0
        try:
            for worker in workers:
                await worker.start()
            for step in range(args.steps):
                first = step * args.step
                cpu, wall = cpu_seconds(server.pid), time.monotonic()
                replies = await asyncio.gather(*(
                    worker.call("open", args.timeout + 10, host="127.0.0.1", port=server.port,
                                path=PATH, indices=list(range(first + i, first + args.step, 2)),
                                welcome=True, concurrency=args.concurrency,
                                timeout=args.timeout,
                                room_size=ROOM_SIZE, source=f"127.0.0.{2 + i}")
                    for i, worker in enumerate(workers)))
                wall = time.monotonic() - wall
                opened = sum(reply.get("opened", 0) for reply in replies)
                errors = [reply["error"] for reply in replies if reply.get("error")]
                used = cpu_seconds(server.pid) - cpu
                print(f"step {step + 1}: {opened:,} opened in {wall:.1f} s, server CPU "
                      f"{1e6 * used / max(opened, 1):.0f} µs per connection, RSS "
                      f"{rss(server.pid) / 2**20:.0f} MiB{'; ' + str(errors[0]) if errors else ''}",
                      flush=True)
            print(f"/metrics {fetch_ms(server.port, '/metrics'):.1f} ms, /healthz "
                  f"{fetch_ms(server.port, '/healthz'):.1f} ms", flush=True)
            if args.hold:
                await asyncio.sleep(2.0)  # the last handshakes' work done
                before, cpu = lag_histogram(server.port), cpu_seconds(server.pid)
                await asyncio.sleep(args.hold)
                after, used = lag_histogram(server.port), cpu_seconds(server.pid) - cpu
                samples = after[float("inf")] - before[float("inf")]
                counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
                print(f"held {args.hold:g} s: server CPU {used:.2f} s; loop lag samples "
                      f"{samples:.0f}, of which at most 10 ms {counts.get(0.01, 0):.0f}, at most "
                      f"100 ms {counts.get(0.1, 0):.0f}", flush=True)
            stopping = time.monotonic()
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            try:
                status = server.process.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                status = -1
            print(f"SIGTERM to exit: {time.monotonic() - stopping:.1f} s, exit status {status}")
            for line in server.error_lines()[:3]:
                print(f"  {line}")
        finally:
            for worker in workers:
                await worker.stop()
            server.stop()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", type=int, default=9900, help="connections per step")
    parser.add_argument("--steps", type=int, default=2, help="steps")
    parser.add_argument("--concurrency", type=int, default=100,
                        help="handshakes in flight per load-client process (an accept burst: "
                        "2000)")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="seconds to hold them idle, measuring CPU and loop lag")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="the most one step (or the shutdown) may take, in seconds")
    parser.add_argument("server_options", nargs="*",
                        help="options added to server.py's command line (after --)")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
