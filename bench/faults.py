"""Fault injection for chat on Redis (issue 21): what a client sees when Redis is crowded,
frozen or a process stops, counted, on real processes.

    python bench/faults.py             # two runs, about 30 s
    python bench/faults.py --quick     # one run, Redis frozen 3 s: about 15 s

Each run starts a ``redis-server`` of its own (its own directory, a free loopback port,
nothing on disk) and three ``server.py`` processes A, B and C sharing it
(``tests/cluster.py``, as the cluster tests start them; the per-address limits are off,
since every client here is 127.0.0.1), then plays four scenarios, each bounded in time:

* **wave**: with Redis healthy, B holds ``alice``; 50 sockets open at once on A, one of
  them asking for ``alice``: how many grants (must be 0), free nicknames refused (0); then
  50 sockets at once on A reconnecting with ``since``: how many welcomes say
  ``recovered: false`` (0); ``/healthz`` of A and B polled throughout: answers not 200 (0).
* **freeze**: 30 clients in 3 rooms, each room spread over A, B and C, each room sending
  a few messages a second; Redis is frozen (SIGSTOP) for longer than the chat state's 2 s
  timeout, then resumed (SIGCONT); traffic goes on until every process is healthy again.
  Counted: messages Redis stored under an id no client was shown for that text (a second
  id), texts shown under two ids, ids going backwards and ids shown twice on any
  connection (history and live), messages sent that no client was shown.
* **reconnect**: with traffic still flowing, each of the 30 closes and reconnects to its
  process with ``since=<the last id it was shown>``: the welcomes' ``recovered`` (reported,
  not judged), stored messages after ``since`` that a client told ``recovered: true`` was
  not shown, ids shown twice or going backwards on the new connections.
* **graceful stop**: 50 nickname holders on A, A gets SIGTERM; right after it exits, 50
  other browsers ask B for those names: how many are refused (must be 0). Then the same
  with C, whose 50 holders never answer the close frame (raw sockets that stop reading
  after their welcome: a frozen tab, a suspended laptop).

Prints one Markdown table per run (scenario, what is counted, the count, what it must be)
and exits 1 if any count that must be 0 is not, or a scenario failed. Needs
``redis-server`` (or ``$REDIS_SERVER``) and the ``redis`` extra; runs in the test
environment (it reuses ``tests/cluster.py``). Loopback only; every process it starts is
stopped by its pid.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Optional, Union
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import redis.asyncio  # noqa: E402
from tornado.httpclient import AsyncHTTPClient, HTTPRequest  # noqa: E402
from tornado.websocket import (  # noqa: E402
    WebSocketClientConnection, WebSocketClosedError, websocket_connect,
)

from tests.cluster import DEFAULT_PREFIX, Cluster, Node  # noqa: E402
from tests.support import raw_handshake, read_frame  # noqa: E402

# Every client is 127.0.0.1: the per-address limits would refuse the waves, which is not
# what is measured here. The per-socket and per-room limits stay as shipped.
SERVER_OPTIONS = ["--handshake-rate-limit=0", "--max-connections-per-ip=0",
                  "--ip-rate-limit=0"]
CHAT_TIMEOUT = 2.0  # seconds: the Redis chat state's call timeout (redischat.DEFAULT_TIMEOUT)
CONNECT_TIMEOUT = 10.0  # seconds for one WebSocket handshake and its welcome
FRAME_TIMEOUT = 5.0  # seconds to wait for a frame a client expects
GAP_CLOSE = 1012  # the server missed messages from the others: reconnect with since


@dataclass
class Plan:
    """The sizes and durations of one invocation."""

    runs: int = 2
    wave: int = 50  # sockets opening at once on A, per wave
    holders: int = 50  # nicknames held on A when it is stopped
    clients: int = 30  # chat clients of the freeze, over every room and process
    rooms: int = 3
    rate: float = 5.0  # messages per second per room
    before: float = 1.0  # seconds of traffic before Redis is frozen
    freeze: float = 4.0  # seconds Redis stays stopped (more than CHAT_TIMEOUT)
    after: float = 1.5  # seconds of traffic once every process is healthy again
    recovery_timeout: float = 20.0  # the most the processes may take to be healthy again
    scenario_timeout: float = 45.0  # the most any one scenario may take


QUICK = Plan(runs=1, before=0.5, freeze=3.0, after=1.0)


@dataclass
class Row:
    """One line of the table: a count and what it must be (None: reported, not judged)."""

    scenario: str
    counted: str
    count: Union[int, str]
    must: Optional[int] = 0

    def failed(self) -> bool:
        """Whether this row makes the run fail: a judged count that is off, or an error."""
        if isinstance(self.count, str):
            return self.must is not None
        return self.must is not None and self.count != self.must


def cookie(n: int) -> str:
    """A valid chat cookie (16-64 of [A-Za-z0-9_-]) for browser number ``n``."""
    return f"{n:032d}"


async def enter(node: Node, room: str, nick: Optional[str] = None,
                since: Optional[int] = None,
                browser: Optional[int] = None) -> tuple[WebSocketClientConnection, dict[str, Any]]:
    """A chat socket on ``node`` and its welcome."""
    query: dict[str, Any] = {}
    if nick is not None:
        query["nick"] = nick
    if since is not None:
        query["since"] = since
    url = node.ws_url(f"/ws/chat/{room}") + ("?" + urlencode(query) if query else "")
    headers = {"Cookie": f"chat_id={cookie(browser)}"} if browser is not None else {}
    request = HTTPRequest(url, headers=headers, connect_timeout=CONNECT_TIMEOUT,
                          request_timeout=CONNECT_TIMEOUT)
    conn = await asyncio.wait_for(websocket_connect(request, ping_interval=None),
                                  CONNECT_TIMEOUT)
    welcome = await frame_of(conn, "welcome", CONNECT_TIMEOUT)
    return conn, welcome


async def frame_of(conn: WebSocketClientConnection, kind: str,
                   timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
    """Skip frames until one of type ``kind``."""
    deadline = time.monotonic() + timeout
    while True:
        text = await asyncio.wait_for(conn.read_message(),
                                      max(deadline - time.monotonic(), 0.01))
        if text is None:
            raise ConnectionError(f"closed ({conn.close_code}) before a {kind} frame")
        frame = json.loads(text)
        if frame["type"] == kind:
            return frame


class ChatClient:
    """One chat client of the freeze: a socket to its process, reopened with ``since`` on
    demand, and every message it was shown on each connection, in order."""

    def __init__(self, node: Node, room: str) -> None:
        self.node = node
        self.room = room
        self.conn: Optional[WebSocketClientConnection] = None
        self.welcome: dict[str, Any] = {}  # the current connection's
        self.since: Optional[int] = None  # what the current connection was opened with
        # (id, text) of every message, history first, one list per connection.
        self.connections: list[list[tuple[int, str]]] = []
        self.errors: list[str] = []  # codes of error frames
        self.gap_closes = 0  # closes with 1012 (messages missed), each reopened with since
        self._reader: Optional[asyncio.Task[None]] = None

    @property
    def shown(self) -> list[tuple[int, str]]:
        """The current (or last) connection's messages."""
        return self.connections[-1]

    async def open(self, since: Optional[int] = None) -> None:
        """Connect (with ``since``) and start reading."""
        self.since = since
        self.conn, self.welcome = await enter(self.node, self.room, since=since)
        self.connections.append([(m["id"], m["text"]) for m in self.welcome["history"]
                                 if m["type"] == "message"])
        self._reader = asyncio.ensure_future(self._read(self.conn, self.shown))

    @property
    def everything_shown(self) -> list[tuple[int, str]]:
        """Every message shown, on every connection."""
        return [message for shown in self.connections for message in shown]

    async def _read(self, conn: WebSocketClientConnection,
                    shown: list[tuple[int, str]]) -> None:
        while (text := await conn.read_message()) is not None:
            frame = json.loads(text)
            if frame["type"] == "message":
                shown.append((frame["id"], frame["text"]))
            elif frame["type"] == "error":
                self.errors.append(frame["code"])
        if conn.close_code == GAP_CLOSE and self.conn is conn:
            # The server missed messages it cannot give here: reconnect as the page does.
            self.gap_closes += 1
            try:
                await self.open(since=shown[-1][0] if shown else self.since)
            except (OSError, ConnectionError, WebSocketClosedError) as error:
                self.errors.append(f"reconnect after 1012 failed: {error}")

    async def send(self, text: str) -> bool:
        """Send a public message; False if not connected."""
        if self.conn is None:
            return False
        try:
            await self.conn.write_message(json.dumps({"type": "message", "text": text}))
        except WebSocketClosedError:
            return False
        return True

    async def close(self) -> None:
        """Close the connection and stop reading it."""
        conn, reader, self.conn, self._reader = self.conn, self._reader, None, None
        if conn is not None:
            conn.close()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def reconnect(self) -> None:
        """Close and reconnect with the last id this connection was shown."""
        last = self.shown[-1][0] if self.shown else None
        await self.close()
        await self.open(since=last)


