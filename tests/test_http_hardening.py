"""Plain HTTP under hostile clients: the per-address request budget, the QR code cache,
Host headers, cookies over HTTPS, oversized and odd bodies, unexpected errors in the log.

Every case is a real server on a real socket; chunked bodies and long Host headers go over
raw sockets, as no polite client sends them.
"""

import asyncio
import json
import logging
from typing import Any, Callable, Optional

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from handlers.http import BaseHandler
from realtime.pubsub.hub import Hub
from server import Config, make_app
from tests.limits.test_limits import FakeClock
from tests.test_vote_manage import dark_modules_of, dark_modules_of_svg

TIMEOUT = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def serve(start_server: Callable[..., int], hub: Hub, clock: FakeClock, tmp_path: Any,
          io_loop: Any):
    """``serve(**config)`` starts an app on the test's hub and frozen clock; its port."""
    apps: list[tornado.web.Application] = []

    def start(xheaders: bool = False, routes: Optional[list[Any]] = None,
              **config: Any) -> int:
        app = make_app(Config(hub=hub, clock=clock, data_dir=str(tmp_path / "data"), **config))
        if routes:
            app.wildcard_router.add_rules(routes)
        apps.append(app)
        return start_server(app, xheaders=xheaders)

    yield start
    for app in apps:
        io_loop.run_sync(app.settings["polls"].aclose, timeout=10)


async def fetch(port: int, path: str, source_ip: Optional[str] = None,
                **kwargs: Any) -> HTTPResponse:
    """One real request to the test server (never raising for an error status)."""
    request = HTTPRequest(f"http://127.0.0.1:{port}{path}", network_interface=source_ip,
                          request_timeout=TIMEOUT, **kwargs)
    return await AsyncHTTPClient().fetch(request, raise_error=False)


async def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are; the status, headers and body answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


def get_with_host(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def error_code(response: HTTPResponse) -> str:
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)["error"]["code"]


# The per-address request budget of plain HTTP.

async def test_pages_past_the_address_budget_get_429_with_retry_after(serve):
    """Past its burst an address gets 429 with Retry-After on pages, and a JSON
    rate_limited on the API, while another address is served."""
    port = serve(http_rate_limit=1, http_rate_burst=3)
    for path in ["/", "/vote/demo", "/vote/demo/qr.svg"]:
        assert (await fetch(port, path)).code == 200, path
    page = await fetch(port, "/chat")
    assert page.code == 429 and page.headers["Retry-After"] == "1"
    assert page.headers["Content-Type"].startswith("text/html")
    api = await fetch(port, "/api/polls/demo")
    assert api.code == 429 and error_code(api) == "rate_limited"
    assert api.headers["Retry-After"] == "1"
    assert (await fetch(port, "/no/such/page")).code == 429
    assert (await fetch(port, "/", source_ip="127.0.0.2")).code == 200


async def test_health_and_metrics_are_outside_the_budget(serve):
    """An address that spent its budget still gets /healthz and /metrics."""
    port = serve(http_rate_limit=1, http_rate_burst=1)
    assert (await fetch(port, "/")).code == 200
    assert (await fetch(port, "/")).code == 429
    assert (await fetch(port, "/healthz")).code == 200
    assert (await fetch(port, "/metrics")).code == 200


async def test_the_budget_refills_at_its_rate(serve, clock):
    """Once spent, 1/rate seconds gives the address one request more."""
    port = serve(http_rate_limit=2, http_rate_burst=1)
    assert (await fetch(port, "/")).code == 200
    assert (await fetch(port, "/")).code == 429
    clock.now += 0.5
    assert (await fetch(port, "/")).code == 200


async def test_an_http_budget_of_zero_turns_it_off(serve):
    """--http-rate-limit 0: no request is refused for its rate."""
    port = serve(http_rate_limit=0, http_rate_burst=1)
    for _ in range(5):
        assert (await fetch(port, "/")).code == 200


# The QR code: cached per poll and host, with an ETag.

