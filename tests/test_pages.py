"""The HTML pages, the health check and the error pages."""

import json
import re

import pytest
from tornado.httpclient import AsyncHTTPClient

from server import Config, make_app

PAGES = ["/", "/echo", "/chat", "/models", "/vote", "/vote/demo", "/counter"]


@pytest.mark.parametrize("path", PAGES)
async def test_page_is_served_as_html(http_server_client, path):
    """Each demo page answers 200 with HTML."""
    response = await http_server_client.fetch(path)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"<!doctype html>" in response.body


async def test_index_links_every_demo(http_server_client):
    """The index page links to every demo."""
    body = (await http_server_client.fetch("/")).body.decode()
    for page in ["/echo", "/chat", "/models", "/vote", "/counter"]:
        assert f'href="{page}"' in body


async def test_pages_are_readable_on_a_phone(http_server_client):
    """Pages declare a device-width viewport."""
    body = (await http_server_client.fetch("/echo")).body.decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in body


async def test_every_static_file_a_page_uses_is_served(http_server_client):
    """Every stylesheet and script a page references answers 200."""
    for page in PAGES:
        body = (await http_server_client.fetch(page)).body.decode()
        for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', body):
            response = await http_server_client.fetch(asset)
            assert response.code == 200, asset


async def test_pages_carry_security_headers(http_server_client):
    """Pages forbid inline script and content sniffing."""
    headers = (await http_server_client.fetch("/echo")).headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_pages_have_no_inline_script(http_server_client):
    """No page carries a <script> without a src, which the policy would block anyway."""
    for page in PAGES:
        body = (await http_server_client.fetch(page)).body.decode()
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", body) == []


async def test_healthz_answers_json(http_server_client):
    """/healthz answers 200 with every field docs/protocol.md shows, each of its type."""
    response = await http_server_client.fetch("/healthz")
    assert response.code == 200
    body = json.loads(response.body)
    assert set(body) == {"status", "broker", "chat", "connections", "long_poll_sessions",
                         "uptime_s"}
    assert body["status"] == "ok"
    assert body["broker"] == {"name": "local", "ok": True}
    assert body["chat"] == {"name": "embedded", "ok": True}
    assert body["connections"] == 0
    assert body["long_poll_sessions"] == 0
    assert isinstance(body["uptime_s"], float) and body["uptime_s"] >= 0


async def test_healthz_uptime_counts_from_the_start_of_the_application(start_server, tmp_path):
    """uptime_s is the time since the application was built, not since the request began."""
    now = [1_000.0]
    app = make_app(Config(data_dir=str(tmp_path / "data"), clock=lambda: now[0]))
    try:
        port = start_server(app)
        url = f"http://127.0.0.1:{port}/healthz"
        assert json.loads((await AsyncHTTPClient().fetch(url)).body)["uptime_s"] == 0.0
        now[0] += 42.0
        assert json.loads((await AsyncHTTPClient().fetch(url)).body)["uptime_s"] == 42.0
    finally:
        app.settings["polls"].close()


async def test_unknown_path_is_a_404_page(http_server_client):
    """An unknown path answers 404 with an HTML page and no traceback."""
    response = await http_server_client.fetch("/no/such/page", raise_error=False)
    assert response.code == 404
    assert b"404" in response.body and b"Traceback" not in response.body


async def test_chat_page_gives_the_browser_a_chat_cookie(http_server_client):
    """/chat sets an HttpOnly, SameSite=Lax chat_id cookie when the browser has none."""
    response = await http_server_client.fetch("/chat")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("chat_id=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie


async def test_chat_page_keeps_an_existing_chat_cookie(http_server_client):
    """A browser that already has a chat cookie keeps it."""
    response = await http_server_client.fetch("/chat", headers={"Cookie": "chat_id=" + "k" * 32})
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("path", [*PAGES, "/healthz", "/metrics"])
async def test_head_is_answered_wherever_get_is(http_server_client, path):
    """HEAD on a page answers GET's status and headers with no body."""
    get = await http_server_client.fetch(path)
    head = await http_server_client.fetch(path, method="HEAD")
    assert head.code == 200 and head.body == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert int(head.headers["Content-Length"]) > 0


async def test_head_of_an_unknown_path_is_a_404(http_server_client):
    """HEAD on an unknown path, or an unknown poll, answers 404 with no body."""
    for path in ["/no/such/page", "/vote/no-such-poll"]:
        response = await http_server_client.fetch(path, method="HEAD", raise_error=False)
        assert response.code == 404 and response.body == b"", path


async def test_head_on_a_post_only_route_is_405(http_server_client):
    """A route with no page to GET (a WebSocket endpoint) answers HEAD with 405."""
    response = await http_server_client.fetch("/ws/echo", method="HEAD", raise_error=False)
    assert response.code == 405


async def test_home_page_does_not_link_the_health_check(http_server_client):
    """/healthz is for load balancers, not on the user-facing home page."""
    body = (await http_server_client.fetch("/")).body.decode()
    assert "/healthz" not in body
    assert (await http_server_client.fetch("/healthz")).code == 200


@pytest.mark.parametrize("path,current", [
    ("/", "/"), ("/echo", "/echo"), ("/chat", "/chat"), ("/vote", "/vote"),
])
async def test_nav_marks_the_current_page(http_server_client, path, current):
    """Exactly one link carries aria-current="page": the one to the page itself."""
    body = (await http_server_client.fetch(path)).body.decode()
    marked = re.findall(r'<a [^>]*href="([^"]+)"[^>]*aria-current="page"', body)
    assert marked == [current]


async def test_nav_marks_the_section_of_a_poll(http_server_client):
    """On a poll's page the Vote link is marked as its section, not as the page."""
    body = (await http_server_client.fetch("/vote/demo")).body.decode()
    assert 'aria-current="page"' not in body
    assert '<a href="/vote" aria-current="true">Vote</a>' in body
