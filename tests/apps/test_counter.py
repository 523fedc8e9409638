"""The shared counter over every transport of an app (``handlers/apps.py``): the socket
``/ws/counter/<name>``, the event stream ``/sse/counter/<name>`` and ``POST
/api/counter/<name>``, in one process, then on two applications sharing a real Redis."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Iterator, Optional

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from server import Config, make_app, start_components
from tests.eventstream import EventStream
from tests.redis_server import RedisServer
from tests.support import closed, port_of, receive_json, receive_type, send_json

Build = Callable[..., Awaitable[SimpleNamespace]]


async def post(port: int, path: str, body: Any, headers: Optional[dict[str, str]] = None,
               raw: Optional[bytes] = None) -> HTTPResponse:
    """POST ``body`` as JSON (or ``raw`` bytes) to ``path``; the response, whatever its
    status."""
    return await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}", method="POST", raise_error=False,
        body=raw if raw is not None else json.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})})


def count(name: str, value: int) -> dict[str, Any]:
    return {"type": "count", "name": name, "value": value}


# One process, the embedded state.

async def test_socket_is_welcomed_with_the_count(ws_connect):
    """A socket to a new counter gets its count, 0."""
    conn = await ws_connect("/ws/counter/fresh")
    assert await receive_json(conn) == count("fresh", 0)


async def test_increment_on_a_socket_reaches_sockets_and_streams(ws_connect,
                                                                 http_server_client):
    """An increment sent on a socket reaches every socket and stream of the counter."""
    stream = await EventStream.open(port_of(http_server_client), "/sse/counter/shared")
    try:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert await stream.frame() == count("shared", 0)
        sender = await ws_connect("/ws/counter/shared")
        other = await ws_connect("/ws/counter/shared")
        for conn in (sender, other):
            await receive_type(conn, "count")
        await send_json(sender, {"type": "increment", "by": 5})
        assert await receive_json(sender) == count("shared", 5)
        assert await receive_json(other) == count("shared", 5)
        assert await stream.frame() == count("shared", 5)
    finally:
        stream.close()


async def test_post_answers_the_count_and_reaches_the_stream(http_server_client):
    """A POSTed increment is answered with the count it made, which the stream gets too."""
    port = port_of(http_server_client)
    stream = await EventStream.open(port, "/sse/counter/posted")
    try:
        await stream.frame()
        response = await post(port, "/api/counter/posted", {"type": "increment"})
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert json.loads(response.body) == count("posted", 1)
        assert await stream.frame() == count("posted", 1)
    finally:
        stream.close()


async def test_a_bad_increment_on_a_socket_is_an_error_frame(ws_connect):
    """An increment out of bounds gets ``bad_message``; the socket stays and counts on."""
    conn = await ws_connect("/ws/counter/bounds")
    await receive_json(conn)
    await send_json(conn, {"type": "increment", "by": 1000})
    assert (await receive_json(conn))["code"] == "bad_message"
    await send_json(conn, {"type": "increment", "by": 100})
    assert await receive_json(conn) == count("bounds", 100)


async def test_a_binary_frame_is_bad_message(ws_connect):
    """A binary frame on the counter's socket gets ``bad_message``, as on every JSON socket."""
    conn = await ws_connect("/ws/counter/binary")
    await receive_json(conn)
    await conn.write_message(b"\x00", binary=True)
    assert (await receive_json(conn))["code"] == "bad_message"


@pytest.mark.parametrize("body, status, code", [
    ({"type": "increment", "by": 0}, 400, "bad_message"),
    ({"type": "decrement"}, 400, "unknown_type"),
    ([1, 2], 400, "bad_message"),
    (b"{not json", 400, "bad_json"),
    (b"\xff", 400, "bad_json"),
])
async def test_post_errors_are_json(http_server_client, body, status, code):
    """A bad POST is answered ``{"error": {"code", "message"}}`` with the transports' status."""
    raw = body if isinstance(body, bytes) else None
    response = await post(port_of(http_server_client), "/api/counter/errors", body, raw=raw)
    assert response.code == status
    assert json.loads(response.body)["error"]["code"] == code


async def test_post_of_another_type_than_json_is_refused(http_server_client):
    """A POST that is not ``application/json`` is a 415: no cross-site form can post."""
    response = await post(port_of(http_server_client), "/api/counter/form", None,
                          {"Content-Type": "application/x-www-form-urlencoded"}, raw=b"by=1")
    assert response.code == 415
    assert json.loads(response.body)["error"]["code"] == "unsupported_media_type"


