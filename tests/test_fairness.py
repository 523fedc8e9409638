"""Budgets shared by several connections: per client address, and per chat room.

Every case runs on a frozen clock (no refill unless the test moves it), with the
per-connection limit loose enough that only the shared budget under test can refuse.
"""

from typing import Any, Callable

import pytest
from tornado.httpclient import HTTPClientError

from realtime.limits import policy
from realtime.pubsub.hub import Hub
from server import Config, keyed_limiter, make_app
from tests.probe import add_probe
from tests.support import receive_json, receive_type, send_json
from tests.limits.test_limits import FakeClock

PER_CONNECTION_BURST = 5
IP_BURST = 8


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def serve(start_server: Callable[..., int], hub: Hub, clock: FakeClock) -> Callable[..., str]:
    """``serve(**config)`` starts an app with the probe on the test's hub and clock and
    returns its ws:// base URL."""
    def start(xheaders: bool = False, **config: Any) -> str:
        app = make_app(Config(hub=hub, clock=clock, rate_limit_strikes=100, **config))
        add_probe(app)
        return f"ws://127.0.0.1:{start_server(app, xheaders=xheaders)}"
    return start


async def ping(conn) -> dict[str, Any]:
    """Send a probe ping; the frame it gets back (a pong, or an error)."""
    await send_json(conn, {"type": "ping"})
    return await receive_json(conn)


async def test_address_budget_is_shared_by_its_connections(serve, ws_open):
    """Three sockets of one address, each under its own burst, share one budget: past it
    every one of them gets rate_limited, while another address is served."""
    base = serve(rate_burst=PER_CONNECTION_BURST, ip_rate_burst=IP_BURST) + "/ws/probe"
    mine = [await ws_open(base) for _ in range(3)]
    other = await ws_open(base, source_ip="127.0.0.2")
    for conn in [*mine, other]:
        await receive_type(conn, "welcome")
    for n in range(IP_BURST):  # 3, 3 and 2 pings: each socket under its own burst of 5
        assert await ping(mine[n % 3]) == {"type": "pong"}
    for conn in mine:
        error = await ping(conn)
        assert error["code"] == "rate_limited" and "your address" in error["message"]
    assert await ping(other) == {"type": "pong"}


async def test_address_budget_refills_at_its_rate(serve, ws_open, clock):
    """Once the address's budget is spent, 1/rate seconds gives it one frame more."""
    base = serve(ip_rate_limit=10, ip_rate_burst=1) + "/ws/probe"
    conn = await ws_open(base)
    await receive_type(conn, "welcome")
    assert await ping(conn) == {"type": "pong"}
    assert (await ping(conn))["code"] == "rate_limited"
    clock.now += 0.1
    assert await ping(conn) == {"type": "pong"}


async def test_address_budget_follows_x_real_ip_with_xheaders(serve, ws_open):
    """Behind a proxy (--xheaders) the budget is the real client's, not the proxy's."""
    base = serve(xheaders=True, ip_rate_burst=1) + "/ws/probe"
    alice = await ws_open(base, {"X-Real-IP": "203.0.113.1"})
    bob = await ws_open(base, {"X-Real-IP": "203.0.113.2"})
    for conn in (alice, bob):
        await receive_type(conn, "welcome")
    assert await ping(alice) == {"type": "pong"}
    assert (await ping(alice))["code"] == "rate_limited"
    assert await ping(bob) == {"type": "pong"}


async def test_address_budget_zero_turns_it_off(serve, ws_open):
    """--ip-rate-limit 0: one address may send as its connections' limits allow."""
    base = serve(rate_burst=PER_CONNECTION_BURST, ip_rate_limit=0, ip_rate_burst=1)
    conns = [await ws_open(base + "/ws/probe") for _ in range(2)]
    for conn in conns:
        await receive_type(conn, "welcome")
        for _ in range(PER_CONNECTION_BURST):
            assert await ping(conn) == {"type": "pong"}


# The room budget: deliveries per second, a public message costing one per listener.

async def chat(ws_open, base: str, room: str, nick: str):
    """A chat client of ``room`` holding ``nick``, past its welcome and its join."""
    conn = await ws_open(f"{base}/ws/chat/{room}?nick={nick}")
    await receive_type(conn, "welcome")
    await receive_type(conn, "joined")
    return conn


async def say(conn, text: str) -> dict[str, Any]:
    """Send a public message; the first frame back that is the message or an error."""
    await send_json(conn, {"type": "message", "text": text})
    while True:
        frame = await receive_json(conn)
        if frame["type"] in ("message", "error"):
            return frame


