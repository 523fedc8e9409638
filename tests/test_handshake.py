"""Who may open a socket: origin policy (403), Upgrade required (400), per-IP cap (429)."""

import pytest
from tornado.httpclient import HTTPClientError

from handlers.websocket import SocketHandler
from realtime.pubsub.hub import Hub
from server import Config
from tests.support import closed, connect, poll_until, port_of, raw_handshake, receive

ALLOWED = "https://app.example"
CAP = 3


@pytest.fixture
def config(hub: Hub) -> Config:
    return Config(hub=hub, allowed_origins=(ALLOWED,), max_connections_per_ip=CAP)


async def assert_echoes(conn) -> None:
    await conn.write_message("still here")
    assert await receive(conn) == "still here"


async def test_cross_origin_handshake_is_refused_with_403(http_server_client):
    """A page on another site cannot open a socket: the handshake is answered 403."""
    with pytest.raises(HTTPClientError) as refused:
        await connect(http_server_client, "/ws/echo", {"Origin": "https://evil.example"})
    assert refused.value.code == 403


async def test_cross_site_fetch_metadata_is_refused_with_403(http_server_client):
    """A browser's Sec-Fetch-Site: cross-site with a foreign origin is answered 403."""
    headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    with pytest.raises(HTTPClientError) as refused:
        await connect(http_server_client, "/ws/echo", headers)
    assert refused.value.code == 403


async def test_allowlisted_origin_is_accepted(ws_connect):
    """An origin in --allowed-origins gets its 101 and a working socket."""
    conn = await ws_connect("/ws/echo", {"Origin": ALLOWED})
    await assert_echoes(conn)


async def test_same_host_origin_is_accepted(ws_connect, http_server_client):
    """A page served by this host (Origin matches Host) may connect."""
    origin = f"http://127.0.0.1:{port_of(http_server_client)}"
    conn = await ws_connect("/ws/echo", {"Origin": origin})
    await assert_echoes(conn)


async def test_handshake_without_origin_is_accepted(ws_connect):
    """A non-browser client sends no Origin and is accepted."""
    conn = await ws_connect("/ws/echo")
    await assert_echoes(conn)


async def test_lookalike_of_an_allowed_origin_is_refused(http_server_client):
    """The allowlist is exact: http:// instead of https:// is refused."""
    with pytest.raises(HTTPClientError) as refused:
        await connect(http_server_client, "/ws/echo", {"Origin": "http://app.example"})
    assert refused.value.code == 403


async def test_handshake_without_upgrade_is_refused_with_400(http_server_client):
    """A plain GET on a socket path (no Upgrade header) is answered 400."""
    _, writer, head = await raw_handshake(port_of(http_server_client), "/ws/echo", upgrade=False)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400")


async def test_connection_over_the_per_ip_cap_is_refused_with_429(ws_connect, http_server_client):
    """One more socket than --max-connections-per-ip from one address is answered 429."""
    conns = [await ws_connect("/ws/echo") for _ in range(CAP)]
    with pytest.raises(HTTPClientError) as refused:
        await connect(http_server_client, "/ws/echo")
    assert refused.value.code == 429
    for conn in conns:
        await assert_echoes(conn)


async def test_closed_connection_frees_its_slot(ws_connect, app):
    """Once a socket from a capped address closes, a new one is accepted."""
    slots = app.settings["sockets"]["admission"].ip_connections
    conns = [await ws_connect("/ws/echo") for _ in range(CAP)]
    conns[0].close(1000)
    assert await closed(conns[0]) == 1000
    await poll_until(lambda: slots.count("127.0.0.1") == CAP - 1)
    conn = await ws_connect("/ws/echo")
    await assert_echoes(conn)


async def test_refused_handshakes_hold_no_slot(ws_connect, http_server_client):
    """Handshakes refused for their origin do not count against the address's cap."""
    for _ in range(CAP + 2):
        with pytest.raises(HTTPClientError):
            await connect(http_server_client, "/ws/echo", {"Origin": "https://evil.example"})
    conns = [await ws_connect("/ws/echo") for _ in range(CAP)]
    await assert_echoes(conns[-1])


async def test_socket_paths_reach_only_socket_routes(app):
    """Every WebSocket route lives under /ws/ and no page or API route matches a path there,
    so trying the socket routes first (``server.sockets_first``) changes no path's route."""
    rules = [(rule.matcher.regex, rule.target) for rule in app.wildcard_router.rules]
    sockets = [regex for regex, target in rules
               if isinstance(target, type) and issubclass(target, SocketHandler)]
    assert sockets and all(regex.pattern.startswith("/ws/") for regex in sockets)
    paths = ["/ws/echo", "/ws/chat/lobby", "/ws/vote/demo", "/ws/counter/c1", "/ws/x/y"]
    assert not [(regex.pattern, path) for regex, target in rules for path in paths
                if regex not in sockets and regex.match(path)]
