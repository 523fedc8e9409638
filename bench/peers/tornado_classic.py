"""The bench's baseline: a minimal Tornado server with the classic fan-out loop.

    python bench/peers/tornado_classic.py --port 9000

What Tornado's chat demo does, with the state passed in rather than kept in class
attributes: a room publish is ``for member in room: member.write_message(text)``.

* ``/ws/chat/<room>``: a welcome frame first; ``{"type": "message", "text": ...}`` goes to
  everyone in the room as a frame shaped like the real server's.
* ``/ws/echo``: every frame back as it came.
* ``/ws/bare``: a WebSocket that does nothing (the idle-memory baseline).

Loopback only, pings off, no limits: it exists to be measured by ``bench/compare.py``.
"""

import argparse
import asyncio
import itertools
import json
import time
from typing import Any, Union

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.websocket import WebSocketClosedError


class RoomSocketHandler(tornado.websocket.WebSocketHandler):
    """A chat room, the classic way: one ``write_message`` per member per message."""

    def initialize(self, rooms: dict[str, set["RoomSocketHandler"]],
                   ids: "itertools.count[int]") -> None:
        self.rooms = rooms
        self.ids = ids

    def open(self, name: str) -> None:  # type: ignore[override]
        self.name = name
        self.members = self.rooms.setdefault(name, set())
        self.members.add(self)
        self.write_message(json.dumps({"type": "welcome", "room": name}))

    def on_message(self, frame: Union[str, bytes]) -> None:
        message = json.loads(frame)
        if message.get("type") != "message":
            return
        text = json.dumps({"type": "message", "id": next(self.ids), "room": self.name,
                           "from": None, "text": message.get("text"),
                           "ts": int(time.time() * 1000)})
        for member in self.members:
            try:
                member.write_message(text)
            except WebSocketClosedError:
                pass  # on_close removes it

    def on_close(self) -> None:
        self.members.discard(self)


class EchoSocketHandler(tornado.websocket.WebSocketHandler):
    """Every frame back to its sender."""

    def on_message(self, frame: Union[str, bytes]) -> None:
        self.write_message(frame, binary=isinstance(frame, bytes))


class BareSocketHandler(tornado.websocket.WebSocketHandler):
    """An open WebSocket and nothing else."""

    def on_message(self, frame: Union[str, bytes]) -> None:
        pass


def make_app() -> tornado.web.Application:
    """The three endpoints; pings off."""
    state: dict[str, Any] = dict(rooms={}, ids=itertools.count(1))
    return tornado.web.Application([
        (r"/ws/chat/([A-Za-z0-9_-]{1,64})", RoomSocketHandler, state),
        (r"/ws/echo", EchoSocketHandler),
        (r"/ws/bare", BareSocketHandler),
    ], websocket_ping_interval=None)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    server = tornado.httpserver.HTTPServer(make_app())
    server.add_sockets(tornado.netutil.bind_sockets(args.port, "127.0.0.1",
                                                    backlog=args.backlog))
    await asyncio.Event().wait()  # until the bench terminates the process


if __name__ == "__main__":
    asyncio.run(main())
