"""Chat over HTTP, through real sockets: long-polling and short polling (/poll/chat/<room>),
Server-Sent Events (/sse/chat/<room>), and both beside the WebSocket, on the embedded chat
state and on Redis."""

import asyncio
import json
import logging
import re
import threading
import time
from typing import Any, Optional
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient

from realtime.wire import forms
from server import Config
from tests.conftest import backend_settings
from tests.eventstream import EventStream
from tests.support import (
    RawReader, TIMEOUT, poll_until, port_of, receive_json, send_json,
)

# --long-poll-timeout and --long-poll-session-timeout here: longer than any test waits, so an
# answer within TIMEOUT was never a timeout and no session ends halfway; the tests of the
# timeouts themselves shorten them.
LONG_POLL = 3 * TIMEOUT
SESSION = 6 * TIMEOUT
SHORT = 0.5  # seconds: a timeout a test waits for
HEARTBEAT = 0.3  # seconds: --sse-heartbeat here
ALICE = "alice-browser-0123456789"  # chat cookies, as /chat hands them out
BOB = "bob-browser-0123456789ab"
CAROL = "carol-browser-0123456789"


@pytest.fixture(params=["embedded", "redis"])
def backend(request):
    """Every test here runs against the embedded chat state and against Redis."""
    return request.param


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Options a test changes (parametrize ``overrides`` to change them)."""
    return {}


@pytest.fixture
def config(backend, tmp_path, request, overrides):
    """Short timeouts; the embedded state, or ``--redis-url`` on the session's redis-server
    under a key prefix of the test's own."""
    settings: dict[str, Any] = dict(
        data_dir=str(tmp_path / "data"), long_poll_timeout=LONG_POLL, sse_heartbeat=HEARTBEAT,
        long_poll_session_timeout=SESSION)
    settings.update(backend_settings(backend, request))
    settings.update(overrides)
    return Config(**settings)


@pytest.fixture
def app(running_app):
    """The application, its stores and broker started (conftest's ``running_app``)."""
    return running_app


@pytest.fixture
def hub(app):
    """The application's hub."""
    return app.settings["hub"]


@pytest.fixture
def sse(http_server_client):
    """``await sse(path, cookie=None, **headers)`` opens an event stream to the test server;
    every one is closed after the test."""
    opened: list[EventStream] = []

    async def open_stream(path: str, cookie: Optional[str] = None, **options: Any) -> EventStream:
        headers = dict(options.pop("headers", {}))
        if cookie is not None:
            headers["Cookie"] = f"chat_id={cookie}"
        stream = await EventStream.open(port_of(http_server_client), path, headers, **options)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


async def fetch(http_server_client, path: str, method: str = "GET", body: Any = None,
                cookie: Optional[str] = None, headers: Optional[dict[str, str]] = None,
                timeout: float = TIMEOUT):
    """One HTTP request; the response whatever its status."""
    headers = dict(headers or {})
    if cookie is not None:
        headers["Cookie"] = f"chat_id={cookie}"
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    return await AsyncHTTPClient().fetch(
        http_server_client.get_url(path), method=method, body=body, headers=headers,
        raise_error=False, request_timeout=timeout)


async def send(http_server_client, text: str, room: str = "lobby", cookie: Optional[str] = None,
               **fields: Any) -> dict[str, Any]:
    """POST a message; its frame (the POST must succeed)."""
    response = await fetch(http_server_client, f"/poll/chat/{room}", "POST",
                           {"text": text, **fields}, cookie)
    assert response.code == 200, response.body
    return json.loads(response.body)


async def poll(http_server_client, room: str = "lobby", cookie: Optional[str] = None,
               timeout: float = TIMEOUT, **query: Any) -> dict[str, Any]:
    """GET /poll/chat/<room>; its JSON body (the GET must succeed)."""
    path = f"/poll/chat/{room}" + ("?" + urlencode(query) if query else "")
    response = await fetch(http_server_client, path, cookie=cookie, timeout=timeout)
    assert response.code == 200, response.body
    return json.loads(response.body)


async def held(hub, topic: str, count: int) -> None:
    """Wait until ``topic`` has ``count`` local subscribers (a request is held, or let go)."""
    await poll_until(lambda: hub.subscriber_count(topic) == count)


async def ws_join(ws_connect, room: str = "lobby", nick: Optional[str] = None,
                  cookie: Optional[str] = None):
    """A chat WebSocket and its welcome."""
    path = f"/ws/chat/{room}" + (f"?nick={nick}" if nick else "")
    conn = await ws_connect(path, {"Cookie": f"chat_id={cookie}"} if cookie else None)
    welcome = await receive_json(conn)
    assert welcome["type"] == "welcome"
    return conn, welcome


async def ws_frame_of(conn, kind: str) -> dict[str, Any]:
    """Skip frames until one of type ``kind``."""
    while True:
        frame = await receive_json(conn)
        if frame["type"] == kind:
            return frame


# Long-polling and short polling.


