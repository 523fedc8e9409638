"""No silent gaps (tests/cluster.py: two real server processes on one real Redis): when a
process's Redis subscription is interrupted (``CLIENT KILL TYPE pubsub``, the
output-buffer limit of a stalled process, Redis frozen, Redis killed and restarted from its
AOF), a chat client of that process ends with every message the room's log holds, or is
told (closed, then its reconnect with ``since`` answers ``recovered: false``); private
messages reach only their two parties; votes acknowledged are counted and the poll's
watchers end with the poll's true tally.

Each check compares what a client received with the room's log in Redis, read at the end:
the log is what was shared (a message sent while Redis was gone stays on its own process).
"""

import asyncio
import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

import redis.asyncio
from tornado.websocket import WebSocketClientConnection as Client

from realtime.chat.rules import MAX_TEXT_LENGTH
from realtime.storage.rediskeys import topic_channel
from tests.cluster import DEFAULT_PREFIX, Cluster, Node
from tests.redis_server import shipped_settings
from tests.support import receive, receive_json, send_json
from tests.test_cluster_chat import ALICE, BOB, CAROL
from tests.test_cluster_faults import SHIPPED_CONFIG, UNAVAILABLE_WITHIN, wait_health
from tests.test_cluster_votes import EVERY_CLICK, create_poll, fetch_json, open_poll, outcome

# Nothing stands between the test's stream (50 messages a second from one socket) and Redis.
UNLIMITED = ("--rate-limit", "0", "--ip-rate-limit", "0")
RATE = 50  # messages per second the sender sends
KILL_RUNS = 20
RESUMED_WITHIN = 10.0  # seconds from Redis answering again to every client whole again
END = "end of stream"  # each stream's last message: once a reader has it, nothing is due
FROZEN_FOR = 10.0  # seconds Redis is SIGSTOPped

Event = Callable[[Client], Awaitable[None]]  # what happens mid-stream, given the sender


@dataclass
class Reader:
    """A chat client that reconnects as the page does (after a close, with ``since`` its
    newest id), recording the ids it was given and whether it was told of a loss."""

    node: Node
    room: str
    nick: Optional[str] = None
    cookie: Optional[str] = None
    ids: list[int] = field(default_factory=list)  # messages and private ones, as they came
    privates: list[dict[str, Any]] = field(default_factory=list)
    closes: list[Optional[int]] = field(default_factory=list)  # the server's close codes
    told: bool = False  # a welcome said recovered: false
    ended: bool = False  # END has come
    conn: Optional[Client] = None

    async def open(self, ws_open: Any) -> None:
        """Connect (with ``since`` once it has an id) and take the welcome's history."""
        query = [f"nick={quote(self.nick)}"] if self.nick else []
        if self.ids:
            query.append(f"since={self.ids[-1]}")
        path = f"/ws/chat/{self.room}" + ("?" + "&".join(query) if query else "")
        headers = {"Cookie": f"chat_id={self.cookie}"} if self.cookie else None
        self.conn = await ws_open(self.node.ws_url(path), headers)
        welcome = await receive_json(self.conn)
        assert welcome["type"] == "welcome", welcome
        if welcome.get("recovered") is False:
            self.told = True
        for frame in welcome["history"]:
            self._take(frame)

    def _take(self, frame: dict[str, Any]) -> None:
        if frame["type"] not in ("message", "private"):
            return
        self.ids.append(frame["id"])
        if frame["type"] == "private":
            self.privates.append(frame)
        if frame["text"] == END:
            self.ended = True

    async def read_to_end(self, ws_open: Any, within: float) -> None:
        """Read, reconnecting after the server closes, until ``END`` has come."""
        deadline = time.monotonic() + within
        while not self.ended:
            assert self.conn is not None
            left = deadline - time.monotonic()
            assert left > 0, f"{self.nick or 'reader'}: {END!r} never came"
            data = await asyncio.wait_for(receive(self.conn), left)
            if data is None:
                self.closes.append(self.conn.close_code)
                await self.open(ws_open)
                continue
            assert isinstance(data, str)
            self._take(json.loads(data))

    def silent_gaps(self, expected: list[int]) -> list[int]:
        """The ids of ``expected`` this reader never got, unless it was told of a loss."""
        got = set(self.ids)
        return [] if self.told else [n for n in expected if n not in got]


@dataclass
class Logged:
    """The room's log as Redis holds it at the end."""

    public: list[int]
    private: dict[str, list[int]]  # nick key -> ids of the private messages it is party to


