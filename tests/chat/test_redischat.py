"""Chat shared through Redis: two applications on two ports, each with its own hub and
chat state, share rooms, nicknames, presence, ids and history through a real
``redis-server`` (the two-process versions are in tests/test_cluster_chat.py)."""

import asyncio
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Iterator, Optional
from urllib.parse import quote

import pytest
import redis.asyncio
import tornado.netutil
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer

import server
from handlers.tcp import ChatLineConnection, ChatLineServer
from realtime.chat.redisstate import split_frame
from server import Config, make_app, start_components
from tests.browser import chromium, collect_console_errors, wait_connected
from tests.redis_server import RedisServer
from tests.support import poll_until, raw_handshake, receive_json, send_json
from tests.test_tcp import LineClient

Build = Callable[..., Awaitable[SimpleNamespace]]
TIMEOUT = 5.0
COOKIE_A = "a" * 32
COOKIE_B = "b" * 32


@pytest.fixture
def node(redis_server: RedisServer, start_server: Any, io_loop: Any,
         tmp_path: Path) -> Iterator[Build]:
    """``await node(**config)`` builds an application with ``--redis-url`` on the test's
    Redis, starts its components and serves it on a free port (``.port``, ``.hub``,
    ``.chat``, ``.app``); every one is shut down after the test."""
    built: list[SimpleNamespace] = []

    async def build(**options: Any) -> SimpleNamespace:
        config = Config(redis_url=redis_server.url, cookie_secret="s" * 48,
                        data_dir=str(tmp_path / f"data{len(built)}"), **options)
        app = make_app(config)
        await start_components(app)
        built.append(SimpleNamespace(
            app=app, hub=app.settings["hub"], chat=app.settings["chat"],
            port=start_server(app)))
        return built[-1]

    yield build
    for each in built:
        io_loop.run_sync(lambda: each.app.settings["lifecycle"].shutdown(10), timeout=15)


@pytest.fixture
def admin(redis_server: RedisServer, io_loop: Any) -> Iterator[redis.asyncio.Redis]:
    """A plain client of the test's Redis."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    io_loop.run_sync(client.aclose, timeout=10)


async def enter(ws_open: Callable[..., Awaitable[Any]], at: SimpleNamespace, room: str = "lobby",
                nick: Optional[str] = None, since: Optional[int] = None,
                cookie: Optional[str] = None) -> tuple[Any, dict[str, Any]]:
    """A chat socket on ``at``; returns it and its welcome."""
    query = []
    if nick is not None:
        query.append("nick=" + quote(nick))
    if since is not None:
        query.append(f"since={since}")
    url = f"ws://127.0.0.1:{at.port}/ws/chat/{room}" + ("?" + "&".join(query) if query else "")
    conn = await ws_open(url, {"Cookie": f"chat_id={cookie}"} if cookie else None)
    welcome = await next_frame(conn)
    assert welcome["type"] == "welcome"
    return conn, welcome


async def next_frame(conn: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame other than ``readers`` (per-process counts that come and go)."""
    while True:
        frame = await asyncio.wait_for(receive_json(conn), timeout)
        if frame["type"] != "readers":
            return frame