async def test_long_poll_answers_the_backlog_at_once(http_server_client):
    """Messages after since are answered at once, recovered, with the newest as last_id."""
    first = await send(http_server_client, "one")
    second = await send(http_server_client, "two")
    body = await poll(http_server_client, since=first["id"] - 1)  # within TIMEOUT: not held
    assert body == {"messages": [first, second], "last_id": second["id"], "recovered": True}


async def test_long_poll_holds_until_a_message_arrives(http_server_client, hub):
    """Nothing after since: the request is held, and the next message answers it."""
    last = await send(http_server_client, "before")
    before = hub.subscriber_count("chat.lobby")
    waiting = asyncio.ensure_future(poll(http_server_client, since=last["id"]))
    await held(hub, "chat.lobby", before + 1)
    assert not waiting.done()
    message = await send(http_server_client, "wake up")
    body = await waiting
    assert body == {"messages": [message], "last_id": message["id"], "recovered": True}
    await held(hub, "chat.lobby", before)


@pytest.mark.parametrize("overrides", [dict(long_poll_timeout=SHORT)])
async def test_long_poll_times_out_empty(http_server_client):
    """No message within --long-poll-timeout: an empty answer, last_id the since sent."""
    last = await send(http_server_client, "only one")
    started = time.monotonic()
    body = await poll(http_server_client, since=last["id"])
    assert time.monotonic() - started >= SHORT * 0.9
    assert body == {"messages": [], "last_id": last["id"], "recovered": True}


async def test_wait_0_never_holds(http_server_client, hub):
    """wait=0 (short polling) answers at once even with nothing new."""
    last = await send(http_server_client, "only one")
    body = await poll(http_server_client, since=last["id"], wait=0)  # within TIMEOUT
    assert body == {"messages": [], "last_id": last["id"], "recovered": True}
    assert hub.subscriber_count("chat.lobby") == 0


async def test_without_since_the_newest_history_comes_at_once_unrecovered(http_server_client):
    """No since: the newest history at once, recovered false (nothing to continue)."""
    assert await poll(http_server_client) == {
        "messages": [], "last_id": None, "recovered": False}
    message = await send(http_server_client, "hello")
    body = await poll(http_server_client)
    assert body == {"messages": [message], "last_id": message["id"], "recovered": False}


async def test_since_from_before_the_room_waits_for_its_first_message(http_server_client, hub):
    """since=0 in an empty room is held; the first message answers it, recovered true
    (nothing was lost: the page must not say that messages may be missing)."""
    waiting = asyncio.ensure_future(poll(http_server_client, since=0))
    await held(hub, "chat.lobby", 1)
    message = await send(http_server_client, "first")
    assert await waiting == {"messages": [message], "last_id": message["id"], "recovered": True}


async def test_since_0_after_messages_were_sent_gets_them_all_recovered(http_server_client):
    """since=0 in a room that dropped nothing answers every message, recovered true."""
    first = await send(http_server_client, "one")
    second = await send(http_server_client, "two")
    body = await poll(http_server_client, since=0)
    assert body == {"messages": [first, second], "last_id": second["id"], "recovered": True}


async def test_sse_since_0_and_since_the_newest_id_are_recovered(sse, http_server_client):
    """An event stream with since=0 in an empty room, or since its newest id, is recovered."""
    empty = await sse("/sse/chat/quiet?since=0")
    welcome = await empty.frame_of("welcome")
    assert welcome["history"] == [] and welcome["recovered"] is True
    message = await send(http_server_client, "hi", room="quiet")
    newest = await sse(f"/sse/chat/quiet?since={message['id']}")
    welcome = await newest.frame_of("welcome")
    assert welcome["history"] == [] and welcome["recovered"] is True


async def test_socket_since_0_in_an_empty_room_is_recovered(ws_connect):
    """A WebSocket with since=0 in an empty room is welcomed recovered, with no history."""
    conn = await ws_connect("/ws/chat/fresh?since=0")
    welcome = await receive_json(conn)
    assert welcome["history"] == [] and welcome["recovered"] is True


async def test_socket_since_the_newest_id_is_recovered(ws_connect, http_server_client):
    """A WebSocket with since equal to the room's newest id: recovered, no history."""
    message = await send(http_server_client, "newest", room="uptodate")
    conn = await ws_connect(f"/ws/chat/uptodate?since={message['id']}")
    welcome = await receive_json(conn)
    assert welcome["history"] == [] and welcome["recovered"] is True


async def test_a_disconnected_long_poll_leaves_no_waiter(http_server_client, hub, app):
    """A client that goes away while held is released at once: no subscriber, no slot."""
    last = await send(http_server_client, "before")
    before = hub.subscriber_count("chat.lobby")
    reader_transport, _ = await raw_get(http_server_client, f"/poll/chat/lobby?since={last['id']}")
    await held(hub, "chat.lobby", before + 1)
    reader_transport.close()
    await held(hub, "chat.lobby", before)
    assert app.settings["sockets"]["admission"].ip_connections.count("127.0.0.1") == 0
    assert not hub.connections


async def raw_get(http_server_client, path: str) -> tuple[Any, RawReader]:
    """Send a GET on a raw socket and read nothing back: a client that may vanish."""
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(
        RawReader, "127.0.0.1", port_of(http_server_client))
    transport.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return transport, reader


