"""A broker on Redis pub/sub, so several server processes share topics.

``Hub(broker=RedisBroker("redis://127.0.0.1:6379/0"))``: the hub is unchanged, the broker
carries each publish to the other processes and hands theirs to the local hub.

Channels. One Redis channel per topic, ``<prefix>topic:<topic>`` with the topic's instance
as a hash tag, ``realtime:topic:chat.{lobby}`` (``realtime.storage.rediskeys.topic_channel``:
the channel is in the slot of the room's keys on a cluster). The listener SUBSCRIBEs a
topic's channel when the hub gets the topic's first local subscriber and UNSUBSCRIBEs it
when the last one leaves, so a process receives only what its clients listen to; it never
subscribes to a pattern. The hub's calls are synchronous: they update the wanted set and
wake the listener task, which sends the difference on its connection.

Redis Cluster (``redis+cluster://host:port``). Publishes are ``SPUBLISH`` (in ``APPEND``
too), and there is one listener (``realtime.pubsub.redislistener.Listener``) per master,
``SSUBSCRIBE``-ing the topics of that master's slots. The slot map comes from redis-py's
``RedisCluster`` (``CLUSTER SLOTS``), read at start, every ``REMAP_INTERVAL`` seconds,
every half second while a listener is down, and at once when a listener hears ``MOVED`` or
an unasked ``sunsubscribe`` (a slot moved); a topic whose master changed moves to the new
master's listener. ``ready()`` and ``caught_up()`` wait on each listener concerned.

Wire format. Each publish is serialized once into ``kind (1 byte) + origin (16 bytes) +
payload``: the kind is ``0x00`` for text and ``0x01`` for binary (other values are
reserved for later formats and ignored), the origin is this broker's random id, the
payload the envelope's bytes as they are. A message stored with history (``APPEND``) is
kind ``0x02``, text with its id: ``0x02 + origin + id (20 ASCII digits) + payload``, so the
listener knows the last id it delivered on each topic without parsing the payload. Several
messages of one history sent through a batcher share one script call, ``APPEND_MANY``
(``APPEND``'s steps once per message, in order), which publishes a run of consecutive
messages on the same channels as ONE message of kind ``0x03``: ``0x03 + origin``, then
for each message its length (10 ASCII digits, of its id and payload), its id (20 digits)
and its payload (``encode_batch``); the listener hands each to the hub with its id, in
order, as if they had come one by one.
``publish`` delivers to the local subscribers at once, so local delivery never waits on
Redis; the listener skips messages carrying its own
origin, so no process delivers its own message twice.

Publishing never blocks the loop: ``publish`` appends to a queue bounded in messages and
in bytes, and one publisher task sends what is queued in pipelined batches over one
connection (so a process's messages reach the others in the order it published them).
When the queue is full, or Redis is known to be down, the message is dropped and counted
(it still reached the local subscribers); a warning is logged once per outage (once per
overflow), never per message.

Faults. Each listener sends its own PING every ``ping_interval`` seconds and declares the
connection dead when nothing at all came back for ``timeout`` seconds (a half-open
connection, a paused Redis); a closed connection (Redis stopped, ``CLIENT KILL``, the
``client-output-buffer-limit`` of a slow subscriber) is noticed at once. Either way it
reconnects with jittered exponential backoff capped at ``max_backoff`` seconds, forever,
and resubscribes every wanted topic. ``healthy()`` is True only while the listener is
subscribed and hearing from Redis and the last publish did not fail; it turns True again
once Redis answers. Messages published by other processes while this one was cut off are
not in Redis pub/sub (it keeps nothing): see Gaps.

Gaps. Once the listener (every listener, on a cluster) is subscribed again after any
interruption (a reconnect, or a start without Redis), it calls ``_after_gap`` with every
wanted topic; on a cluster, a listener that took topics over from another master's (a slot
moved) calls it with those. Their live messages
are held (up to ``max_queue_bytes``), from the moment the connection was lost, so one
that arrives before the catch-up starts cannot hide what was missed, while the hub's gap
handlers catch the topics up (``Hub.catch_up``: the chat state delivers what each room's
log holds after the last id delivered here, ``deliver_recovered``; the polls send a fresh
tally) or end their subscribers (``CloseReason.GAP``); then the held messages follow, less
those the catch-up delivered already (by id). ``caught_up()`` waits for a catch-up in
progress.

Start. ``start()`` waits up to ``timeout`` seconds for the first connection, and if Redis
does not answer it logs a warning and returns anyway: the server starts degraded, serves
its local clients, answers 503 on ``/healthz`` and connects as soon as Redis answers (a
process restarted by systemd during a Redis outage should not crash-loop). A malformed URL
fails at once, in the constructor.
"""

import asyncio
import itertools
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Optional, Sequence, Union

from redis.asyncio import ConnectionPool
from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from realtime.ops.tasks import cancel_all
from realtime.pubsub.brokers import Deliver
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.redislistener import Listener
from realtime.storage.redisbatch import GROUP_CALLS, ScriptBatcher, fresh
from realtime.storage.rediskeys import AnyRedis, client, close, is_cluster, node_url, topic_channel

log = logging.getLogger("realtime.redis")