async def frame_of(conn: Any, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Skip frames until one of type ``kind``."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await next_frame(conn, max(deadline - time.monotonic(), 0.01))
        if frame["type"] == kind:
            return frame


async def nothing_more(conn: Any, marker_from: Any, text: str = "marker") -> None:
    """No message reaches ``conn`` before a public ``text`` sent by ``marker_from`` (one
    that went astray would come first); presence frames are let by."""
    await send_json(marker_from, {"type": "message", "text": text})
    frame = await next_frame(conn)
    while frame["type"] in ("joined", "left", "renamed"):
        frame = await next_frame(conn)
    assert frame["type"] == "message" and frame["text"] == text, frame


def test_frame_is_cut_around_its_id():
    """A frame's JSON is cut at its id, so head + id + tail is the frame with that id."""
    frame = {"type": "message", "id": 0, "room": "r", "from": None, "text": '"id":0,', "ts": 1}
    head, tail = split_frame(frame)
    assert json.loads(head + b"1234567890123456" + tail) == dict(frame, id=1234567890123456)


async def test_public_message_reaches_both_processes_once(node, ws_open):
    """A message sent on one process reaches clients of both, once, with one id."""
    a, b = await node(), await node()
    sender, _ = await enter(ws_open, a)
    here, _ = await enter(ws_open, a)
    there, _ = await enter(ws_open, b)
    await send_json(sender, {"type": "message", "text": "hello"})
    frames = [await frame_of(conn, "message") for conn in (sender, here, there)]
    assert {frame["text"] for frame in frames} == {"hello"}
    assert len({frame["id"] for frame in frames}) == 1
    await nothing_more(there, sender)


async def test_ids_increase_across_processes(node, ws_open):
    """Messages sent alternately on two processes get increasing ids, seen in that order."""
    a, b = await node(), await node()
    on_a, _ = await enter(ws_open, a)
    on_b, _ = await enter(ws_open, b)
    for n in range(6):
        await send_json(on_a if n % 2 == 0 else on_b, {"type": "message", "text": f"m{n}"})
        await frame_of(on_a, "message")  # sent one after the other
    ids = [(await frame_of(on_b, "message"))["id"] for _ in range(6)]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert ids[-1] - ids[0] == 5  # consecutive: a welcome can tell a gap


async def test_join_and_leave_are_seen_on_the_other_process(node, ws_open):
    """A nickname taken on one process is announced on the other, listed in its welcomes,
    and announced as left when its connection closes."""
    a, b = await node(), await node()
    watcher, _ = await enter(ws_open, b)
    alice, _ = await enter(ws_open, a, nick="Alice")
    assert await frame_of(watcher, "joined") == {"type": "joined", "room": "lobby",
                                                 "nick": "Alice"}
    _, welcome = await enter(ws_open, b, nick="bob")
    assert welcome["online"] == ["Alice", "bob"]
    alice.close()
    assert (await frame_of(watcher, "left"))["nick"] == "Alice"


async def test_nickname_held_on_one_process_is_refused_on_the_other(node, ws_open):
    """Another browser cannot take a nickname held on another process."""
    a, b = await node(), await node()
    await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    conn, welcome = await enter(ws_open, b, nick="ALICE", cookie=COOKIE_B)
    assert welcome["nick"] is None
    error = await frame_of(conn, "error")
    assert error["code"] == "nick_taken"


async def test_look_alike_nickname_held_on_one_process_is_refused_on_the_other(node, ws_open):
    """Another browser cannot take, on another process, a nickname that looks like one held
    (all-Cyrillic асе for ace): they share one key in Redis."""
    a, b = await node(), await node()
    await enter(ws_open, a, nick="ace", cookie=COOKIE_A)
    conn, welcome = await enter(ws_open, b, nick="\u0430\u0441\u0435", cookie=COOKIE_B)
    assert welcome["nick"] is None
    assert (await frame_of(conn, "error"))["code"] == "nick_taken"


async def test_same_browser_shares_its_nickname_across_processes(node, ws_open):
    """Two tabs of one browser, on two processes, speak under one nickname, announced once."""
    a, b = await node(), await node()
    watcher, _ = await enter(ws_open, a)
    await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    await frame_of(watcher, "joined")
    second, welcome = await enter(ws_open, b, nick="alice", cookie=COOKIE_A)
    assert welcome["nick"] == "alice"
    assert (await frame_of(second, "joined"))["nick"] == "alice"  # to itself only
    await nothing_more(watcher, second)


async def test_private_message_crosses_processes_and_nobody_else_sees_it(node, ws_open):
    """A private message reaches the recipient on another process and the sender, and no
    third connection on either process."""
    a, b = await node(), await node()
    alice, _ = await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    bob, _ = await enter(ws_open, b, nick="bob", cookie=COOKIE_B)
    third_a, _ = await enter(ws_open, a, nick="carol")
    third_b, _ = await enter(ws_open, b)
    await send_json(alice, {"type": "message", "text": "psst", "to": "Bob"})
    for conn in (bob, alice):
        frame = await frame_of(conn, "private")
        assert (frame["from"], frame["to"], frame["text"]) == ("alice", "bob", "psst")
    for third in (third_a, third_b):
        await nothing_more(third, alice, "public")


async def test_private_message_to_nobody_is_refused(node, ws_open):
    """A private message to a nickname nobody holds on any process answers no_such_user."""
    a, _ = await node(), await node()
    alice, _ = await enter(ws_open, a, nick="alice")
    await send_json(alice, {"type": "message", "text": "hi", "to": "ghost"})
    assert (await frame_of(alice, "error"))["code"] == "no_such_user"


async def test_since_recovers_across_processes(node, ws_open):
    """A client that saw a message on one process and reconnects to the other with its id
    gets exactly what it missed, recovered."""
    a, b = await node(), await node()
    sender, _ = await enter(ws_open, a)
    await send_json(sender, {"type": "message", "text": "seen"})
    seen = await frame_of(sender, "message")
    for text in ("missed 1", "missed 2"):
        await send_json(sender, {"type": "message", "text": text})
        await frame_of(sender, "message")
    _, welcome = await enter(ws_open, b, since=seen["id"])
    assert welcome["recovered"] is True
    assert [m["text"] for m in welcome["history"]] == ["missed 1", "missed 2"]


async def test_since_0_is_recovered_until_the_log_is_trimmed(node, ws_open):
    """since=0 (a client that has seen nothing) is recovered in an empty room and while the
    log holds the room's first message; once it is trimmed away, recovered false."""
    a = await node(chat_replay=2, chat_history=2)
    sender, welcome = await enter(ws_open, a, since=0)
    assert welcome["recovered"] is True and welcome["history"] == []
    for text in ("one", "two"):
        await send_json(sender, {"type": "message", "text": text})
        await frame_of(sender, "message")
    _, welcome = await enter(ws_open, a, since=0)
    assert welcome["recovered"] is True
    assert [m["text"] for m in welcome["history"]] == ["one", "two"]
    await send_json(sender, {"type": "message", "text": "three"})
    await frame_of(sender, "message")
    _, welcome = await enter(ws_open, a, since=0)
    assert welcome["recovered"] is False
    assert [m["text"] for m in welcome["history"]] == ["two", "three"]


async def test_history_is_shared_and_private_messages_stay_with_their_holders(node, ws_open):
    """A newcomer on the other process gets the public history; a private message is
    replayed to its recipient's browser only."""
    a, b = await node(), await node()
    alice, _ = await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    await enter(ws_open, a, nick="bob", cookie=COOKIE_B)
    await send_json(alice, {"type": "message", "text": "public"})
    await send_json(alice, {"type": "message", "text": "secret", "to": "bob"})
    await frame_of(alice, "private")
    _, stranger = await enter(ws_open, b)
    assert [m["text"] for m in stranger["history"]] == ["public"]
    _, bob_again = await enter(ws_open, b, nick="bob", cookie=COOKIE_B)
    assert [m["text"] for m in bob_again["history"]] == ["public", "secret"]


async def test_ids_are_never_reused_after_redis_loses_its_data(node, ws_open, admin):
    """After Redis loses everything, new messages get higher ids, and a since from before
    the loss gives recovered false, never a wrong replay."""
    a = await node()
    conn, _ = await enter(ws_open, a)
    await send_json(conn, {"type": "message", "text": "before"})
    before = await frame_of(conn, "message")
    await admin.flushall()
    await send_json(conn, {"type": "message", "text": "after"})
    after = await frame_of(conn, "message")
    assert after["id"] > before["id"]
    _, welcome = await enter(ws_open, a, since=before["id"])
    assert welcome["recovered"] is False
    assert [m["text"] for m in welcome["history"]] == ["after"]


async def test_history_and_publish_are_one_step(node, ws_open, admin):
    """Every message a client received is in the room's log in Redis."""
    a = await node()
    conn, _ = await enter(ws_open, a)
    for n in range(5):
        await send_json(conn, {"type": "message", "text": f"m{n}"})
    ids = [(await frame_of(conn, "message"))["id"] for _ in range(5)]
    logged = await admin.xrange("realtime:chat:{lobby}:log")
    assert [int(entry_id.split(b"-")[0]) for entry_id, _ in logged] == ids


async def test_welcome_misses_nothing_published_meanwhile(node, ws_open):
    """Clients connecting to one process while the other publishes see every message
    after their history exactly once, in order."""
    a, b = await node(), await node()
    publisher, _ = await enter(ws_open, b)
    sending = asyncio.ensure_future(_publish_numbered(publisher, 60))
    clients = []
    for _ in range(8):
        clients.append(await enter(ws_open, a))
    await sending
    for conn, welcome in clients:
        seen = [m["text"] for m in welcome["history"]]
        while not seen or seen[-1] != "n59":
            seen.append((await frame_of(conn, "message"))["text"])
        numbers = [int(text[1:]) for text in seen]
        assert numbers == list(range(numbers[0], 60)), numbers


async def _publish_numbered(conn: Any, count: int) -> None:
    for n in range(count):
        await send_json(conn, {"type": "message", "text": f"n{n}"})
        await asyncio.sleep(0.002)


async def test_crashed_process_nicknames_free_within_the_lease(node, ws_open):
    """A nickname whose process stopped renewing it is free once its lease runs out."""
    a, b = await node(redis_nick_lease=1.0), await node(redis_nick_lease=1.0)
    await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    for task in a.chat._tasks:  # the process "dies": no renewal, no goodbye
        task.cancel()
    a.chat._rooms.clear()
    deadline = time.monotonic() + 5
    while True:
        conn, welcome = await enter(ws_open, b, nick="alice", cookie=COOKIE_B)
        if welcome["nick"] == "alice":
            break
        assert time.monotonic() < deadline, "the nickname was never freed"
        conn.close()
        await asyncio.sleep(0.2)


async def test_a_crashed_process_members_are_announced_as_left(node, ws_open):
    """Once the leases of a crashed process's member run out, the room hears it left, once,
    and it is no longer listed."""
    a, b = await node(redis_nick_lease=1.0), await node(redis_nick_lease=1.0)
    watcher, _ = await enter(ws_open, b)
    await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    assert (await frame_of(watcher, "joined"))["nick"] == "alice"
    for task in a.chat._tasks:  # the process "dies": no renewal, no goodbye
        task.cancel()
    a.chat._rooms.clear()
    assert (await frame_of(watcher, "left"))["nick"] == "alice"
    _, welcome = await enter(ws_open, b)
    assert welcome["online"] == []
    await asyncio.sleep(1.0)  # three more sweeps by b: none may announce alice again
    await send_json(watcher, {"type": "message", "text": "marker"})
    while (frame := await next_frame(watcher))["type"] != "message":
        assert frame["type"] != "left", frame


async def test_local_chat_continues_while_redis_is_down(node, ws_open, redis_server):
    """With Redis killed, clients of one process still chat with each other, and
    /healthz says 503."""
    a = await node()
    one, _ = await enter(ws_open, a, nick="one")
    two, _ = await enter(ws_open, a, nick="two")
    redis_server.kill()
    await send_json(one, {"type": "message", "text": "still here"})
    frame = await frame_of(two, "message")
    assert frame["text"] == "still here"
    await send_json(one, {"type": "message", "text": "private", "to": "two"})
    assert (await frame_of(two, "private"))["text"] == "private"
    deadline = time.monotonic() + 5
    while True:
        try:
            await AsyncHTTPClient().fetch(f"http://127.0.0.1:{a.port}/healthz")
        except HTTPClientError as error:
            assert error.code == 503
            break
        assert time.monotonic() < deadline, "/healthz stayed 200"
        await asyncio.sleep(0.1)


async def test_cross_process_chat_resumes_after_redis_restarts(node, ws_open, redis_server):
    """After Redis comes back, a message sent on one process reaches the other within 10 s."""
    a, b = await node(), await node()
    sender, _ = await enter(ws_open, a)
    there, _ = await enter(ws_open, b)
    redis_server.kill()
    await poll_until(lambda: not a.hub.broker.healthy() and not b.hub.broker.healthy())
    redis_server.start()
    deadline = time.monotonic() + 10
    n = 0
    while True:
        n += 1
        await send_json(sender, {"type": "message", "text": f"try {n}"})
        try:
            frame = await frame_of(there, "message", timeout=0.5)
        except asyncio.TimeoutError:
            assert time.monotonic() < deadline, "cross-process delivery did not resume"
            continue
        assert frame["text"].startswith("try")
        break


async def test_messages_kept_local_during_an_outage_are_counted(node, ws_open, redis_server):
    """/metrics counts the messages delivered in one process only while Redis was down."""
    a = await node()
    conn, _ = await enter(ws_open, a)
    redis_server.kill()
    await send_json(conn, {"type": "message", "text": "alone"})
    await frame_of(conn, "message")
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{a.port}/metrics")
    text = response.body.decode()
    assert "realtime_chat_unshared_messages_total 1.0" in text
    assert "realtime_chat_state_up 0.0" in text


# A wave of connections on a healthy Redis (a reconnect after a restart) is contention,
# never an outage.

WAVE = 50


def _wave(ws_open: Callable[..., Awaitable[Any]], at: SimpleNamespace,
          **kwargs: Any) -> list[Awaitable[tuple[Any, dict[str, Any]]]]:
    """``WAVE`` chat sockets opening on ``at`` (each with its own cookie and nickname),
    to be gathered at once."""
    return [enter(ws_open, at, nick=f"n{n}", cookie=f"{n:032d}", **kwargs)
            for n in range(WAVE)]


async def test_a_wave_of_sockets_never_grants_a_nickname_held_elsewhere(node, ws_open):
    """A nickname held on one process is refused on the other while 50 sockets open there
    at once."""
    a, b = await node(), await node()
    await enter(ws_open, b, nick="alice", cookie=COOKIE_A)
    wave = _wave(ws_open, a)
    wave.insert(WAVE // 2, enter(ws_open, a, nick="alice", cookie=COOKIE_B))
    conn, welcome = (await asyncio.gather(*wave))[WAVE // 2]
    assert welcome["nick"] is None
    assert (await frame_of(conn, "error"))["code"] == "nick_taken"


async def test_a_wave_of_sockets_recovers_every_welcome(node, ws_open):
    """50 sockets reconnecting at once with ``since`` all get ``recovered: true``."""
    a = await node()
    sender, _ = await enter(ws_open, a)
    await send_json(sender, {"type": "message", "text": "seen"})
    seen = await frame_of(sender, "message")
    welcomes = [welcome for _, welcome in
                await asyncio.gather(*_wave(ws_open, a, since=seen["id"]))]
    assert [welcome["recovered"] for welcome in welcomes] == [True] * WAVE


async def test_a_wave_of_sockets_keeps_health_200(node, ws_open, caplog):
    """A healthy Redis is never reported down while 50 sockets open at once: /healthz
    answers 200 throughout and no outage is logged."""
    a = await node()
    codes: list[int] = []

    async def watch_health() -> None:
        while True:
            response = await AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{a.port}/healthz", raise_error=False)
            codes.append(response.code)

    watching = asyncio.ensure_future(watch_health())
    try:
        await asyncio.gather(*_wave(ws_open, a))
    finally:
        watching.cancel()
    assert codes and set(codes) == {200}
    assert "unavailable for chat" not in caplog.text


async def test_a_graceful_stop_frees_every_nickname_at_once(node, ws_open):
    """A process stopped gracefully gives back all 50 of its nicknames: another process
    can take each of them at once, not after the lease."""
    a, b = await node(), await node()
    await asyncio.gather(*(
        enter(ws_open, a, nick=f"user{n}", cookie=f"{n:032d}") for n in range(WAVE)))
    # What SIGTERM runs (the test's server keeps listening: nothing connects to a again).
    assert await server.shutdown(HTTPServer(a.app), a.app, 10) == 0
    taken = await asyncio.gather(*(
        enter(ws_open, b, nick=f"user{n}", cookie=COOKIE_B) for n in range(WAVE)))
    assert sum(welcome["nick"] is None for _, welcome in taken) == 0


async def test_a_nickname_is_refused_not_granted_while_redis_is_down(node, ws_open,
                                                                     redis_server):
    """With Redis unreachable, a nickname nobody here holds (someone elsewhere may) is
    refused with ``unavailable``, never granted."""
    a = await node()
    watcher, _ = await enter(ws_open, a)
    redis_server.kill()
    await send_json(watcher, {"type": "message", "text": "notice the outage"})
    await frame_of(watcher, "message")
    assert not a.chat.healthy()
    conn, welcome = await enter(ws_open, a, nick="alice")
    assert welcome["nick"] is None
    assert (await frame_of(conn, "error"))["code"] == "unavailable"


async def test_a_message_that_timed_out_is_never_stored_under_a_second_id(
        node, ws_open, redis_server, admin):
    """A message shown under a local id because Redis froze is not stored when Redis runs
    the queued call after it resumes."""
    a = await node()
    conn, _ = await enter(ws_open, a)
    await send_json(conn, {"type": "message", "text": "before"})  # Redis knows the script
    await frame_of(conn, "message")
    shown = await say_while_frozen(redis_server, a, conn, "in flight")
    logged = await admin.xrange("realtime:chat:{lobby}:log")
    stored = {int(entry_id.split(b"-")[0]): json.loads(fields[b"f"])["text"]
              for entry_id, fields in logged}
    assert "in flight" not in stored.values() or stored.get(shown["id"]) == "in flight"


async def test_ids_never_go_backwards_after_an_outage(node, ws_open, redis_server):
    """A message sent after Redis returns gets an id above every id any process handed out
    while it was away."""
    a, b = await node(), await node()
    on_a, _ = await enter(ws_open, a)
    on_b, _ = await enter(ws_open, b)
    await send_json(on_b, {"type": "message", "text": "before"})
    await frame_of(on_a, "message")
    during = await say_while_frozen(redis_server, a, on_a, "during")
    await send_json(on_b, {"type": "message", "text": "after"})
    after = await frame_of(on_a, "message")
    assert after["text"] == "after" and after["id"] > during["id"]


async def test_a_client_that_saw_an_outage_id_recovers_after_it(node, ws_open, redis_server):
    """A client that last saw an id handed out while Redis was away reconnects with it
    after Redis returns and is told nothing was lost."""
    a = await node()
    conn, _ = await enter(ws_open, a)
    during = await say_while_frozen(redis_server, a, conn, "during")
    _, welcome = await enter(ws_open, a, since=during["id"])
    assert welcome["recovered"] is True


async def test_a_slow_listener_never_repeats_a_welcome_s_history(node, ws_open):
    """A message in a welcome's history is not delivered again live, however late the
    process's listener hands it over."""
    a, b = await node(), await node()
    sender, _ = await enter(ws_open, a)
    await enter(ws_open, b)  # b listens to the room already
    _delay_listener(b.hub.broker, 0.3)
    await send_json(sender, {"type": "message", "text": "once"})
    once = await frame_of(sender, "message")
    conn, welcome = await enter(ws_open, b)
    assert [m["id"] for m in welcome["history"]][-1:] == [once["id"]]
    await send_json(sender, {"type": "message", "text": "marker"})
    frame = await frame_of(conn, "message")
    assert frame["text"] == "marker", frame


async def say_while_frozen(redis_server: RedisServer, at: SimpleNamespace, conn: Any,
                           text: str) -> dict[str, Any]:
    """Send ``text`` on ``conn`` while Redis is frozen (SIGSTOP), past the chat state's
    timeout, so it is shown under a local id; return that frame once Redis answers again
    and ``at`` has noticed."""
    redis_server.pause()
    try:
        await send_json(conn, {"type": "message", "text": text})
        shown = await frame_of(conn, "message", timeout=10)
    finally:
        redis_server.resume()
    await poll_until(at.chat.healthy, timeout=10)
    return shown


def _delay_listener(broker: Any, delay: float) -> None:
    """Have ``broker``'s listener handle each reply ``delay`` seconds late, in order."""
    [listener] = broker.listeners
    handle = listener._handle
    queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        while True:
            due, reply = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            handle(reply)

    broker._tasks.append(asyncio.ensure_future(drain()))
    listener._handle = lambda reply: queue.put_nowait((loop.time() + delay, reply))


async def test_a_chat_message_is_counted_as_published(node, ws_open):
    """A chat message on Redis counts once in the hub's and the broker's published
    counters, as every other publish does."""
    a = await node()
    conn, _ = await enter(ws_open, a)
    hub_before, broker_before = a.hub.published, a.hub.broker.published
    await send_json(conn, {"type": "message", "text": "counted"})
    await frame_of(conn, "message")
    assert (a.hub.published - hub_before, a.hub.broker.published - broker_before) == (1, 1)


async def test_a_graceful_stop_frees_the_nicknames_of_clients_that_never_answer(node, ws_open):
    """Nicknames held by clients that never answer the server's close (a frozen tab) are
    free on the other process as soon as a graceful stop ends, not after the lease."""
    a, b = await node(), await node()
    watcher, _ = await enter(ws_open, b)
    silent = [await raw_handshake(a.port, f"/ws/chat/lobby?nick=user{n}",
                                  extra_headers=f"Cookie: chat_id={n:032d}\r\n")
              for n in range(5)]
    try:
        for _ in silent:
            await frame_of(watcher, "joined")
        assert await server.shutdown(HTTPServer(a.app), a.app, 2) == 0
        taken = [await enter(ws_open, b, nick=f"user{n}", cookie=COOKIE_B) for n in range(5)]
        assert [welcome["nick"] for _, welcome in taken] == [f"user{n}" for n in range(5)]
    finally:
        for _, transport, _ in silent:
            transport.close()


async def lose_nick_to_frozen_redis(node: Build, ws_open: Any, redis_server: RedisServer
                                    ) -> tuple[SimpleNamespace, Any, Any]:
    """Alice holds her nickname on a process with a 1 s lease, a reader watching; Redis is
    frozen (SIGSTOP, and left frozen) until alice's socket gets ``nick_lost``. Returns the
    process, alice's socket and the reader's."""
    a = await node(redis_nick_lease=1.0)
    watcher, _ = await enter(ws_open, a)
    alice, _ = await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    assert (await frame_of(watcher, "joined"))["nick"] == "alice"
    redis_server.pause()
    lost = await frame_of(alice, "error", timeout=10)
    assert lost["code"] == "nick_lost", lost
    return a, alice, watcher


async def test_nickname_is_lost_while_redis_is_unreachable_past_the_lease(
        node, ws_open, redis_server):
    """With Redis unreachable longer than the lease, the holder gets nick_lost and what it
    sends meanwhile is not from alice."""
    try:
        _, alice, watcher = await lose_nick_to_frozen_redis(node, ws_open, redis_server)
        await send_json(alice, {"type": "message", "text": "still frozen"})
        frame = await frame_of(watcher, "message")
        assert (frame["from"], frame["text"]) == (None, "still frozen")
    finally:
        redis_server.resume()


async def test_nickname_lost_to_an_outage_is_taken_again_once_redis_answers(
        node, ws_open, redis_server):
    """Once Redis answers again, nobody else having held it, the former holder takes the
    nickname again; the room heard alice leave once, then join."""
    try:
        a, alice, watcher = await lose_nick_to_frozen_redis(node, ws_open, redis_server)
    finally:
        redis_server.resume()
    await poll_until(a.chat.healthy, timeout=10)
    await send_json(alice, {"type": "join", "nick": "alice"})
    assert (await frame_of(alice, "joined"))["nick"] == "alice"
    presence = []
    while presence[-1:] != [("joined", "alice")]:
        frame = await next_frame(watcher)
        if frame["type"] in ("joined", "left"):
            presence.append((frame["type"], frame["nick"]))
    assert presence == [("left", "alice"), ("joined", "alice")]
    await nothing_more(watcher, alice)


async def test_stalled_holder_message_is_refused_once_another_holds_the_nickname(
        node, ws_open):
    """A process that stopped renewing (stalled) past the lease while another process gave
    the nickname away: its alice's next message is refused with nick_lost, not sent as
    alice, and the connection is anonymous."""
    a, b = await node(redis_nick_lease=1.0), await node(redis_nick_lease=1.0)
    watcher, _ = await enter(ws_open, b)
    old, _ = await enter(ws_open, a, nick="alice", cookie=COOKIE_A)
    for task in a.chat._tasks:  # stalled: no renewal; only its own use notices
        task.cancel()
    deadline = time.monotonic() + 5
    while True:
        conn, welcome = await enter(ws_open, b, nick="alice", cookie=COOKIE_B)
        if welcome["nick"] == "alice":
            break
        assert time.monotonic() < deadline, "the nickname was never freed"
        conn.close()
        await asyncio.sleep(0.2)
    await send_json(old, {"type": "message", "text": "as alice?"})
    errors = [await frame_of(old, "error"), await frame_of(old, "error")]
    assert [error["code"] for error in errors] == ["nick_lost", "nick_lost"]
    assert "not sent" in errors[1]["message"]
    assert a.chat.stats["nicknames_fenced"] == 1
    await nothing_more(watcher, old)
    await send_json(old, {"type": "message", "text": "anonymous now"})
    frame = await frame_of(watcher, "message")
    assert (frame["from"], frame["text"]) == (None, "anonymous now")


@pytest.mark.browser
async def test_chat_page_shows_the_nickname_was_lost_and_offers_it_again(node, redis_server):
    """The page of a holder whose nickname is lost says so, shows no nickname, and has the
    lost one in the nickname field to take again."""
    a = await node(redis_nick_lease=1.0)
    async with chromium() as browser:
        page = await (await browser.new_context()).new_page()
        errors = collect_console_errors(page)
        await page.goto(f"http://127.0.0.1:{a.port}/chat?room=lobby&nick=alice")
        await wait_connected(page)
        await page.locator("#chat-online .name.me").wait_for(timeout=10_000)
        redis_server.pause()
        try:
            await page.locator("#chat-notice", has_text="no longer hold").wait_for(
                timeout=10_000)
        finally:
            redis_server.resume()
        assert "no nickname" in await page.locator("#chat-where").text_content()
        assert await page.locator("#chat-nick").input_value() == "alice"
        assert await page.locator("#chat-online .name.me").count() == 0
        assert errors == []


async def test_tcp_connection_gets_a_nick_lost_line_and_speaks_anonymously(
        node, redis_server):
    """A raw TCP connection whose nickname is lost (Redis unreachable past the lease) gets
    an ``! nick_lost`` line, and its next message is from its guest label."""
    a = await node(redis_nick_lease=1.0)
    server = ChatLineServer.for_app(a.app)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    client = LineClient(*await asyncio.open_connection("127.0.0.1", sockets[0].getsockname()[1]))
    try:
        await client.line()  # the greeting
        assert (await client.join(nick="alice"))[0] == "* you are in lobby as alice"
        redis_server.pause()
        try:
            while not (line := await asyncio.wait_for(client.line(), 10)).startswith("!"):
                pass
            assert line.startswith("! nick_lost: "), line
            client.send("after the loss")
            while not (line := await client.line()).startswith("[lobby]"):
                pass
            assert re.fullmatch(r"\[lobby\] guest-[0-9a-f]{4}: after the loss", line), line
        finally:
            redis_server.resume()
    finally:
        client.close()
        server.stop()
        for connection in [c for c in a.hub.connections if isinstance(c, ChatLineConnection)]:
            connection.end("test over")


async def senders(chat: Any, count: int, room: str = "lobby") -> list[str]:
    """``count`` connections in ``room`` of ``chat`` (a RedisChatState), without nicknames."""
    names = [f"sender{n}" for n in range(count)]
    for name in names:
        await chat.enter(room, name, None)
    return names


@pytest.mark.parametrize("batch", [500, 1])
async def test_messages_of_one_turn_keep_their_order_and_consecutive_ids(node, ws_open,
                                                                         admin, batch):
    """50 messages sent in one loop turn by 50 connections get consecutive ids in the order
    sent, each sender its own, stored and delivered on the other process in that order,
    with pipelining on (one pipeline) and off (one round trip each)."""
    a, b = await node(redis_batch=batch), await node()
    there, _ = await enter(ws_open, b)
    names = await senders(a.chat, 50)
    await a.chat.say("lobby", names[0], "warm-up")  # loads the script into Redis
    await frame_of(there, "message")
    pipelines = a.chat.batcher.pipelines
    frames = await asyncio.gather(*(a.chat.say("lobby", name, f"m{n}")
                                    for n, name in enumerate(names)))
    assert a.chat.batcher.pipelines - pipelines == (1 if batch > 1 else 50)
    ids = [frame["id"] for frame in frames]
    assert [frame["text"] for frame in frames] == [f"m{n}" for n in range(50)]
    assert ids == list(range(ids[0], ids[0] + 50))
    log = await admin.xrange("realtime:chat:{lobby}:log", f"{ids[0]}-0", "+")
    assert [json.loads(fields[b"f"])["text"] for _, fields in log] == [f"m{n}" for n in range(50)]
    seen = [await frame_of(there, "message") for _ in range(50)]
    assert [(frame["id"], frame["text"]) for frame in seen] == [
        (frame["id"], frame["text"]) for frame in frames]


async def test_a_turn_s_messages_of_one_room_cost_redis_one_script_call(node, ws_open, admin):
    """40 messages sent at once in one room, a whisper among them, are stored by ONE script
    call, with consecutive ids in the order sent, and reach the other process in order;
    the whisper is stored with its parties."""
    a, b = await node(), await node()
    there, _ = await enter(ws_open, b)
    names = await senders(a.chat, 40)
    await a.chat.join("lobby", names[0], "alice")
    await a.chat.join("lobby", names[1], "bob")
    await a.chat.say("lobby", names[0], "warm-up")  # loads the scripts into Redis
    await frame_of(there, "message")
    stats = await admin.info("commandstats")
    before = int(stats["cmdstat_evalsha"]["calls"])
    frames = await asyncio.gather(*(
        a.chat.whisper("lobby", name, "bob", "psst") if n == 0 else
        a.chat.say("lobby", name, f"m{n}") for n, name in enumerate(names)))
    stats = await admin.info("commandstats")
    assert int(stats["cmdstat_evalsha"]["calls"]) - before == 1
    ids = [frame["id"] for frame in frames]
    assert ids == list(range(ids[0], ids[0] + 40))
    seen = [await frame_of(there, "message") for _ in range(39)]
    assert [(frame["id"], frame["text"]) for frame in seen] == [
        (frame["id"], frame["text"]) for frame in frames[1:]]
    log = await admin.xrange("realtime:chat:{lobby}:log", f"{ids[0]}-0", "+")
    assert json.loads(log[0][1][b"f"])["type"] == "private" and b"p" in log[0][1]


async def test_a_turn_s_messages_of_one_room_reach_redis_pub_sub_as_one_publish(
        node, ws_open, admin):
    """30 messages sent at once in one room are ONE publish on Redis (a batch wire), and
    the other process still delivers each of them, with its own id, in the order sent."""
    a, b = await node(), await node()
    there, _ = await enter(ws_open, b)
    names = await senders(a.chat, 30)
    await a.chat.say("lobby", names[0], "warm-up")  # loads the scripts into Redis
    await frame_of(there, "message")
    stats = await admin.info("commandstats")
    before = int(stats["cmdstat_publish"]["calls"])
    frames = await asyncio.gather(*(a.chat.say("lobby", name, f"m{n}")
                                    for n, name in enumerate(names)))
    stats = await admin.info("commandstats")
    assert int(stats["cmdstat_publish"]["calls"]) - before == 1
    seen = [await frame_of(there, "message") for _ in range(30)]
    assert [(frame["id"], frame["text"]) for frame in seen] == [
        (frame["id"], frame["text"]) for frame in frames]


async def test_messages_of_a_pipeline_redis_never_ran_are_all_kept_local(
        node, redis_server, caplog):
    """Redis killed while a turn's 20 messages wait for their pipeline: every one is shown
    here only (none acknowledged as stored), with ids still in the order sent, and the
    outage is logged once."""
    a = await node()
    names = await senders(a.chat, 20)
    await a.chat.say("lobby", names[0], "warm-up")
    says = [asyncio.ensure_future(a.chat.say("lobby", name, f"m{n}"))
            for n, name in enumerate(names)]
    redis_server.kill()  # before the end of the turn: the pipeline meets a dead Redis
    frames = await asyncio.gather(*says)
    ids = [frame["id"] for frame in frames]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert a.chat.unshared == 20
    assert caplog.text.count("unavailable for chat") == 1


async def test_a_message_chained_behind_one_redis_ran_late_is_never_stored_below_it(
        node, redis_server, admin):
    """Two messages in two pipelines on their way while Redis is frozen past the first's
    deadline (not past the second's own): the second is not stored either, and is shown
    with an id above the first's."""
    a = await node()
    names = await senders(a.chat, 2)
    await a.chat.say("lobby", names[0], "warm-up")
    before = a.chat.batcher.pipelines
    redis_server.pause()
    try:
        first = asyncio.ensure_future(a.chat.say("lobby", names[0], "first"))
        await poll_until(lambda: a.chat.batcher.pipelines == before + 1)  # written
        written = time.time()
        a.chat._offset_ms += 60_000  # the second's own deadline: a minute later
        second = asyncio.ensure_future(a.chat.say("lobby", names[1], "second"))
        await poll_until(lambda: a.chat.batcher.pipelines == before + 2)  # behind it
        # Past the first's deadline in Redis (half the timeout), not yet its caller's.
        await poll_until(lambda: time.time() > written + a.chat.timeout / 2 + 0.2)
    finally:
        redis_server.resume()
    shown = await asyncio.gather(first, second)
    logged = await admin.xrange("realtime:chat:{lobby}:log")
    texts = [json.loads(fields[b"f"])["text"] for _, fields in logged]
    assert texts == ["warm-up"]
    assert shown[1]["id"] > shown[0]["id"]


async def test_a_wave_of_nicknames_shares_pipelines(node):
    """100 connections taking nicknames in one turn are granted each its own, in a few
    pipelines rather than 100 round trips."""
    a = await node()
    names = await senders(a.chat, 100)
    await a.chat.join("lobby", names[0], "warm")  # loads the script into Redis
    pipelines = a.chat.batcher.pipelines
    joined = await asyncio.gather(*(a.chat.join("lobby", name, f"nick{n}")
                                    for n, name in enumerate(names[1:])))
    assert [each.nick for each in joined] == [f"nick{n}" for n in range(99)]
    assert a.chat.batcher.pipelines - pipelines <= 2
    expected = ["warm"] + [f"nick{n}" for n in range(99)]
    assert sorted(await a.chat.online("lobby")) == sorted(expected)


async def test_messages_are_stored_after_redis_forgot_its_scripts(node, ws_open, admin):
    """After ``SCRIPT FLUSH``, the 10 messages of the next turn are each stored once, with
    consecutive ids in the order sent, and Redis stays up for chat."""
    a = await node()
    names = await senders(a.chat, 10)
    await a.chat.say("lobby", names[0], "before")
    await admin.script_flush()
    frames = await asyncio.gather(*(a.chat.say("lobby", name, f"m{n}")
                                    for n, name in enumerate(names)))
    ids = [frame["id"] for frame in frames]
    assert ids == list(range(ids[0], ids[0] + 10))
    log = await admin.xrange("realtime:chat:{lobby}:log", f"{ids[0]}-0", "+")
    assert [json.loads(fields[b"f"])["text"] for _, fields in log] == [f"m{n}" for n in range(10)]
    assert a.chat.healthy() and a.chat.unshared == 0


async def test_a_message_after_an_idle_spell_is_shared(node, ws_open):
    """A message sent after the process sent nothing for longer than a message may wait for
    Redis (half of the 2 s call timeout) is stored and reaches the other process."""
    a, b = await node(), await node()
    there, _ = await enter(ws_open, b)
    names = await senders(a.chat, 2)
    await asyncio.gather(*(a.chat.say("lobby", name, "before") for name in names))
    await asyncio.sleep(a.chat.timeout / 2 + 0.2)  # idle: time passes, nothing is awaited
    await asyncio.gather(*(a.chat.say("lobby", name, "after") for name in names))
    assert a.chat.unshared == 0
    texts = [(await frame_of(there, "message"))["text"] for _ in range(4)]
    assert texts == ["before", "before", "after", "after"]