async def test_one_message_wakes_many_held_requests_with_one_body(
        http_server_client, hub, monkeypatch):
    """50 held requests cost no thread; one message answers them all with one body, built
    once for every one of them."""
    builds = []
    build = forms.build_poll
    monkeypatch.setattr(forms, "build_poll", lambda e: builds.append(e) or build(e))
    last = await send(http_server_client, "before")
    threads = threading.active_count()
    clients = [await raw_get(http_server_client, f"/poll/chat/lobby?since={last['id']}")
               for _ in range(50)]
    await held(hub, "chat.lobby", 50)
    assert threading.active_count() == threads
    message = await send(http_server_client, "to all of you")
    for transport, reader in clients:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = json.loads(await asyncio.wait_for(reader.readexactly(length), TIMEOUT))
        assert body == {"messages": [message], "last_id": message["id"], "recovered": True}
        transport.close()
    assert len(builds) == 1


@pytest.mark.parametrize("overrides", [dict(max_connections_per_ip=2)])
async def test_held_requests_count_toward_the_per_address_limit(http_server_client, hub):
    """Held requests take connection slots of their address; past the cap, 429."""
    last = await send(http_server_client, "before")
    waiting = [asyncio.ensure_future(poll(http_server_client, since=last["id"]))
               for _ in range(2)]
    await held(hub, "chat.lobby", 2)
    response = await fetch(http_server_client, f"/poll/chat/lobby?since={last['id']}")
    assert response.code == 429 and response.headers["Retry-After"]
    assert json.loads(response.body)["error"]["code"] == "too_many_connections"
    await send(http_server_client, "answers both")
    for request in waiting:
        assert len((await request)["messages"]) == 1


async def test_a_long_poll_sees_private_messages_of_its_cookie_only(http_server_client, hub):
    """A private message is in the polls of its two holders' cookies, nobody else's."""
    await poll(http_server_client, cookie=BOB, nick="bob")
    await poll(http_server_client, cookie=CAROL, nick="carol")
    private = await send(http_server_client, "psst", cookie=ALICE, nick="alice", to="bob")
    public = await send(http_server_client, "everyone")
    since = private["id"] - 1
    for cookie in (ALICE, BOB):
        body = await poll(http_server_client, cookie=cookie, since=since)
        assert body["messages"] == [private, public]
    for cookie in (CAROL, None):
        assert (await poll(http_server_client, cookie=cookie, since=since))["messages"] == [public]


async def test_a_held_long_poll_wakes_for_its_private_message(http_server_client, hub):
    """A held poll of bob's cookie is answered by a private message to bob."""
    last = await send(http_server_client, "before", cookie=BOB, nick="bob")
    waiting = asyncio.ensure_future(poll(http_server_client, cookie=BOB, since=last["id"]))
    await held(hub, "chat.lobby", 1)  # its private topic too: subscribed in the same turn
    assert not waiting.done()
    private = await send(http_server_client, "for bob", cookie=ALICE, nick="alice", to="bob")
    assert (await waiting)["messages"] == [private]


# Nicknames over HTTP.


async def test_post_with_a_free_nick_takes_it_and_the_session_keeps_it(
        http_server_client, ws_connect):
    """A POST with a free nick joins under it (the room hears joined) and speaks as it; the
    browser's next POST speaks as it too, and another browser cannot take it."""
    watcher, _ = await ws_join(ws_connect)
    message = await send(http_server_client, "hi", cookie=ALICE, nick="alice")
    assert message["from"] == "alice"
    assert await ws_frame_of(watcher, "joined") == {"type": "joined", "room": "lobby",
                                                    "nick": "alice"}
    taken = await fetch(http_server_client, "/poll/chat/lobby", "POST",
                        {"text": "me too", "nick": "alice"}, BOB)
    assert json.loads(taken.body)["error"]["code"] == "nick_taken"
    again = await send(http_server_client, "still me", cookie=ALICE)
    assert again["from"] == "alice"


@pytest.mark.parametrize("overrides", [dict(long_poll_session_timeout=SHORT)])
async def test_a_poll_session_leaves_after_its_timeout(http_server_client, ws_connect):
    """--long-poll-session-timeout after a session's last request, its nickname leaves the room."""
    watcher, _ = await ws_join(ws_connect)
    started = time.monotonic()
    await poll(http_server_client, cookie=ALICE, nick="alice")
    assert (await ws_frame_of(watcher, "joined"))["nick"] == "alice"
    assert await ws_frame_of(watcher, "left") == {"type": "left", "room": "lobby",
                                                  "nick": "alice"}
    assert time.monotonic() - started >= SHORT * 0.9


async def test_post_never_speaks_as_a_nick_another_browser_holds(http_server_client, ws_connect):
    """alice holds her nick on a socket: a POST from another cookie as alice is refused and
    publishes nothing."""
    alice, _ = await ws_join(ws_connect, nick="alice", cookie=ALICE)
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST",
                           {"text": "i am alice", "nick": "Alice"}, BOB)
    assert response.code == 400
    assert json.loads(response.body)["error"]["code"] == "nick_taken"
    await send_json(alice, {"type": "message", "text": "marker"})
    assert (await ws_frame_of(alice, "message"))["text"] == "marker"


