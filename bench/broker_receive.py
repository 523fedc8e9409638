"""What receiving a message from Redis costs a process: our broker's listener against
redis-py's own ``PubSub``, in the same run, on one real redis-server.

    python bench/broker_receive.py            # 20,000 messages per side
    python bench/broker_receive.py --messages 5000

Starts a redis-server on a free loopback port (tests/redis_server.py, so run it in the test
environment), subscribes one receiver to one channel, and has a separate publisher process
send ``--messages`` PUBLISHes of a small chat frame in pipelined batches. The figure is the
receiving process's CPU time per message (``time.process_time``, the publisher's excluded)
and the messages per second it got through. redis-py picks its hiredis parser when hiredis
is installed (the ``redis`` extra installs it), both for us and for the peer.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio  # noqa: E402

from realtime.pubsub.envelope import Envelope  # noqa: E402
from realtime.pubsub.redisbroker import RedisBroker, encode  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

FRAME = b'{"type":"message","id":1764000000000001,"room":"lobby","from":"alice","text":"hello"}'
BATCH = 500
MAX_MESSAGES = 200_000
TIMEOUT = 120.0

PUBLISHER = """
import socket, sys
port, count, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
channel, payload = bytes.fromhex(sys.argv[4]), bytes.fromhex(sys.argv[5])
def bulk(b): return b"$" + str(len(b)).encode() + b"\\r\\n" + b + b"\\r\\n"
command = b"*3\\r\\n" + bulk(b"PUBLISH") + bulk(channel) + bulk(payload)
with socket.create_connection(("127.0.0.1", port)) as s:
    for start in range(0, count, batch):
        n = min(batch, count - start)
        s.sendall(command * n)
        replies = 0
        while replies < n:
            replies += s.recv(65536).count(b":")
"""


async def measure(port: int, channel: bytes, payload: bytes, count: int,
                  done: asyncio.Event) -> tuple[float, float]:
    """Run the publisher; the receiver's CPU µs per message and messages per second."""
    cpu, wall = time.process_time(), time.perf_counter()
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), str(count),
                                  str(BATCH), channel.hex(), payload.hex()])
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        publisher.wait(timeout=TIMEOUT)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1e6 * cpu / count, count / wall


async def ours(server: RedisServer, count: int) -> tuple[float, float]:
    """Our RedisBroker's listener delivering to a counting callback."""
    broker = RedisBroker(server.url)
    received = 0
    done = asyncio.Event()

    def deliver(topic: str, envelope: Envelope) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    broker.attach(deliver)
    broker.subscribe("bench")
    await broker.start()
    await broker.ready(["bench"])
    try:
        wire = encode(Envelope(FRAME), bytes(16))  # an origin that is not this broker's
        return await measure(server.port, broker.channel("bench"), wire, count, done)
    finally:
        await broker.close()


async def redis_py(server: RedisServer, count: int) -> tuple[float, float]:
    """redis-py's PubSub, read with ``get_message`` in a loop, as its documentation shows."""
    client = redis.asyncio.Redis.from_url(server.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(b"bench")
    done = asyncio.Event()

    async def read() -> None:
        received = 0
        while received < count:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                received += 1
        done.set()

    reader = asyncio.ensure_future(read())
    try:
        return await measure(server.port, b"bench", FRAME, count, done)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await pubsub.aclose()
        await client.aclose()


async def main(count: int) -> None:
    server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
    try:
        rows: list[tuple[str, float, float]] = []
        sides: list[tuple[str, Callable[[RedisServer, int], Awaitable[tuple[float, float]]]]] = [
            ("RedisBroker listener (ours)", ours), ("redis-py PubSub.get_message", redis_py)]
        for name, run in sides:
            cpu, rate = await run(server, count)
            rows.append((name, cpu, rate))
    finally:
        server.stop()
    try:
        import hiredis  # noqa: F401
        parser = "hiredis"
    except ImportError:
        parser = "pure Python (hiredis not installed)"
    base_cpu, base_rate = rows[1][1], rows[1][2]
    print(f"{count} messages received from one redis-server channel; parser: {parser}; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'receiver':<30} {'CPU µs/msg':>11} {'x peer':>7} {'msgs/s':>9} {'x peer':>7}")
    for name, cpu, rate in rows:
        print(f"{name:<30} {cpu:>11.1f} {cpu / base_cpu:>7.2f} {rate:>9.0f} "
              f"{rate / base_rate:>7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000,
                        help=f"messages per side (at most {MAX_MESSAGES})")
    args = parser.parse_args()
    asyncio.run(main(max(1, min(args.messages, MAX_MESSAGES))))