async def read_log(cluster: Cluster, room: str) -> Logged:
    """Every entry of ``room``'s log (``chat:{<room>}:log``), by who may see it."""
    assert cluster.redis is not None
    async with redis.asyncio.Redis.from_url(cluster.redis.url) as admin:
        entries = await admin.xrange(f"{DEFAULT_PREFIX}chat:{{{room}}}:log")
    logged = Logged([], {})
    for entry_id, fields in entries:
        message_id = int(entry_id.split(b"-")[0])
        if b"p" in fields:
            for key in json.loads(fields[b"p"]):
                logged.private.setdefault(key, []).append(message_id)
        else:
            logged.public.append(message_id)
    return logged


async def stream(sender: Client, count: int, at: int, event: Event,
                 private_to: Optional[str] = None) -> None:
    """Send ``count`` messages at ``RATE`` a second (every third one private to
    ``private_to``, if given), awaiting ``event(sender)`` before message ``at``; then
    ``END``."""
    for n in range(count):
        if n == at:
            await event(sender)
        message: dict[str, Any] = {"type": "message", "text": f"message {n}"}
        if private_to is not None and n % 3 == 2:
            message["to"] = private_to
        await send_json(sender, message)
        await asyncio.sleep(1 / RATE)
    await send_json(sender, {"type": "message", "text": END})


async def drain(conn: Client) -> None:
    """Read and forget what ``conn`` receives (the sender's own frames), until it closes."""
    while await conn.read_message() is not None:  # no timeout: it may be quiet a while
        pass


def assert_whole(reader: Reader, expected: list[int]) -> None:
    """``reader`` got every id of ``expected`` (or was told), none twice, in order."""
    assert reader.silent_gaps(expected) == [], (
        f"{reader.nick}: {len(reader.silent_gaps(expected))} of {len(expected)} messages "
        f"missing without notice (closes {reader.closes})")
    assert len(reader.ids) == len(set(reader.ids)), f"{reader.nick}: duplicates"
    assert reader.ids == sorted(reader.ids), f"{reader.nick}: out of order"


async def chat_run(cluster: Cluster, ws_open: Any, a: Node, b: Node, room: str,
                   count: int, at: int, event: Event, within: float) -> tuple[Reader, Reader]:
    """alice on A streams to ``room`` (a third of it private to bob); bob and carol read
    on B; ``event`` happens before message ``at``. Returns bob and carol once each has
    ``END``, checked against the log: no silent gap, no duplicate, no reordering, and
    nobody but bob (and alice) sees a private message."""
    bob = Reader(b, room, "bob", BOB)
    carol = Reader(b, room, "carol", CAROL)
    for reader in (bob, carol):
        await reader.open(ws_open)
    alice = Reader(a, room, "alice", ALICE)
    await alice.open(ws_open)
    assert alice.conn is not None
    draining = asyncio.ensure_future(drain(alice.conn))
    await cluster.wait_subscribed(f"chat.{room}", 2)
    try:
        await stream(alice.conn, count, at, event, private_to="bob")
        await asyncio.gather(*(reader.read_to_end(ws_open, within) for reader in (bob, carol)))
    finally:
        alice.conn.close()
        await draining
    logged = await read_log(cluster, room)
    assert logged.public, "nothing was shared"
    assert_whole(bob, sorted(logged.public + logged.private.get("bob", [])))
    assert_whole(carol, logged.public)
    assert carol.privates == []
    assert {frame["to"] for frame in bob.privates} <= {"bob"}
    for reader in (bob, carol):
        assert reader.conn is not None
        reader.conn.close()
    return bob, carol


async def test_client_kill_pubsub_leaves_no_silent_gap(cluster, ws_open):
    """``CLIENT KILL TYPE pubsub`` in the middle of a 50 msg/s stream from A, 20 times: bob
    and carol on B get every logged message in place, without a reconnect, none twice, and
    only bob the private ones."""
    a, b = await cluster.start(2, *UNLIMITED)
    assert cluster.redis is not None
    async with redis.asyncio.Redis.from_url(cluster.redis.url) as admin:
        async def kill(_: Client) -> None:
            assert await admin.client_kill_filter(_type="pubsub") == 2

        for run in range(KILL_RUNS):
            bob, carol = await chat_run(cluster, ws_open, a, b, f"kill{run}", 30, 10, kill,
                                        RESUMED_WITHIN)
            assert bob.closes == carol.closes == [], f"run {run}: closed instead of caught up"