async def test_post_speaks_as_the_nick_its_cookie_holds_on_a_socket(
        http_server_client, ws_connect):
    """A POST with the cookie of alice's socket speaks as alice, with no second joined."""
    alice, _ = await ws_join(ws_connect, nick="alice", cookie=ALICE)
    assert (await ws_frame_of(alice, "joined"))["nick"] == "alice"
    message = await send(http_server_client, "from curl", cookie=ALICE, nick="alice")
    frame = await receive_json(alice)
    assert frame == message and frame["from"] == "alice"


@pytest.mark.parametrize("body, status, code", [
    (b"not json", 400, "bad_json"),
    (b"[1, 2]", 400, "bad_message"),
    (b'{"text": "\\ud800"}', 400, "bad_message"),
    (b"\xff\xfe", 400, "bad_json"),
    (b'{"text": NaN}', 400, "bad_json"),
    (b'\xef\xbb\xbf{"text": "hi"}', 400, "bad_json"),
    ({"nick": "x"}, 400, "bad_message"),
    ({"text": "   "}, 400, "bad_message"),
    ({"text": "x" * 4001}, 400, "too_long"),
    ({"text": "hi", "to": 5}, 400, "bad_message"),
    ({"text": "hi", "nick": "zero\u200bwidth"}, 400, "bad_nick"),
    ({"text": "hi", "to": "bob"}, 400, "nick_required"),
    ({"text": "hi", "nick": "alice", "to": "nobody"}, 400, "no_such_user"),
])
async def test_post_errors_are_json_with_the_socket_codes(http_server_client, body, status, code):
    """A refused POST answers the socket's error code as JSON, with its status."""
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST", body, ALICE,
                           headers={"Content-Type": "application/json"})
    assert response.code == status
    error = json.loads(response.body)["error"]
    assert error["code"] == code and error["message"]
    assert response.headers["Content-Type"].startswith("application/json")


async def test_a_nick_without_the_cookie_is_refused_and_the_cookie_given(http_server_client):
    """Holding a nick needs the chat cookie: cookie_required, and the answer sets one."""
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST",
                           {"text": "hi", "nick": "alice"})
    assert response.code == 400
    assert json.loads(response.body)["error"]["code"] == "cookie_required"
    assert "chat_id=" in response.headers["Set-Cookie"]