async def talk(clients: list[ChatClient], label: str, rate: float, stop: asyncio.Event,
               sent: list[str]) -> None:
    """Until ``stop``: one public message every 1/``rate`` s, from each connected client of
    the room in turn; the texts sent go to ``sent``."""
    n = 0
    while not stop.is_set():
        text = f"{label}#{n}"
        for offset in range(len(clients)):  # the next client that is connected
            if await clients[(n + offset) % len(clients)].send(text):
                sent.append(text)
                break
        n += 1
        try:
            await asyncio.wait_for(stop.wait(), 1 / rate)
        except asyncio.TimeoutError:
            pass


async def health_codes(nodes: list[Node]) -> list[int]:
    """``/healthz``'s status on each node (599: no answer within 5 s)."""
    client = AsyncHTTPClient()
    responses = await asyncio.gather(*(
        client.fetch(node.url("/healthz"), raise_error=False, request_timeout=5)
        for node in nodes))
    return [response.code for response in responses]


async def watch_health(nodes: list[Node], codes: list[int], stop: asyncio.Event) -> None:
    """Poll every node's ``/healthz`` until ``stop``, each status into ``codes``."""
    while not stop.is_set():
        codes += await health_codes(nodes)
        await asyncio.sleep(0.02)


async def quiet(clients: list[ChatClient], timeout: float = 5.0) -> None:
    """Return once no client has been shown a new message for 0.5 s (at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    counts = None
    while time.monotonic() < deadline:
        now = [len(client.shown) for client in clients]
        if now == counts:
            return
        counts = now
        await asyncio.sleep(0.5)


async def close_all(conns: list[WebSocketClientConnection]) -> None:
    """Close every socket, and give the servers a moment to see them go."""
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.2)


# The scenarios. Each returns its rows; none leaves a socket open.

async def wave(plan: Plan, a: Node, b: Node) -> list[Row]:
    """A wave of sockets on A while B holds ``alice``, then a wave reconnecting with
    ``since``; ``/healthz`` polled throughout."""
    conns: list[WebSocketClientConnection] = []
    codes: list[int] = []
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(watch_health([a, b], codes, stop))
    try:
        holder, welcome = await enter(b, "wave", nick="alice", browser=0)
        conns.append(holder)
        if welcome["nick"] != "alice":
            raise RuntimeError(f"B did not grant alice on a quiet Redis: {welcome}")
        middle = plan.wave // 2
        opening = [enter(a, "wave", nick=f"n{i}", browser=i + 1) for i in range(plan.wave - 1)]
        opening.insert(middle, enter(a, "wave", nick="alice", browser=plan.wave + 1))
        opened = await asyncio.gather(*opening)
        conns += [conn for conn, _ in opened]
        asker, asked = opened.pop(middle)
        granted = int(asked["nick"] is not None)
        answer = "granted" if granted else "`%s`" % (await frame_of(asker, "error"))["code"]
        refused_free = sum(welcome["nick"] is None for _, welcome in opened)

        # The reconnect wave: every socket last saw the newest message.
        sender = opened[0][0]
        await sender.write_message(json.dumps({"type": "message", "text": "seen"}))
        seen = await frame_of(sender, "message")
        again = await asyncio.gather(*(enter(a, "wave", since=seen["id"])
                                       for _ in range(plan.wave)))
        conns += [conn for conn, _ in again]
        not_recovered = sum(welcome.get("recovered") is not True for _, welcome in again)
    finally:
        stop.set()
        await watcher
        await close_all(conns)
    return [
        Row("wave", f"`alice` (held on B) granted among {plan.wave} sockets opening at once "
                    f"on A (its answer: {answer})", granted),
        Row("wave", f"free nicknames refused among those {plan.wave - 1}", refused_free),
        Row("wave", f"`recovered: false` among {plan.wave} sockets reconnecting at once with "
                    "`since`", not_recovered),
        Row("wave", f"/healthz answers not 200 from A and B during both waves "
                    f"(of {len(codes)})", sum(code != 200 for code in codes)),
    ]


async def freeze(plan: Plan, nodes: list[Node], cluster: Cluster,
                 clients: list[ChatClient]) -> list[Row]:
    """Traffic in every room while Redis is frozen, then resumed; ``clients`` are left
    connected for ``reconnect``."""
    assert cluster.redis is not None
    rooms = [f"room{r}" for r in range(plan.rooms)]
    for i in range(plan.clients):  # room i % rooms, processes in turn within a room
        clients.append(ChatClient(nodes[(i // plan.rooms) % len(nodes)], rooms[i % plan.rooms]))
    await asyncio.gather(*(client.open() for client in clients))
    members = {room: [c for c in clients if c.room == room] for room in rooms}
    sent: list[str] = []
    stop = asyncio.Event()
    talkers = [asyncio.ensure_future(talk(members[room], room, plan.rate, stop, sent))
               for room in rooms]
    try:
        await asyncio.sleep(plan.before)
        cluster.redis.pause()
        try:
            await asyncio.sleep(plan.freeze)
        finally:
            cluster.redis.resume()
        resumed = time.monotonic()
        while set(await health_codes(nodes)) != {200}:
            if time.monotonic() - resumed > plan.recovery_timeout:
                raise RuntimeError(f"not every process healthy {plan.recovery_timeout:g} s "
                                   "after Redis resumed")
            await asyncio.sleep(0.1)
        recovery = time.monotonic() - resumed
        await asyncio.sleep(plan.after)
    finally:
        stop.set()
        await asyncio.gather(*talkers)
    await quiet(clients)

    stored = await stored_messages(cluster, rooms)
    shown = {(c.room, mid, text) for c in clients for mid, text in c.everything_shown}
    ids_of: dict[tuple[str, str], set[int]] = {}
    for room, mid, text in shown:
        ids_of.setdefault((room, text), set()).add(mid)
    shown_texts = {text for _, text in ids_of}
    stored_texts = {text for _, _, text in stored}
    frozen = f"Redis frozen {plan.freeze:g} s"
    return [
        Row("freeze", f"messages sent in {len(rooms)} rooms by {len(clients)} clients on "
                      f"{len(nodes)} processes ({frozen}; all healthy {recovery:.1f} s after "
                      "SIGCONT)", len(sent), None),
        Row("freeze", "... of them stored by Redis", len(stored_texts & set(sent)), None),
        Row("freeze", "... shown under an id of their process only (unstored: the outage)",
            len(shown_texts - stored_texts), None),
        Row("freeze", "messages stored under an id no client was shown for that text "
                      "(second ids)", sum(entry not in shown for entry in stored)),
        Row("freeze", "texts shown under two ids", sum(len(ids) > 1 for ids in ids_of.values())),
        Row("freeze", "ids going backwards, on any client", backwards(clients)),
        Row("freeze", "ids shown twice to one client (history + live)", duplicates(clients)),
        Row("freeze", "messages sent that no client was shown", len(set(sent) - shown_texts)),
        Row("freeze", "connections closed with 1012 (messages missed) and reopened with "
                      "`since`", sum(c.gap_closes for c in clients), None),
    ]


async def reconnect(plan: Plan, cluster: Cluster, clients: list[ChatClient]) -> list[Row]:
    """Every client reconnects with its last id while its room keeps talking."""
    rooms = sorted({c.room for c in clients})
    members = {room: [c for c in clients if c.room == room] for room in rooms}
    stop = asyncio.Event()
    talkers = [asyncio.ensure_future(talk(members[room], f"{room}-again", plan.rate, stop, []))
               for room in rooms]
    try:
        await asyncio.sleep(0.3)

        async def staggered(i: int, client: ChatClient) -> None:
            await asyncio.sleep(i * 1.0 / len(clients))  # spread over a second
            await client.reconnect()

        await asyncio.gather(*(staggered(i, c) for i, c in enumerate(clients)))
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*talkers)
    await quiet(clients)
    stored = await stored_messages(cluster, rooms)
    true = [c for c in clients if c.welcome.get("recovered") is True]
    false = [c for c in clients if c not in true]

    def missed(client: ChatClient) -> set[int]:
        """Stored ids after the client's ``since`` that its new connection was not shown."""
        assert client.since is not None
        return ({mid for room, mid, _ in stored if room == client.room and mid > client.since}
                - {mid for mid, _ in client.shown})

    def missed_nothing(client: ChatClient) -> bool:
        """Whether the old and the new connection together were shown every stored id
        from the old one's first on."""
        old, new = client.connections[-2], client.shown
        first = min((mid for mid, _ in old), default=0)
        wanted = {mid for room, mid, _ in stored if room == client.room and mid >= first}
        return not wanted - {mid for mid, _ in old + new}

    return [
        Row("reconnect", f"welcomes `recovered: true` among the {len(clients)} reconnecting "
                         "with `since` = their last id, during traffic", len(true), None),
        Row("reconnect", "welcomes `recovered: false` (see below)", len(false), None),
        Row("reconnect", "... of which the client had in fact been shown every stored "
                         "message", sum(missed_nothing(c) for c in false), None),
        Row("reconnect", "stored messages after `since` not shown to a client told "
                         "`recovered: true`", sum(len(missed(c)) for c in true)),
        Row("reconnect", "ids going backwards on the new connections", backwards(clients)),
        Row("reconnect", "ids shown twice on the new connections (history + live)",
            duplicates(clients)),
    ]


