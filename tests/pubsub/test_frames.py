"""Every frame a client sends counts toward its rate limit: fragments, pings and pongs too,
on the inbound fast path and on Tornado's own frame loop alike.

``realtime/pubsub/tornado_internals.py`` reaches into Tornado's frame reader for the fragments;
the first test fails loudly if Tornado changes what it overrides, the others check the
counting itself over raw sockets, on the frozen clock of ``test_limits.py``.
"""

import inspect
import json
import struct

import pytest
import tornado.web
from tornado.websocket import WebSocketProtocol13

from realtime.pubsub.hub import Hub
from realtime.pubsub import tornado_internals
from realtime.pubsub.tornado_internals import CountingProtocol, check_tornado
from realtime.wire.closecodes import CloseCode
from server import Config, make_app
from tests.probe import add_probe
from tests.support import (
    OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, client_frame, port_of,
    raw_handshake, read_frame, receive_type,
)
from tests.limits.test_limits import FakeClock

BURST = 5
STRIKES = 3
PING = json.dumps({"type": "ping"}).encode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["bulk reader", "Tornado's reader"], autouse=True)
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on the inbound fast path and on Tornado's own frame loop (its
    fallback: --compression, another Tornado)."""
    monkeypatch.setattr(tornado_internals, "FAST_READ", request.param == "bulk reader")
    return str(request.param)


@pytest.fixture
def app(hub: Hub, clock: FakeClock) -> tornado.web.Application:
    app = make_app(Config(hub=hub, rate_burst=BURST, rate_limit_strikes=STRIKES,
                          ip_rate_limit=0, clock=clock))
    add_probe(app)
    return app


async def raw_open(http_server_client, path: str):
    """A raw socket to ``path``, past the probe's welcome."""
    reader, writer, head = await raw_handshake(port_of(http_server_client), path,
                                               receive_buffer=1 << 20)
    assert head.startswith(b"HTTP/1.1 101")
    if path == "/ws/probe":
        assert json.loads((await read_frame(reader))[1])["type"] == "welcome"
    return reader, writer


async def frames_until_close(reader) -> tuple[list[tuple[int, bytes]], int]:
    """Every data frame the server sends (pongs left out) until its close frame, and the
    close code."""
    received = []
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == OP_CLOSE:
            return received, struct.unpack("!H", payload[:2])[0]
        if opcode != OP_PONG:
            received.append((opcode, payload))


def rate_limited(received: list[tuple[int, bytes]]) -> int:
    """How many of ``received`` are rate_limited error frames."""
    return sum(json.loads(payload).get("code") == "rate_limited" for _, payload in received)


async def test_tornado_still_reads_frames_the_way_we_hook(ws_connect, hub, reader):
    """The overridden frame reader exists, and every socket reads through it: the bulk
    reader unless it is turned off."""
    check_tornado()
    assert inspect.iscoroutinefunction(WebSocketProtocol13._receive_frame)
    await receive_type(await ws_connect("/ws/probe"), "welcome")
    [handler] = hub.connections
    assert type(handler.ws_connection) is CountingProtocol
    assert tornado_internals.reads_fast(handler.ws_connection) is (reader == "bulk reader")


@pytest.mark.parametrize("path", ["/ws/probe", "/ws/echo"])
async def test_flood_of_empty_fragments_is_rate_limited_then_1008(http_server_client, path):
    """A message that never ends, sent as empty continuation fragments, spends the burst,
    gets rate_limited (JSON endpoints only) for each strike, then is closed with 1008."""
    reader, writer = await raw_open(http_server_client, path)
    writer.write(client_frame(OP_TEXT, b"", fin=False))
    writer.write(client_frame(OP_CONTINUATION, b"", fin=False) * 1000)
    received, code = await frames_until_close(reader)
    assert code == CloseCode.POLICY_VIOLATION
    assert rate_limited(received) == (STRIKES if path == "/ws/probe" else 0)
    assert len(received) == rate_limited(received)  # nothing was delivered
    writer.close()


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG], ids=["ping", "pong"])
@pytest.mark.parametrize("path", ["/ws/probe", "/ws/echo"])
async def test_flood_of_control_frames_is_rate_limited_then_1008(
    http_server_client, path, opcode
):
    """Pings or unsolicited pongs count like messages: past the burst and the strikes, 1008."""
    reader, writer = await raw_open(http_server_client, path)
    writer.write(client_frame(opcode, b"x") * 1000)
    received, code = await frames_until_close(reader)
    assert code == CloseCode.POLICY_VIOLATION
    assert rate_limited(received) == (STRIKES if path == "/ws/probe" else 0)
    assert len(received) == rate_limited(received)
    writer.close()


async def test_message_with_a_refused_fragment_is_dropped_whole(http_server_client, clock):
    """A message whose last fragments came over the limit is not handled at all; the next
    one, once tokens are back, is."""
    reader, writer = await raw_open(http_server_client, "/ws/probe")
    pieces = [PING[:4], PING[4:8], PING[8:12], PING[12:14], PING[14:15], PING[15:16], PING[16:]]
    writer.write(client_frame(OP_TEXT, pieces[0], fin=False))
    for n, piece in enumerate(pieces[1:], start=2):
        writer.write(client_frame(OP_CONTINUATION, piece, fin=n == len(pieces)))
    for _ in range(len(pieces) - BURST):  # frames 6 and 7 are refused
        opcode, payload = await read_frame(reader)
        assert json.loads(payload)["code"] == "rate_limited"
    clock.now += 1.0
    writer.write(client_frame(OP_TEXT, PING))
    assert await read_frame(reader) == (OP_TEXT, b'{"type":"pong"}')
    writer.close()


async def test_fragments_within_the_limit_still_make_one_message(http_server_client):
    """Counting fragments changes nothing for a message sent in fewer frames than the burst."""
    reader, writer = await raw_open(http_server_client, "/ws/echo")
    writer.write(client_frame(OP_TEXT, b"ab", fin=False))
    writer.write(client_frame(OP_CONTINUATION, b"", fin=False))
    writer.write(client_frame(OP_PING, b"p"))
    writer.write(client_frame(OP_CONTINUATION, b"c", fin=True))
    assert await read_frame(reader) == (OP_PONG, b"p")
    assert await read_frame(reader) == (OP_TEXT, b"abc")
    writer.close()
