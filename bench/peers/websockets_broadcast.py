"""A minimal ``websockets`` server (asyncio API) whose rooms use ``broadcast()``.

    python bench/peers/websockets_broadcast.py --port 9001

The same endpoints as ``tornado_classic.py``, written the way the ``websockets`` docs
recommend for fan-out: ``websockets.asyncio.server.broadcast(members, text)``, which
writes to every connection synchronously, with no backpressure.

* ``/ws/chat/<room>``: a welcome frame first; ``{"type": "message", "text": ...}`` goes to
  everyone in the room as a frame shaped like the real server's.
* ``/ws/echo``: every frame back as it came.
* ``/ws/bare`` (any other path): a WebSocket that does nothing.

Loopback only, pings off, no compression: it exists to be measured by ``bench/compare.py``.
"""

import argparse
import asyncio
import itertools
import json
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

CHAT = "/ws/chat/"


class Peer:
    """The rooms, and the handler ``serve`` calls for every connection."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[ServerConnection]] = {}
        self.ids = itertools.count(1)

    async def handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path == "/ws/echo":
                async for frame in ws:
                    await ws.send(frame)
            elif path.startswith(CHAT):
                await self.room(ws, path[len(CHAT):])
            else:
                await ws.wait_closed()
        except ConnectionClosed:
            pass  # the bench resets its connections when a measurement is over

    async def room(self, ws: ServerConnection, name: str) -> None:
        members = self.rooms.setdefault(name, set())
        members.add(ws)
        try:
            await ws.send(json.dumps({"type": "welcome", "room": name}))
            async for frame in ws:
                message = json.loads(frame)
                if message.get("type") != "message":
                    continue
                broadcast(members, json.dumps({
                    "type": "message", "id": next(self.ids), "room": name, "from": None,
                    "text": message.get("text"), "ts": int(time.time() * 1000)}))
        finally:
            members.discard(ws)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    peer = Peer()
    async with serve(peer.handle, "127.0.0.1", args.port, ping_interval=None,
                     compression=None, backlog=args.backlog):
        await asyncio.Event().wait()  # until the bench terminates the process


if __name__ == "__main__":
    asyncio.run(main())
