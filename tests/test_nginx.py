"""The shipped deploy/nginx.conf, run by a real nginx in front of the real server process.

nginx listens on 127.0.0.2 and the test client connects from 127.0.0.3, while nginx reaches
the server from 127.0.0.1: an IP of 127.0.0.3 in the server's log can only come from the
X-Real-IP header nginx adds. The test rewrites three values of the shipped file (listen,
upstream, proxy_read_timeout) and nothing else. nginx listens on a port other than 80 and the
server has no ``--allowed-origins``: pages reached at ``http://127.0.0.2:<port>`` may open
their sockets only because the shipped file passes the port on in ``Host``.
"""

import asyncio
import json
import re
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from handlers.vote import qr_svg
from tests.browser import chromium, collect_console_errors, wait_connected
from tests.deploy import DEPLOY, nginx_main_config, nginx_path, rewrite
from tests.eventstream import EventStream
from tests.support import (
    closed, free_port, poll_until, receive, receive_json, receive_type, send_json,
    wait_listening,
)

NGINX_HOST = "127.0.0.2"
CLIENT_IP = "127.0.0.3"
READ_TIMEOUT = 1  # seconds: nginx's proxy_read_timeout, shortened from 75
PING_INTERVAL = 0.25  # the server's pings, well inside READ_TIMEOUT


def render_site(nginx_port: int, server_port: int, read_timeout: int) -> str:
    """deploy/nginx.conf with the test's addresses and timeout; every rewrite must match."""
    return rewrite((DEPLOY / "nginx.conf").read_text(), [
        (r"listen 80;", f"listen {NGINX_HOST}:{nginx_port};"),
        (r"server 127\.0\.0\.1:8888;", f"server 127.0.0.1:{server_port};"),
        (r"proxy_read_timeout 75s;", f"proxy_read_timeout {read_timeout}s;"),
    ], "deploy/nginx.conf")


@pytest.fixture
def stack(spawn, python, tmp_path):
    """Start the server and nginx with the shipped config; return an async starter."""
    async def start(ping_interval: float = PING_INTERVAL) -> int:
        nginx = nginx_path()
        server_port, nginx_port = free_port(), free_port(NGINX_HOST)
        server = spawn("server", [
            python, "server.py", "--port", str(server_port), "--xheaders",
            "--data-dir", str(tmp_path / "data"),
            "--ping-interval", str(ping_interval), "--ping-timeout", str(ping_interval),
        ])
        site = tmp_path / "realtime.conf"
        site.write_text(render_site(nginx_port, server_port, READ_TIMEOUT))
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_main_config(tmp_path, site))
        proxy = spawn("nginx", [nginx, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)])
        await wait_listening("127.0.0.1", server_port, server)
        await wait_listening(NGINX_HOST, nginx_port, proxy)
        return nginx_port
    return start


async def fetch(port: int, path: str, **kwargs):
    """GET through nginx from CLIENT_IP."""
    request = HTTPRequest(f"http://{NGINX_HOST}:{port}{path}", network_interface=CLIENT_IP,
                          **kwargs)
    return await AsyncHTTPClient().fetch(request, raise_error=False)


async def open_socket(ws_open, port: int, path: str):
    """A WebSocket to ``path`` through nginx, from CLIENT_IP, as a page of the site opens it."""
    return await ws_open(f"ws://{NGINX_HOST}:{port}{path}",
                         {"Origin": f"http://{NGINX_HOST}:{port}"}, CLIENT_IP)


