"""Chat state on Redis: ``RedisChatState`` shares rooms between server processes.

With ``--redis-url``, every process of a deployment sees the same nicknames, presence,
message ids and history, and private messages reach the recipient's connections on any
process and nobody else. Each process still keeps its own connections (who is connected
here under which nickname, in ``realtime.chat.rules.Room`` objects without history); what must
agree across processes is in Redis, under ``prefix`` (``realtime:``), per room ``<r>``, every
key with the room as its hash tag, ``{<r>}``, so a room lives in one slot of a Redis Cluster
and its scripts touch keys of that slot only (``realtime.storage.rediskeys``):

- ``chat:{<r>}:log``: a stream of the room's messages, entry id ``<message id>-0``, fields
  ``f`` (the frame, as sent) and for a private one ``p`` (JSON: nick key -> holder tag);
  bounded by ``--chat-replay`` entries (``MAXLEN``, exact); "load earlier" reads it
  newest first below an id (``XREVRANGE``);
- ``chat:{<r>}:meta``: a hash: ``last``, the newest id handed out, and ``first``, the first
  id of this run of the room's sequence;
- ``chat:{<r>}:nick:<nick key>``: a hash: ``h`` the holder tag, ``n`` the nickname as shown,
  and per process holding it ``p:<process id>``, the lease's end in Redis milliseconds;
- ``chat:{<r>}:online``: a sorted set of the nick keys present, scored by when they joined;
- ``chat:{<r>}:names``: a hash, nick key -> the nickname as shown, of the members present (so
  a member whose lease ran out can still be announced by name).

The log and meta expire after ``ROOM_TTL`` without a message; a nickname when its last lease
runs out.

Publish and history in one step: a message goes through ``Hub.publish_with_history``, which
the Redis broker does in one script (``realtime.pubsub.redisbroker.APPEND``): it takes the room's
next id, appends the frame to the log and publishes it, atomically, so no process can see a
message that history does not hold, and ids are handed out in the order messages are
published. The frame is built once in Python around the id (``head + id + tail``); every
process, this one included, delivers it from its broker's listener, in Redis's order.

Ids are unique and increasing per room across processes, and never reused even if Redis
loses its data: a sequence that is missing starts again at Redis's clock in microseconds
(above any id handed out before, as in ``realtime.chat.rules``), and ``first`` records where the
run started, so a ``since`` from before the loss gives ``recovered: false``. Ids within a run
are consecutive, so a welcome sees a gap (trimmed, or lost) by comparing ids, and answers
``recovered: true`` only when it holds every message after ``since``.

Nicknames. Taking one is ``JOIN`` (Lua): refused if another holder has a live lease on it,
else this process's lease is set to Redis's clock plus ``lease`` seconds (30). Each process
renews the leases of its nicknames every third of that, and gives a nickname's lease back
when its last connection here leaves; the nickname is free once no process holds a lease,
so a crashed process's nicknames free themselves within ``lease`` seconds. When it renews,
a process also sweeps its rooms (``ONLINE``): a member whose leases all ran out is removed
atomically and announced ``left`` by the process that removed it, once; a process that
takes over the nickname of such a member before any sweep (``JOIN`` status 3) announces it
left before its own join.

Fencing. A process uses a nickname (posts under it, delivers a private message to it
without asking Redis, lets another tab share it) only while its lease is known valid: until
the time, on this process's monotonic clock, it sent the ``JOIN`` that last set it, plus
``lease`` (Redis set the lease's end no earlier). Past that, it renews first. When Redis
says another holder has the nickname (this process was frozen past the lease: a VM pause,
swap, a long GC), or when the lease runs out while Redis cannot be reached, the nickname is
lost here: each connection holding it is told (the ``lost`` callback given to ``enter``;
the session sends ``nick_lost``) and is anonymous. The renewal loop wakes when a lease is
due as well as every third of it, so it notices a freeze in its first round after it.

Pipelining. The scripts of messages (``APPEND``) and of nicknames (``JOIN``, ``LEAVE``,
``LOOKUP``, ``ONLINE``) go through one ``realtime.storage.redisbatch.ScriptBatcher``: those
issued in the same loop turn (a burst of messages, a wave of connections, the renewal of
every lease of a room) reach Redis in one pipeline of at most ``batch`` calls (and 1 MiB of
arguments), in order on one connection, two on their way at once (Redis runs one while
this process builds the next). So a message sent after another of the room is run (and
gets its id, and is published) after it, and each stays one atomic script; a pipeline
built before the replies of the one before are known takes that one's deadline.
A room's messages of one pipeline go as ONE script call (``APPEND_MANY``, the batcher's
groups): each still appended and published atomically, ids consecutive in the order sent,
each with its own deadline; Redis and this process pay one script call per room and
pipeline, not one per message, and the room's listeners one pub/sub message (a batch wire,
``realtime.pubsub.redisbroker``). A message's call is bounded by the batcher's deadline,
one per pipeline (``timeout``), not by a timer of its own. The connections pack commands
with hiredis (``realtime.storage.redispack``). ``batch=1`` (``--redis-batch 1``) sends
each call on its own: messages one round trip at a time, the nickname scripts as separate
calls (``CONCURRENT_CALLS`` at once).

Faults. At most ``CONCURRENT_CALLS`` calls run at once (the batcher's pipelines, on a
connection of their own, count as none); the others wait their turn (up to
``timeout``), so a wave of connections is a queue, not an outage. Every call is bounded by
``timeout`` (2 s). Only a lost connection or a timeout marks the state down (one warning per
outage), and until a background PING answers, calls do not wait on it: messages go to this
process's clients with ids above every id it has seen, unstored; a nickname not already
held here by the same holder is refused (``unavailable``: only Redis grants one);
welcomes have no history (``recovered: false`` with ``since``) and list this process's
members. What degrades is cross-process: delivery (the broker is down too), presence, new
nicknames and history. ``APPEND`` carries a deadline, so a message Redis runs after its
sender gave up is not stored under a second id; and when Redis answers again, the process
raises each room's sequence above the ids it handed out alone (``RAISE``) before sharing
messages again, so ids never go backwards.

Gaps. When the broker's listener was cut off (``CLIENT KILL``, the output-buffer limit,
Redis frozen or restarted) and is subscribed again, ``_catch_up`` reads each local room's
log after the last id delivered here (the broker's ``last_id``, or the newest a welcome
read) and delivers the entries in order to exactly the topics they were published on: a
public one to the room's topic, a private one to its parties' private topics (those
subscribed here). It then sends the room's members (an ``online`` frame), since presence
is not in the log. Where the log cannot say what was missed (trimmed past that id, a new
run after Redis lost its data, Redis still not answering after ``GAP_WAIT`` seconds), the
room's connections here are ended (``CloseReason.GAP``): their clients reconnect with
``since`` and learn ``recovered: false`` if anything is gone.
"""