async def test_listener_cut_for_its_output_buffer_leaves_no_silent_gap(cluster, ws_open):
    """B stalled (SIGSTOP) until Redis cuts its listener for ``client-output-buffer-limit
    pubsub``: once B runs again, bob and carol on B have every logged message (or were
    told), none twice, and only bob the private ones."""
    a, b = await cluster.start(2, *UNLIMITED, redis_config={
        "client-output-buffer-limit": "pubsub 16kb 8kb 1"})
    assert cluster.redis is not None
    async with redis.asyncio.Redis.from_url(cluster.redis.url) as admin:
        async def stall_until_cut(sender: Client) -> None:
            b.process.send_signal(signal.SIGSTOP)
            try:
                # What A publishes piles up in Redis for B's listener until Redis cuts it,
                # once the kernel's socket buffers are full too: the longest messages fill
                # them in a second or two; a loaded machine may take longer to send them.
                deadline = time.monotonic() + 3 * RESUMED_WITHIN
                channel = topic_channel(DEFAULT_PREFIX, "chat.stall")
                while (await admin.pubsub_numsub(channel))[0][1] > 1:
                    assert time.monotonic() < deadline, "Redis never cut B's listener"
                    await send_json(sender, {"type": "message", "text": "x" * MAX_TEXT_LENGTH})
                    await asyncio.sleep(1 / RATE)
            finally:
                b.process.send_signal(signal.SIGCONT)

        await chat_run(cluster, ws_open, a, b, "stall", 30, 10, stall_until_cut,
                       RESUMED_WITHIN * 2)


async def vote_until(voter: Client, stop: asyncio.Event) -> int:
    """Vote on ``voter`` at ``RATE`` a second, one vote in flight, until ``stop`` is set
    (votes refused ``unavailable`` meanwhile are fine); the votes acknowledged."""
    acknowledged = 0
    while not stop.is_set():
        await send_json(voter, {"type": "vote", "option": "1"})
        answer, _ = await outcome(voter)
        assert answer in ("voted", "unavailable"), answer
        acknowledged += answer == "voted"
        await asyncio.sleep(1 / RATE)
    return acknowledged


async def tally_reaches(watcher: Client, total: int, within: float) -> None:
    """Read ``watcher``'s frames until a tally of ``total`` votes, within ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the watcher never saw a tally of {total}"
        frame = await asyncio.wait_for(receive_json(watcher), left)
        if frame["type"] == "tally" and frame["total"] == total:
            return


async def outage_run(cluster: Cluster, ws_open: Any, outage: Event, room: str) -> None:
    """While alice on A streams to ``room`` and a voter on A votes, ``outage`` cuts Redis
    off and brings it back (it stops the voter): bob and carol on B have every logged
    message or were told; B's /healthz said 503 within 5 s; every acknowledged vote is
    counted (and at most the one in flight more: Redis stopped between running it and
    writing its answer), and a poll watcher on B ends with the counted tally though no vote
    follows the outage."""
    a, b = cluster.nodes
    poll_id = (await create_poll(a, EVERY_CLICK))["id"]
    watcher, _ = await open_poll(ws_open, b, poll_id)
    voter, _ = await open_poll(ws_open, a, poll_id)
    await cluster.wait_subscribed(f"vote.{poll_id}", 2)
    voting = asyncio.ensure_future(vote_until(voter, stopped))
    try:
        await chat_run(cluster, ws_open, a, b, room, 60, 20, outage, RESUMED_WITHIN)
    finally:
        stopped.set()
        acknowledged = await voting
    counted = (await fetch_json(b.url(f"/api/polls/{poll_id}")))["total"]
    assert acknowledged <= counted <= acknowledged + 1
    assert acknowledged > 0
    await tally_reaches(watcher, counted, RESUMED_WITHIN)
    await wait_health(b, 200, time.monotonic() + RESUMED_WITHIN)


stopped = asyncio.Event()  # set by each outage once Redis is back: the voter stops


async def test_redis_frozen_10_s_leaves_no_silent_gap(cluster, ws_open):
    """Redis SIGSTOPped for 10 s mid-stream: chat on B has every logged message or is
    told, votes acknowledged are counted, B's poll watcher ends with the true tally."""
    stopped.clear()
    await cluster.start(2, *UNLIMITED)
    assert cluster.redis is not None

    async def freeze(_: Client) -> None:
        cluster.redis.pause()
        frozen = time.monotonic()
        try:
            await wait_health(cluster.nodes[1], 503, frozen + UNAVAILABLE_WITHIN)
            await asyncio.sleep(frozen + FROZEN_FOR - time.monotonic())  # the fault lasts
        finally:
            cluster.redis.resume()
        stopped.set()

    await outage_run(cluster, ws_open, freeze, "frozen")


async def test_redis_killed_and_restarted_from_its_aof_leaves_no_silent_gap(cluster, ws_open):
    """Redis SIGKILLed mid-stream and restarted from its AOF (deploy/redis.conf): chat on
    B has every logged message or is told, votes acknowledged are counted, B's poll
    watcher ends with the true tally."""
    stopped.clear()
    await cluster.start(2, *UNLIMITED, redis_config=shipped_settings(SHIPPED_CONFIG))
    assert cluster.redis is not None

    async def crash(_: Client) -> None:
        cluster.redis.kill()
        await wait_health(cluster.nodes[1], 503, time.monotonic() + UNAVAILABLE_WITHIN)
        await cluster.redis.restart()
        stopped.set()

    await outage_run(cluster, ws_open, crash, "crashed")