async def test_room_budget_refuses_and_publishes_nothing(serve, ws_open):
    """Past the room's budget a message gets rate_limited, nobody hears it, and the room's
    history does not have it; another room is not affected."""
    base = serve(room_rate_limit=10, room_rate_burst=4, ip_rate_limit=0)
    alice = await chat(ws_open, base, "busy", "alice")
    bob = await chat(ws_open, base, "busy", "bob")
    await receive_type(alice, "joined")  # bob's arrival
    for n in range(2):  # two listeners: each message costs 2 of the 4
        assert (await say(alice, f"hello {n}"))["text"] == f"hello {n}"
        assert (await receive_type(bob, "message"))["text"] == f"hello {n}"
    error = await say(alice, "one too many")
    assert error["code"] == "rate_limited" and "room" in error["message"]
    elsewhere = await chat(ws_open, base, "quiet", "carol")
    assert (await say(elsewhere, "hi"))["text"] == "hi"
    await send_json(bob, {"type": "message", "text": "bob's turn"})
    assert (await receive_json(bob))["code"] == "rate_limited"  # nothing of alice's came
    late = await ws_open(f"{base}/ws/chat/busy")
    history = (await receive_type(late, "welcome"))["history"]
    assert [m["text"] for m in history] == ["hello 0", "hello 1"]


async def test_room_budget_weighs_messages_by_listeners(serve, ws_open, clock):
    """With the same budget, a room of one carries twice the messages a room of two does,
    and the budget refills at its rate."""
    base = serve(room_rate_limit=10, room_rate_burst=4, ip_rate_limit=0)
    alone = await chat(ws_open, base, "solo", "alice")
    for n in range(4):
        assert (await say(alone, f"{n}"))["text"] == f"{n}"
    assert (await say(alone, "fifth"))["code"] == "rate_limited"
    clock.now += 0.1  # one delivery's worth
    assert (await say(alone, "again"))["text"] == "again"


async def test_room_budget_covers_joins_and_changes_nothing(serve, ws_open):
    """A nickname change over the budget is refused with rate_limited and the old nickname
    stays."""
    base = serve(room_rate_limit=10, room_rate_burst=2, ip_rate_limit=0)
    alice = await chat(ws_open, base, "names", "alice")
    for n in range(2):
        await send_json(alice, {"type": "join", "nick": f"alice{n}"})
        assert (await receive_type(alice, "renamed"))["to"] == f"alice{n}"
    await send_json(alice, {"type": "join", "nick": "mallory"})
    assert (await receive_type(alice, "error"))["code"] == "rate_limited"
    late = await ws_open(f"{base}/ws/chat/names")
    assert (await receive_type(late, "welcome"))["online"] == ["alice1"]


def test_budget_defaults_and_zero_turns_them_off():
    """The documented defaults; a rate of 0 gives no budget at all."""
    config = Config()
    assert (config.ip_rate_limit, config.ip_rate_burst) == (50.0, 200)
    assert (config.room_rate_limit, config.room_rate_burst) == (2000.0, 4000)
    assert keyed_limiter(0, 200, None) is None
    assert keyed_limiter(50, 200, None) is not None


HANDSHAKE_BURST = 4


async def test_new_sockets_per_address_are_budgeted(serve, ws_open):
    """Past its handshake burst an address is refused with 429 and Retry-After, while
    another address still connects."""
    base = serve(handshake_rate_burst=HANDSHAKE_BURST, handshake_rate_limit=1) + "/ws/probe"
    for _ in range(HANDSHAKE_BURST):
        await receive_type(await ws_open(base), "welcome")
    with pytest.raises(HTTPClientError) as refused:
        await ws_open(base)
    assert refused.value.code == 429
    assert refused.value.response.headers["Retry-After"] == "1"
    await receive_type(await ws_open(base, source_ip="127.0.0.2"), "welcome")


async def test_one_address_storm_is_refused_with_the_default_options(serve, ws_open):
    """With every option at its default, one address reconnecting all at once gets its
    --handshake-rate-burst of sockets, then 429 with Retry-After (the handshake budget,
    not the connection cap), while another address still connects."""
    base = serve() + "/ws/probe"
    mine = [await ws_open(base) for _ in range(policy.DEFAULT_HANDSHAKE_BURST)]
    for conn in mine:
        await receive_type(conn, "welcome")
    with pytest.raises(HTTPClientError) as refused:
        await ws_open(base)
    assert refused.value.code == 429
    assert refused.value.response.headers["Retry-After"] == "1"
    await receive_type(await ws_open(base, source_ip="127.0.0.2"), "welcome")


async def test_handshake_budget_refills_at_its_rate(serve, ws_open, clock):
    """Once an address's handshakes are spent, 1/rate seconds lets it open one more."""
    base = serve(handshake_rate_burst=1, handshake_rate_limit=0.5) + "/ws/probe"
    await receive_type(await ws_open(base), "welcome")
    with pytest.raises(HTTPClientError):
        await ws_open(base)
    clock.now += 2.0
    await receive_type(await ws_open(base), "welcome")


async def test_handshake_budget_can_be_turned_off(serve, ws_open):
    """With --handshake-rate-limit 0, an address opens as many sockets as its cap allows."""
    base = serve(handshake_rate_burst=1, handshake_rate_limit=0) + "/ws/probe"
    for _ in range(5):
        await receive_type(await ws_open(base), "welcome")
