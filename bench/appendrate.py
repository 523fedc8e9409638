"""How many chat messages ONE process can append and publish per second on Redis, without
the WebSocket layer: the real ``RedisChatState`` on a real ``Hub`` and ``RedisBroker``,
against a real ``redis-server``, its senders calling ``say`` in this process's own loop.

    python bench/appendrate.py send --url redis://127.0.0.1:6379/0 --batch 1
    python bench/appendrate.py count --url redis://127.0.0.1:6379/0 --expect 10000

``send``: ``--rooms`` rooms with ``--senders`` anonymous senders each; every sender sends
``--messages`` messages, one after the other (each awaits its reply, as a chat connection
does), all senders at once. ``--batch`` is ``--redis-batch``: 1 is one script call at a
time (pipelining off), more shares pipelines and, per room, script calls. Prints one JSON
line: the messages sent, the seconds from the first ``say`` to the last reply, and the
CPU seconds this process used meanwhile (``time.process_time``).

``count``: subscribes (``PSUBSCRIBE``, on a connection of its own) to every chat channel of
``--prefix``, prints ``ready`` once subscribed, then counts the messages published (each of
a batch wire, ``redisbroker.decode``) until
``--expect`` have come (or ``--timeout`` s pass) and prints one JSON line: how many came,
and the ``time.time()`` of the first and the last. So the published messages are seen
arriving on another connection of Redis, not taken on the sender's word.

``bench/cluster.py`` runs both, pinned like its servers, in the same run with pipelining
off and on.
"""

import argparse
import asyncio
import json
import sys
import time
from typing import Any

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(
    __import__("os").path.abspath(__file__))))

from realtime.chat.redisstate import RedisChatState  # noqa: E402
from realtime.pubsub.hub import Hub  # noqa: E402
from realtime.pubsub.redisbroker import RedisBroker, decode  # noqa: E402

TEXT = "a message of about the length people type in a chat room"


async def send(url: str, prefix: str, batch: int, rooms: int, senders: int,
               messages: int) -> dict[str, Any]:
    """Run the senders; what they sent, in how long, for how much CPU."""
    broker = RedisBroker(url, prefix)
    hub = Hub(broker=broker)
    state = RedisChatState(url, hub, prefix, batch=batch)
    await broker.start()
    await state.start()
    try:
        everyone = []
        for room_index in range(rooms):
            room = f"rate-{room_index}"
            for sender_index in range(senders):
                connection = f"c{room_index}-{sender_index}"
                await state.enter(room, connection, None)
                everyone.append((room, connection))

        async def sender(room: str, connection: str) -> None:
            for _ in range(messages):
                await state.say(room, connection, TEXT)

        t0, cpu, started = time.time(), time.process_time(), time.perf_counter()
        await asyncio.gather(*(sender(room, connection) for room, connection in everyone))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return {"messages": len(everyone) * messages, "t0": t0, "seconds": seconds,
                "cpu_s": cpu,
                "unshared": state.unshared, "pipelines": state.batcher.pipelines}
    finally:
        await state.aclose()
        await broker.close()


async def count(url: str, prefix: str, expect: int, timeout: float) -> dict[str, Any]:
    """Count the chat messages published on Redis until ``expect`` have come."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"{prefix}topic:chat.*")
    await pubsub.get_message(timeout=5)  # the psubscribe confirmation
    print("ready", flush=True)
    got, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while got < expect and time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "pmessage":
                continue
            last = time.time()
            if not got:
                first = last
            decoded = decode(message["data"])  # a batch wire carries several
            got += len(decoded[1]) if decoded is not None else 1
    finally:
        await pubsub.aclose()
        await client.aclose()
    return {"received": got, "first": first, "last": last}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["send", "count"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", default="realtime:")
    parser.add_argument("--batch", type=int, default=500, help="--redis-batch (1: off)")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--senders", type=int, default=10, help="senders per room")
    parser.add_argument("--messages", type=int, default=50, help="messages per sender")
    parser.add_argument("--expect", type=int, default=0, help="messages to count")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.what == "send":
        result = asyncio.run(send(args.url, args.prefix, args.batch, args.rooms, args.senders,
                                  args.messages))
    else:
        result = asyncio.run(count(args.url, args.prefix, args.expect, args.timeout))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