# The hub's gap callbacks (``attach_gaps``): catch topics up; end their subscribers.
Recover = Callable[[set[str]], Awaitable[None]]
Abandon = Callable[[set[str]], None]

KIND_TEXT = 0
KIND_BINARY = 1
KIND_TEXT_ID = 2  # text stored with history: its id follows the origin
KIND_BATCH = 3  # several KIND_TEXT_ID messages in one: each its length, id and payload
ORIGIN_SIZE = 16
HEADER_SIZE = 1 + ORIGIN_SIZE
ID_SIZE = 20  # digits of a history id in a KIND_TEXT_ID header, zero-padded
LENGTH_SIZE = 10  # digits of a message's length in a KIND_BATCH wire, zero-padded

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_MAX_QUEUE_BYTES = 16 * 1024 * 1024
# Seconds between two checks of a cluster's slot map while all is well (a slot migration
# also tells the listeners, with MOVED or an unasked sunsubscribe).
REMAP_INTERVAL = 5.0
# Messages per pipelined batch of PUBLISH commands.
PUBLISH_BATCH = 500

# Redis's clock in milliseconds, as ``now``.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Publish with history (``RedisBroker.publish_with_history``).
# KEYS: meta, log. ARGV: frame head, frame tail, parties ("" for public), max entries, the
# lowest id to hand out, ttl seconds, wire prefix (kind + origin; the id, 20 digits, is put
# after it), the deadline (Redis milliseconds), then broker channels.
# Returns the id as a string, or nil (nothing stored) past the deadline: the caller has
# given up on this call by then and shown the message under an id of its own.
#
# ``append_one(ARGV)`` takes a message's id and appends it to the log: its id as a string
# and its frame; false past the deadline. ``padded(sid)`` is the id as a KIND_TEXT_ID wire
# carries it (20 digits, zero-padded). The sequence is read once per script and written
# once, by ``save_last`` (the script is atomic: nobody sees it between), after every
# message, even one whose append failed (its id is used).
_APPEND_ONE = """
local got = redis.call('HGET', KEYS[1], 'last')
local last = got and tonumber(got)
local taken = false
local function append_one(ARGV)
    if now > tonumber(ARGV[8]) then return false end
    local id
    if last then
        id = math.max(last + 1, tonumber(ARGV[5]))
    else
        local t = redis.call('TIME')
        id = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(ARGV[5]))
        redis.call('DEL', KEYS[2])
        redis.call('HSET', KEYS[1], 'first', string.format('%.0f', id))
    end
    last, taken = id, true
    local sid = string.format('%.0f', id)
    local frame = ARGV[1] .. sid .. ARGV[2]
    if ARGV[3] == '' then
        redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], sid .. '-0', 'f', frame)
    else
        redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], sid .. '-0', 'f', frame, 'p', ARGV[3])
    end
    return sid, frame
end
local function padded(sid)
    return string.rep('0', 20 - #sid) .. sid
end
local function save_last()
    if taken then
        redis.call('HSET', KEYS[1], 'last', string.format('%.0f', last))
    end
end
-- A failed call's reply, as an error reply.
local function failure(reply)
    if type(reply) == 'table' and reply.err then return reply end
    return {err = tostring(reply)}
end
"""
APPEND = _NOW_MS + _APPEND_ONE + """
local ok, sid, frame = pcall(append_one, ARGV)
save_last()
if not ok then return failure(sid) end
if not sid then return false end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
local wire = ARGV[7] .. padded(sid) .. frame
for i = 9, #ARGV do
    redis.call('PUBLISH', ARGV[i], wire)
end
return sid
"""

