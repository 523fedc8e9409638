"""The hostile-input suite: each case asserts the server's exact answer, then that the
server still serves a client that was connected before the attack.

Cases run on every endpoint they apply to: echo, chat, vote and the test-only JSON endpoint
``/ws/probe`` (``tests/probe.py``), whose clients serve as bystanders connected before each
attack. A new JSON endpoint joins by adding a ``JsonEndpoint`` to ``JSON_ENDPOINTS``.
Related cases live next door:
``test_keepalive.py`` (half-open client), ``test_limits.py`` (limit mechanics),
``test_handshake.py`` (origin policy details), ``test_parser_property.py`` (hypothesis).
"""

import asyncio
import gc
import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
import tornado.netutil
import tornado.web
from tornado.httpclient import HTTPClientError

from realtime.pubsub.hub import Hub
from realtime.wire.closecodes import CloseCode
from server import Config, make_app
from tests.probe import TOPIC, add_probe
import tests.support
from tests.support import (
    OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT, client_frame, closed, poll_until, port_of,
    raw_close_code, raw_handshake, read_frame, receive, receive_json, receive_json_except,
    receive_type, rss_bytes,
    send_json, ws_url,
)


@dataclass(frozen=True)
class JsonEndpoint:
    """How the suite talks to one JSON endpoint."""

    path: str
    greeting: str  # the type of the frame every new connection gets first
    say: str = "say"  # a message type that is broadcast to every client of the path
    field: str = "text"  # the string field of that message
    hears: str = ""  # the type of the broadcast a say causes; default: the say type itself
    valid: str = ""  # a value of the field that is always accepted; default: any new text
    unasked: tuple[str, ...] = ()  # types of frames that come unasked (a poll's counts)

    @property
    def heard(self) -> str:
        return self.hears or self.say


PROBE = JsonEndpoint("/ws/probe", greeting="welcome")
CHAT = JsonEndpoint("/ws/chat/lobby", greeting="welcome", say="message")
VOTE = JsonEndpoint("/ws/vote/demo", greeting="poll", say="vote", field="option",
                    hears="tally", valid="1", unasked=("participants",))
JSON_ENDPOINTS = [PROBE, CHAT, VOTE]
BY_PATH = {endpoint.path: endpoint for endpoint in JSON_ENDPOINTS}
ALL_PATHS = ["/ws/echo", *(endpoint.path for endpoint in JSON_ENDPOINTS)]
LIMIT = 64 * 1024
_unique = itertools.count()


@pytest.fixture
def http_server_port() -> tuple[Any, int]:
    """The test server's socket, with a listen backlog for 500 clients arriving at once."""
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1", backlog=1024)
    return sock, sock.getsockname()[1]


@pytest.fixture
def config(hub: Hub) -> Config:
    return Config(hub=hub, max_connections_per_ip=2000, handshake_rate_limit=0)


@pytest.fixture
def app(config: Config) -> Iterator[tornado.web.Application]:
    app = make_app(config)
    add_probe(app)
    yield app
    app.settings["polls"].close()


async def join(ws_connect, endpoint: JsonEndpoint):
    """A client of ``endpoint`` past its greeting."""
    conn = await ws_connect(endpoint.path)
    await receive_type(conn, endpoint.greeting)
    return conn


async def assert_serving(conn, endpoint: JsonEndpoint = PROBE) -> None:
    """``conn`` can still broadcast and hear its own message (or, for a vote, its tally)."""
    text = endpoint.valid or f"still served {next(_unique)}"
    await send_json(conn, {"type": endpoint.say, endpoint.field: text})
    while True:
        frame = await answer(conn, endpoint)
        if frame.get("type") == endpoint.heard and (
            endpoint.valid or frame.get(endpoint.field) == text
        ):
            return


async def raw_join(port: int, path: str, receive_buffer: int = 1 << 20):
    """A raw socket to ``path``, past the greeting of a JSON endpoint."""
    reader, writer, head = await raw_handshake(port, path, receive_buffer=receive_buffer)
    assert head.startswith(b"HTTP/1.1 101")
    if path != "/ws/echo":
        assert (await read_frame(reader))[0] == OP_TEXT
    return reader, writer


