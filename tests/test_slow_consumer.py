"""Flow control over real sockets: a client that stops reading is dropped, nobody else waits."""

import pytest
import tornado.web

from handlers.base import JsonSocketHandler
from realtime.hub import Hub
from tests.support import port_of, raw_handshake, receive

BOUND = 128 * 1024


class ListenerSocketHandler(JsonSocketHandler):
    """Subscribes every connection to one topic."""

    def connected(self) -> None:
        self.subscribe("test.feed")


@pytest.fixture
def hub() -> Hub:
    return Hub(max_pending_bytes=BOUND)


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    return tornado.web.Application([(r"/ws/feed", ListenerSocketHandler, dict(hub=hub))])


async def test_stalled_reader_is_dropped_and_readers_get_every_message(
    http_server_client, ws_connect, hub
):
    """A client that never reads is dropped past the bound while readers get every message."""
    readers = [await ws_connect("/ws/feed") for _ in range(3)]
    _, stalled_writer, head = await raw_handshake(port_of(http_server_client), "/ws/feed")
    assert head.startswith(b"HTTP/1.1 101")

    sent = 0
    while hub.dropped == 0 and sent < 3000:  # 30 MB at most, far past any kernel buffer
        hub.publish("test.feed", f"{sent:05d}" + "x" * 10_000)
        sent += 1
        for reader in readers:
            frame = await receive(reader)
            assert frame is not None and frame[:5] == f"{sent - 1:05d}"

    assert hub.dropped == 1
    assert len(hub.subscribers("test.feed")) == 3
    stalled_writer.close()