# Several messages of one room in one script call (``History.batch``'s groups, see
# ``realtime.storage.redisbatch``): ``APPEND``'s steps once per message, in order, each
# with its own arguments. KEYS: as ``APPEND``'s. ARGV: each message's ``APPEND`` ARGV as a
# batcher's group sends them (``GROUP_CALLS``: those that end as the message before's,
# its room's bounds and channels, are not sent again). Returns one reply per message: its
# id, nil past the deadline, or an error reply (that message only; the ones before it stay
# stored).
# Redis's cost per message is only what is per message (its id, its log entry): the
# sequence is read and written once, the log and sequence are given their TTL once, and
# a run of consecutive messages published on the same channels goes as ONE publish per
# channel (a KIND_BATCH wire, ``encode_batch``, built by one ``table.concat``; a run of
# one, a plain KIND_TEXT_ID wire). Every message is still appended and published in one
# atomic step, and the publishes keep the messages' order.
APPEND_MANY = _NOW_MS + _APPEND_ONE + GROUP_CALLS + """
local replies = {}
-- The run being gathered: its wire's pieces (the batch header, then for each message its
-- length, padded id and frame), its wire prefix and its channels.
local run, run_prefix, run_channels = nil, nil, nil
local ttl
local function publish_run()
    if run == nil or #run == 1 then return end
    local wire
    if #run == 4 then  -- one message: a plain KIND_TEXT_ID wire
        wire = run_prefix .. run[3] .. run[4]
    else
        wire = table.concat(run)
    end
    for i = 1, #run_channels do
        redis.call('PUBLISH', run_channels[i], wire)
    end
end
-- Whether a message of ``args`` is published as the run's are (same wire prefix, same
-- channels): then it joins the run.
local function same_run(args)
    if run == nil or run_prefix ~= args[7] or #run_channels ~= #args - 8 then
        return false
    end
    for i = 9, #args do
        if run_channels[i - 8] ~= args[i] then return false end
    end
    return true
end
local joined = false  -- whether the message before joined the run
for args, given in calls() do
    -- Its wire prefix and channels (ARGV 7, 9...) are the message before's, in the run.
    local as_before = joined and given < 7
    joined = false
    local ok, sid, frame = pcall(append_one, args)
    if ok then
        replies[#replies + 1] = sid
        if sid then
            ttl = args[6]
            if not (as_before or same_run(args)) then
                publish_run()
                run_prefix = args[7]
                run = {string.char(3) .. string.sub(args[7], 2)}
                run_channels = {}
                for i = 9, #args do
                    run_channels[#run_channels + 1] = args[i]
                end
            end
            local n = #run
            run[n + 1] = string.format('%010d', 20 + #frame)
            run[n + 2] = padded(sid)
            run[n + 3] = frame
            joined = true
        end
    else
        replies[#replies + 1] = failure(sid)
    end
end
publish_run()
save_last()
if ttl then
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
end
return replies
"""
# The same on a Redis Cluster: sharded pub/sub, on channels of the log's slot.
APPEND_SHARDED = APPEND.replace("'PUBLISH'", "'SPUBLISH'")
APPEND_MANY_SHARDED = APPEND_MANY.replace("'PUBLISH'", "'SPUBLISH'")

# The origin of messages ``APPEND`` publishes: no broker's (theirs are random), so every
# process's listener delivers them, the publisher's included, in Redis's order.
SCRIPT_ORIGIN = bytes(ORIGIN_SIZE)
STORED_PREFIX = bytes((KIND_TEXT_ID,)) + SCRIPT_ORIGIN  # the wire prefix ``APPEND`` is given
CHANNELS_KEPT = 10_000  # topics whose channel ``publish_with_history`` remembers

# What a lost or refused Redis connection raises; redis-py wraps most OSErrors (a cluster
# with no node reachable raises RedisClusterException, no RedisError).
FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


def encode(envelope: Envelope, origin: bytes) -> bytes:
    """The Redis form of ``envelope`` published by ``origin``."""
    kind = KIND_BINARY if envelope.binary else KIND_TEXT
    return bytes((kind,)) + origin + envelope.data


def decode(data: bytes) -> Optional[tuple[bytes, list[tuple[Envelope, Optional[int]]]]]:
    """``(origin, [(envelope, history id or None), ...])`` from the Redis form (several
    messages for a KIND_BATCH wire, in order), or None if it is not one we know."""
    if len(data) < HEADER_SIZE:
        return None
    kind = data[0]
    if kind == KIND_TEXT_ID:
        digits = data[HEADER_SIZE:HEADER_SIZE + ID_SIZE]
        if len(digits) < ID_SIZE or not digits.isdigit():
            return None
        return data[1:HEADER_SIZE], [(Envelope(data[HEADER_SIZE + ID_SIZE:]), int(digits))]
    if kind == KIND_BATCH:
        messages = _unbatch(data)
        return None if messages is None else (data[1:HEADER_SIZE], messages)
    if kind not in (KIND_TEXT, KIND_BINARY):
        return None
    return data[1:HEADER_SIZE], [
        (Envelope(data[HEADER_SIZE:], binary=kind == KIND_BINARY), None)]


def _unbatch(data: bytes) -> Optional[list[tuple[Envelope, Optional[int]]]]:
    """The messages of a KIND_BATCH wire: after the header, for each, its length (10
    digits: of its id and payload), its id (20 digits) and its payload; None if malformed."""
    messages: list[tuple[Envelope, Optional[int]]] = []
    at, end = HEADER_SIZE, len(data)
    while at < end:
        length = data[at:at + LENGTH_SIZE]
        at += LENGTH_SIZE
        if len(length) < LENGTH_SIZE or not length.isdigit():
            return None
        stop = at + int(length)
        digits = data[at:at + ID_SIZE]
        if stop > end or len(digits) < ID_SIZE or not digits.isdigit():
            return None
        messages.append((Envelope(data[at + ID_SIZE:stop]), int(digits)))
        at = stop
    return messages or None


def encode_batch(messages: Sequence[tuple[int, bytes]], origin: bytes = bytes(ORIGIN_SIZE)
                 ) -> bytes:
    """The KIND_BATCH wire of ``messages`` ((history id, payload), in order), as
    ``APPEND_MANY`` builds it in Lua (for the tests and the benches' counter)."""
    parts = [bytes((KIND_BATCH,)) + origin]
    for message_id, payload in messages:
        body = str(message_id).zfill(ID_SIZE).encode() + payload
        parts.append(str(len(body)).zfill(LENGTH_SIZE).encode() + body)
    return b"".join(parts)