async def answer(conn, endpoint: JsonEndpoint) -> dict[str, Any]:
    """The next frame of ``conn`` besides those its endpoint sends unasked."""
    return await receive_json_except(conn, *endpoint.unasked)


def error(code: str, message: str) -> dict[str, str]:
    return {"type": "error", "code": code, "message": message}


# Malformed messages: an exact error frame, the connection stays.

@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.path)
async def test_non_json_text_gets_bad_json(ws_connect, endpoint):
    """Text that is not JSON is answered with bad_json; the sender stays connected."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    conn = await join(ws_connect, endpoint)
    await conn.write_message("hello, {not json")
    assert await answer(conn, endpoint) == error("bad_json", "The frame is not valid JSON.")
    await assert_serving(conn, endpoint)
    await assert_serving(bystander)


@pytest.mark.parametrize("text", ["[]", "42", "null", '"x"'])
@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.path)
async def test_json_that_is_not_an_object_gets_bad_message(ws_connect, endpoint, text):
    """[], 42, null and "x" are answered with bad_message."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    conn = await join(ws_connect, endpoint)
    await conn.write_message(text)
    assert await answer(conn, endpoint) == error("bad_message", "A message must be a JSON object.")
    await assert_serving(conn, endpoint)
    await assert_serving(bystander)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.path)
async def test_unknown_type_gets_unknown_type(ws_connect, endpoint):
    """A type the endpoint does not have is answered with unknown_type, quoting it."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    conn = await join(ws_connect, endpoint)
    await send_json(conn, {"type": "drop_tables"})
    assert await answer(conn, endpoint) == error(
        "unknown_type", 'Unknown message type "drop_tables".')
    await assert_serving(bystander)


@pytest.mark.parametrize("value", [42, None, ["a"], {"a": 1}, True])
@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.path)
async def test_wrong_field_type_gets_bad_message(ws_connect, endpoint, value):
    """A field of the wrong type is answered with bad_message naming the field."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    conn = await join(ws_connect, endpoint)
    await send_json(conn, {"type": endpoint.say, endpoint.field: value})
    assert await answer(conn, endpoint) == error(
        "bad_message", f'The "{endpoint.field}" field must be a string.')
    await assert_serving(conn, endpoint)
    await assert_serving(bystander)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.path)
async def test_unpaired_surrogate_escape_gets_bad_message(ws_connect, endpoint):
    """A \\ud800 escape (valid JSON, not a character) is refused, not broadcast, not a crash."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    conn = await join(ws_connect, endpoint)
    await conn.write_message(json.dumps({"type": endpoint.say, endpoint.field: "a\ud800b"}))
    assert await answer(conn, endpoint) == error(
        "bad_message", "A string holds an unpaired surrogate escape.")
    await conn.write_message('{"type": "\\udfff"}')
    assert (await answer(conn, endpoint))["code"] == "bad_message"
    await assert_serving(conn, endpoint)
    await assert_serving(bystander)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.path)
async def test_binary_frame_gets_bad_message(ws_connect, endpoint):
    """A binary frame on a JSON endpoint is answered with an error frame, not a close."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    conn = await join(ws_connect, endpoint)
    await conn.write_message(b'{"type": "say", "text": "hi"}', binary=True)
    assert await answer(conn, endpoint) == error(
        "bad_message", "This endpoint takes JSON text frames, not binary.")
    await assert_serving(conn, endpoint)
    await assert_serving(bystander)


# Frames the protocol layer refuses: the connection ends, nobody else notices.

