"""Per-connection limits over real sockets: message size (1009) and message rate (1008).

The JSON-endpoint cases use the test-only ``/ws/probe`` (``tests/probe.py``); chat and vote
get the same cases by adding their paths to ``JSON_ENDPOINTS``.
"""

import json

import pytest
import tornado.web

from realtime.pubsub.hub import Hub
from realtime.wire.closecodes import CloseCode
from server import Config, make_app
from tests.probe import add_probe
from tests.support import (
    OP_CONTINUATION, OP_TEXT, closed, client_frame, port_of, raw_handshake,
    read_frame, receive, receive_json, receive_type, send_json,
)

LIMIT = 64 * 1024  # the default --max-message-size
BURST = 5
STRIKES = 3
JSON_ENDPOINTS = ["/ws/probe"]


class FakeClock:
    """The rate limiter's clock, moved by hand: no refill unless a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(hub: Hub, clock: FakeClock) -> Config:
    return Config(hub=hub, rate_burst=BURST, rate_limit_strikes=STRIKES, clock=clock)


@pytest.fixture
def app(config: Config) -> tornado.web.Application:
    app = make_app(config)
    add_probe(app)
    return app


async def test_message_of_exactly_the_limit_passes(ws_connect):
    """A text message of exactly --max-message-size bytes is accepted and echoed."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message("x" * LIMIT)
    assert await receive(conn) == "x" * LIMIT


async def test_multibyte_message_of_exactly_the_limit_passes(ws_connect):
    """The limit counts UTF-8 bytes: 2-byte characters filling it exactly pass."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message("é" * (LIMIT // 2))
    assert await receive(conn) == "é" * (LIMIT // 2)


async def test_message_one_byte_over_the_limit_closes_with_1009(ws_connect):
    """A message one byte over --max-message-size closes the socket with 1009."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message("x" * (LIMIT + 1))
    assert await closed(conn) == CloseCode.MESSAGE_TOO_BIG


async def test_fragmented_message_within_the_limit_is_one_message(http_server_client):
    """Fragments adding up to the limit arrive as one message."""
    reader, writer, _ = await raw_handshake(port_of(http_server_client), "/ws/echo",
                                            receive_buffer=1 << 20)
    writer.write(client_frame(OP_TEXT, b"a" * (LIMIT // 2), fin=False))
    writer.write(client_frame(OP_CONTINUATION, b"b" * (LIMIT // 2), fin=True))
    assert await read_frame(reader) == (OP_TEXT, b"a" * (LIMIT // 2) + b"b" * (LIMIT // 2))
    writer.close()


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_over_the_rate_frames_get_rate_limited_then_1008(ws_connect, path):
    """After the burst each frame gets rate_limited; one more than the strikes closes 1008."""
    conn = await ws_connect(path)
    await receive_type(conn, "welcome")
    for n in range(BURST):
        await conn.write_message(json.dumps({"type": "ping", "n": n}))
        assert await receive(conn) is not None
    for _ in range(STRIKES):
        await send_json(conn, {"type": "ping"})
        error = await receive_json(conn)
        assert (error["type"], error["code"]) == ("error", "rate_limited")
    await send_json(conn, {"type": "ping"})
    assert await closed(conn) == CloseCode.POLICY_VIOLATION


async def test_an_accepted_frame_resets_the_strikes(ws_connect, clock):
    """Strikes count refusals in a row: a frame accepted in between starts the count over."""
    conn = await ws_connect("/ws/probe")
    await receive_type(conn, "welcome")
    for _ in range(BURST):
        await send_json(conn, {"type": "ping"})
        assert await receive_json(conn) == {"type": "pong"}
    for _ in range(3):
        for _ in range(STRIKES):
            await send_json(conn, {"type": "ping"})
            assert (await receive_json(conn))["code"] == "rate_limited"
        clock.now += 0.06  # 1.2 tokens at the default 20/s: one frame more
        await send_json(conn, {"type": "ping"})
        assert await receive_json(conn) == {"type": "pong"}


async def test_rate_limit_is_per_connection(ws_connect):
    """One client over its limit does not use up another client's tokens."""
    flooder = await ws_connect("/ws/echo")
    polite = await ws_connect("/ws/echo")
    for _ in range(BURST + STRIKES + 1):
        await flooder.write_message("flood")
    assert await closed(flooder) == CloseCode.POLICY_VIOLATION
    await polite.write_message("hello")
    assert await receive(polite) == "hello"


async def test_rate_limited_error_says_when_to_retry(ws_connect):
    """The rate_limited message tells people how long to wait."""
    conn = await ws_connect("/ws/probe")
    await receive_type(conn, "welcome")
    for _ in range(BURST + 1):
        await send_json(conn, {"type": "ping"})
    for _ in range(BURST):
        await receive_json(conn)
    error = await receive_json(conn)
    assert error["code"] == "rate_limited" and " s " in error["message"]


async def test_echo_flood_gets_only_echoes_then_1008(ws_connect):
    """Raw echo past its limit writes nothing but echoes of what was sent, then closes 1008."""
    conn = await ws_connect("/ws/echo")
    sent = [f"frame {n}" for n in range(BURST + STRIKES + 1)] + [b"\x00binary"]
    for frame in sent:
        await conn.write_message(frame, binary=isinstance(frame, bytes))
    echoed = []
    while (frame := await receive(conn)) is not None:
        echoed.append(frame)
    assert conn.close_code == CloseCode.POLICY_VIOLATION
    assert conn.close_reason == "rate limit exceeded"
    assert echoed == sent[:BURST]  # the burst, in order; the refused frames vanish
