"""``GET /metrics``: Prometheus text with the counters the sockets and the hub keep."""

import re
from pathlib import Path

import pytest
import tornado.web
from tornado.httpclient import HTTPClientError

from realtime.pubsub.hub import Hub
from server import Config, make_app
from tests.probe import add_probe
from tests.support import closed, connect, receive_json, receive_type, send_json

PROTOCOL = Path(__file__).resolve().parent.parent.parent / "docs" / "protocol.md"
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]\w*="([^"\\]|\\.)*",?)*\})? \S+$')


@pytest.fixture
def config(hub: Hub) -> Config:
    return Config(hub=hub, rate_burst=2, rate_limit_strikes=1, allowed_origins=())


@pytest.fixture
def app(config: Config) -> tornado.web.Application:
    app = make_app(config)
    add_probe(app)
    return app


async def scrape(http_server_client) -> dict[str, float]:
    """Fetch /metrics, check every line's syntax, and return {sample: value}."""
    response = await http_server_client.fetch("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for line in response.body.decode().splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP \S+ .*|TYPE \S+ (counter|gauge|histogram))$", line), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


async def test_metrics_declare_every_family(http_server_client):
    """Each family has HELP and TYPE lines, connections and hub counters among them."""
    body = (await http_server_client.fetch("/metrics")).body.decode()
    for name, kind in [
        ("realtime_connections", "gauge"),
        ("realtime_messages_received_total", "counter"),
        ("realtime_messages_sent_total", "counter"),
        ("realtime_errors_total", "counter"),
        ("realtime_slow_consumers_dropped_total", "counter"),
        ("realtime_rate_limited_total", "counter"),
        ("realtime_votes_total", "counter"),
        ("realtime_broker_up", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
    ]:
        assert f"# TYPE {name} {kind}\n" in body
        assert f"# HELP {name} " in body


async def test_every_family_is_a_row_of_the_documented_table(http_server_client):
    """Each realtime_* family /metrics declares is a row of the metrics table in
    docs/protocol.md, with its type."""
    body = (await http_server_client.fetch("/metrics")).body.decode()
    declared = dict(re.findall(r"^# TYPE (realtime_\w+) (\w+)$", body, re.M))
    table = PROTOCOL.read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `(realtime_\w+)(?:\{[^}]*\})?` \| (\w+) \|", table, re.M))
    assert declared
    assert {name: kind for name, kind in declared.items() if documented.get(name) != kind} == {}


async def test_open_connections_are_counted_by_endpoint(ws_connect, http_server_client):
    """The connections gauge counts open sockets per route name, and drops on close."""
    echo = await ws_connect("/ws/echo")
    probe = await ws_connect("/ws/probe")
    await receive_type(probe, "welcome")
    samples = await scrape(http_server_client)
    assert samples['realtime_connections{endpoint="ws_echo"}'] == 1
    assert samples['realtime_connections{endpoint="ws_probe"}'] == 1

    echo.close(1000)
    await closed(echo)
    await send_json(probe, {"type": "ping"})
    await receive_type(probe, "pong")
    samples = await scrape(http_server_client)
    assert samples['realtime_connections{endpoint="ws_echo"}'] == 0
    assert samples['realtime_connections_opened_total{endpoint="ws_echo"}'] == 1


async def test_messages_and_errors_are_counted(ws_connect, http_server_client):
    """Frames in, frames sent by the hub and error frames by code all show up."""
    conn = await ws_connect("/ws/probe")
    await receive_type(conn, "welcome")
    await send_json(conn, {"type": "say", "text": "hi"})
    await receive_type(conn, "say")
    await conn.write_message("{not json")
    assert (await receive_json(conn))["code"] == "bad_json"
    samples = await scrape(http_server_client)
    assert samples['realtime_messages_received_total{endpoint="ws_probe"}'] == 2
    assert samples["realtime_messages_published_total"] == 1
    assert samples["realtime_messages_sent_total"] == 3  # welcome, say, error
    assert samples['realtime_errors_total{code="bad_json"}'] == 1


async def test_rate_limit_hits_are_counted(ws_connect, http_server_client):
    """Every frame refused by the rate limit counts, and its error code too."""
    conn = await ws_connect("/ws/probe")
    await receive_type(conn, "welcome")
    for _ in range(4):  # burst 2, one strike, then closed
        await send_json(conn, {"type": "ping"})
    await closed(conn)
    samples = await scrape(http_server_client)
    assert samples['realtime_rate_limited_total{endpoint="ws_probe"}'] == 2
    assert samples['realtime_errors_total{code="rate_limited"}'] == 1


async def test_refused_handshakes_are_counted_by_reason(http_server_client):
    """A cross-origin handshake counts as refused with reason origin."""
    with pytest.raises(HTTPClientError):
        await connect(http_server_client, "/ws/echo", {"Origin": "https://evil.example"})
    samples = await scrape(http_server_client)
    assert samples['realtime_connections_refused_total{reason="origin"}'] == 1


async def test_slow_consumers_dropped_come_from_the_hub(http_server_client, hub):
    """The dropped-consumers counter is the hub's own count, read at scrape time."""
    hub.dropped = 3
    samples = await scrape(http_server_client)
    assert samples["realtime_slow_consumers_dropped_total"] == 3
    assert samples["realtime_broker_up"] == 1
