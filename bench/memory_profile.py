"""Where the memory of an idle nicknamed chat connection goes, by component (tracemalloc).

    python bench/memory_profile.py                  # 5,000 connections, about 30 s
    python bench/memory_profile.py --connections 1000 --top 20

Serves ``server.make_app`` in this process on a free 127.0.0.1 port, with the options
``compare.py`` gives the real server (``servers.real_server_flags``: pings and every limit
off; ``--default-limits`` keeps the server's default frame and room rate limits
instead, with only the per-address connection cap and handshake budget off), and opens the idle
connections of ``compare.py``'s memory row from a load-client process (``loadclient.py``):
``/ws/chat/idle<room>?nick=u<i>``, rooms of 25, each waiting for its welcome frame. Once
they are open and the server has gone quiet, the Python heap allocated since before the
first connection (``tracemalloc``, started then, snapshots diffed) is printed per
connection, as a table by component and a table of the source lines that allocated most.

An allocation is charged to the innermost frame of its traceback that is Tornado's or this
project's (standard-library frames, such as ``asyncio`` or ``json``, are charged to
whoever called them), and that frame's file to a component. Python's heap is not the whole
RSS (the allocator's free lists and arenas, and the load of tracemalloc itself, are not in
it); the RSS growth of the same run is printed beside it for scale.

Loopback only; the load-client process is stopped by its pid.
"""

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from loadclient import Worker, raise_fd_limit  # noqa: E402
from procs import free_port, rss  # noqa: E402
from servers import real_server_flags  # noqa: E402

import tornado  # noqa: E402

TORNADO_DIR = os.path.dirname(os.path.abspath(tornado.__file__)) + os.sep
FRAMES = 16  # traceback depth kept per allocation: deep enough to leave asyncio behind

# (path prefix, component): the first match wins; paths are relative to Tornado's package
# directory ("tornado/...") or to the checkout.
COMPONENTS: list[tuple[str, str]] = [
    ("tornado/web.py", "Tornado RequestHandler (the handler object)"),
    ("tornado/httputil.py", "Tornado request and headers"),
    ("tornado/http1connection.py", "Tornado HTTP/1 connection"),
    ("tornado/httpserver.py", "Tornado HTTP server (per connection)"),
    ("tornado/iostream.py", "Tornado IOStream and its buffers"),
    ("tornado/websocket.py", "Tornado WebSocket protocol"),
    ("tornado/", "Tornado, other (accept, loop, futures)"),
    ("realtime/limits/", "ours: admission ticket and limits"),
    ("realtime/chat/", "ours: chat session and room state"),
    ("realtime/pubsub/tornado_internals.py", "ours: frame writer, handshake shed"),
    ("realtime/pubsub/", "ours: hub subscriber"),
    ("realtime/ops/", "ours: metrics and logs"),
    ("realtime/", "ours: other realtime/"),
    ("handlers/", "ours: socket handler"),
    ("server.py", "ours: server.py"),
]
OTHER = "standard library only (no Tornado or project frame)"


def where(trace: tracemalloc.Traceback) -> tuple[str, str]:
    """The component and ``file:line`` an allocation is charged to."""
    for frame in reversed(trace):  # tracemalloc lists the outermost frame first
        name = os.path.abspath(frame.filename)
        if name.startswith(TORNADO_DIR):
            rel = "tornado/" + name[len(TORNADO_DIR):]
        elif name.startswith(ROOT + os.sep) and not name.startswith(HERE + os.sep):
            rel = name[len(ROOT) + 1:]
        else:
            continue
        for prefix, component in COMPONENTS:
            if rel.startswith(prefix):
                return component, f"{rel}:{frame.lineno}"
    frame = trace[-1]
    return OTHER, f"{os.path.basename(frame.filename)}:{frame.lineno}"


def snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot()