async def test_qr_code_has_an_etag_and_answers_304_to_it(serve):
    """qr.svg carries an ETag and Cache-Control; If-None-Match with it answers 304, empty."""
    port = serve()
    first = await fetch(port, "/vote/demo/qr.svg")
    assert first.code == 200 and "max-age=" in first.headers["Cache-Control"]
    etag = first.headers["Etag"]
    again = await fetch(port, "/vote/demo/qr.svg", headers={"If-None-Match": etag})
    assert again.code == 304 and again.body == b""


async def test_qr_codes_are_cached_per_host_and_the_cache_is_bounded(serve, hub):
    """Each host's QR code encodes that host; past the cache's size the oldest goes."""
    port = serve()
    for n in range(5):
        response = await fetch(port, "/vote/demo/qr.svg", headers={"Host": f"h{n}.example"})
        assert dark_modules_of_svg(response.body) == dark_modules_of(
            f"http://h{n}.example/vote/demo")
    from handlers.vote import QrCodes
    codes = QrCodes(max_entries=3)
    for n in range(5):
        codes.get(f"http://h{n}.example/vote/demo")
    assert len(codes) == 3
    first = codes.get("http://h4.example/vote/demo")
    assert codes.get("http://h4.example/vote/demo") is first  # drawn once, then looked up


# Host headers and absolute URLs.

async def test_a_long_host_on_the_qr_code_is_a_400_and_logs_no_traceback(serve, caplog):
    """A Host of 3,000 characters gets 400 from qr.svg, never a 500, and nothing is logged
    with a traceback."""
    port = serve()
    status, _, body = await raw_request(port, get_with_host("/vote/demo/qr.svg", "a" * 3000))
    assert status == 400 and b"aaaa" not in body
    assert not [record for record in caplog.records if record.exc_info]


async def test_a_host_that_is_not_a_host_is_a_400_on_the_poll_page(serve):
    """The poll page, which shows its absolute URL, answers 400 to a Host with a path."""
    port = serve()
    response = await fetch(port, "/vote/demo", headers={"Host": "evil.example/<x>"})
    assert response.code == 400


async def test_public_url_makes_every_absolute_url_whatever_the_host(serve):
    """With --public-url the QR code and the share link use it, even for a long or odd
    Host."""
    port = serve(public_url="https://polls.example.org")
    for host in ["evil.example", "a" * 3000]:
        status, _, body = await raw_request(port, get_with_host("/vote/demo/qr.svg", host))
        assert status == 200
        assert dark_modules_of_svg(body) == dark_modules_of("https://polls.example.org/vote/demo")
    page = await fetch(port, "/vote/demo", headers={"Host": "evil.example"})
    assert b'value="https://polls.example.org/vote/demo"' in page.body


@pytest.mark.parametrize("public_url", ["polls.example.org", "https://polls.example.org/vote",
                                        "ftp://polls.example.org", "https://x.org/?a=1"])
def test_a_public_url_that_is_not_an_origin_stops_the_server(hub, public_url):
    """--public-url must be http(s)://host[:port]: anything else fails at start, not later."""
    with pytest.raises(ValueError, match="--public-url"):
        make_app(Config(hub=hub, public_url=public_url))


class FailingHandler(BaseHandler):
    """A page with a bug that puts the request's header in its exception."""

    def get(self) -> None:
        raise ValueError("boom " + self.request.headers.get("X-Evil", ""))


async def test_an_unexpected_error_logs_one_line_and_repeats_are_held_back(serve, caplog):
    """A 500 logs one line without the traceback or the client's input; a second one within
    the second is held back."""
    port = serve(routes=[(r"/broken", FailingHandler)])
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        response = await fetch(port, "/broken", headers={"X-Evil": "secret-input"})
        assert response.code == 500 and b"secret-input" not in response.body
    failures = [r for r in caplog.records if r.name == "realtime.handlers"]
    assert len(failures) == 1
    assert not failures[0].exc_info and "secret-input" not in failures[0].getMessage()
    assert "ValueError" in failures[0].getMessage()


# Cookies over HTTPS.

def set_cookies(response: HTTPResponse) -> list[str]:
    return response.headers.get_list("Set-Cookie")


HTTPS = {"X-Forwarded-Proto": "https"}