import asyncio
import itertools
import logging
import math
import os
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

import orjson
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime.chat.rules import (
    DEFAULT_HISTORY, DEFAULT_REPLAY, DEFAULT_ROOM_HISTORY_BYTES, MAX_NICK_LENGTH, Joined, Room,
    check_text, guest_label, newest_fitting, nick_key, normalize_nick,
)
from realtime.chat.state import (
    Earlier, Lost, Replay, holder_tag, private_topic, private_topic_of_key,
    room_of_topic, room_topic,
)
from realtime.ops.tasks import cancel_all
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.pubsub.redisbroker import History, RedisBroker
from realtime.storage.redisbatch import DEFAULT_MAX_COUNT, ScriptBatcher
from realtime.storage.redispack import PackedConnection
from realtime.storage.redisdown import FAILURES, Outage, probe
from realtime.storage.rediskeys import client, close, tagged
from realtime.wire.messages import NICK_LOST, UNAVAILABLE, ClientError, Message, encode

log = logging.getLogger("realtime.redischat")

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0  # seconds any call may take
DEFAULT_LEASE = 30.0  # seconds a nickname outlives the last renewal of its process
ROOM_TTL = 7 * 24 * 3600  # seconds a room's log and sequence live after its last message
# What says Redis cannot be reached. Any other error (a refused command) fails that call
# only: Redis answers, so the state stays up.
# A cluster is out when no node answers (RedisClusterException) or a slot has no master
# (CLUSTERDOWN, during a failover).
OUTAGES = (RedisConnectionError, RedisTimeoutError, RedisClusterException, ClusterDownError,
           OSError, asyncio.TimeoutError)
# Calls to Redis at once; more wait for a turn (at most ``timeout``), so a wave of
# connections is a queue, never mistaken for an outage.
CONCURRENT_CALLS = 16
# Seconds a catch-up after a gap waits for this state to reach Redis again (its own probe
# may find Redis back a little after the broker's listener).
GAP_WAIT = 5.0

# Redis's clock in milliseconds (scripts use it, so every process agrees on lease times).
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Then ``nick_of(key)``: a nickname's hash read as its holder tag, its shown form, whether
# some lease on it is live, and the fields of the leases that ran out.
_NICK_OF = _NOW_MS + """
local function nick_of(key)
    local fields = redis.call('HGETALL', key)
    local holder, shown, live, expired = nil, nil, false, {}
    for i = 1, #fields, 2 do
        local name, value = fields[i], fields[i + 1]
        if name == 'h' then holder = value
        elseif name == 'n' then shown = value
        elseif string.sub(name, 1, 2) == 'p:' then
            if tonumber(value) > now then live = true else table.insert(expired, name) end
        end
    end
    return holder, shown, live, expired
end
"""

# KEYS: meta, log. ARGV: an id this process handed out while it could not reach Redis, ttl
# seconds. The room's sequence continues above it, so ids never go backwards; a sequence
# that is missing (Redis lost its data) starts a run right after it.
RAISE = """
local last = redis.call('HGET', KEYS[1], 'last')
if not last then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'first', string.format('%.0f', tonumber(ARGV[1]) + 1),
               'last', ARGV[1])
elseif tonumber(last) < tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'last', ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: nick, online, names. ARGV: holder tag, nickname as shown, process id, lease ms,
# nick key.
# Returns {0, shown} if another holder has it, {1, shown} if this holder already had it,
# {2, shown} if it was free (the room gained a member), {3, shown, was} if it was still
# listed under a member whose leases all ran out (a stalled or crashed process's) and nobody
# announced that one leaving: the caller announces ``was`` left, then the join.
JOIN = _NICK_OF + """
local holder, shown, live, expired = nick_of(KEYS[1])
for _, name in ipairs(expired) do redis.call('HDEL', KEYS[1], name) end
if live and holder ~= ARGV[1] then return {0, shown} end
local status, was = 1, false
local listed = redis.call('ZSCORE', KEYS[2], ARGV[5])
-- Not live and listed under this holder: its lease lapsed and nobody took it meanwhile.
if not live and not (listed and holder == ARGV[1]) then
    status = 2
    if listed then was = redis.call('HGET', KEYS[3], ARGV[5]) end
    shown = ARGV[2]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'h', ARGV[1], 'n', shown)
    redis.call('ZADD', KEYS[2], now, ARGV[5])
    redis.call('HSET', KEYS[3], ARGV[5], shown)
end
-- Members nobody sweeps (every process of the room gone) do not stay forever.
redis.call('EXPIRE', KEYS[2], ROOM_TTL)
redis.call('EXPIRE', KEYS[3], ROOM_TTL)
redis.call('HSET', KEYS[1], 'p:' .. ARGV[3], now + tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if was then return {3, shown, was} end
return {status, shown}
""".replace("ROOM_TTL", str(ROOM_TTL))

# KEYS: nick, online, names. ARGV: holder tag, process id, nick key. 1 if the nickname is
# free now.
LEAVE = _NICK_OF + """
if redis.call('HGET', KEYS[1], 'h') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'p:' .. ARGV[2])
local _, _, live = nick_of(KEYS[1])
if live then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[3])
return 1
"""

# KEYS: nick. Returns {holder tag, shown} while some lease on it is live, else {}.
LOOKUP = _NICK_OF + """
local holder, shown, live = nick_of(KEYS[1])
if live and holder and shown then return {holder, shown} end
return {}
"""

# KEYS: online, names, then the nick hashes of the members read from online just before.
# ARGV: those members' nick keys, in the same order (every key the script touches is
# declared, as a cluster requires). Returns {the nicknames with a live lease, in join order;
# the nicknames of members whose leases all ran out (a crashed process's), removed here, so
# exactly one caller announces each one's leaving}. A member that joined since the read
# has a fresh lease: it is present.
# KEYS: online. The nick keys of the room's members, in join order (read before ``ONLINE``).
MEMBERS = """
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