async def test_post_must_be_json(http_server_client):
    """A POST that is not application/json (a cross-site form) is a 415."""
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST", "text=hi",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.code == 415
    assert json.loads(response.body)["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("overrides", [dict(ip_rate_limit=1, ip_rate_burst=2)])
async def test_posts_are_charged_to_the_address_budget(http_server_client):
    """POSTs spend the address's frame budget: past it, 429 rate_limited with Retry-After."""
    for n in range(2):
        await send(http_server_client, f"message {n}")
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST", {"text": "more"})
    assert response.code == 429 and int(response.headers["Retry-After"]) >= 1
    assert json.loads(response.body)["error"]["code"] == "rate_limited"


@pytest.mark.parametrize("overrides", [dict(room_rate_limit=1, room_rate_burst=1)])
async def test_posts_are_charged_to_the_room_budget(http_server_client):
    """A public POST spends the room's budget: past it, 429 and nothing published."""
    await send(http_server_client, "first")
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST", {"text": "second"})
    assert response.code == 429
    assert json.loads(response.body)["error"]["code"] == "rate_limited"
    assert [m["text"] for m in (await poll(http_server_client))["messages"]] == ["first"]


async def test_an_unavailable_chat_state_is_a_503(http_server_client, app, monkeypatch):
    """A chat state that cannot answer makes a POST a 503 unavailable with Retry-After."""
    from realtime.wire.messages import ClientError

    async def down(*args: Any) -> None:
        raise ClientError("unavailable", "Redis does not answer.")

    monkeypatch.setattr(app.settings["chat"], "say", down)
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST", {"text": "hi"})
    assert response.code == 503 and response.headers["Retry-After"] == "5"
    assert json.loads(response.body)["error"]["code"] == "unavailable"


# Server-Sent Events.


async def test_sse_headers_arrive_before_any_message(sse):
    """The stream's head (200, text/event-stream, no buffering) comes before any message
    is sent, and the first event is the welcome."""
    stream = await sse("/sse/chat/lobby")
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["x-accel-buffering"] == "no"
    assert stream.headers["cache-control"] == "no-store"
    welcome = await stream.frame()
    assert welcome == {"type": "welcome", "room": "lobby", "nick": None, "online": [],
                       "readers": 1, "history": []}


async def test_an_http_1_0_stream_gets_unchunked_events(sse, http_server_client):
    """An HTTP/1.0 client gets the same events, not framed in chunks."""
    stream = await sse("/sse/chat/lobby", version="HTTP/1.0")
    assert "transfer-encoding" not in stream.headers
    await stream.frame_of("welcome")
    message = await send(http_server_client, "plain")
    assert await next_numbered(stream) == message


async def test_sse_events_are_the_socket_frames_with_their_ids(sse, ws_connect):
    """Each message is one event whose data is exactly the socket's frame and whose id is
    the message id."""
    stream = await sse("/sse/chat/lobby")
    await stream.frame_of("welcome")
    conn, _ = await ws_join(ws_connect)
    await send_json(conn, {"type": "message", "text": "hello"})
    sent = await conn.read_message()
    while json.loads(sent)["type"] != "message":
        sent = await conn.read_message()
    while True:
        event = await stream.event()
        if event.json()["type"] == "message":
            break
    assert event.data == sent
    assert event.id == str(json.loads(sent)["id"])


async def test_sse_reconnect_with_last_event_id_recovers_exactly_what_was_missed(
        sse, http_server_client):
    """A stream reopened with Last-Event-ID (winning over ?since=) gets a welcome holding
    exactly the messages after that id, recovered, and carrying the newest id."""
    stream = await sse("/sse/chat/lobby")
    await stream.frame_of("welcome")
    seen = await send(http_server_client, "seen")
    event = await stream.event()
    assert event.id == str(seen["id"])
    stream.close()
    missed = [await send(http_server_client, f"missed {n}") for n in range(3)]
    again = await sse("/sse/chat/lobby?since=1", headers={"Last-Event-ID": event.id})
    welcome_event = await again.event()
    welcome = welcome_event.json()
    assert welcome["history"] == missed and welcome["recovered"] is True
    assert welcome_event.id == str(missed[-1]["id"])


async def test_sse_since_that_cannot_be_recovered_says_so(sse, http_server_client):
    """A since the room cannot vouch for gets the newest history and recovered false."""
    message = await send(http_server_client, "hello")
    stream = await sse("/sse/chat/lobby?since=5")
    welcome = await stream.frame()
    assert welcome["history"] == [message] and welcome["recovered"] is False


async def test_a_private_message_reaches_only_its_holders_streams(sse, http_server_client):
    """alice's private message to bob reaches bob's and alice's streams; carol's and an
    anonymous one get only the public message after it."""
    streams = {}
    for name, cookie in (("alice", ALICE), ("bob", BOB), ("carol", CAROL), (None, None)):
        path = "/sse/chat/lobby" + (f"?nick={name}" if name else "")
        streams[name] = await sse(path, cookie)
        assert (await streams[name].frame_of("welcome"))["nick"] == name
    private = await send(http_server_client, "psst", cookie=ALICE, nick="alice", to="bob")
    public = await send(http_server_client, "everyone")
    for name in ("alice", "bob"):
        assert await streams[name].frame_of("private") == private
        assert await streams[name].frame_of("message") == public
    for name in ("carol", None):
        assert await next_numbered(streams[name]) == public


async def next_numbered(stream: EventStream) -> dict[str, Any]:
    """The next event with an id (a message or a private one)."""
    while True:
        event = await stream.event()
        if event.id is not None:
            return event.json()


async def test_sse_nick_joins_and_closing_the_stream_leaves(sse, ws_connect):
    """?nick= on a stream joins the room; the stream going away is a close: left."""
    watcher, _ = await ws_join(ws_connect)
    stream = await sse("/sse/chat/lobby?nick=dora")
    assert (await stream.frame())["nick"] == "dora"
    assert (await ws_frame_of(watcher, "joined"))["nick"] == "dora"
    stream.close()
    assert await ws_frame_of(watcher, "left") == {"type": "left", "room": "lobby", "nick": "dora"}


async def test_a_browsers_last_stream_closing_leaves_at_once(sse, ws_connect, http_server_client):
    """A stream with the chat cookie that posted too: its closing is the browser's leaving,
    heard at once (not after the long-poll session's timeout)."""
    watcher, _ = await ws_join(ws_connect)
    stream = await sse("/sse/chat/lobby?nick=dora", cookie=ALICE)
    assert (await stream.frame_of("welcome"))["nick"] == "dora"
    await send(http_server_client, "hi", cookie=ALICE, nick="dora")
    assert (await ws_frame_of(watcher, "message"))["from"] == "dora"
    stream.close()
    assert await ws_frame_of(watcher, "left") == {"type": "left", "room": "lobby", "nick": "dora"}


async def presence_until_marker(conn, marker_cookie: str, http_server_client) -> list[Any]:
    """The presence frames ``conn`` gets before a marker message posted by another browser."""
    await send(http_server_client, "marker", cookie=marker_cookie)
    frames = []
    while True:
        frame = await receive_json(conn)
        if frame["type"] == "message" and frame["text"] == "marker":
            return frames
        if frame["type"] in ("joined", "left", "renamed"):
            frames.append(frame)


async def test_a_rename_over_sse_is_one_renamed(sse, ws_connect, http_server_client):
    """A browser that posted as ana opens a stream as bea, then closes the old one: the room
    hears one renamed, never bea joining beside ana, never ana leaving."""
    watcher, _ = await ws_join(ws_connect, nick="obs", cookie=BOB)
    old = await sse("/sse/chat/lobby?nick=ana", cookie=ALICE)
    await old.frame_of("welcome")
    await send(http_server_client, "as ana", cookie=ALICE, nick="ana")
    new = await sse("/sse/chat/lobby?nick=bea", cookie=ALICE)
    assert (await new.frame_of("welcome"))["nick"] == "bea"
    old.close()
    assert await presence_until_marker(watcher, CAROL, http_server_client) == [
        {"type": "joined", "room": "lobby", "nick": "obs"},
        {"type": "joined", "room": "lobby", "nick": "ana"},
        {"type": "renamed", "room": "lobby", "from": "ana", "to": "bea"}]


async def test_a_rename_over_long_polling_is_one_renamed(ws_connect, http_server_client):
    """A long-polling browser that holds ana asks for bea: the room hears one renamed."""
    watcher, _ = await ws_join(ws_connect, nick="obs", cookie=BOB)
    await poll(http_server_client, cookie=ALICE, nick="ana", wait=0)
    await poll(http_server_client, cookie=ALICE, nick="bea", wait=0)
    assert await presence_until_marker(watcher, CAROL, http_server_client) == [
        {"type": "joined", "room": "lobby", "nick": "obs"},
        {"type": "joined", "room": "lobby", "nick": "ana"},
        {"type": "renamed", "room": "lobby", "from": "ana", "to": "bea"}]


async def test_sse_taken_nick_gets_welcome_then_error(sse, ws_connect):
    """A taken ?nick= gets the anonymous welcome and then a nick_taken error event."""
    await ws_join(ws_connect, nick="alice", cookie=ALICE)
    stream = await sse("/sse/chat/lobby?nick=alice", BOB)
    assert (await stream.frame())["nick"] is None
    error = await stream.frame_of("error")
    assert error["code"] == "nick_taken"


async def test_sse_heartbeat_comments_keep_an_idle_stream_busy(sse):
    """An idle stream gets a comment line every --sse-heartbeat seconds."""
    stream = await sse("/sse/chat/lobby")
    await stream.frame_of("welcome")
    with pytest.raises(asyncio.TimeoutError):
        await stream.event(timeout=HEARTBEAT * 4)
    assert stream.comments >= 2


@pytest.mark.parametrize("overrides", [dict(max_connections_per_ip=2)])
async def test_sse_streams_count_toward_the_per_address_limit(sse):
    """Event streams take connection slots of their address: past the cap, 429."""
    for _ in range(2):
        await (await sse("/sse/chat/lobby")).frame_of("welcome")
    refused = await sse("/sse/chat/lobby")
    assert refused.status == 429
    assert refused.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("overrides", [dict(max_pending_bytes=64 * 1024)])
async def test_a_stalled_sse_reader_is_cut_off(sse, hub, ws_connect, monkeypatch):
    """A stream that stops reading is dropped once it holds more than --max-pending-bytes
    (holding at most that plus one event), its connection ends, and the room hears its
    nickname leave; a reader is not dropped."""
    held_at_drop = []
    drop = hub.drop
    monkeypatch.setattr(hub, "drop", lambda s: held_at_drop.append(s.unflushed_bytes()) or drop(s))
    watcher, _ = await ws_join(ws_connect)
    reader = await sse("/sse/chat/lobby")
    stalled = await sse("/sse/chat/lobby?nick=sleepy", receive_buffer=4096, reader_limit=4096)
    assert stalled.status == 200
    await ws_frame_of(watcher, "joined")
    await reader.frame_of("welcome")
    big = {"type": "message", "id": 1, "room": "lobby", "from": None, "text": "x" * 4000, "ts": 0}
    received = 0
    for _ in range(5000):  # 20 MB at most; the kernel's buffers fill long before
        if hub.dropped:
            break
        hub.publish("chat.lobby", big)
        await asyncio.sleep(0)
        while True:  # the reader keeps up
            try:
                await reader.event(timeout=0.001 if received else TIMEOUT)
            except asyncio.TimeoutError:
                break
            received += 1
    assert hub.dropped == 1
    one_event = len(forms.chunk(forms.sse_event(json.dumps(big).encode(), 1)))
    assert 64 * 1024 < held_at_drop[0] <= 64 * 1024 + one_event
    assert await ws_frame_of(watcher, "left") == {"type": "left", "room": "lobby",
                                                  "nick": "sleepy"}
    assert await stalled.ended()


async def test_one_publish_to_many_streams_builds_the_event_once(sse, hub, monkeypatch):
    """Five streams get one message; its event bytes were built once for all of them."""
    builds = []
    build = forms.build_sse
    monkeypatch.setattr(forms, "build_sse", lambda e: builds.append(e) or build(e))
    streams = [await sse("/sse/chat/lobby") for _ in range(5)]
    for stream in streams:
        await stream.frame_of("welcome")
    builds.clear()
    hub.publish("chat.lobby", {"type": "message", "id": 7, "room": "lobby", "from": None,
                               "text": "once", "ts": 0})
    for stream in streams:
        assert (await next_numbered(stream))["text"] == "once"
    assert len(builds) == 1


# All three together.


async def test_socket_stream_and_long_poll_see_each_others_messages(
        http_server_client, ws_connect, sse, hub):
    """A WebSocket, an event stream and a long-poll client in one room each send a message
    (the stream and the poll by POST) and each sees all three."""
    ws, _ = await ws_join(ws_connect, nick="wanda", cookie=ALICE)
    stream = await sse("/sse/chat/lobby?nick=sam", BOB)
    await stream.frame_of("welcome")
    start = await poll(http_server_client, cookie=CAROL, nick="polly")
    since = start["last_id"] if start["last_id"] is not None else 0

    await send_json(ws, {"type": "message", "text": "from the socket"})
    await send(http_server_client, "from the stream", cookie=BOB, nick="sam")
    await send(http_server_client, "from the poll", cookie=CAROL)

    expected = [("wanda", "from the socket"), ("sam", "from the stream"),
                ("polly", "from the poll")]
    seen_ws = [await ws_frame_of(ws, "message") for _ in range(3)]
    seen_sse = [await stream.frame_of("message") for _ in range(3)]
    seen_poll: list[dict[str, Any]] = []
    while len(seen_poll) < 3:
        body = await poll(http_server_client, cookie=CAROL, since=since)
        seen_poll += body["messages"]
        since = body["last_id"]
    for seen in (seen_ws, seen_sse, seen_poll):
        assert [(m["from"], m["text"]) for m in seen] == expected
    assert seen_ws == seen_sse == seen_poll


async def test_poll_and_stream_urls_refuse_bad_rooms_and_origins(http_server_client):
    """A room name outside the pattern is a 404; a foreign Origin a 403 bad_origin."""
    assert (await fetch(http_server_client, "/poll/chat/bad.room")).code == 404
    refused = await fetch(http_server_client, "/poll/chat/lobby",
                          headers={"Origin": "https://evil.example"})
    assert refused.code == 403
    assert json.loads(refused.body)["error"]["code"] == "bad_origin"
    refused = await fetch(http_server_client, "/sse/chat/lobby",
                          headers={"Origin": "https://evil.example"})
    assert refused.code == 403


async def test_the_chat_socket_sees_stream_clients_as_readers(sse, ws_connect):
    """An anonymous event stream counts as a reader of the room, as a socket does."""
    stream = await sse("/sse/chat/lobby")
    await stream.frame_of("welcome")
    _, welcome = await ws_join(ws_connect)
    assert welcome["readers"] == 2


# The same reading on every transport (issue 16's drifts).


@pytest.mark.parametrize("body", ['{"type": "message", "text": NaN}',
                                  '\ufeff{"type": "message", "text": "hi"}'])
async def test_a_body_and_a_frame_the_socket_calls_bad_json_are_bad_json_over_http(
    http_server_client, ws_connect, body
):
    """NaN or a leading byte order mark: bad_json on the socket and on a POST alike."""
    conn, _ = await ws_join(ws_connect)
    await conn.write_message(body)
    assert (await ws_frame_of(conn, "error"))["code"] == "bad_json"
    response = await fetch(http_server_client, "/poll/chat/lobby", "POST", body.encode(), ALICE,
                           headers={"Content-Type": "application/json"})
    assert (response.code, json.loads(response.body)["error"]["code"]) == (400, "bad_json")


@pytest.mark.parametrize("pattern, recovered", [("{}", True), ("%20{}", False), ("{}%20", False)])
async def test_since_is_read_alike_on_the_socket_and_over_http(
    http_server_client, ws_connect, pattern, recovered
):
    """A since is an id only as exactly its digits, on a socket and a long-poll alike: one
    with spaces around is no id (nothing recovered)."""
    since = pattern.format((await send(http_server_client, "first"))["id"])
    response = await fetch(http_server_client, f"/poll/chat/lobby?since={since}&wait=0")
    assert json.loads(response.body)["recovered"] is recovered
    conn = await ws_connect(f"/ws/chat/lobby?since={since}")
    welcome = await receive_json(conn)
    assert welcome["recovered"] is recovered


def metric(body: bytes, sample: str) -> float:
    """One sample of a /metrics answer, 0 when absent."""
    for line in body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("overrides", [dict(max_connections_per_ip=1)])
async def test_a_long_poll_session_refused_is_counted_and_logged(http_server_client, caplog):
    """A new long-poll session past the address's cap is refused (429), counted under
    realtime_refusals_total and logged as a refusal."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    await poll(http_server_client, cookie=ALICE, since=0, wait=0)  # ALICE's session: the slot
    response = await fetch(http_server_client, "/poll/chat/lobby?since=0&wait=0", cookie=BOB)
    assert response.code == 429
    assert json.loads(response.body)["error"]["code"] == "too_many_connections"
    metrics = (await fetch(http_server_client, "/metrics")).body
    refused = 'realtime_refusals_total{reason="ip_limit",transport="long_poll_session"}'
    assert metric(metrics, refused) == 1
    [line] = [record.getMessage() for record in caplog.records
              if record.getMessage().startswith("event=refused")]
    assert line.startswith("event=refused reason=ip_limit endpoint=long_poll_session "
                           "ip=127.0.0.1")


async def test_long_poll_sessions_are_in_a_gauge_and_in_healthz(http_server_client):
    """Each live long-poll session is one realtime_connections{endpoint="long_poll_session"} and
    one of /healthz's long_poll_sessions."""
    await poll(http_server_client, cookie=ALICE, since=0, wait=0)
    await poll(http_server_client, cookie=BOB, since=0, wait=0)
    await poll(http_server_client, cookie=ALICE, since=0, wait=0)  # the same session again
    metrics = (await fetch(http_server_client, "/metrics")).body
    assert metric(metrics, 'realtime_connections{endpoint="long_poll_session"}') == 2
    health = json.loads((await fetch(http_server_client, "/healthz")).body)
    assert health["long_poll_sessions"] == 2


# Load earlier messages: GET /api/chat/<room>/history.


async def history(http_server_client, room: str = "lobby", cookie: Optional[str] = None,
                  **query: Any) -> tuple[int, dict[str, Any]]:
    """GET the room's history page; its status and JSON body."""
    response = await fetch(http_server_client,
                           f"/api/chat/{room}/history?" + urlencode(query), cookie=cookie)
    return response.code, json.loads(response.body)


async def test_history_pages_back_to_the_start(http_server_client):
    """before/limit walks back through the room, oldest first in each page, more until the
    first message."""
    sent = [await send(http_server_client, f"m{n}") for n in range(5)]
    code, page = await history(http_server_client, before=sent[-1]["id"] + 1, limit=2)
    assert code == 200 and page == {"messages": sent[3:], "more": True}
    _, page = await history(http_server_client, before=sent[3]["id"], limit=2)
    assert page == {"messages": sent[1:3], "more": True}
    _, page = await history(http_server_client, before=sent[1]["id"], limit=2)
    assert page == {"messages": sent[:1], "more": False}


async def test_history_shows_a_private_message_to_its_two_browsers_only(
        http_server_client, ws_connect):
    """A private message is in the history of its sender's and recipient's browsers, never
    in a third browser's or a cookie-less request's."""
    alice, _ = await ws_join(ws_connect, nick="alice", cookie=ALICE)
    await ws_join(ws_connect, nick="bob", cookie=BOB)
    await send_json(alice, {"type": "message", "text": "public"})
    await send_json(alice, {"type": "message", "text": "secret", "to": "bob"})
    secret = await ws_frame_of(alice, "private")
    before = secret["id"] + 1
    for cookie in (ALICE, BOB):
        _, page = await history(http_server_client, cookie=cookie, before=before)
        assert [m["text"] for m in page["messages"]] == ["public", "secret"]
    for cookie in (CAROL, None):
        _, page = await history(http_server_client, cookie=cookie, before=before)
        assert [m["text"] for m in page["messages"]] == ["public"]


@pytest.mark.parametrize("overrides", [dict(chat_room_history_bytes=4000, max_pending_bytes=2400)])
async def test_history_is_bounded_in_bytes(http_server_client):
    """A page holds at most a welcome's bytes of messages (here half of --max-pending-bytes),
    the newest that fit, and says more remain."""
    sent = [await send(http_server_client, f"{n} " + "x" * 400) for n in range(3)]
    _, page = await history(http_server_client, before=sent[-1]["id"] + 1, limit=3)
    assert page == {"messages": sent[1:], "more": True}
    assert len(json.dumps(page["messages"], separators=(",", ":"))) <= 1200


@pytest.mark.parametrize("query", [{}, {"before": "x"}, {"before": " 5"}, {"before": "-5"},
                                   {"before": "9", "limit": "0"}, {"before": "9", "limit": "101"},
                                   {"before": "9", "limit": "2.5"}])
async def test_history_refuses_a_bad_query_with_a_json_error(http_server_client, query):
    """A missing or malformed before, or a limit outside 1-100: 400 bad_query."""
    code, body = await history(http_server_client, **query)
    assert code == 400 and body["error"]["code"] == "bad_query"


async def test_history_of_a_room_nobody_used_is_empty(http_server_client, app):
    """A room with no message answers no messages and nothing more, and is not created."""
    code, page = await history(http_server_client, room="nowhere", before=10 ** 17)
    assert code == 200 and page == {"messages": [], "more": False}
    rooms = getattr(app.settings["chat"], "rooms", None)
    assert rooms is None or "nowhere" not in rooms


async def test_anonymous_senders_get_distinct_steady_guest_labels(http_server_client):
    """Messages without a nickname carry from_label: the same for one browser's messages,
    another for another browser, and nothing of the cookie in it."""
    first = await send(http_server_client, "one", cookie=ALICE)
    again = await send(http_server_client, "two", cookie=ALICE)
    other = await send(http_server_client, "three", cookie=BOB)
    assert first["from"] is None and first["from_label"] == again["from_label"]
    assert re.fullmatch(r"guest-[0-9a-f]{4}", first["from_label"])
    assert other["from_label"] != first["from_label"]
    assert ALICE not in json.dumps(first)
    body = await poll(http_server_client, since=0)
    assert [m["from_label"] for m in body["messages"]] == [
        first["from_label"], first["from_label"], other["from_label"]]


async def test_a_message_under_a_nickname_has_no_guest_label(http_server_client):
    """A sender with a nickname is its from; no from_label."""
    message = await send(http_server_client, "hi", cookie=ALICE, nick="alice")
    assert message["from"] == "alice" and "from_label" not in message