async def graceful_stop(plan: Plan, stopping: Node, other: Node, answering: bool) -> list[Row]:
    """``stopping``'s nickname holders, ``stopping`` ended with SIGTERM, the same names asked
    of ``other`` at once. ``answering`` holders read their sockets, so they answer the
    server's close frame as a browser does; the others (raw sockets that never read again
    after their welcome: a frozen tab, a suspended laptop) do not."""
    conns: list[WebSocketClientConnection] = []
    silent: list[asyncio.Transport] = []
    readers: list[asyncio.Task[None]] = []
    room = "stop-answering" if answering else "stop-silent"
    try:
        if answering:
            held = await asyncio.gather(*(enter(stopping, room, nick=f"user{i}", browser=i)
                                          for i in range(plan.holders)))
            conns += [conn for conn, _ in held]
            readers += [asyncio.ensure_future(drain(conn)) for conn in conns]
            granted = sum(welcome["nick"] is not None for _, welcome in held)
        else:
            opened = await asyncio.gather(*(silent_holder(stopping, room, f"user{i}", i)
                                            for i in range(plan.holders)))
            silent += [transport for transport, _ in opened]
            granted = sum(welcome["nick"] is not None for _, welcome in opened)
        if granted != plan.holders:
            raise RuntimeError(f"{granted} of {plan.holders} free nicknames granted")
        started = time.monotonic()
        stopping.process.send_signal(signal.SIGTERM)
        while stopping.process.poll() is None:
            if time.monotonic() - started > 15:
                raise RuntimeError("still running 15 s after SIGTERM")
            await asyncio.sleep(0.02)
        took = time.monotonic() - started
        asked = await asyncio.gather(*(enter(other, room, nick=f"user{i}", browser=1000 + i)
                                       for i in range(plan.holders)))
        conns += [conn for conn, _ in asked]
        refused = sum(welcome["nick"] is None for _, welcome in asked)
    finally:
        for transport in silent:
            transport.abort()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await close_all(conns)
    who = ("holders that answer the close" if answering
           else "holders that never answer the close (raw sockets, not read)")
    return [Row("graceful stop", f"names of {plan.holders} {who} refused by another process "
                                 f"right after theirs exited (SIGTERM, exit "
                                 f"{stopping.process.returncode} in {took:.1f} s)", refused)]


