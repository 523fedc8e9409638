"""Fencing of nickname leases across two real server processes on one real Redis
(tests/cluster.py): a process frozen (SIGSTOP) past ``--redis-nick-lease`` while another
process gave its nickname away comes back without it. Its connection gets ``nick_lost`` and is
anonymous, the room hears the old holder leave once, and messages and private messages
under the nickname are the new holder's only."""

import asyncio
import signal
import time
from contextlib import contextmanager
from typing import Any, Iterator

from tornado.websocket import WebSocketClientConnection as Client

from tests.cluster import Node
from tests.support import TIMEOUT, receive_json, send_json
from tests.test_cluster_chat import enter, frame_of

ALICE = "alice-browser-0123456789"  # chat cookies, as /chat hands them out
MALLORY = "mallory-browser-01234567"  # the browser that gets "alice" meanwhile
CAROL = "carol-browser-0123456789"
DAVE = "dave-browser-01234567890"
LEASE = 2.0  # --redis-nick-lease: seconds


@contextmanager
def frozen(node: Node) -> Iterator[None]:
    """``node`` stopped (SIGSTOP) inside the block, as a VM pause or a long GC stops it;
    continued (SIGCONT) on leaving it, however it is left."""
    node.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        node.process.send_signal(signal.SIGCONT)


async def take_when_free(ws_open: Any, node: Node, nick: str, cookie: str) -> Client:
    """A chat socket on ``node`` holding ``nick``, asked again until its lease elsewhere ran
    out (within a lease and a renewal period)."""
    deadline = time.monotonic() + LEASE * 4 / 3 + TIMEOUT
    while True:
        conn, welcome = await enter(ws_open, node, nick=nick, cookie=cookie)
        if welcome["nick"] == nick:
            return conn
        assert time.monotonic() < deadline, f"{nick} was never freed"
        conn.close()
        await asyncio.sleep(0.1)


async def until_marker(conn: Client, text: str = "marker") -> list[dict[str, Any]]:
    """The frames ``conn`` gets up to the public message ``text``, which ends the list."""
    frames = []
    while True:
        frame = await asyncio.wait_for(receive_json(conn), TIMEOUT)
        frames.append(frame)
        if frame["type"] == "message" and frame["text"] == text:
            return frames


async def stale_alice(cluster: Any, ws_open: Any) -> tuple[Node, Node, Client, Client, Client]:
    """A holds ``alice`` (``ALICE``'s browser) and is frozen past the lease; meanwhile B gives
    ``alice`` to another browser; then A continues. Returns A, B, A's old alice socket,
    B's new alice socket and a reader on B that was there from the start."""
    a, b = await cluster.start(2, "--redis-nick-lease", str(LEASE))
    watcher, _ = await enter(ws_open, b)
    await cluster.wait_subscribed("chat.lobby", 1)
    old, _ = await enter(ws_open, a, nick="alice", cookie=ALICE)
    assert (await frame_of(watcher, "joined"))["nick"] == "alice"
    with frozen(a):
        # Written while A cannot read it: A reads it the moment it continues.
        await send_json(old, {"type": "message", "text": "sent while frozen"})
        new = await take_when_free(ws_open, b, "alice", MALLORY)
    return a, b, old, new, watcher


async def test_frozen_holder_loses_the_nickname_another_process_gave_away(cluster, ws_open):
    """After SIGCONT, the frozen process's alice gets nick_lost and is anonymous: a new
    welcome on A lists one alice, and A's next message is not from alice."""
    a, _, old, _, _ = await stale_alice(cluster, ws_open)
    lost = await frame_of(old, "error", timeout=LEASE / 3 + TIMEOUT)
    assert lost["code"] == "nick_lost", lost
    _, welcome = await enter(ws_open, a)
    assert welcome["online"].count("alice") == 1
    await send_json(old, {"type": "message", "text": "marker"})
    frame = [f for f in await until_marker(old) if f["type"] == "message"][-1]
    assert frame["from"] is None


async def test_no_message_from_the_frozen_holder_is_shown_as_the_nickname(cluster, ws_open):
    """A message the frozen alice sent before SIGCONT is refused or sent anonymously: a
    reader sees no message from alice but the new holder's."""
    a, _, old, new, watcher = await stale_alice(cluster, ws_open)
    await frame_of(old, "error", timeout=LEASE / 3 + TIMEOUT)  # nick_lost
    await send_json(new, {"type": "message", "text": "from the new alice"})
    await until_marker(new, "from the new alice")  # stored: the marker comes after it
    await send_json(old, {"type": "message", "text": "marker"})
    messages = [f for f in await until_marker(watcher) if f["type"] == "message"]
    assert [m["text"] for m in messages if m["from"] == "alice"] == ["from the new alice"]


async def test_the_room_hears_the_frozen_holder_leave_once_before_the_new_join(cluster, ws_open):
    """A reader present throughout hears alice leave exactly once, before the new holder's
    join, and nothing about alice after it."""
    _, _, old, _, watcher = await stale_alice(cluster, ws_open)
    await frame_of(old, "error", timeout=LEASE / 3 + TIMEOUT)  # nick_lost
    await send_json(old, {"type": "message", "text": "marker"})
    presence = [(f["type"], f["nick"]) for f in await until_marker(watcher)
                if f["type"] in ("joined", "left")]
    assert presence == [("left", "alice"), ("joined", "alice")]


async def test_private_messages_to_the_nickname_reach_only_the_new_holder(cluster, ws_open):
    """After SIGCONT, private messages to alice from a client of A and from a client of B
    reach the new alice on B, and not the frozen process's former alice."""
    a, b, old, new, _ = await stale_alice(cluster, ws_open)
    await frame_of(old, "error", timeout=LEASE / 3 + TIMEOUT)  # nick_lost
    carol, _ = await enter(ws_open, a, nick="carol", cookie=CAROL)
    dave, _ = await enter(ws_open, b, nick="dave", cookie=DAVE)
    for sender, text in ((carol, "from A"), (dave, "from B")):
        await send_json(sender, {"type": "message", "text": text, "to": "alice"})
        frame = await frame_of(new, "private")
        assert (frame["from"], frame["to"], frame["text"]) == (
            "carol" if sender is carol else "dave", "alice", text)
    await send_json(carol, {"type": "message", "text": "marker"})
    assert [f for f in await until_marker(old) if f["type"] == "private"] == []