def server_log(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text()


async def test_pages_and_static_files_load_through_nginx(stack):
    """The echo page, its script and the health check answer 200 through nginx."""
    port = await stack()
    page = await fetch(port, "/echo")
    assert page.code == 200 and b"<!doctype html>" in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = re.search(rb'src="(/static/js/echo\.js[^"]*)"', page.body)
    assert script and (await fetch(port, script.group(1).decode())).code == 200
    health = await fetch(port, "/healthz")
    assert health.code == 200 and json.loads(health.body)["status"] == "ok"


async def test_echo_websocket_works_through_nginx(stack, ws_open):
    """A same-site page's socket (Origin = nginx's address) is upgraded and echoes."""
    port = await stack()
    conn = await ws_open(f"ws://{NGINX_HOST}:{port}/ws/echo",
                         {"Origin": f"http://{NGINX_HOST}:{port}"}, CLIENT_IP)
    await conn.write_message("through nginx")
    assert await receive(conn) == "through nginx"


@pytest.mark.parametrize("path, script", [("/chat", "chat"), ("/vote/demo", "vote")])
async def test_chat_and_vote_pages_load_through_nginx(stack, path, script):
    """The chat page and the demo poll's page, and their scripts, answer 200 through nginx."""
    port = await stack()
    page = await fetch(port, path)
    assert page.code == 200 and b"<!doctype html>" in page.body
    src = re.search(rb'src="(/static/js/%s\.js[^"]*)"' % script.encode(), page.body)
    assert src and (await fetch(port, src.group(1).decode())).code == 200


async def test_chat_message_reaches_the_other_client_through_nginx(stack, ws_open):
    """Two clients in one room through nginx: what alice says, bob receives."""
    port = await stack()
    alice = await open_socket(ws_open, port, "/ws/chat/lobby?nick=alice")
    assert (await receive_type(alice, "welcome"))["nick"] == "alice"
    bob = await open_socket(ws_open, port, "/ws/chat/lobby?nick=bob")
    assert (await receive_type(bob, "welcome"))["online"] == ["alice", "bob"]
    await send_json(alice, {"type": "message", "text": "through nginx"})
    message = await receive_type(bob, "message")
    assert (message["from"], message["text"]) == ("alice", "through nginx")


async def test_vote_counts_through_nginx(stack, ws_open):
    """Through nginx the vote socket sends the poll, takes a vote and sends its tally."""
    port = await stack()
    conn = await open_socket(ws_open, port, "/ws/vote/demo")
    first = await receive_json(conn)
    assert first["type"] == "poll" and first["poll"]["id"] == "demo"
    before = first["poll"]["total"]
    await send_json(conn, {"type": "vote", "option": "2"})
    tally = await receive_type(conn, "tally")
    assert tally["poll"] == "demo" and tally["total"] == before + 1
    assert tally["votes"]["2"] == first["poll"]["options"][1]["votes"] + 1
    voted = {"type": "voted", "option": "2", "options": ["2"], "tally": tally}
    assert await receive_type(conn, "voted") == voted


@pytest.mark.browser
async def test_chat_page_sends_over_its_websocket_through_nginx(stack):
    """Two browsers on the chat page through nginx on its own port: both connect over the
    WebSocket (not the event-stream fallback) and what alice types, bob's page shows."""
    port = await stack()
    url = f"http://{NGINX_HOST}:{port}/chat?room=nginx"
    async with chromium() as browser:
        pages, errors = [], []
        for nick in ("alice", "bob"):
            page = await (await browser.new_context()).new_page()
            errors.append(collect_console_errors(page))
            await page.goto(f"{url}&nick={nick}")
            await wait_connected(page)
            await page.locator('#conn-transport[data-transport="websocket"]').wait_for()
            await page.locator("#chat-online .name.me").wait_for()
            pages.append(page)
        alice, bob = pages
        await alice.fill("#chat-text", "over the socket, through nginx")
        await alice.press("#chat-text", "Enter")
        line = bob.locator("#chat-log .entry.msg", has_text="over the socket, through nginx")
        await line.wait_for()
        assert await line.locator(".who").text_content() == "alice"
        assert errors == [[], []]


@pytest.mark.browser
async def test_vote_page_updates_and_shares_its_port_through_nginx(stack):
    """The vote page through nginx on its own port: a click in one browser moves the count in
    another, and the share link and the QR code carry the port."""
    port = await stack()
    url = f"http://{NGINX_HOST}:{port}/vote/demo"
    async with chromium() as browser:
        pages, errors = [], []
        for _ in range(2):
            page = await (await browser.new_context()).new_page()
            errors.append(collect_console_errors(page))
            await page.goto(url)
            await wait_connected(page)
            pages.append(page)
        voter, watcher = pages
        assert await watcher.locator("#share-link").input_value() == url
        before = int(await watcher.locator('#poll-options li[data-option="2"]')
                     .get_attribute("data-votes"))
        await voter.locator('#poll-options li[data-option="2"] button').click()
        await watcher.wait_for_selector(
            f'#poll-options li[data-option="2"][data-votes="{before + 1}"]')
        assert errors == [[], []]
    qr = await fetch(port, "/vote/demo/qr.svg")
    assert qr.code == 200 and qr.body == qr_svg(url)


async def test_cross_origin_socket_is_refused_through_nginx(stack, ws_open):
    """A foreign Origin still gets 403 behind the proxy."""
    port = await stack()
    with pytest.raises(HTTPClientError) as refused:
        await ws_open(f"ws://{NGINX_HOST}:{port}/ws/echo",
                      {"Origin": "https://evil.example"}, CLIENT_IP)
    assert refused.value.code == 403


async def test_server_logs_the_real_client_ip(stack, ws_open, tmp_path):
    """The server logs the client's address from X-Real-IP, not nginx's."""
    port = await stack()
    await fetch(port, "/healthz")
    conn = await ws_open(f"ws://{NGINX_HOST}:{port}/ws/echo", None, CLIENT_IP)
    await conn.write_message("hi")
    await receive(conn)
    await poll_until(lambda: "event=connect" in server_log(tmp_path))
    log = server_log(tmp_path)
    assert re.search(rf"event=connect endpoint=ws_echo ip={re.escape(CLIENT_IP)} ", log)
    assert re.search(rf"path=/healthz status=200 .*ip={re.escape(CLIENT_IP)}", log)
    assert "ip=127.0.0.1" not in log


async def test_metrics_are_not_served_to_the_outside(stack):
    """nginx refuses /metrics to anyone but the machine itself."""
    port = await stack()
    assert (await fetch(port, "/metrics")).code == 403


async def test_idle_socket_outlives_the_read_timeout_thanks_to_pings(stack, ws_open):
    """A socket idle for three nginx read timeouts is still open: the pings kept it alive."""
    port = await stack()
    conn = await ws_open(f"ws://{NGINX_HOST}:{port}/ws/echo", None, CLIENT_IP)
    await asyncio.sleep(3 * READ_TIMEOUT)  # the idle period is what is being tested
    await conn.write_message("still here")
    assert await receive(conn) == "still here"


async def test_without_pings_nginx_cuts_the_idle_socket(stack, ws_open):
    """The control: with pings off, nginx closes an idle socket after its read timeout."""
    port = await stack(ping_interval=0)
    conn = await ws_open(f"ws://{NGINX_HOST}:{port}/ws/echo", None, CLIENT_IP)
    started = asyncio.get_running_loop().time()
    assert await closed(conn) in (None, 1006)
    assert asyncio.get_running_loop().time() - started >= READ_TIMEOUT * 0.9


async def post_message(port: int, text: str) -> dict:
    """POST a chat message to the lobby through nginx; its frame."""
    response = await fetch(port, "/poll/chat/lobby", method="POST",
                           body=json.dumps({"text": text}),
                           headers={"Content-Type": "application/json"})
    assert response.code == 200, response.body
    return json.loads(response.body)


async def test_event_stream_works_through_nginx(stack):
    """Through nginx an event stream opens at once, gets its welcome and then a message
    posted after it, event by event (nothing buffered)."""
    port = await stack()
    stream = await EventStream.open(port, "/sse/chat/lobby", host=NGINX_HOST, source_ip=CLIENT_IP)
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert (await stream.frame())["type"] == "welcome"
        message = await post_message(port, "streamed through nginx")
        event = await stream.event()
        assert event.json() == message and event.id == str(message["id"])
    finally:
        stream.close()


async def test_held_long_poll_works_through_nginx(stack):
    """Through nginx a long-poll with nothing new is held, and the next message answers it."""
    port = await stack()
    first = await post_message(port, "before")

    async def held_requests() -> int:
        return json.loads((await fetch(port, "/healthz")).body)["connections"]

    waiting = asyncio.ensure_future(fetch(port, f"/poll/chat/lobby?since={first['id']}"))
    deadline = asyncio.get_running_loop().time() + 5
    while await held_requests() < 1:  # the server holds it (no event says so from outside)
        assert asyncio.get_running_loop().time() < deadline, "the long-poll never arrived"
        await asyncio.sleep(0.02)
    assert not waiting.done()
    message = await post_message(port, "wakes the poll")
    response = await waiting
    assert response.code == 200
    assert json.loads(response.body) == {
        "messages": [message], "last_id": message["id"], "recovered": True}