ONLINE = _NICK_OF + """
local passed = {}
for i = 1, #ARGV do passed[ARGV[i]] = KEYS[i + 2] end
local out, gone = {}, {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local nick = passed[key]
    local shown, live
    if nick then
        local _, s, l = nick_of(nick)
        shown, live = s, l
    else
        shown, live = redis.call('HGET', KEYS[2], key), true
    end
    if live and shown then
        table.insert(out, shown)
    elseif nick then
        redis.call('ZREM', KEYS[1], key)
        local was = redis.call('HGET', KEYS[2], key)
        redis.call('HDEL', KEYS[2], key)
        if was then table.insert(gone, was) end
    end
end
return {out, gone}
"""

_ID_MARK = b'"id":0,'


def _whole_run(first: Optional[int], entries: list[Any]) -> bool:
    """Whether ``entries`` (read from the start of the log) begin with the first message
    of the room's run, or the room has none: a ``since`` of 0, a client that has seen
    nothing, then misses nothing."""
    return first is None or (bool(entries) and entries[0][0]["id"] == first)


class Unavailable(Exception):
    """Redis is down (or was, and has not answered a PING since)."""


# One log entry as stored: its id, its frame's bytes, its parties (JSON) or None.
RawEntry = tuple[int, bytes, Optional[bytes]]


def split_frame(frame: Message) -> tuple[bytes, bytes]:
    """The JSON of ``frame`` (its ``id`` 0) cut around the id: ``head + id + tail``."""
    data = encode(frame)
    at = data.index(_ID_MARK) + len(b'"id":')
    return data[:at], data[at + 1:]


