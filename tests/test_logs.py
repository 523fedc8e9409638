"""Structured logs: one key=value line per connect and disconnect, the real client IP, an
access line per request, and never a message body."""

import asyncio
import logging

import pytest
import tornado.web
from tornado.httpclient import HTTPClientError

from server import Config, make_app
from tests.probe import add_probe
from tests.support import connect_url, receive, receive_type, send_json

SECRET = "s3cret-body-text"


@pytest.fixture
def closed_queue() -> "asyncio.Queue[object]":
    return asyncio.Queue()


@pytest.fixture
def app(config: Config, closed_queue: "asyncio.Queue[object]") -> tornado.web.Application:
    app = make_app(config)
    add_probe(app, closed_queue)
    return app


def fields(line: str) -> dict[str, str]:
    """Split a logfmt line whose values are all plain (no quoting)."""
    return dict(pair.split("=", 1) for pair in line.split(" "))


def event_lines(caplog, event: str) -> list[dict[str, str]]:
    return [fields(r.getMessage()) for r in caplog.records
            if r.name == "realtime.events" and r.getMessage().startswith(f"event={event} ")]


async def test_connect_and_disconnect_are_logged_with_ip_endpoint_code(
    ws_connect, closed_queue, caplog
):
    """A connect line and a disconnect line with ip, endpoint, close code and duration."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    conn = await ws_connect("/ws/probe")
    await receive_type(conn, "welcome")
    conn.close(1000)
    await asyncio.wait_for(closed_queue.get(), 5)

    [connect] = event_lines(caplog, "connect")
    assert connect == {"event": "connect", "endpoint": "ws_probe", "ip": "127.0.0.1",
                       "origin": "-"}
    [disconnect] = event_lines(caplog, "disconnect")
    assert disconnect["code"] == "1000" and disconnect["by"] == "client"
    assert disconnect["ip"] == "127.0.0.1" and disconnect["endpoint"] == "ws_probe"
    assert float(disconnect["duration_s"]) >= 0


async def test_server_side_close_code_is_logged(ws_connect, closed_queue, caplog, hub):
    """When the server closes (here: dropped as slow), the line has its code and by=server."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    conn = await ws_connect("/ws/probe")
    await receive_type(conn, "welcome")
    hub.drop(hub.connections[0])
    await asyncio.wait_for(closed_queue.get(), 5)
    [disconnect] = event_lines(caplog, "disconnect")
    assert (disconnect["code"], disconnect["by"]) == ("1008", "server")


async def test_message_bodies_are_never_logged(ws_connect, closed_queue, caplog):
    """Neither echoed text, nor broadcast text, nor invalid JSON ends up in any log record."""
    caplog.set_level(logging.DEBUG)
    echo = await ws_connect("/ws/echo")
    await echo.write_message(SECRET)
    assert await receive(echo) == SECRET
    probe = await ws_connect("/ws/probe")
    await send_json(probe, {"type": "say", "text": SECRET})
    await receive_type(probe, "say")
    await probe.write_message("{" + SECRET)
    await receive_type(probe, "error")
    probe.close(1000)
    await asyncio.wait_for(closed_queue.get(), 5)
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


async def test_access_log_is_one_key_value_line(http_server_client, caplog):
    """Each request gets one access line with method, path (no query), status and ip."""
    caplog.set_level(logging.INFO, logger="realtime.access")
    await http_server_client.fetch("/healthz?token=secret")
    [line] = [r.getMessage() for r in caplog.records if r.name == "realtime.access"]
    record = fields(line)
    assert (record["method"], record["path"], record["status"], record["ip"]) == (
        "GET", "/healthz", "200", "127.0.0.1")
    assert "secret" not in line


async def test_origin_with_quotes_cannot_forge_fields(ws_connect, caplog):
    """A hostile Origin is logged as one quoted value, not as extra fields."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    with pytest.raises(HTTPClientError):
        await ws_connect("/ws/echo", {"Origin": 'http://x" ip=1.2.3.4'})
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=refused")]
    assert line.endswith('origin="http://x\\" ip=1.2.3.4"')
    assert " ip=127.0.0.1 " in line


@pytest.mark.parametrize("xheaders, logged_ip", [(True, "203.0.113.9"), (False, "127.0.0.1")])
async def test_client_ip_comes_from_x_real_ip_only_with_xheaders(
    start_server, config, closed_queue, caplog, xheaders, logged_ip
):
    """With --xheaders the logged ip is X-Real-IP; without, the header is ignored."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    app = make_app(config)
    add_probe(app, closed_queue)
    port = start_server(app, xheaders=xheaders)
    conn = await connect_url(f"ws://127.0.0.1:{port}/ws/probe", {"X-Real-IP": "203.0.113.9"})
    await receive_type(conn, "welcome")
    conn.close(1000)
    await asyncio.wait_for(closed_queue.get(), 5)
    [connect] = event_lines(caplog, "connect")
    assert connect["ip"] == logged_ip