@dataclass
class History:
    """Where ``RedisBroker.publish_with_history`` keeps a message, and on what terms.

    Its keys and client are the caller's (the chat state's: its connections, its calls'
    bounds); the wire format and the channels are the broker's.
    """

    client: AnyRedis  # runs the script
    meta: str  # a hash: ``last``, the newest id handed out; ``first``, where this run began
    log: str  # a stream of the messages, entry id ``<message id>-0``, field ``f`` the frame
    extra: bytes  # the entry's field ``p`` (who may read it), or b"" for none
    length: int  # entries the log keeps
    # The lowest id to hand out; a function is called when the script is sent.
    floor: Union[int, Callable[[], int]]
    ttl: int  # seconds the log and sequence live after their last message
    # Redis milliseconds past which the script stores nothing; a function is called when
    # the script is sent.
    deadline: Union[int, Callable[[], int]]
    # Sends the script in the pipeline of its loop turn, in order with the other calls
    # made through it (``realtime.storage.redisbatch``); None: one call of its own.
    batch: Optional[ScriptBatcher] = None


class RedisBroker:
    """Topics shared between processes through Redis pub/sub; see the module docstring.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``), or
            ``redis+cluster://host:port`` for a Redis Cluster (sharded pub/sub).
        prefix: put before every channel name, to share one Redis between deployments.
        max_queue: publishes waiting for the publisher task, at most; more are dropped.
        max_queue_bytes: their bytes (Redis form), at most.
        ping_interval: seconds between the listener's PINGs.
        timeout: seconds of silence after which a connection is dead; also the connect
            and publish timeout, and how long ``start()`` waits for Redis.
        max_backoff: the longest wait between two reconnection attempts.

    Raises:
        ValueError: ``url`` is not a Redis URL.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "realtime:",
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        ping_interval: float = 1.0,
        timeout: float = 3.0,
        max_backoff: float = 2.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.cluster = is_cluster(url)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.ping_interval = ping_interval
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.failures = FAILURES  # what a listener treats as a lost connection
        self.origin = os.urandom(ORIGIN_SIZE)  # tells this broker's messages from others'
        # redis-py's own retries and health checks are off: they would hide a lost
        # connection (and a resubscription) from us, and we handle both below. RESP2, the
        # protocol every Redis speaks, so messages are plain replies to the listener's
        # reads (redis-py 8 defaults to RESP3, where they are push frames handled apart).
        common: dict[str, Any] = dict(
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            health_check_interval=0, protocol=2,
        )
        # The listener reads with no timeout (its PINGs find a silent Redis); the
        # publisher's commands time out, so a half-open connection fails a publish. On a
        # cluster this pool is the pattern of each master's listener pool.
        self._listener_pool = ConnectionPool.from_url(
            node_url(url), socket_timeout=None, client_name="realtime-listener", **common)
        self._publisher = client(
            url, socket_timeout=timeout, client_name="realtime-publisher", max_connections=2,
            **common)
        self._publish_command = "SPUBLISH" if self.cluster else "PUBLISH"
        # One listener on one Redis; on a cluster one per master, by "host:port".
        self._listeners: dict[str, Listener] = {}
        self._listener_tasks: dict[str, asyncio.Task[None]] = {}
        self._slots: list[Optional[str]] = []  # cluster: slot -> "host:port" of its master
        self._remap = asyncio.Event()  # cluster: map the slots again
        self._channels: dict[bytes, str] = {}  # the channel of every wanted topic -> topic
        self._channel_cache: dict[str, bytes] = {}  # topic -> channel (``_channel_of``)
        self._deliver: Optional[Deliver] = None
        self._topics: set[str] = set()  # topics the hub has local subscribers of
        self._queue: deque[tuple[bytes, bytes]] = deque()  # (channel, Redis form)
        self._queued_bytes = 0
        self._queue_ready = asyncio.Event()
        self._publishing = True  # the last publish did not fail
        self._down_since: Optional[float] = None  # monotonic start of the current outage
        self._down_logged = False  # this outage's warning is out
        self._drop_logged = False  # this outage's (or overflow's) drop warning is out
        self._malformed_logged = False
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()  # set the first time every listener is subscribed
        # client id -> its registered APPEND and APPEND_MANY
        self._scripts: dict[int, tuple[Any, Any]] = {}
        self.published = 0  # messages sent to Redis
        self.received = 0  # messages from other processes handed to the hub
        self.dropped = 0  # publishes not sent to Redis (queue full, Redis down)
        self.reconnects = 0  # listener connections after the first
        self.gaps = 0  # times the listener's subscription was interrupted and caught up
        # Gaps: see the module docstring.
        self._recover: Optional[Recover] = None  # the hub's catch_up
        self._abandon: Optional[Abandon] = None  # the hub's end_topics (for GAP)
        self._gapped = False  # the subscription was interrupted since it was last whole
        self._last_ids: dict[str, int] = {}  # topic -> the newest history id delivered here
        # topic -> ids delivered here at once while the listener was down (not again after)
        self._sent_alone: dict[str, set[int]] = {}
        # topic -> live messages held while a catch-up runs: (envelope, history id or None)
        # (arrival number, envelope, history id or None): the arrival number keeps the order
        # across topics when they are handed over together (a room's messages and its
        # private ones).
        self._held: dict[str, list[tuple[int, Envelope, Optional[int]]]] = {}
        self._arrivals = itertools.count()
        self._held_bytes = 0
        self._holds: dict[str, int] = {}  # topic -> catch-ups in progress holding it
        self._overflowed: set[str] = set()  # held topics over max_queue_bytes: ended after
        self._catching_up = asyncio.Lock()  # one catch-up at a time, so none repeats another
        self._gap_tasks: set[asyncio.Task[None]] = set()
        self.malformed = 0  # messages on our channels that are not in our format

    # The seam

    def attach(self, deliver: Deliver) -> None:
        """Set the hub's delivery callback."""
        self._deliver = deliver

    def publish(self, topic: str, envelope: Envelope) -> None:
        """Deliver to this process's subscribers now, and queue for the other processes."""
        if self._deliver is None:
            raise RuntimeError("RedisBroker.publish before attach")
        self._deliver(topic, envelope)
        if not self._publishing or not self._tasks:
            self._drop("Redis is unavailable")
            return
        size = HEADER_SIZE + len(envelope.data)
        if len(self._queue) >= self.max_queue or self._queued_bytes + size > self.max_queue_bytes:
            self._drop(f"the publish queue is full ({len(self._queue)} messages, "
                       f"{self._queued_bytes} bytes)")
            return
        self._queue.append((self.channel(topic), encode(envelope, self.origin)))
        self._queued_bytes += size
        self._queue_ready.set()

    async def publish_with_history(
        self, topics: Sequence[str], head: bytes, tail: bytes, history: History
    ) -> Optional[int]:
        """Append a message to ``history`` and publish it on ``topics``, in one script Redis
        runs atomically: no process can see a message its history does not hold, and ids
        are handed out in the order messages are published. The message is ``head + id +
        tail``; it reaches every process from its listener (this one's too, unless its
        listener is down: then it is delivered here at once).

        Returns the id, or None if the deadline had passed when Redis ran it (nothing stored,
        nothing published). With ``history.batch``, the script goes in the pipeline of this
        loop turn, after the calls made before it.
        """
        scripts = self._scripts.get(id(history.client))
        if scripts is None:
            scripts = self._scripts[id(history.client)] = (
                history.client.register_script(APPEND_SHARDED if self.cluster else APPEND),
                history.client.register_script(
                    APPEND_MANY_SHARDED if self.cluster else APPEND_MANY))
        script, many = scripts
        keys = [history.meta, history.log]
        args = [head, tail, history.extra, history.length, history.floor, history.ttl,
                STORED_PREFIX, history.deadline, *map(self._channel_of, topics)]
        if history.batch is not None:
            # The room's messages of a pipeline share one script call.
            sid = await history.batch.call(script, keys, args, group=many)
        else:
            sid = await script(keys=keys, args=fresh(args))
        if sid is None:
            return None
        self.published += 1
        message_id = int(sid)
        if self._deliver is not None:
            for topic in topics:
                carrier = self._carrier(topic)
                if carrier is None or not carrier.listening:
                    # Not caught up again after the gap: this process has it already.
                    self._sent_alone.setdefault(topic, set()).add(message_id)
                    self._deliver(topic, Envelope(head + sid + tail))
        return message_id

    def _channel_of(self, topic: str) -> bytes:
        """``channel(topic)``, remembered (at most ``CHANNELS_KEPT`` of them): a topic's
        channel is worked out once, not once per message."""
        channel = self._channel_cache.get(topic)
        if channel is None:
            if len(self._channel_cache) >= CHANNELS_KEPT:
                self._channel_cache.clear()
            channel = self._channel_cache[topic] = self.channel(topic)
        return channel

    def attach_gaps(self, recover: "Recover", abandon: "Abandon") -> None:
        """Set the hub's gap callbacks: ``recover(topics)`` catches the topics' subscribers
        up (or ends them), ``abandon(topics)`` ends them (``CloseReason.GAP``)."""
        self._recover = recover
        self._abandon = abandon

    def last_id(self, topic: str) -> Optional[int]:
        """The newest history id delivered here on ``topic`` (None if none since its
        subscription): what a catch-up reads the history after."""
        return self._last_ids.get(topic)

    def delivered(self, topic: str, message_id: int) -> None:
        """This process's subscribers of ``topic`` hold every message of its history up to
        ``message_id`` (a welcome read it, or a catch-up reached it). While the topic is
        being caught up (or cannot be), only a topic with no id yet takes it: the
        subscribers already there may still miss what is below."""
        current = self._last_ids.get(topic)
        if current is None:
            self._last_ids[topic] = message_id
        elif self.listening and topic not in self._holds and not self._gapped:
            self._last_ids[topic] = max(current, message_id)

    def deliver_recovered(self, topic: str, envelope: Envelope, message_id: int) -> None:
        """Hand the hub a message a catch-up read from history (after ``last_id``), unless
        this process delivered it already."""
        if message_id in self._sent_alone.get(topic, ()):
            return
        current = self._last_ids.get(topic)
        if current is not None and message_id <= current:
            return
        self._last_ids[topic] = message_id
        if self._deliver is not None:
            self._deliver(topic, envelope)

    def subscribe(self, topic: str) -> None:
        """Have the listener (the one of the topic's cluster node) subscribe to ``topic``'s
        channel."""
        self._topics.add(topic)
        self._channels[self.channel(topic)] = topic
        carrier = self._carrier(topic)
        if carrier is not None:
            carrier.add(topic)

    def unsubscribe(self, topic: str) -> None:
        """Have the listener unsubscribe from ``topic``'s channel."""
        self._topics.discard(topic)
        self._channels.pop(self.channel(topic), None)
        self._last_ids.pop(topic, None)
        self._sent_alone.pop(topic, None)
        for listener in self._listeners.values():
            if topic in listener.topics:
                listener.discard(topic)

    async def ready(self, topics: Iterable[str]) -> None:
        """Return once Redis has confirmed the SUBSCRIBE of every one of ``topics`` (each
        already wanted through ``subscribe``), so whatever any process publishes on them
        from now on reaches this one; at once while Redis is down (nothing would come),
        and after ``timeout`` seconds at most."""
        by_carrier: dict[Listener, list[str]] = {}
        for topic in topics:
            carrier = self._carrier(topic)
            if carrier is not None:
                by_carrier.setdefault(carrier, []).append(topic)
        await asyncio.gather(*(carrier.ready(each) for carrier, each in by_carrier.items()))

    async def caught_up(self) -> None:
        """Return once the listeners have handed the hub every message Redis published to
        this process before the call (a PING on each listener's connection comes back
        after them); at once while Redis is down, and after ``timeout`` seconds at most.

        A welcome read from history, then ``caught_up()``, holds every live message its
        history holds: none can arrive after it and be shown twice.
        """
        await asyncio.gather(*(listener.caught_up() for listener in self._listeners.values()))
        if self._holds:  # messages held by a catch-up are not handed over yet
            try:
                async with asyncio.timeout(self.timeout):
                    async with self._catching_up:
                        pass
            except TimeoutError:
                pass

    async def start(self) -> None:
        """Start the listener and the publisher; wait up to ``timeout`` s for Redis."""
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._publish_forever(), name="redis-publisher")]
        if self.cluster:
            self._tasks.append(asyncio.create_task(self._map_forever(), name="redis-slots"))
        else:
            self._start_listener("", self._listener_pool, set(self._topics))
        try:
            await asyncio.wait_for(self._ready.wait(), self.timeout)
        except asyncio.TimeoutError:
            # Clients served meanwhile miss what other processes publish until it answers.
            self._gapped = True
            log.warning("Redis at %s did not answer within %.0f s: starting degraded "
                        "(/healthz 503), connecting in the background", self._where(),
                        self.timeout)

    async def close(self) -> None:
        """Stop both tasks and close every connection; queued publishes are dropped."""
        tasks, self._tasks = self._tasks, []
        listeners, self._listener_tasks = self._listener_tasks, {}
        # not cancel() and gather(): a cancel may be swallowed
        await cancel_all(tasks + list(self._gap_tasks) + list(listeners.values()))
        for listener in self._listeners.values():
            listener.release()
            await listener.pool.disconnect()
        self._listeners.clear()
        self.dropped += len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        await close(self._publisher)
        await self._listener_pool.disconnect()

    @property
    def listening(self) -> bool:
        """Whether every listener is subscribed and hearing from Redis right now."""
        return bool(self._listeners) and all(
            listener.listening for listener in self._listeners.values())

    @property
    def listeners(self) -> list[Listener]:
        """The listeners: one on one Redis, one per master on a cluster."""
        return list(self._listeners.values())

    def healthy(self) -> bool:
        """True while every listener is subscribed and hearing from Redis and publishes
        go."""
        return self.listening and self._publishing

    # Introspection

    def channel(self, topic: str) -> bytes:
        """The Redis channel of ``topic`` (``realtime.storage.rediskeys.topic_channel``)."""
        return topic_channel(self.prefix, topic)

    def topic_of(self, channel: bytes) -> Optional[str]:
        """The wanted topic whose channel is ``channel``, if any."""
        return self._channels.get(channel)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for the metrics: each is exported as ``realtime_broker_<name>_total``."""
        return {
            "published": self.published, "received": self.received,
            "dropped": self.dropped, "reconnects": self.reconnects, "gaps": self.gaps,
        }

    # Health bookkeeping

    def _where(self) -> str:
        kwargs = self._listener_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"the cluster of {where}" if self.cluster else where

    def _went_down(self, reason: object) -> None:
        """A connection failed: warn once per outage."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        if not self._down_logged:
            self._down_logged = True
            log.warning("Redis at %s unavailable (%s): cross-process delivery paused, "
                        "publishes dropped until it answers; reconnecting", self._where(),
                        str(reason) or type(reason).__name__)

    def _maybe_up(self) -> None:
        """Both connections work again: end the outage, if there was one."""
        if not self.healthy() or self._down_since is None:
            return
        log.info("Redis at %s available again after %.1f s (%d publishes dropped so far)",
                 self._where(), time.monotonic() - self._down_since, self.dropped)
        self._down_since = None
        self._down_logged = self._drop_logged = False

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if not self._drop_logged:
            self._drop_logged = True
            log.warning("dropping publishes to Redis: %s; they still reach this process's "
                        "subscribers. Counted in realtime_broker_dropped_total, not logged "
                        "again until it recovers", why)

    # The listeners

    def _carrier(self, topic: str) -> Optional[Listener]:
        """The listener that carries (or is to carry) ``topic``: the one on one Redis, the
        one of its slot's master on a cluster; None while the slots are not mapped."""
        if not self.cluster:
            return self._listeners.get("")
        if not self._slots:
            return None
        node = self._slots[key_slot(self.channel(topic))]
        return self._listeners.get(node) if node is not None else None

    def _start_listener(self, name: str, pool: ConnectionPool, topics: set[str]) -> Listener:
        listener = Listener(self, pool, sharded=self.cluster)
        listener.topics = topics
        self._listeners[name] = listener
        self._listener_tasks[name] = asyncio.create_task(
            listener.run_forever(), name=f"redis-listener {name}".strip())
        return listener

    async def _stop_listener(self, name: str) -> None:
        listener = self._listeners.pop(name)
        task = self._listener_tasks.pop(name)
        await cancel_all([task])
        listener.release()
        await listener.pool.disconnect()

    def listener_up(self, listener: Listener) -> None:
        """``listener`` is subscribed to its topics and hears from Redis: once every
        listener is, the broker is whole again, and catches up after a gap."""
        if self.listening:
            self._ready.set()
            self._maybe_up()
            if self._gapped:
                self._gapped = False
                self._after_gap(set(self._topics))

    # Gaps

    def _after_gap(self, topics: set[str]) -> None:
        """The subscription to ``topics`` was interrupted and is whole again (every
        SUBSCRIBE confirmed): hold their live messages and have the hub catch their
        subscribers up, then hand over what was held. Each listener (one per connection)
        calls it once per interruption it recovers from."""
        self.gaps += 1
        if self._recover is None:  # nobody to catch topics up: what was held goes as it is
            topics = set()
        topics = {topic for topic in topics if topic in self._topics}
        # Held since the gap began on a topic no catch-up covers (left since, or none to
        # run): handed over as it is.
        stray = {topic for topic in self._held if topic not in topics | self._holds.keys()}
        for topic in topics | stray:
            self._holds[topic] = self._holds.get(topic, 0) + 1
            self._held.setdefault(topic, [])
        self._hand_over(stray)
        if not topics:
            return
        task = asyncio.ensure_future(self._catch_up(topics))
        self._gap_tasks.add(task)
        task.add_done_callback(self._gap_tasks.discard)

    async def _catch_up(self, topics: set[str]) -> None:
        """One catch-up after another, so none delivers what another is delivering."""
        assert self._recover is not None
        try:
            async with self._catching_up:
                await self._recover(topics)
        except Exception:  # a bug: the topics must not stay held
            log.exception("catching up %d topics after a gap failed", len(topics))
            if self._abandon is not None:
                self._abandon(topics)
        finally:
            self._hand_over(topics)

    def _hold(self, topic: str, envelope: Envelope, message_id: Optional[int]) -> None:
        """Keep a live message of a topic being caught up, within ``max_queue_bytes`` in
        all; past that the topic's subscribers are ended once the catch-up is over."""
        if topic in self._overflowed:
            return
        held = self._held.setdefault(topic, [])
        self._held_bytes += len(envelope.data)
        if self._held_bytes > self.max_queue_bytes:
            self._overflowed.add(topic)
            self._held_bytes -= sum(len(each.data) for _, each, _ in held)
            self._held_bytes -= len(envelope.data)
            held.clear()
            return
        held.append((next(self._arrivals), envelope, message_id))

    def _hand_over(self, topics: set[str]) -> None:
        """A catch-up of ``topics`` is over: deliver what was held on the topics no other
        catch-up holds, less what the catch-up delivered already."""
        done = set()
        for topic in topics:
            left = self._holds.get(topic, 0) - 1
            if left > 0:
                self._holds[topic] = left
                continue
            self._holds.pop(topic, None)
            done.add(topic)
        overflowed = done & self._overflowed
        self._overflowed -= overflowed
        if overflowed and self._abandon is not None:
            self._abandon(overflowed)
        # In the order they came, across the topics (a message on a room's topic, then one
        # on a private topic of the room, are delivered in that order).
        held = sorted((arrival, topic, envelope, message_id) for topic in done
                      for arrival, envelope, message_id in self._held.pop(topic, []))
        for _, topic, envelope, message_id in held:
            self._held_bytes -= len(envelope.data)
            if topic not in self._topics or topic in overflowed:
                continue
            if message_id is not None:
                current = self._last_ids.get(topic)
                if current is not None and message_id <= current:
                    continue
                self._last_ids[topic] = message_id
            self._hand(topic, envelope)
        for topic in done:
            self._sent_alone.pop(topic, None)

    def message(self, channel: bytes, data: bytes) -> None:
        """A listener read ``data`` on ``channel``: hand it to the hub unless it is this
        process's own, or not in our format (counted, logged once)."""
        topic = self.topic_of(channel)
        if topic is None:
            return
        decoded = decode(data)
        if decoded is None:
            self.malformed += 1
            if not self._malformed_logged:
                self._malformed_logged = True
                log.warning("ignoring a message on %r that is not in this broker's format "
                            "(further ones are counted, not logged)", channel)
            return
        origin, messages = decoded
        if origin == self.origin or topic not in self._topics or self._deliver is None:
            return
        for envelope, message_id in messages:
            self.received += 1
            # Held from the moment a gap began: a message that arrives on the new connection
            # before its catch-up starts (SUBSCRIBE confirmed, PING not answered yet) must
            # not move the topic's last id past what was missed.
            if self._gapped or (self._holds and topic in self._holds):
                self._hold(topic, envelope, message_id)
                continue
            if message_id is not None:
                self._last_ids[topic] = message_id
            self._hand(topic, envelope)

    def _hand(self, topic: str, envelope: Envelope) -> None:
        """Give the hub one message from Redis."""
        assert self._deliver is not None
        try:
            self._deliver(topic, envelope)
        except Exception:  # a bug in delivery must not leave the process deaf
            log.exception("delivering a message from Redis on %s failed", topic)

    def gap_closed(self, topics: set[str]) -> None:
        """A listener is subscribed to ``topics``, taken over from another master's
        listener (a re-mapped cluster): what was published on them meanwhile may be
        missed. Nothing to do while the broker is gapped: its catch-up covers every
        topic."""
        if topics and not self._gapped:
            self._after_gap(topics)

    def listener_down(self, listener: Listener, error: BaseException) -> None:
        """``listener`` lost its connection (it reconnects by itself); on a cluster, the
        slots may have moved."""
        if self._ready.is_set():
            self._gapped = True  # whatever was published from now on is missed
        self._went_down(error)
        if self.cluster:
            self.remap()

    def remap(self) -> None:
        """Map the cluster's slots to their masters again (a node failed, a slot moved)."""
        self._remap.set()

    async def _map_forever(self) -> None:
        """On a cluster: map the slots, run a listener per master with the topics of its
        slots, and again whenever asked (``remap``), every ``REMAP_INTERVAL`` seconds, and
        every half second while a listener is down (a failover takes a moment)."""
        while True:
            self._remap.clear()
            try:
                await asyncio.wait_for(self._map_slots(), self.timeout)
            except Exception as exc:
                if not isinstance(exc, FAILURES):
                    log.exception("mapping the Redis Cluster's slots failed")
                self._went_down(exc)
            wait = REMAP_INTERVAL if self.listening else 0.5
            try:
                await asyncio.wait_for(self._remap.wait(), wait)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0.1)  # a burst of MOVED answers is one re-map

    async def _map_slots(self) -> None:
        """Ask the cluster which master serves each slot; move topics to match."""
        nodes = self._publisher.nodes_manager  # type: ignore[union-attr]
        await nodes.initialize()
        slots: list[Optional[str]] = [None] * SLOTS
        masters: dict[str, Any] = {}
        for slot, holders in nodes.slots_cache.items():
            slots[slot] = holders[0].name
            masters[holders[0].name] = holders[0]
        before = {topic: name for name, listener in self._listeners.items()
                  for topic in listener.topics}
        self._slots = slots
        for name in set(self._listeners) - set(masters):
            await self._stop_listener(name)
        wanted: dict[str, set[str]] = {name: set() for name in masters}
        for topic in self._topics:
            node = slots[key_slot(self.channel(topic))]
            if node is not None:
                wanted[node].add(topic)
        for name, node in masters.items():
            moved = {topic for topic in wanted[name] if before.get(topic, name) != name}
            listener = self._listeners.get(name)
            if listener is None:
                pool = ConnectionPool(
                    connection_class=self._listener_pool.connection_class,
                    **{**self._listener_pool.connection_kwargs,
                       "host": node.host, "port": node.port})
                listener = self._start_listener(name, pool, set())
            if listener.topics != wanted[name] or moved:
                listener.carry(wanted[name], moved)

    # The publisher

    async def _publish_forever(self) -> None:
        """Send queued publishes in pipelined batches; after a failure, PING until Redis
        answers, dropping what is published meanwhile."""
        backoff = 0.1
        while True:
            if not self._publishing:
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, self.max_backoff)
                try:
                    await self._publisher.ping()
                except FAILURES:
                    continue
                backoff = 0.1
                self._publishing = True
                self._maybe_up()
                continue
            await self._queue_ready.wait()
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), PUBLISH_BATCH))]
            self._queued_bytes -= sum(len(wire) for _, wire in batch)
            if not self._queue:
                self._queue_ready.clear()
                if self._publishing and self._down_since is None:
                    self._drop_logged = False  # an overflow is over once the queue empties
            try:
                async with self._publisher.pipeline(transaction=False) as pipe:
                    for channel, wire in batch:
                        pipe.execute_command(self._publish_command, channel, wire)
                    await pipe.execute()
                self.published += len(batch)
            except Exception as exc:
                if not isinstance(exc, FAILURES):
                    log.exception("publishing to Redis failed")
                self._publishing = False
                self.dropped += len(batch) + len(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                self._queue_ready.clear()
                self._went_down(exc)