async def quiet(seconds: float = 0.5, timeout: float = 30.0) -> None:
    """Until this process's CPU has been (almost) idle for ``seconds``."""
    deadline = time.monotonic() + timeout
    last, since = time.process_time(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = time.process_time()
        if now - last > 0.02:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return


async def profile(count: int, room_size: int, default_limits: bool, tmp: str,
                  top: int) -> int:
    import server
    from tornado.httpserver import HTTPServer

    values, _ = real_server_flags()
    if default_limits:
        values = {k: v for k, v in values.items()
                  if k in ("address", "ping_interval", "max_pending_bytes",
                           "max_connections_per_ip", "handshake_rate_limit")}
    port = free_port()
    config = server.Config(**dict(values, port=port, data_dir=os.path.join(tmp, "data")))
    app = server.make_app(config)
    await server.start_components(app)
    http = HTTPServer(app)
    http.listen(port, "127.0.0.1")
    worker = Worker(None)
    await worker.start()
    try:
        # One connection first: what is created once (caches, a room, metric children)
        # is then in the "before" snapshot, not charged to the connections.
        path = "/ws/chat/idle{room}?nick=u{i}"
        warm = await worker.call("open", 60, host="127.0.0.1", port=port,
                                 path="/ws/chat/warm{room}?nick=w{i}", indices=[0],
                                 welcome=True, concurrency=1, timeout=30, room_size=1)
        if warm.get("opened") != 1:
            print(f"warm-up connection failed: {warm}", file=sys.stderr)
            return 1
        await quiet()
        # Tracing starts now, so the snapshots hold only what was allocated since (and the
        # server's imports and setup need no filtering out).
        tracemalloc.start(FRAMES)
        before, rss_before = snapshot(), rss(os.getpid())
        opened = await worker.call("open", 300, host="127.0.0.1", port=port, path=path,
                                   indices=list(range(count)), welcome=True, concurrency=100,
                                   timeout=60, room_size=room_size)
        await quiet()
        after, rss_after = snapshot(), rss(os.getpid())
        n = opened.get("opened", 0)
        if n < count:
            print(f"only {n}/{count} opened: {opened.get('error')}", file=sys.stderr)
            if not n:
                return 1
        report(before, after, n, (rss_after - rss_before) / n, top, default_limits)
    finally:
        tracemalloc.stop()
        await worker.call("close", 60)
        await worker.stop()
        http.stop()
        await app.settings["lifecycle"].shutdown(5.0)
    return 0


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int,
           rss_per_conn: float, top: int, default_limits: bool) -> None:
    """Print the per-connection tables."""
    by_component: dict[str, float] = defaultdict(float)
    by_line: dict[tuple[str, str], float] = defaultdict(float)
    blocks: dict[str, int] = defaultdict(int)
    for stat in after.compare_to(before, "traceback"):
        component, line = where(stat.traceback)
        by_component[component] += stat.size_diff
        by_line[(component, line)] += stat.size_diff
        blocks[component] += stat.count_diff
    total = sum(by_component.values())
    limits = "the server's default limits" if default_limits else "compare.py's flags"
    print(f"Python heap per idle nicknamed chat connection ({n:,} open, rooms of 25, "
          f"{limits}): {total / n / 1024:.2f} KiB; RSS growth {rss_per_conn / 1024:.2f} KiB")
    print()
    print("| component | bytes per connection | blocks per connection | share |")
    print("| --- | ---: | ---: | ---: |")
    for component, size in sorted(by_component.items(), key=lambda kv: -kv[1]):
        if abs(size / n) < 1:
            continue
        print(f"| {component} | {size / n:,.0f} | {blocks[component] / n:.1f} | "
              f"{100 * size / total:.0f}% |")
    print(f"| total | {total / n:,.0f} | {sum(blocks.values()) / n:.1f} | 100% |")
    print()
    print(f"The {top} source lines that allocated most (the innermost Tornado or project frame):")
    print()
    print("| line | component | bytes per connection |")
    print("| --- | --- | ---: |")
    for (component, line), size in sorted(by_line.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {line} | {component.split(' (')[0]} | {size / n:,.0f} |")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000,
                        help="idle connections to open (1 to 20,000)")
    parser.add_argument("--room-size", type=int, default=25, help="connections per room")
    parser.add_argument("--top", type=int, default=15, help="source lines to list")
    parser.add_argument("--default-limits", action="store_true",
                        help="the server's default limits instead of compare.py's (all off)")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 20000:
        parser.error("--connections takes 1 to 20,000")
    if raise_fd_limit() < args.connections + 200:
        parser.error("the descriptor limit is too low for that many connections")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        status: Any = asyncio.run(profile(args.connections, args.room_size,
                                          args.default_limits, tmp, args.top))
    sys.exit(status)


if __name__ == "__main__":
    main()