@pytest.mark.parametrize("path", ALL_PATHS)
async def test_frame_over_the_limit_closes_with_1009(ws_connect, http_server_client, path):
    """One frame over --max-message-size closes that socket with 1009."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    reader, writer = await raw_join(port_of(http_server_client), path)
    writer.write(client_frame(OP_TEXT, b"x" * (LIMIT + 1)))
    assert await raw_close_code(reader) == CloseCode.MESSAGE_TOO_BIG
    writer.close()
    await assert_serving(bystander)


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_fragmented_message_over_the_limit_closes_with_1009(
    ws_connect, http_server_client, path
):
    """Small fragments adding up past the limit close the socket with 1009."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    reader, writer = await raw_join(port_of(http_server_client), path)
    fragment = b"x" * 4096
    writer.write(client_frame(OP_TEXT, fragment, fin=False))
    for _ in range(LIMIT // len(fragment)):
        writer.write(client_frame(OP_CONTINUATION, fragment, fin=False))
    assert await raw_close_code(reader) == CloseCode.MESSAGE_TOO_BIG
    writer.close()
    await assert_serving(bystander)


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_invalid_utf8_text_frame_closes_with_1007(ws_connect, http_server_client, path):
    """A text frame that is not UTF-8 closes that socket with 1007; others are unaffected."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    reader, writer = await raw_join(port_of(http_server_client), path)
    writer.write(client_frame(OP_TEXT, b'{"type": "say", "text": "\xff\xfe"}'))
    assert await raw_close_code(reader) == CloseCode.INVALID_DATA
    writer.close()
    await assert_serving(bystander)


# Floods and slow readers.

@pytest.mark.parametrize("path", ALL_PATHS)
async def test_flood_of_10000_messages_is_rate_limited_then_closed(
    ws_connect, http_server_client, path
):
    """10,000 frames at once: the burst passes, then rate_limited errors (echo: nothing but
    echoes), then close 1008; a second client of the same endpoint keeps chatting."""
    bystander_endpoint = BY_PATH.get(path, PROBE)  # echo has no broadcast: use the probe's
    bystander = await join(ws_connect, bystander_endpoint)  # connected before the attack
    reader, writer = await raw_join(port_of(http_server_client), path)
    payload = json.dumps({"type": "say", "text": "flood"}).encode()
    writer.write(client_frame(OP_TEXT, payload) * 10_000)

    passed = limited = 0
    while True:
        opcode, data = await read_frame(reader)
        if opcode == OP_CLOSE:
            break
        frame = json.loads(data)
        if frame.get("code") == "rate_limited":
            limited += 1
        else:
            passed += 1
    assert int.from_bytes(data[:2], "big") == CloseCode.POLICY_VIOLATION
    if path == "/ws/echo":
        assert limited == 0  # a raw client could not tell an error frame from an echo
    else:
        assert limited >= Config.rate_limit_strikes
    assert passed < 10_000 // 10  # the burst and what the rate refilled, not the flood
    writer.close()
    await assert_serving(bystander, bystander_endpoint)


async def test_reader_that_never_reads_is_dropped_and_memory_stays_bounded(
    http_server_client, ws_connect, hub
):
    """2,000 broadcasts of 10 KB while one client never reads: it is dropped, the server's
    memory grows by far less than the 20 MB it would have queued, readers get every one."""
    count, size, batch = 2000, 10_000, 20
    readers = [await join(ws_connect, PROBE) for _ in range(3)]
    _, stalled, _ = await raw_handshake(port_of(http_server_client), PROBE.path,
                                        receive_buffer=4096)
    gc.collect()
    baseline = peak = rss_bytes()

    for start in range(0, count, batch):
        for n in range(start, start + batch):
            hub.publish(TOPIC, {"type": "say", "text": f"{n:05d}" + "x" * size})
        for reader in readers:
            for n in range(start, start + batch):
                frame = await receive_json(reader)
                assert frame["text"][:5] == f"{n:05d}"
        peak = max(peak, rss_bytes())

    assert hub.dropped == 1
    assert len(hub.subscribers(TOPIC)) == len(readers)
    assert peak - baseline < count * size / 4, f"grew {peak - baseline} bytes"
    stalled.close()


# Handshakes.

@pytest.mark.parametrize("path", ALL_PATHS)
async def test_cross_origin_handshake_gets_403_and_allowed_one_101(
    ws_connect, http_server_client, path
):
    """A foreign Origin is refused with 403; the server's own origin is upgraded (101)."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect(path, {"Origin": "https://evil.example"})
    assert refused.value.code == 403
    own = f"http://127.0.0.1:{port_of(http_server_client)}"
    conn = await ws_connect(path, {"Origin": own})
    assert conn.protocol is not None  # upgraded
    await assert_serving(bystander)


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_handshake_without_upgrade_gets_400(ws_connect, http_server_client, path):
    """A GET on a socket path without the Upgrade header is answered 400."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    _, writer, head = await raw_handshake(port_of(http_server_client), path, upgrade=False)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400")
    await assert_serving(bystander)


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_connections_over_the_per_ip_cap_are_refused(start_server, ws_open, hub, path):
    """With --max-connections-per-ip 3, the fourth socket from one address gets 429 and the
    first three keep working."""
    app = make_app(Config(hub=hub, max_connections_per_ip=3))
    add_probe(app)
    base = f"ws://127.0.0.1:{start_server(app)}"
    first = [await ws_open(base + path) for _ in range(3)]
    with pytest.raises(HTTPClientError) as refused:
        await ws_open(base + path)
    assert refused.value.code == 429
    for conn in first:
        if path == "/ws/echo":
            await conn.write_message("ok")
            assert await receive(conn) == "ok"
        else:
            await receive_type(conn, BY_PATH[path].greeting)
            await assert_serving(conn, BY_PATH[path])


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.path)
async def test_500_clients_reconnecting_at_once_are_all_served(http_server_client, ws_open,
                                                               hub, endpoint, monkeypatch):
    """500 clients connect at once, all drop, all come back at once: each gets a greeting
    both times and the hub holds exactly the live ones."""
    # What is tested is that everyone is served, not how fast: 500 handshakes with client
    # and server on one loop can take more than the usual 5 s on a loaded machine.
    monkeypatch.setattr(tests.support, "TIMEOUT", 30.0)
    url = ws_url(http_server_client, endpoint.path)

    async def arrive() -> Any:
        conn = await ws_open(url)
        assert (await answer(conn, endpoint))["type"] == endpoint.greeting
        return conn

    for _ in range(2):
        clients = await asyncio.gather(*(arrive() for _ in range(500)))
        assert len(hub.connections) == 500
        for conn in clients:
            conn.close(1000)
        await asyncio.gather(*(closed(conn) for conn in clients))
        await poll_until(lambda: not hub.connections)


# Markup in user text is data.

@pytest.mark.parametrize("endpoint", [PROBE, CHAT], ids=lambda e: e.path)
async def test_script_tags_are_delivered_as_text(ws_connect, endpoint):
    """<script> in a message reaches everyone byte for byte, as a JSON string."""
    listener = await join(ws_connect, endpoint)  # connected before the message
    conn = await join(ws_connect, endpoint)
    text = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    await send_json(conn, {"type": endpoint.say, endpoint.field: text})
    heard = await receive_type(listener, endpoint.say)
    assert heard[endpoint.field] == text


async def test_script_tags_in_a_nickname_are_refused(ws_connect):
    """A <script> nickname is outside the identifier profile: an anonymous welcome, then
    bad_nick, and nobody hears it join."""
    listener = await join(ws_connect, CHAT)
    conn = await ws_connect(f"{CHAT.path}?nick=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert (await receive_type(conn, "welcome"))["nick"] is None
    assert (await receive_type(conn, "error"))["code"] == "bad_nick"
    await send_json(conn, {"type": "message", "text": "hi"})
    assert (await receive_type(listener, "message"))["from"] is None


async def test_script_tags_in_a_poll_title_are_delivered_as_text(ws_connect, http_server_client):
    """A poll whose title and options are markup comes back in the poll frame unchanged."""
    title, option = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"
    response = await http_server_client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({"title": title, "options": [option, "&amp;"]}),
    )
    poll_id = json.loads(response.body)["id"]
    conn = await ws_connect(f"/ws/vote/{poll_id}")
    poll = (await receive_type(conn, "poll"))["poll"]
    assert poll["title"] == title
    assert [o["label"] for o in poll["options"]] == [option, "&amp;"]


async def test_script_tags_are_echoed_unchanged(ws_connect):
    """The echo endpoint returns markup exactly as sent."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message("<script>alert(1)</script>")
    assert await receive(conn) == "<script>alert(1)</script>"


async def test_binary_garbage_is_echoed_as_binary(ws_connect, http_server_client):
    """Arbitrary bytes in a binary frame come back as the same bytes."""
    bystander = await join(ws_connect, PROBE)  # connected before the attack
    reader, writer = await raw_join(port_of(http_server_client), "/ws/echo")
    payload = bytes(range(256)) * 4
    writer.write(client_frame(OP_BINARY, payload))
    assert await read_frame(reader) == (OP_BINARY, payload)
    writer.close()
    await assert_serving(bystander)