@pytest.mark.parametrize("path, name", [("/chat", "__Host-chat_id="), ("/vote", "__Host-voter=")])
async def test_cookies_over_https_are_secure_and_host_prefixed(serve, path, name):
    """Behind a proxy saying https, the chat and voter cookies are Secure, __Host-, Path=/."""
    port = serve(xheaders=True)
    [cookie] = set_cookies(await fetch(port, path, headers=HTTPS))
    assert cookie.startswith(name) and "Secure" in cookie and "Path=/" in cookie
    assert "Domain" not in cookie


async def test_an_old_chat_cookie_keeps_its_identity_under_the_new_name(serve):
    """Over https a browser with the old chat_id gets the same value as __Host-chat_id; one
    with __Host-chat_id keeps it whatever chat_id a sibling site set."""
    port = serve(xheaders=True)
    old = "o" * 32
    [cookie] = set_cookies(await fetch(port, "/chat", headers={**HTTPS,
                                                               "Cookie": f"chat_id={old}"}))
    assert cookie.startswith(f"__Host-chat_id={old};")
    both = f"__Host-chat_id={old}; chat_id={'f' * 32}"
    assert set_cookies(await fetch(port, "/chat", headers={**HTTPS, "Cookie": both})) == []


async def test_an_old_voter_cookie_keeps_its_identity_under_the_new_name(serve):
    """Over https a browser with the old voter cookie gets the same voter id as
    __Host-voter."""
    port = serve(xheaders=True)
    [plain] = set_cookies(await fetch(port, "/vote"))
    value = plain.split(";")[0].split("=", 1)[1]
    [cookie] = set_cookies(await fetch(port, "/vote", headers={**HTTPS,
                                                               "Cookie": f"voter={value}"}))
    assert cookie.startswith("__Host-voter=")
    new_value = cookie.split(";")[0].split("=", 1)[1]
    again = await fetch(port, "/vote", headers={**HTTPS, "Cookie": f"__Host-voter={new_value}"})
    assert set_cookies(again) == []
    # The same voter: the signed values carry the same id.
    assert value.split("|")[4] == new_value.split("|")[4]


async def test_cookies_over_plain_http_keep_their_names_and_are_not_secure(serve):
    """Over plain HTTP the chat cookie is chat_id, not Secure (a browser would drop it)."""
    port = serve()
    [cookie] = set_cookies(await fetch(port, "/chat"))
    assert cookie.startswith("chat_id=") and "Secure" not in cookie


# Bodies.

def chunked_post(path: str, body: bytes, piece: int = 16 * 1024) -> bytes:
    """A POST of ``body`` in chunks of ``piece`` bytes."""
    chunks = b"".join(
        f"{len(body[i:i + piece]):x}\r\n".encode() + body[i:i + piece] + b"\r\n"
        for i in range(0, len(body), piece))
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("path", ["/api/polls", "/poll/chat/lobby", "/api/counter/big"])
async def test_a_chunked_body_over_the_limit_is_a_413_too_large(serve, path):
    """A chunked body past 64 KiB gets 413 with the JSON error too_large, like one with a
    Content-Length."""
    port = serve()
    body = json.dumps({"text": "x" * 70_000}).encode()
    status, headers, answer = await raw_request(port, chunked_post(path, body))
    assert status == 413 and headers["content-type"].startswith("application/json")
    assert json.loads(answer)["error"]["code"] == "too_large"


@pytest.mark.parametrize("path, body", [
    ("/poll/chat/lobby", {"text": "hello"}),
    ("/api/counter/bom", {"type": "increment"}),
    ("/api/polls", {"title": "Tea?", "options": ["Yes", "No"]}),
])
@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\xed\xa0\x80"])
async def test_a_body_with_a_utf8_byte_order_mark_is_read_or_bad_json(
        serve, path, body, prefix):
    """A JSON body after a UTF-8 BOM (even one followed by an encoded lone surrogate) is
    read as JSON or answered bad_json, never a 500."""
    port = serve()
    response = await fetch(port, path, method="POST", body=prefix + json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
    assert response.code in (200, 201) or (
        response.code == 400 and error_code(response) == "bad_json"), response.body


def test_nginx_conf_documents_hsts_for_https_sites():
    """deploy/nginx.conf shows the HSTS header (commented) for a site served over https."""
    from tests.conftest import ROOT

    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "# add_header Strict-Transport-Security" in conf
