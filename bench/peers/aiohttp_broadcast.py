"""A minimal aiohttp server whose rooms send to every member in turn.

    python bench/peers/aiohttp_broadcast.py --port 9002

The same endpoints as ``tornado_classic.py``, written the way aiohttp's own chat example
does fan-out: ``for member in room: await member.send_str(text)`` (aiohttp has no
``broadcast()``; ``send_str`` waits only when a member's write buffer is over its limit).

* ``/ws/chat/<room>``: a welcome frame first; ``{"type": "message", "text": ...}`` goes to
  everyone in the room as a frame shaped like the real server's.
* ``/ws/echo``: every frame back as it came.
* ``/ws/bare``: a WebSocket that does nothing.

Loopback only, pings (heartbeat) off, no compression: it exists to be measured by
``bench/compare.py``.
"""

import argparse
import asyncio
import itertools
import json
import socket
import time

from aiohttp import WSMsgType, web

ROOMS = web.AppKey("rooms", dict[str, set[web.WebSocketResponse]])
IDS = web.AppKey("ids", itertools.count)


async def opened(request: web.Request) -> web.WebSocketResponse:
    """The handshake, with the bench's settings: no heartbeat, no compression."""
    ws = web.WebSocketResponse(heartbeat=None, compress=False)
    await ws.prepare(request)
    return ws


async def room(request: web.Request) -> web.WebSocketResponse:
    """A chat room member: every message to everyone in the room, one after the other."""
    name = request.match_info["room"]
    members = request.app[ROOMS].setdefault(name, set())
    ws = await opened(request)
    members.add(ws)
    try:
        await ws.send_str(json.dumps({"type": "welcome", "room": name}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            if message.get("type") != "message":
                continue
            text = json.dumps({"type": "message", "id": next(request.app[IDS]), "room": name,
                               "from": None, "text": message.get("text"),
                               "ts": int(time.time() * 1000)})
            for member in list(members):  # a member may leave while we wait on another
                try:
                    await member.send_str(text)
                except ConnectionError:
                    pass  # its own handler removes it
    finally:
        members.discard(ws)
    return ws


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Every frame back to its sender."""
    ws = await opened(request)
    async for frame in ws:
        if frame.type == WSMsgType.TEXT:
            await ws.send_str(frame.data)
        elif frame.type == WSMsgType.BINARY:
            await ws.send_bytes(frame.data)
    return ws


async def bare(request: web.Request) -> web.WebSocketResponse:
    """An open WebSocket and nothing else."""
    ws = await opened(request)
    async for _ in ws:
        pass
    return ws


def make_app() -> web.Application:
    """The three endpoints and the rooms' state."""
    app = web.Application()
    app[ROOMS] = {}
    app[IDS] = itertools.count(1)
    app.router.add_get(r"/ws/chat/{room:[A-Za-z0-9_-]{1,64}}", room)
    app.router.add_get("/ws/echo", echo)
    app.router.add_get("/ws/bare", bare)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", args.port), backlog=args.backlog)
    await web.SockSite(runner, sock, backlog=args.backlog).start()
    try:
        await asyncio.Event().wait()  # until the bench terminates the process
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