class RedisChatState:
    """Chat rooms shared through Redis; see the module docstring.

    Args:
        url: ``redis://[user:password@]host:port/db``.
        hub: the hub; its broker must be a ``RedisBroker`` on the same Redis and prefix
            (scripts publish on its channels, in its format).
        prefix: put before every key.
        history: messages in a welcome without ``since``.
        replay: messages each room's log keeps.
        welcome_bytes: bytes of messages (as JSON) one welcome holds at most.
        lease: seconds a nickname stays held after its process last renewed it.
        timeout: seconds any call may take.
        clock: wall-clock seconds, for message timestamps.
        monotonic: monotonic seconds, for how long a lease is known valid (fencing).
        batch: script calls per pipeline, at most; 1 sends each on its own.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        hub: Hub,
        prefix: str = "realtime:",
        *,
        history: int = DEFAULT_HISTORY,
        replay: int = DEFAULT_REPLAY,
        welcome_bytes: int = DEFAULT_ROOM_HISTORY_BYTES,
        lease: float = DEFAULT_LEASE,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        batch: int = DEFAULT_MAX_COUNT,
    ) -> None:
        broker = hub.broker
        if not isinstance(broker, RedisBroker):
            raise TypeError("RedisChatState needs the hub to use a RedisBroker")
        self.url = url
        self.hub = hub
        self.broker = broker
        self.prefix = prefix
        self.history = history
        self.log_length = max(replay, history, 1)  # entries each room's log keeps
        self.welcome_bytes = welcome_bytes
        self.lease = lease
        self.timeout = timeout
        self._clock = clock
        self._monotonic = monotonic
        self.process = os.urandom(6).hex()  # names this process's leases and serials
        # Four connections beyond the calls': the probe's and the clock's, which bypass
        # ``_turns``, the batcher's (its pipelines' one connection) and its NOSCRIPT
        # retries': the pool itself is never what refuses a call.
        self._redis = client(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2,
            client_name="realtime-chat", max_connections=CONCURRENT_CALLS + 4,
            # Cheaper packing of the batched scripts (a cluster's client keeps its own).
            connection_class=PackedConnection,
        )
        self._turns = asyncio.Semaphore(CONCURRENT_CALLS)
        # Sends the script calls of each loop turn in one pipeline (counts its pipelines).
        # Its calls are bounded by one deadline per pipeline (``timeout``), not a timer each.
        self.batcher = ScriptBatcher(self._redis, max_count=batch, timeout=timeout)
        # The deadline of the first message of the batcher's latest pipeline: (pipeline,
        # deadline); the later ones of that pipeline take it if theirs is later.
        self._deadline: tuple[int, int] = (-1, 0)
        self._raise = self._redis.register_script(RAISE)
        self._join = self._redis.register_script(JOIN)
        self._leave = self._redis.register_script(LEAVE)
        self._lookup = self._redis.register_script(LOOKUP)
        self._online = self._redis.register_script(ONLINE)
        self._members = self._redis.register_script(MEMBERS)
        self._rooms: dict[str, Room] = {}  # this process's connections, per room
        # (room, nick key) -> until when (monotonic) this process's lease on a nickname held
        # here is known valid: when the JOIN that set it was sent, plus the lease. Past it,
        # the nickname is used for nothing before Redis says again that it is ours.
        self._valid_until: dict[tuple[str, str], float] = {}
        self._lost: dict[tuple[str, str], Lost] = {}  # (room, connection) -> told on a loss
        hub.on_gap(self._catch_up)
        # Holders of cookie-less connections, for every room of this process: a room's Room
        # goes when its last connection here leaves, its log stays, and a serial given again
        # would hand the private history of a holder gone to whoever gets it next.
        self._serials = itertools.count(1)
        self._floor: dict[str, int] = {}  # room -> above every id this process has seen
        # room -> the highest id handed out here without Redis, which Redis's sequence must
        # pass (``RAISE``) before another process's next message gets an id below it.
        self._owed: dict[str, int] = {}
        self._offset_ms = 0.0  # Redis's clock minus this process's, in milliseconds
        self._refused_logged = False  # a refused call was logged since the last success
        self._outage = Outage(log, url, "chat", "rooms are local to each process until it "
                              "answers", "chat rooms are shared again")
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Future[Any]] = set()  # tasks inside a call to Redis
        self._closing = False
        self.unshared = 0  # messages delivered in this process only, Redis being down
        self.conflicts = 0  # nicknames found held elsewhere when claimed again
        self.fenced = 0  # nicknames taken from this process's connections (fencing)
        self.waited_out = 0  # calls that waited longer than ``timeout`` for their turn

    # Lifecycle

    async def start(self) -> None:
        """Check Redis and start renewing leases; with Redis down, start degraded."""
        try:
            await self._call(self._sync_clock)
        except Unavailable:
            log.warning("starting without Redis for chat: rooms are local until it answers")
        self._tasks.append(asyncio.create_task(self._renew_forever(), name="chat-leases"))

    async def aclose(self) -> None:
        """Give back the leases of closing connections, stop renewing, disconnect."""
        self._closing = True
        if self._busy:  # connections closing at shutdown give their nicknames back
            await asyncio.wait(self._busy, timeout=self.timeout)
        await self._give_back_all()
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)  # a task inside a Redis call may swallow one cancel
        await self.batcher.aclose()
        await close(self._redis)

    async def _give_back_all(self) -> None:
        """Give back the lease of every nickname still held here (connections that did not
        answer the server's close are not gone yet), so a graceful stop frees them at once,
        not after the lease; the room hears each one that is free now leave."""
        if not self._outage.healthy():
            return
        held = [(room, member.nick, holder_tag(member.holder, self.process))
                for room, local in self._rooms.items() for member in local.members()]
        self._rooms.clear()

        async def give_back(room: str, nick: str, tag: str) -> None:
            # Not through _call: the state is closing. Batched, they share pipelines.
            if self.batcher.batching:
                free = await self._give_back(room, nick_key(nick), tag)
            else:
                async with self._turns:
                    free = await self._give_back(room, nick_key(nick), tag)
            if free:
                self.hub.publish(room_topic(room), {"type": "left", "room": room, "nick": nick})

        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*(give_back(*each) for each in held))
        except FAILURES as error:
            log.warning("stopping: some nicknames were not given back to Redis (%s); they "
                        "are free when their lease runs out", str(error) or type(error).__name__)

    def healthy(self) -> bool:
        """False while Redis is known to be down."""
        return self._outage.healthy()

    @property
    def stats(self) -> dict[str, int]:
        """Counters for the metrics, each exported as ``realtime_chat_<name>_total``."""
        return {"unshared_messages": self.unshared, "nickname_conflicts": self.conflicts,
                "nicknames_fenced": self.fenced, "calls_waited_out": self.waited_out}

    # Keys

    def _key(self, room: str, part: str) -> str:
        """The key of one part of a room's state; the room is its hash tag (one slot)."""
        return f"{self.prefix}chat:{tagged(room)}:{part}"

    def _nick_key(self, room: str, key: str) -> str:
        return self._key(room, f"nick:{key}")

    # Connections

    async def enter(self, room: str, connection: str, cookie: Optional[str],
                    lost: Optional[Lost] = None) -> None:
        local = self._rooms.get(room)
        if local is None:
            local = self._rooms[room] = Room(room, history=0, replay=0, serials=self._serials)
        local.enter(connection, cookie)
        if lost is not None:
            self._lost[(room, connection)] = lost

    async def join(self, room: str, connection: str, raw_nick: object) -> Joined:
        local = self._local(room)
        nick = normalize_nick(raw_nick)
        key = nick_key(nick)
        current = local.nick(connection)
        held = local.member(nick)
        if held is not None:
            await self._prove(room, held.nick)  # else it is lost, and asked of Redis below
        if local.member(nick) is not None or (current is not None and nick_key(current) == key):
            # Held here already: shared by this holder (or refused), as in one process.
            return await self._settle(room, connection, local.join(connection, nick))
        tag = self._tag(room, connection)
        sent = self._monotonic()
        try:
            status, shown, was = await self._call(
                lambda: self._claim(room, key, tag, nick), turn=not self.batcher.batching)
        except Unavailable:
            # Another process may hold it: only Redis grants a nickname.
            raise ClientError(UNAVAILABLE, "Nicknames cannot be checked right now; try again "
                              "in a moment.") from None
        if status == 0:
            raise ClientError("nick_taken", f"The nickname {shown} is taken in this room.")
        if was is not None:  # the lapsed member it replaces leaves first
            self._announce_left(room, was)
        gained = status != 1
        if local.holder(connection) is None:  # closed while Redis answered
            if gained:
                await self._release(room, key, tag)
            raise ClientError("bad_message", "The connection closed.")
        self._leased(room, key, sent)
        joined = local.join(connection, shown)
        return await self._settle(room, connection, Joined(joined.nick, gained, joined.left))

    async def close(self, room: str, connection: str) -> Optional[str]:
        local = self._rooms.get(room)
        if local is None or local.holder(connection) is None:
            return None
        tag = self._tag(room, connection)
        self._lost.pop((room, connection), None)
        left = local.close(connection)
        if local.empty:
            del self._rooms[room]
        if left is None:
            return None
        self._valid_until.pop((room, nick_key(left)), None)
        return left if await self._release(room, nick_key(left), tag) else None

    # Messages

    async def say(self, room: str, connection: str, raw_text: object) -> Message:
        local = self._local(room)
        text = check_text(raw_text)
        sender = local.nick(connection)
        if sender is not None:  # (no coroutine to await for an anonymous sender)
            sender = await self._speaker(room, sender)
        if sender is None:
            label = guest_label(self._tag(room, connection))
            frame = self._frame("message", None, text, from_label=label)
        else:
            frame = self._frame("message", sender, text)
        return await self._append(room, frame, None, [room_topic(room)])

    async def whisper(
        self, room: str, connection: str, raw_to: object, raw_text: object
    ) -> Message:
        local = self._local(room)
        text = check_text(raw_text)
        if not isinstance(raw_to, str):
            raise ClientError("bad_message", 'The "to" field must be a nickname string.')
        sender = local.nick(connection)
        if sender is None:
            raise ClientError("nick_required", "Take a nickname before sending private messages.")
        await self._speaker(room, sender)
        recipient = await self._find(room, raw_to)
        if recipient is None:
            raise ClientError(
                "no_such_user", f"Nobody called {raw_to.strip()[:MAX_NICK_LENGTH]} is in this room."
            )
        to_tag, to_nick = recipient
        from_tag = self._tag(room, connection)
        parties = {nick_key(sender): from_tag, nick_key(to_nick): to_tag}
        topics = [private_topic(room, to_nick, to_tag)]
        mine = private_topic(room, sender, from_tag)
        if mine not in topics:
            topics.append(mine)
        frame = self._frame("private", sender, text, to=to_nick)
        return await self._append(room, frame, parties, topics)

    async def replay(self, room: str, connection: str, since: Optional[int]) -> Replay:
        local = self._local(room)
        nick = local.nick(connection)
        viewer = (nick_key(nick), self._tag(room, connection)) if nick is not None else None
        try:
            first, last, entries = await self._call(lambda: self._read(room, since))
        except Unavailable:
            return Replay([], None if since is None else False)
        # What the log holds reaches this process's listener before the welcome is sent:
        # held and filtered against the history, never delivered again after it.
        await self.broker.caught_up()
        if last is not None:
            self._see(room, last)
            # This connection holds the room up to ``last``: a catch-up starts there at
            # the latest (``delivered`` knows when it must not raise the mark).
            self.broker.delivered(room_topic(room), last)
        visible = [(frame, size) for frame, size, parties in entries
                   if parties is None
                   or (viewer is not None and parties.get(viewer[0]) == viewer[1])]
        if since is not None:
            complete = (
                first is not None and last is not None and first - 1 <= since <= last
                and (since == last or (bool(entries) and entries[0][0]["id"] == since + 1))
            ) or (since == 0 and _whole_run(first, entries))
            if complete:
                fitting = self._newest_fitting(visible, len(visible))
                if len(fitting) == len(visible):
                    return Replay(fitting, True)
            newest = await self.replay(room, connection, None)
            return Replay(newest.history, False)
        return Replay(self._newest_fitting(visible, self.history), None)

    async def earlier(self, room: str, cookie: Optional[str], before: int, limit: int) -> Earlier:
        viewer = holder_tag(cookie, self.process) if cookie is not None else None
        try:
            sized, more = await self._call(lambda: self._read_before(room, viewer, before, limit))
        except Unavailable:
            raise ClientError(UNAVAILABLE, "History cannot be read right now; try again "
                              "in a few seconds.") from None
        page = newest_fitting(sized, limit, self.welcome_bytes)
        return Earlier(page, more or len(page) < len(sized))

    async def online(self, room: str) -> list[str]:
        try:
            return await self._call(lambda: self._sweep(room), turn=not self.batcher.batching)
        except Unavailable:
            self._fence_lapsed()  # what this process can no longer prove it holds is not shown
            local = self._rooms.get(room)
            return local.online() if local is not None else []

    def nick(self, room: str, connection: str) -> Optional[str]:
        local = self._rooms.get(room)
        return local.nick(connection) if local is not None else None

    def private_topic(
        self, room: str, connection: str, nick: Optional[str] = None
    ) -> Optional[str]:
        local = self._rooms.get(room)
        if local is None or local.holder(connection) is None:
            return None
        nick = nick if nick is not None else local.nick(connection)
        return None if nick is None else private_topic(room, nick, self._tag(room, connection))

    def readers(self, room: str) -> int:
        local = self._rooms.get(room)
        return local.readers() if local is not None else 0

    def empty(self, room: str) -> bool:
        local = self._rooms.get(room)
        return local is None or local.empty

    # Internals

    def _local(self, room: str) -> Room:
        local = self._rooms.get(room)
        if local is None:
            raise ClientError("bad_message", "Not in this room.")
        return local

    def _tag(self, room: str, connection: str) -> str:
        holder = self._rooms[room].holder(connection)
        assert holder is not None, "a connection the room does not know"
        return holder_tag(holder, self.process)

    def _frame(self, kind: str, sender: Optional[str], text: str, **extra: Any) -> Message:
        frame: Message = {"type": kind, "id": 0, "room": None, "from": sender}
        frame.update(extra)
        frame["text"] = text
        frame["ts"] = int(self._clock() * 1000)
        return frame

    def _see(self, room: str, newest: int) -> None:
        if newest >= self._floor.get(room, 0):
            self._floor[room] = newest + 1

    async def _settle(self, room: str, connection: str, joined: Joined) -> Joined:
        """A local join is done: the nickname it gave up leaves the room only if no other
        process holds it for the same holder."""
        if joined.left is None:
            return joined
        self._valid_until.pop((room, nick_key(joined.left)), None)
        gone = await self._release(room, nick_key(joined.left), self._tag(room, connection))
        return joined if gone else Joined(joined.nick, joined.gained, None)

    async def _sweep(self, room: str) -> list[str]:
        """The room's members; those whose leases ran out (a crashed process's) leave it,
        each announced once, by whichever process found it gone."""
        online = self._key(room, "online")
        # A script too, so the sweep goes through the batcher alone and holds no connection
        # of the pool (``online`` runs outside the calls' turns when batching).
        members = [member.decode()
                   for member in await self._script(self._members, [online], [])]
        live, gone = await self._script(
            self._online, [online, self._key(room, "names"),
                           *(self._nick_key(room, member) for member in members)], members)
        for nick in gone:
            self._announce_left(room, nick.decode())
        return [nick.decode() for nick in live]

    async def _claim(
        self, room: str, key: str, tag: str, nick: str
    ) -> tuple[int, str, Optional[str]]:
        """The ``JOIN`` script: its status, the nickname as shown, and the lapsed member it
        replaced, who has to be announced left (status 3; as 2 here), or None."""
        reply = await self._script(
            self._join, [self._nick_key(room, key), self._key(room, "online"),
                         self._key(room, "names")],
            [tag, nick, self.process, int(self.lease * 1000), key])
        status, shown = int(reply[0]), reply[1]
        was = reply[2].decode() if status == 3 else None
        return min(status, 2), shown.decode() if isinstance(shown, bytes) else nick, was

    async def _release(self, room: str, key: str, tag: str) -> bool:
        """Give back this process's lease on a nickname; whether it is free now."""
        try:
            return await self._call(lambda: self._give_back(room, key, tag),
                                    turn=not self.batcher.batching)
        except Unavailable:
            return True  # as far as this process can tell

    async def _give_back(self, room: str, key: str, tag: str) -> bool:
        """The ``LEAVE`` script for one lease of this process: whether the nickname is free
        now."""
        return bool(await self._script(
            self._leave, [self._nick_key(room, key), self._key(room, "online"),
                          self._key(room, "names")],
            [tag, self.process, key]))

    async def _find(self, room: str, raw_to: str) -> Optional[tuple[str, str]]:
        """``(holder tag, nickname)`` of whoever holds ``raw_to`` in the room, anywhere."""
        local = self._rooms[room]
        member = local.member(raw_to)
        # Held here, by a lease known valid: no need to ask. Else Redis says who holds it.
        if member is not None and await self._prove(room, member.nick):
            return holder_tag(member.holder, self.process), member.nick
        try:
            key = nick_key(normalize_nick(raw_to))
        except ClientError:
            return None
        try:
            found = await self._call(
                lambda: self._script(self._lookup, [self._nick_key(room, key)], []),
                turn=not self.batcher.batching)
        except Unavailable:
            return None
        if not found:
            return None
        return found[0].decode(), found[1].decode()

    async def _append(
        self, room: str, frame: Message, parties: Optional[dict[str, str]], topics: list[str]
    ) -> Message:
        """Store ``frame`` in the room's log and publish it on ``topics``, everywhere."""
        frame["room"] = room
        head, tail = split_frame(frame)
        # The lowest id is read when the batcher builds the message's pipeline, after the
        # messages before it were handled: one shown here under an id of its own (not
        # stored) is followed by ids above it. The batcher runs messages in the order
        # they were sent.
        history = History(
            self._redis, self._key(room, "meta"), self._key(room, "log"),
            orjson.dumps(parties) if parties else b"", self.log_length,
            lambda: self._floor.get(room, 0), ROOM_TTL, self._deadline_of(), self.batcher)
        try:
            stored = await self._call(
                lambda: self.hub.publish_with_history(topics, head, tail, history),
                turn=False, bounded=True)
        except Unavailable:
            stored = None
        if stored is not None:
            message_id = stored
        else:
            # Never stored, with an id above all this process saw (and above the clock's,
            # like a new run): Redis continues above it. Delivered here only: elsewhere,
            # where ids of other processes' own are shown, it would arrive out of order,
            # late (a broker queue held up by a frozen Redis).
            message_id = max(self._floor.get(room, 0), int(self._clock() * 1_000_000))
            self._owed[room] = message_id
            self.unshared += 1
            envelope = Envelope(head + str(message_id).encode() + tail)
            for topic in topics:
                self.hub.publish_here(topic, envelope)
        self._see(room, message_id)
        frame["id"] = message_id
        return frame

    def _deadline_of(self) -> Callable[[], int]:
        """The deadline of a message sent now: Redis milliseconds after which it is not
        stored, read when its pipeline is built.

        Redis stores nothing once a call has half its time left: a reply that would come
        after ``timeout`` (Redis frozen, the call queued) is never a second copy of a
        message shown here under its own id. Every message of a pipeline takes the
        deadline of its first one (the earliest, as messages are sent in order), so if one
        of them is too late, every later one is too: none is stored under an id below one
        shown here. A pipeline chained behind one not answered yet (the batcher's
        ``chained``: it was built before the replies of the one before were known) takes
        that one's deadline if it is earlier, for the same reason: Redis runs it after the
        one before, so if that one's messages were too late, so are its.
        """
        own = int(time.time() * 1000 + self._offset_ms + self.timeout * 500)

        def deadline() -> int:
            pipeline, first = self._deadline
            current = self.batcher.pipelines
            if pipeline != current:  # the first message of this pipeline
                if not (self.batcher.chained and pipeline == current - 1):
                    first = own  # the pipeline before has no message, or is answered
                first = min(first, own)
                self._deadline = (current, first)
                return first
            return min(first, own)

        return deadline

    async def _script(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """Run one of the nickname scripts: in the pipeline of this loop turn, or on its
        own with pipelining off."""
        if self.batcher.batching:
            return await self.batcher.call(script, keys, args)
        return await script(keys=keys, args=args)

    async def _read(
        self, room: str, since: Optional[int]
    ) -> tuple[Optional[int], Optional[int], list[tuple[Message, int, Optional[dict[str, str]]]]]:
        """``first``, ``last`` and the log's entries after ``since`` (or the newest),
        oldest first, each as ``(frame, size, parties)``, read in one transaction."""
        first, last, raw = await self._read_raw(room, since)
        entries = [(orjson.loads(data), len(data), orjson.loads(parties) if parties else None)
                   for _, data, parties in raw]
        return first, last, entries

    async def _read_raw(
        self, room: str, since: Optional[int]
    ) -> tuple[Optional[int], Optional[int], list[RawEntry]]:
        """``first``, ``last`` and the log's entries after ``since`` (or the newest),
        oldest first, as stored, read in one transaction."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._key(room, "meta"), "first", "last")
            if since is None:
                pipe.xrevrange(self._key(room, "log"), "+", "-", count=self.log_length)
            else:
                pipe.xrange(self._key(room, "log"), f"{max(since + 1, 0)}-0", "+",
                            count=self.log_length)
            (first, last), raw = await pipe.execute()
        if since is None:
            raw.reverse()
        entries = [(int(entry_id.split(b"-", 1)[0]), fields[b"f"], fields.get(b"p"))
                   for entry_id, fields in raw]
        return (int(first) if first else None, int(last) if last else None, entries)

    async def _read_before(self, room: str, viewer: Optional[str], before: int,
                           limit: int) -> tuple[list[tuple[Message, int]], bool]:
        """Up to ``limit`` ``(frame, size)`` of the log below id ``before`` that ``viewer``
        (a holder tag) may see, oldest first, read newest first (``XREVRANGE``) a batch at a
        time, skipping the private messages of others, never past ``log_length`` entries
        (all the log holds); and whether the log may hold older ones."""
        found: list[tuple[Message, int]] = []
        end, scanned = before - 1, 0
        while len(found) < limit and scanned < self.log_length and end >= 0:
            batch = min(limit + 1, self.log_length - scanned)
            raw = await self._redis.xrevrange(self._key(room, "log"), f"{end}-0", "-",
                                              count=batch)
            scanned += len(raw)
            for at, (entry_id, fields) in enumerate(raw):
                end = int(entry_id.split(b"-")[0]) - 1
                parties = fields.get(b"p")
                if parties and viewer not in orjson.loads(parties).values():
                    continue
                data = fields[b"f"]
                found.append((orjson.loads(data), len(data)))
                if len(found) == limit:
                    found.reverse()
                    return found, at + 1 < len(raw) or len(raw) == batch
            if len(raw) < batch:
                break  # the start of the log
        found.reverse()
        return found, False  # the whole log (at most ``log_length`` entries) was read

    # Gaps

    async def _catch_up(self, topics: set[str]) -> set[str]:
        """The hub's gap handler: catch up the chat topics among ``topics`` (see Gaps in
        the module docstring); returns them."""
        by_room: dict[str, set[str]] = {}
        for topic in topics:
            room = room_of_topic(topic)
            if room is not None:
                by_room.setdefault(room, set()).add(topic)
        # One wait for Redis for all the rooms, not one each: the hub's deadline is shared.
        deadline = time.monotonic() + GAP_WAIT
        for room, mine in by_room.items():
            if room not in self._rooms:
                continue  # nobody here: the topics are left to be ended (none listens)
            try:
                await self._catch_up_room(room, mine, deadline)
            except Unavailable:
                log.warning("room %s: messages missed while the Redis listener was cut off "
                            "cannot be read back; ending its connections here (they "
                            "reconnect with since)", room)
                self.hub.end_topics(mine)
        return {topic for room, mine in by_room.items() if room in self._rooms
                for topic in mine}

    async def _catch_up_room(self, room: str, topics: set[str], deadline: float) -> None:
        """Deliver what ``room``'s log holds after the last id delivered here, to those of
        ``topics`` it was published on, then the room's members.

        Raises:
            Unavailable: the log does not hold all that was missed, or Redis did not
                answer before ``deadline`` (monotonic).
        """
        known = [self.broker.last_id(topic) for topic in topics | {room_topic(room)}]
        after = max((mark for mark in known if mark is not None), default=None)
        first, last, entries = await self._call_before(
            deadline, lambda: self._read_raw(room, after))
        if after is None:  # nothing delivered here yet: everything the run holds is new
            if first is None:
                return
            after = first - 1
        complete = (
            first is not None and last is not None and first - 1 <= after <= last
            and (after == last or (bool(entries) and entries[0][0] == after + 1))
        )
        if not complete:
            raise Unavailable()
        for message_id, data, parties in entries:
            envelope = Envelope(data)
            for topic in self._topics_of(room, parties):
                if topic in topics:
                    self.broker.deliver_recovered(topic, envelope, message_id)
        assert last is not None
        for topic in topics:
            self.broker.delivered(topic, last)
        online = await self.online(room)
        self.hub.publish_here(room_topic(room), {"type": "online", "room": room,
                                                 "online": online})

    @staticmethod
    def _topics_of(room: str, parties: Optional[bytes]) -> list[str]:
        """The topics a log entry was published on: the room's, or its parties'."""
        if not parties:
            return [room_topic(room)]
        return [private_topic_of_key(room, key, tag)
                for key, tag in orjson.loads(parties).items()]

    async def _call_before(self, deadline: float, job: Callable[[], Awaitable[T]]) -> T:
        """``_call``, tried again while Redis is down until ``deadline`` (monotonic)."""
        while True:
            try:
                return await self._call(job)
            except Unavailable:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.1)

    def _newest_fitting(self, messages: list[tuple[Message, int]], count: int) -> list[Message]:
        """The newest ``count`` frames that fit in ``welcome_bytes``, oldest first."""
        return newest_fitting(messages, count, self.welcome_bytes)

    async def _call(self, job: Callable[[], Awaitable[T]], turn: bool = True,
                    bounded: bool = False) -> T:
        """Run ``job`` within ``timeout`` once its turn comes (within ``timeout`` too);
        with Redis down, raise ``Unavailable`` at once. ``turn=False`` for a job that only
        goes through the batcher: its pipeline, not each call, holds a connection.
        ``bounded=True`` for a job that is one batcher call: the batcher's deadline (one
        per pipeline, ``timeout``) bounds it, without a timer of its own per call.

        Only a lost connection or a timeout marks Redis down. A call that waited too long
        for its turn, or that Redis refused, fails alone with ``Unavailable``.
        """
        if not self._outage.healthy() or (
                self._closing and asyncio.current_task() not in self._busy):
            raise Unavailable()
        task = asyncio.current_task()
        if task is not None:
            self._busy.add(task)
        try:
            if turn:
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._turns.acquire()
                except TimeoutError:
                    self.waited_out += 1
                    raise Unavailable() from None
            try:
                if bounded:
                    result = await job()
                else:
                    async with asyncio.timeout(self.timeout):
                        result = await job()
            except OUTAGES as error:
                self._went_down(error)
                raise Unavailable() from error
            except RedisError as error:
                if not self._refused_logged:
                    self._refused_logged = True
                    log.warning("Redis at %s refused a chat call: %s", self.url, error)
                raise Unavailable() from error
            finally:
                if turn:
                    self._turns.release()
            self._refused_logged = False
            return result
        finally:
            self._busy.discard(task)  # type: ignore[arg-type]

    async def _sync_clock(self) -> None:
        """Measure how far Redis's clock is from this process's (scripts' deadlines)."""
        before = time.time()
        seconds, micros = await self._redis.time()
        after = time.time()
        self._offset_ms = seconds * 1000 + micros / 1000 - (before + after) * 500

    async def _pay_owed(self) -> None:
        """Have each room's sequence continue above the ids handed out here alone."""
        for room, highest in list(self._owed.items()):
            await self._raise(keys=[self._key(room, "meta"), self._key(room, "log")],
                              args=[highest, ROOM_TTL])
            if self._owed.get(room) == highest:
                del self._owed[room]

    def _went_down(self, error: BaseException) -> None:
        if not self._closing and self._outage.failed(error):
            self._tasks.append(asyncio.create_task(self._probe(), name="chat-probe"))

    async def _probe(self) -> None:
        """Until Redis answers, then claim this process's nicknames again."""
        await probe(self._back, self.timeout)
        self._outage.answered()
        await self._renew()

    async def _back(self) -> None:
        """What must reach Redis before any message of this process is shared again (and
        as soon as possible, for the other processes'): ids never go backwards."""
        await self._sync_clock()
        await self._pay_owed()

    async def _renew_forever(self) -> None:
        while True:
            # Every third of the lease, and when a lease is due to run out (Redis
            # unreachable meanwhile): a nickname is given up the moment it cannot be proven.
            wait = self.lease / 3
            earliest = min(self._valid_until.values(), default=math.inf)
            await asyncio.sleep(max(0.01, min(wait, earliest - self._monotonic())))
            await self._renew()

    async def _renew(self) -> None:
        """Renew (or claim again) the lease of every nickname held in this process, then
        announce the members of its rooms whose leases ran out elsewhere. A nickname Redis
        says another holder has is lost here; so is every one whose lease ran out while
        Redis could not be reached (``_fence``)."""
        try:
            await self._call(self._sync_clock)
            if self._owed:  # ids handed out alone while Redis answered late
                await self._call(self._pay_owed)
        except Unavailable:
            self._fence_lapsed()
            return
        for room, local in list(self._rooms.items()):
            # A room's leases all at once: with pipelining on, in one pipeline.
            renewed = await asyncio.gather(
                *(self._renew_one(room, member.nick, member.holder)
                  for member in local.members()),
                return_exceptions=True)
            for outcome in renewed:
                if isinstance(outcome, Unavailable):
                    self._fence_lapsed()
                    return
                if isinstance(outcome, BaseException):
                    raise outcome
            try:
                await self._call(lambda: self._sweep(room), turn=not self.batcher.batching)
            except Unavailable:
                return

    async def _renew_one(self, room: str, nick: str, holder: Any) -> bool:
        """Renew this process's lease on ``nick`` (``JOIN``); whether it is still held here.

        Raises:
            Unavailable: Redis did not answer (the lease stands as it was).
        """
        key = nick_key(nick)
        tag = holder_tag(holder, self.process)
        sent = self._monotonic()
        status, shown, was = await self._call(
            lambda: self._claim(room, key, tag, nick), turn=not self.batcher.batching)
        local = self._rooms.get(room)
        member = local.member(nick) if local is not None else None
        if member is None:  # left (or lost) while Redis answered
            self._valid_until.pop((room, key), None)
            return False
        if member.holder != holder:  # and taken again by another connection here
            return False
        if status == 0:
            self.conflicts += 1
            self._fence(room, key, "another process holds it now: its lease here ran out "
                        "before this process could renew it")
            return False
        self._leased(room, key, sent)
        if was is not None:  # its own lapsed lease: the room hears it leave and come back
            self._announce_left(room, was)
        if status == 2:  # its lease had run out (an outage): present again
            self.hub.publish(room_topic(room), {"type": "joined", "room": room,
                                                "nick": shown})
        return True

    # Fencing: a nickname is used only while this process can prove it holds it.

    def _leased(self, room: str, key: str, sent: float) -> None:
        """A ``JOIN`` sent at ``sent`` (monotonic) renewed this process's lease on ``key``:
        Redis set it to end a lease after its own clock when the script ran, which is no
        earlier than when it was sent."""
        until = sent + self.lease
        if until > self._valid_until.get((room, key), -math.inf):
            self._valid_until[(room, key)] = until

    def _covers(self, room: str, nick: str, margin: float = 0.0) -> bool:
        """Whether this process's lease on ``nick`` is known valid ``margin`` seconds from
        now."""
        until = self._valid_until.get((room, nick_key(nick)), -math.inf)
        return until > self._monotonic() + margin

    async def _prove(self, room: str, nick: str, margin: float = 0.0) -> bool:
        """Whether ``nick``, held here, is still this process's for ``margin`` seconds: its
        lease known valid, or else renewed now. A nickname another holder has, or one whose
        lease ran out while Redis cannot be reached, is lost (``_fence``)."""
        if self._covers(room, nick, margin):
            return True
        local = self._rooms.get(room)
        member = local.member(nick) if local is not None else None
        if member is None:
            return False
        try:
            return await self._renew_one(room, member.nick, member.holder)
        except Unavailable:
            if self._covers(room, nick):
                return True  # valid still; Redis stores nothing meanwhile anyway
            self._fence(room, nick_key(nick), "its lease ran out and Redis could not be "
                        "reached to renew it")
            return False

    async def _speaker(self, room: str, nick: Optional[str]) -> Optional[str]:
        """``nick``, as a message is sent under it, once proven held until the message's
        deadline in Redis (half of ``timeout``, see ``_append``): Redis runs it while the
        lease is this process's, or not at all.

        Raises:
            ClientError: ``nick_lost`` if this process no longer holds it.
        """
        if nick is None or await self._prove(room, nick, self.timeout / 2):
            return nick
        raise ClientError(NICK_LOST, f"Your message was not sent: the nickname {nick} is no "
                          "longer yours. Pick a nickname and send it again.")

    def _fence(self, room: str, key: str, why: str) -> None:
        """The nickname ``key`` is not this process's any more: each connection holding it
        here becomes anonymous and is told (``nick_lost``), once.

        The room hears it left from Redis's side, once, in order: from the process that
        takes it over (``JOIN`` status 3, before its ``joined``), or from the first sweep
        that finds its lease lapsed (``ONLINE``). A ``left`` from here would come after
        the new holder's ``joined`` and strike the nickname off every list while it is
        held; with Redis unreachable it could not reach the other processes anyway.
        """
        self._valid_until.pop((room, key), None)
        local = self._rooms.get(room)
        lost = local.unname(key) if local is not None else None
        if lost is None:
            return
        nick, connections = lost
        self.fenced += 1
        log.warning("room %s: the nickname %s is no longer held by this process (%s); its %d "
                    "connection(s) here are anonymous now", room, nick, why, len(connections))
        for connection in connections:
            told = self._lost.get((room, connection))
            if told is not None:
                told(nick)

    def _fence_lapsed(self) -> None:
        """Redis cannot be reached: every nickname whose lease is past is lost, since
        another process may have been granted it."""
        now = self._monotonic()
        for (room, key), until in list(self._valid_until.items()):
            if until <= now:
                self._fence(room, key, "its lease ran out and Redis could not be reached to "
                            "renew it")

    def _announce_left(self, room: str, nick: str) -> None:
        self.hub.publish(room_topic(room), {"type": "left", "room": room, "nick": nick})