async def drain(conn: WebSocketClientConnection) -> None:
    """Read ``conn`` until it closes (a Tornado client handles a close frame only once the
    frames before it were read)."""
    while await conn.read_message() is not None:
        pass


async def silent_holder(node: Node, room: str, nick: str,
                        browser: int) -> tuple[asyncio.Transport, dict[str, Any]]:
    """A raw WebSocket holding ``nick`` that reads its welcome and nothing more."""
    reader, transport, head = await raw_handshake(
        node.port, f"/ws/chat/{room}?nick={nick}",
        extra_headers=f"Cookie: chat_id={cookie(browser)}\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        transport.abort()
        raise RuntimeError(f"handshake refused: {head[:40]!r}")
    opcode, payload = await read_frame(reader)
    return transport, json.loads(payload)


# What clients were shown, judged.

async def stored_messages(cluster: Cluster, rooms: list[str]) -> set[tuple[str, int, str]]:
    """(room, id, text) of every message in the rooms' logs on Redis."""
    assert cluster.redis is not None
    stored = set()
    async with redis.asyncio.Redis.from_url(cluster.redis.url) as admin:
        for room in rooms:
            for entry_id, fields in await admin.xrange(f"{DEFAULT_PREFIX}chat:{{{room}}}:log"):
                frame = json.loads(fields[b"f"])
                stored.add((room, int(entry_id.split(b"-")[0]), frame["text"]))
    return stored


GAP_CLOSE = 1012  # the server missed messages from the others: reconnect with since


def backwards(clients: list[ChatClient]) -> int:
    """Messages shown with an id below one shown before on the same connection."""
    count = 0
    for client in clients:
        highest = 0
        for mid, _ in client.shown:
            count += mid < highest
            highest = max(highest, mid)
    return count


def duplicates(clients: list[ChatClient]) -> int:
    """Messages shown again on the same connection (same id)."""
    return sum(len(c.shown) - len({mid for mid, _ in c.shown}) for c in clients)


def log_problems(nodes: list[Node]) -> list[str]:
    """Lines of the servers' logs that start a traceback or report an error, but for the
    access-log lines of ``/healthz`` answering 503 (what it must answer while Redis is
    frozen)."""
    lines = []
    for node in nodes:
        for line in node.log.read_text(errors="replace").splitlines():
            if "path=/healthz status=503" in line:
                continue
            if line.startswith(("Traceback", "[E ")) or "never retrieved" in line:
                lines.append(f"{node.name}: {line}")
    return lines


async def bounded(name: str, plan: Plan, scenario: Awaitable[list[Row]]) -> list[Row]:
    """A scenario's rows, or one failed row if it raised or ran past its time."""
    try:
        return await asyncio.wait_for(scenario, plan.scenario_timeout)
    except asyncio.TimeoutError:
        return [Row(name, "the scenario", f"error: still running after "
                                          f"{plan.scenario_timeout:g} s")]
    except Exception as error:  # one scenario failing still reports the others
        return [Row(name, "the scenario", f"error: {type(error).__name__}: {error}")]


async def one_run(plan: Plan, directory: Path) -> tuple[list[Row], list[str]]:
    """Start Redis and three processes, play every scenario, stop everything."""
    cluster = Cluster(directory)
    rows: list[Row] = []
    clients: list[ChatClient] = []
    try:
        nodes = await cluster.start(3, *SERVER_OPTIONS)
        a, b, c = nodes
        rows += await bounded("wave", plan, wave(plan, a, b))
        rows += await bounded("freeze", plan, freeze(plan, nodes, cluster, clients))
        if len(clients) == plan.clients and all(c.conn is not None for c in clients):
            rows += await bounded("reconnect", plan, reconnect(plan, cluster, clients))
        else:
            rows.append(Row("reconnect", "the scenario", "error: the freeze's clients are gone"))
        await asyncio.gather(*(client.close() for client in clients))
        rows += await bounded("graceful stop", plan, graceful_stop(plan, a, b, answering=True))
        rows += await bounded("graceful stop", plan, graceful_stop(plan, c, b, answering=False))
    finally:
        await asyncio.gather(*(client.close() for client in clients))
        cluster.stop()
    problems = log_problems(cluster.nodes)
    rows.append(Row("logs", "tracebacks and error lines in the 3 servers' logs (but "
                            "/healthz's 503s while Redis was frozen)", len(problems)))
    return rows, problems


def table(rows: list[Row]) -> str:
    """One Markdown table: scenario, what is counted, the count, what it must be."""
    lines = ["| scenario | counted | count | must be |", "| --- | --- | ---: | ---: |"]
    for row in rows:
        must = "—" if row.must is None else str(row.must)
        flag = " ✗" if row.failed() else ""
        lines.append(f"| {row.scenario} | {row.counted} | {row.count}{flag} | {must} |")
    return "\n".join(lines)


RECOVERED = (
    "`recovered: false` says the welcome cannot vouch that its history is every message "
    "after the client's `since`: Redis did not answer, the room's log no longer reaches back "
    "to it, the room's sequence jumped right after it (over ids a process handed out alone "
    "while Redis was away, messages the other processes never got), or what follows it does "
    "not fit in a welcome. The welcome then holds the newest messages and the page warns "
    "that some may be missing; by itself it is not a loss.")


async def run(plan: Plan) -> int:
    """Every run, its table; 1 if any judged count was off."""
    started = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        for number in range(1, plan.runs + 1):
            run_started = time.monotonic()
            rows, problems = await one_run(plan, Path(tmp) / f"run{number}")
            print(f"Run {number} of {plan.runs} ({time.monotonic() - run_started:.0f} s):\n")
            print(table(rows))
            print()
            for line in problems[:5]:
                print(f"Log: {line[:300]}")
            failed = failed or any(row.failed() for row in rows)
            sys.stdout.flush()
    print(RECOVERED)
    print(f"{plan.runs} run(s) in {time.monotonic() - started:.0f} s; load average "
          f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}. "
          + ("Some counts are not what they must be (✗)." if failed
             else "Every judged count is what it must be."))
    return 1 if failed else 0


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="runs, each on fresh processes (default 2, "
                                                 "at most 5)")
    parser.add_argument("--quick", action="store_true",
                        help="one run, Redis frozen 3 s, shorter traffic (about 15 s)")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(QUICK if args.quick else Plan())
    if args.runs is not None:
        if not 1 <= args.runs <= 5:
            parser.error("--runs takes 1 to 5")
        plan.runs = args.runs
    if not (os.environ.get("REDIS_SERVER") or shutil.which("redis-server")):
        parser.error("redis-server is not installed (apt-get install redis-server, or set "
                     "$REDIS_SERVER)")
    sys.exit(asyncio.run(run(plan)))


if __name__ == "__main__":
    main()
