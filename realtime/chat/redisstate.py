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
  bounded by ``--chat-replay`` entries (``MAXLEN``, exact);
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
atomically and announced ``left`` by the process that removed it, once.

Faults. At most ``CONCURRENT_CALLS`` calls run at once; the others wait their turn (up to
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
"""

import asyncio
import itertools
import logging
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
    check_text, nick_key, normalize_nick,
)
from realtime.chat.state import Replay, holder_tag, private_topic, room_topic
from realtime.ops.tasks import cancel_all
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.pubsub.redisbroker import History, RedisBroker
from realtime.storage.redisdown import FAILURES, Outage, probe
from realtime.storage.rediskeys import client, close, tagged
from realtime.wire.messages import UNAVAILABLE, ClientError, Message, encode

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
# {2, shown} if it was free (the room gained a member).
JOIN = _NICK_OF + """
local holder, shown, live, expired = nick_of(KEYS[1])
for _, name in ipairs(expired) do redis.call('HDEL', KEYS[1], name) end
if live and holder ~= ARGV[1] then return {0, shown} end
local status = 1
if not live then
    status = 2
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


class Unavailable(Exception):
    """Redis is down (or was, and has not answered a PING since)."""


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
        self.process = os.urandom(6).hex()  # names this process's leases and serials
        # Two connections beyond the calls' for the probe and the clock, which bypass
        # ``_turns``: the pool itself is never what refuses a call.
        self._redis = client(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2,
            client_name="realtime-chat", max_connections=CONCURRENT_CALLS + 2,
        )
        self._turns = asyncio.Semaphore(CONCURRENT_CALLS)
        self._raise = self._redis.register_script(RAISE)
        self._join = self._redis.register_script(JOIN)
        self._leave = self._redis.register_script(LEAVE)
        self._lookup = self._redis.register_script(LOOKUP)
        self._online = self._redis.register_script(ONLINE)
        self._rooms: dict[str, Room] = {}  # this process's connections, per room
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
        self._appending = asyncio.Lock()  # messages are appended one at a time, in order
        self._outage = Outage(log, url, "chat", "rooms are local to each process until it "
                              "answers", "chat rooms are shared again")
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Future[Any]] = set()  # tasks inside a call to Redis
        self._closing = False
        self.unshared = 0  # messages delivered in this process only, Redis being down
        self.conflicts = 0  # nicknames found held elsewhere when claimed again
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
            async with self._turns:  # not through _call: the state is closing
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
                "calls_waited_out": self.waited_out}

    # Keys

    def _key(self, room: str, part: str) -> str:
        """The key of one part of a room's state; the room is its hash tag (one slot)."""
        return f"{self.prefix}chat:{tagged(room)}:{part}"

    def _nick_key(self, room: str, key: str) -> str:
        return self._key(room, f"nick:{key}")

    # Connections

    async def enter(self, room: str, connection: str, cookie: Optional[str]) -> None:
        local = self._rooms.get(room)
        if local is None:
            local = self._rooms[room] = Room(room, history=0, replay=0, serials=self._serials)
        local.enter(connection, cookie)

    async def join(self, room: str, connection: str, raw_nick: object) -> Joined:
        local = self._local(room)
        nick = normalize_nick(raw_nick)
        key = nick_key(nick)
        current = local.nick(connection)
        if local.member(nick) is not None or (current is not None and nick_key(current) == key):
            # Held here already: shared by this holder (or refused), as in one process.
            return await self._settle(room, connection, local.join(connection, nick))
        tag = self._tag(room, connection)
        gained, shown = True, nick
        try:
            status, shown = await self._call(lambda: self._claim(room, key, tag, nick))
        except Unavailable:
            # Another process may hold it: only Redis grants a nickname.
            raise ClientError(UNAVAILABLE, "Nicknames cannot be checked right now; try again "
                              "in a moment.") from None
        if status == 0:
            raise ClientError("nick_taken", f"The nickname {shown} is taken in this room.")
        gained = status == 2
        if local.holder(connection) is None:  # closed while Redis answered
            if gained:
                await self._release(room, key, tag)
            raise ClientError("bad_message", "The connection closed.")
        joined = local.join(connection, shown)
        return await self._settle(room, connection, Joined(joined.nick, gained, joined.left))

    async def close(self, room: str, connection: str) -> Optional[str]:
        local = self._rooms.get(room)
        if local is None or local.holder(connection) is None:
            return None
        tag = self._tag(room, connection)
        left = local.close(connection)
        if local.empty:
            del self._rooms[room]
        if left is None:
            return None
        return left if await self._release(room, nick_key(left), tag) else None

    # Messages

    async def say(self, room: str, connection: str, raw_text: object) -> Message:
        local = self._local(room)
        text = check_text(raw_text)
        frame = self._frame("message", local.nick(connection), text)
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
        visible = [(frame, size) for frame, size, parties in entries
                   if parties is None
                   or (viewer is not None and parties.get(viewer[0]) == viewer[1])]
        if since is not None:
            complete = (
                first is not None and last is not None and first - 1 <= since <= last
                and (since == last or (bool(entries) and entries[0][0]["id"] == since + 1))
            )
            if complete:
                fitting = self._newest_fitting(visible, len(visible))
                if len(fitting) == len(visible):
                    return Replay(fitting, True)
            newest = await self.replay(room, connection, None)
            return Replay(newest.history, False)
        return Replay(self._newest_fitting(visible, self.history), None)

    async def online(self, room: str) -> list[str]:
        try:
            return await self._call(lambda: self._sweep(room))
        except Unavailable:
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
        gone = await self._release(room, nick_key(joined.left), self._tag(room, connection))
        return joined if gone else Joined(joined.nick, joined.gained, None)

    async def _sweep(self, room: str) -> list[str]:
        """The room's members; those whose leases ran out (a crashed process's) leave it,
        each announced once, by whichever process found it gone."""
        online = self._key(room, "online")
        members = [member.decode() for member in await self._redis.zrange(online, 0, -1)]
        live, gone = await self._online(
            keys=[online, self._key(room, "names"),
                  *(self._nick_key(room, member) for member in members)],
            args=members)
        for nick in gone:
            self.hub.publish(room_topic(room), {"type": "left", "room": room,
                                                "nick": nick.decode()})
        return [nick.decode() for nick in live]

    async def _claim(self, room: str, key: str, tag: str, nick: str) -> tuple[int, str]:
        status, shown = await self._join(
            keys=[self._nick_key(room, key), self._key(room, "online"),
                  self._key(room, "names")],
            args=[tag, nick, self.process, int(self.lease * 1000), key])
        return int(status), shown.decode() if isinstance(shown, bytes) else nick

    async def _release(self, room: str, key: str, tag: str) -> bool:
        """Give back this process's lease on a nickname; whether it is free now."""
        try:
            return await self._call(lambda: self._give_back(room, key, tag))
        except Unavailable:
            return True  # as far as this process can tell

    async def _give_back(self, room: str, key: str, tag: str) -> bool:
        """The ``LEAVE`` script for one lease of this process: whether the nickname is free
        now."""
        return bool(await self._leave(
            keys=[self._nick_key(room, key), self._key(room, "online"),
                  self._key(room, "names")],
            args=[tag, self.process, key]))

    async def _find(self, room: str, raw_to: str) -> Optional[tuple[str, str]]:
        """``(holder tag, nickname)`` of whoever holds ``raw_to`` in the room, anywhere."""
        local = self._rooms[room]
        member = local.member(raw_to)
        if member is not None:
            return holder_tag(member.holder, self.process), member.nick
        try:
            key = nick_key(normalize_nick(raw_to))
        except ClientError:
            return None
        try:
            found = await self._call(lambda: self._lookup(keys=[self._nick_key(room, key)]))
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
        async with self._appending:
            floor = self._floor.get(room, 0)
            # Redis stores nothing once this call has half its time left: a reply that
            # would come after ``timeout`` (Redis frozen, the call queued) is never a
            # second copy of a message shown here under its own id.
            deadline = int(time.time() * 1000 + self._offset_ms + self.timeout * 500)
            history = History(
                self._redis, self._key(room, "meta"), self._key(room, "log"),
                orjson.dumps(parties) if parties else b"", self.log_length, floor, ROOM_TTL,
                deadline)
            try:
                stored = await self._call(
                    lambda: self.hub.publish_with_history(topics, head, tail, history))
            except Unavailable:
                stored = None
            if stored is not None:
                message_id = stored
            else:
                # Never stored, with an id above all this process saw (and above the
                # clock's, like a new run): Redis continues above it. Delivered here only:
                # elsewhere, where ids of other processes' own are shown, it would arrive
                # out of order, late (a broker queue held up by a frozen Redis).
                message_id = max(floor, int(self._clock() * 1_000_000))
                self._owed[room] = message_id
                self.unshared += 1
                envelope = Envelope(head + str(message_id).encode() + tail)
                for topic in topics:
                    self.hub.publish_here(topic, envelope)
            self._see(room, message_id)
        frame["id"] = message_id
        return frame

    async def _read(
        self, room: str, since: Optional[int]
    ) -> tuple[Optional[int], Optional[int], list[tuple[Message, int, Optional[dict[str, str]]]]]:
        """``first``, ``last`` and the log's entries after ``since`` (or the newest),
        oldest first, each as ``(frame, size, parties)``, read in one transaction."""
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
        entries = []
        for _, fields in raw:
            data = fields[b"f"]
            parties = fields.get(b"p")
            entries.append((orjson.loads(data), len(data),
                            orjson.loads(parties) if parties else None))
        return (int(first) if first else None, int(last) if last else None, entries)

    def _newest_fitting(self, messages: list[tuple[Message, int]], count: int) -> list[Message]:
        """The newest ``count`` frames that fit in ``welcome_bytes``, oldest first."""
        taken: list[Message] = []
        room_left = self.welcome_bytes
        for frame, size in reversed(messages[-count:] if count > 0 else []):
            room_left -= size + 1
            if room_left < 0:
                break
            taken.append(frame)
        taken.reverse()
        return taken

    async def _call(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job`` within ``timeout`` once its turn comes (within ``timeout`` too);
        with Redis down, raise ``Unavailable`` at once.

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
            try:
                async with asyncio.timeout(self.timeout):
                    await self._turns.acquire()
            except TimeoutError:
                self.waited_out += 1
                raise Unavailable() from None
            try:
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
            await asyncio.sleep(self.lease / 3)
            await self._renew()

    async def _renew(self) -> None:
        """Renew (or claim again) the lease of every nickname held in this process, then
        announce the members of its rooms whose leases ran out elsewhere."""
        try:
            await self._call(self._sync_clock)
            if self._owed:  # ids handed out alone while Redis answered late
                await self._call(self._pay_owed)
        except Unavailable:
            return
        for room, local in list(self._rooms.items()):
            for member in local.members():
                tag = holder_tag(member.holder, self.process)
                key = nick_key(member.nick)
                try:
                    status, shown = await self._call(
                        lambda: self._claim(room, key, tag, member.nick))
                except Unavailable:
                    return
                if status == 0:
                    self.conflicts += 1
                    log.warning("room %s: the nickname %s held here is also held by another "
                                "process (its lease ran out before this process could renew "
                                "it)", room, shown)
                elif status == 2:  # its lease had run out (an outage): present again
                    self.hub.publish(room_topic(room), {"type": "joined", "room": room,
                                                        "nick": shown})
            try:
                await self._call(lambda: self._sweep(room))
            except Unavailable:
                return