async def test_post_from_a_foreign_page_is_refused(http_server_client):
    """A POST from a page of another origin is a 403 ``bad_origin``, and counts nothing."""
    port = port_of(http_server_client)
    response = await post(port, "/api/counter/foreign", {"type": "increment"},
                          {"Origin": "https://evil.example"})
    assert response.code == 403
    assert json.loads(response.body)["error"]["code"] == "bad_origin"
    answer = await post(port, "/api/counter/foreign", {"type": "increment"})
    assert json.loads(answer.body)["value"] == 1


async def test_a_name_outside_the_pattern_is_not_found(http_server_client):
    """A counter name the route does not take is a 404."""
    response = await http_server_client.fetch("/sse/counter/UPPER", raise_error=False)
    assert response.code == 404


async def test_the_page_is_served(http_server_client):
    """``/counter`` is an HTML page loading its script."""
    body = (await http_server_client.fetch("/counter")).body.decode()
    assert "js/counter.js" in body and 'id="counter-value"' in body


# Two applications on one real Redis, as two processes behind a proxy would be.

@pytest.fixture
def node(redis_server: RedisServer, start_server: Any, io_loop: Any,
         tmp_path: Path) -> Iterator[Build]:
    """``await node()`` builds an application with ``--redis-url`` on the test's Redis,
    starts its components and serves it on a free port (``.port``, ``.app``); every one is
    shut down after the test."""
    built: list[SimpleNamespace] = []

    async def build(**options: Any) -> SimpleNamespace:
        config = Config(redis_url=redis_server.url, cookie_secret="s" * 48,
                        data_dir=str(tmp_path / f"data{len(built)}"), **options)
        app = make_app(config)
        await start_components(app)
        built.append(SimpleNamespace(app=app, port=start_server(app)))
        return built[-1]

    yield build
    for each in built:
        io_loop.run_sync(lambda: each.app.settings["lifecycle"].shutdown(10), timeout=15)


async def test_an_increment_on_one_process_reaches_the_other(node, ws_open):
    """An increment POSTed to A reaches a socket and a stream on B with the value both
    count on, and B's next increment counts from it."""
    a, b = await node(), await node()
    on_b = await ws_open(f"ws://127.0.0.1:{b.port}/ws/counter/cluster")
    assert await receive_json(on_b) == count("cluster", 0)
    stream = await EventStream.open(b.port, "/sse/counter/cluster")
    try:
        assert await stream.frame() == count("cluster", 0)
        response = await post(a.port, "/api/counter/cluster", {"type": "increment", "by": 7})
        assert json.loads(response.body) == count("cluster", 7)
        assert await receive_json(on_b) == count("cluster", 7)
        assert await stream.frame() == count("cluster", 7)
        await send_json(on_b, {"type": "increment", "by": 1})
        assert await receive_json(on_b) == count("cluster", 8)
    finally:
        stream.close()


async def test_a_newcomer_on_the_other_process_is_welcomed_with_the_shared_value(node, ws_open):
    """A socket opened on B after increments on A is welcomed with their sum."""
    a, b = await node(), await node()
    for _ in range(3):
        await post(a.port, "/api/counter/welcome", {"type": "increment", "by": 2})
    conn = await ws_open(f"ws://127.0.0.1:{b.port}/ws/counter/welcome")
    assert await receive_json(conn) == count("welcome", 6)


async def test_with_redis_down_a_post_is_503_and_a_socket_closes_to_retry(node, ws_open,
                                                                          redis_server):
    """With Redis stopped, a POST answers 503 ``unavailable`` with ``Retry-After``, and a
    new socket gets the error frame and a 1013 close (try again later)."""
    a = await node()
    redis_server.stop()
    response = await post(a.port, "/api/counter/down", {"type": "increment"})
    assert response.code == 503
    assert json.loads(response.body)["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"]
    conn = await ws_open(f"ws://127.0.0.1:{a.port}/ws/counter/down")
    assert (await receive_json(conn))["code"] == "unavailable"
    assert await closed(conn) == 1013


async def test_connections_and_posts_are_counted_by_app_route(ws_connect, http_server_client):
    """The metrics count the counter's sockets, streams and POSTs under their route names."""
    port = port_of(http_server_client)
    conn = await ws_connect("/ws/counter/metrics")
    await receive_json(conn)
    stream = await EventStream.open(port, "/sse/counter/metrics")
    try:
        await stream.frame()
        await post(port, "/api/counter/metrics", {"type": "increment"})
        body = (await http_server_client.fetch("/metrics")).body.decode()
    finally:
        stream.close()
    for sample in ['realtime_connections{endpoint="ws_counter"} 1.0',
                   'realtime_connections{endpoint="sse_counter"} 1.0',
                   'realtime_messages_received_total{endpoint="api_counter"} 1.0']:
        assert sample in body
