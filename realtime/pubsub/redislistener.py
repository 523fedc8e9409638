"""One listener connection of the Redis broker: ``Listener`` subscribes a set of topics on one
Redis (one node of a cluster), hands their messages to the broker, and keeps the
connection alive; the broker has one (one Redis) or one per master (a cluster).

It sends its own PING every ``ping_interval`` seconds and declares the connection dead when
nothing at all came back for ``timeout`` seconds (a half-open connection, a paused Redis); a
closed connection is noticed at once. Either way it reconnects with jittered exponential
backoff capped at ``max_backoff`` seconds, until stopped, and subscribes its topics again;
once Redis confirmed them it tells the broker (``listener_up``), which catches up after the
gap; topics taken over from another master's listener are reported once subscribed here
(``gap_closed``). On a cluster it speaks sharded pub/sub (``SSUBSCRIBE``, one command per slot, as
Redis requires): a ``MOVED`` answer or a ``sunsubscribe`` Redis sends by itself (the slot
moved away) asks the broker to map the slots again (``remap``).
"""

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any, Iterable

from redis.asyncio import ConnectionPool
from redis.crc import key_slot
from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from realtime.pubsub.redisbroker import RedisBroker

log = logging.getLogger("realtime.redis")

# Channels per SUBSCRIBE command when resubscribing thousands of topics at once.
SUBSCRIBE_CHUNK = 1000


class ConnectionDead(Exception):
    """Redis sent nothing, not even a PONG, for ``timeout`` seconds."""


class Listener:
    """The broker's subscriptions on one Redis connection; see the module docstring.

    Args:
        broker: whose topics, channels, timeouts and callbacks it uses.
        pool: makes its connections (one at a time).
        sharded: ``SSUBSCRIBE`` (a cluster node) rather than ``SUBSCRIBE``.
    """

    def __init__(self, broker: "RedisBroker", pool: ConnectionPool, *,
                 sharded: bool = False) -> None:
        self.broker = broker
        self.pool = pool
        self.sharded = sharded
        self.topics: set[str] = set()  # topics this listener carries
        self.listening = False  # subscribed to every topic it carries, hearing from Redis
        self.connections = 0  # connections made so far
        self._wake = asyncio.Event()  # its topics changed, or a caught_up() waits
        self._last_heard = 0.0  # loop time it last read anything
        self._confirmed: set[str] = set()  # topics Redis confirmed on this connection
        # ready() calls waiting for confirmations: (topics still missing, their future).
        self._waiters: list[tuple[set[str], asyncio.Future[None]]] = []
        self._barriers: list[asyncio.Future[None]] = []  # caught_up() calls not yet sent
        # caught_up() calls whose PING is on its way, by the PING's text.
        self._pinged: dict[bytes, list[asyncio.Future[None]]] = {}
        self._pings = 0  # numbers the caught_up() PINGs
        # Topics taken over from another listener (a re-mapped cluster) whose gap is not
        # reported yet, and those whose report waits for the PONG of a PING, by its text.
        self._moved: set[str] = set()
        self._gap_pings: dict[bytes, set[str]] = {}

    @property
    def where(self) -> str:
        """host:port (or the socket path) of its Redis."""
        kwargs = self.pool.connection_kwargs
        return kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"

    def carry(self, topics: set[str], moved: Iterable[str] = ()) -> None:
        """Listen to exactly ``topics`` from now on; ``moved`` were carried by another
        listener until now, so their subscription here follows a gap."""
        for topic in self.topics - topics:
            self._confirmed.discard(topic)
        self.topics = topics
        self._moved |= set(moved)
        self._wake.set()

    def add(self, topic: str) -> None:
        """Listen to ``topic`` too."""
        self.topics.add(topic)
        self._wake.set()

    def discard(self, topic: str) -> None:
        """Stop listening to ``topic``."""
        self.topics.discard(topic)
        self._confirmed.discard(topic)
        self._moved.discard(topic)
        self._wake.set()

    def wake(self) -> None:
        """Send what changed (subscriptions, a caught_up() PING) now."""
        self._wake.set()

    async def ready(self, topics: Iterable[str]) -> None:
        """Return once Redis confirmed the subscription of every one of ``topics``; at once
        while not listening, after ``timeout`` at most."""
        if not self.listening:
            return
        missing = {topic for topic in topics if topic not in self._confirmed}
        if not missing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (missing, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.broker.timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def caught_up(self) -> None:
        """Return once every message Redis published to this connection before the call
        was handed on (a PING comes back after them); at once while not listening, after
        ``timeout`` at most."""
        if not self.listening:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append(waiter)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.broker.timeout)
        except asyncio.TimeoutError:
            pass

    def release(self) -> None:
        """The connection is lost (or the listener stops): nothing is confirmed, nobody
        waits for it."""
        self.listening = False
        self._confirmed.clear()
        for topics in self._gap_pings.values():
            self._moved |= topics & self.topics  # still owed a report
        self._gap_pings.clear()
        barriers = [waiter for waiters in self._pinged.values() for waiter in waiters]
        self._pinged.clear()
        barriers += self._barriers
        self._barriers = []
        for waiter in [waiter for _, waiter in self._waiters] + barriers:
            if not waiter.done():
                waiter.set_result(None)

    # The connection

    async def run_forever(self) -> None:
        """Connect, subscribe, read; on any failure reconnect with backoff, until cancelled."""
        broker = self.broker
        backoff = 0.1
        while True:
            conn = self.pool.make_connection()
            try:
                await asyncio.wait_for(conn.connect(), broker.timeout)
                self.connections += 1
                if self.connections > 1:
                    broker.reconnects += 1
                await self._listen(conn)
            except Exception as exc:
                if not isinstance(exc, broker.failures + (ConnectionDead,)):
                    # A bug (or a reply we did not expect) must not leave the process deaf.
                    log.exception("the Redis listener on %s failed; reconnecting", self.where)
                if self.listening:
                    backoff = 0.1  # it had worked: retry soon
                self.listening = False
                broker.listener_down(self, exc)
            finally:
                self.release()
                await conn.disconnect(nowait=True)
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, broker.max_backoff)

    async def _listen(self, conn: Any) -> None:
        """Serve one connection until it fails (it raises)."""
        loop = asyncio.get_running_loop()
        broker = self.broker
        subscribed: set[str] = set()  # topics subscribed on this connection
        self._last_heard = loop.time()
        await self._sync_topics(conn, subscribed)
        # Redis answers in order: the PONG to this PING means every SUBSCRIBE before it
        # took effect.
        await self._send(conn, "PING", b"subscribed")
        last_ping = loop.time()
        # One task reads and handles every reply as it comes (no task or wait per message);
        # this one sends: SUBSCRIBEs when the topics change, and the PINGs.
        reader = asyncio.ensure_future(self._read_replies(conn))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            while True:
                wait = max(0.0, last_ping + broker.ping_interval - loop.time())
                await asyncio.wait((reader, wake), timeout=wait,
                                   return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    reader.result()  # raises: the connection failed
                    raise ConnectionDead("the listener's reader stopped")
                if wake.done():
                    self._wake.clear()
                    wake = asyncio.ensure_future(self._wake.wait())
                    await self._sync_topics(conn, subscribed)
                    if self._barriers:
                        self._pings += 1
                        text = b"caught-up:%d" % self._pings
                        self._pinged[text], self._barriers = self._barriers, []
                        await self._send(conn, "PING", text)
                    moved = self._moved & subscribed
                    if moved and self.listening:
                        self._moved -= moved
                        self._pings += 1
                        text = b"gap:%d" % self._pings
                        self._gap_pings[text] = moved
                        await self._send(conn, "PING", text)
                now = loop.time()
                if now - self._last_heard > broker.timeout:
                    raise ConnectionDead(f"no reply from Redis for {broker.timeout:.0f} s")
                if now - last_ping >= broker.ping_interval:
                    await self._send(conn, "PING")
                    last_ping = now
        finally:
            reader.cancel()
            wake.cancel()
            await asyncio.gather(reader, wake, return_exceptions=True)

    async def _read_replies(self, conn: Any) -> None:
        """Read and handle the connection's replies until it fails (it raises)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                reply = await conn.read_response(disconnect_on_error=False)
            except ResponseError as error:
                # A cluster node that no longer serves a slot answers its SSUBSCRIBE with
                # MOVED: the broker maps the slots again and moves the topic.
                self._last_heard = loop.time()
                if not self.sharded:
                    raise
                log.info("Redis at %s answered %s %s (a slot moved); mapping the cluster's "
                         "slots again", self.where, type(error).__name__, error)
                self.broker.remap()
                continue
            self._last_heard = loop.time()
            self._handle(reply)

    async def _send(self, conn: Any, *args: Any) -> None:
        """Send one command (its reply comes to the reader)."""
        await asyncio.wait_for(conn.send_command(*args), self.broker.timeout)

    async def _sync_topics(self, conn: Any, subscribed: set[str]) -> None:
        """Subscribe and unsubscribe so the connection listens to exactly its topics."""
        channel = self.broker.channel
        prefix = "S" if self.sharded else ""
        for command, topics in ((prefix + "SUBSCRIBE", self.topics - subscribed),
                                (prefix + "UNSUBSCRIBE", subscribed - self.topics)):
            for chunk in self._chunks(sorted(topics)):
                await self._send(conn, command, *(channel(topic) for topic in chunk))
            if command.endswith("UNSUBSCRIBE"):
                subscribed -= topics
            else:
                subscribed |= topics

    def _chunks(self, topics: list[str]) -> Iterable[list[str]]:
        """``topics`` in groups one command may name: at most ``SUBSCRIBE_CHUNK``, and of
        one slot each when sharded."""
        if self.sharded:
            by_slot: dict[int, list[str]] = {}
            for topic in topics:
                by_slot.setdefault(key_slot(self.broker.channel(topic)), []).append(topic)
            groups: Iterable[list[str]] = by_slot.values()
        else:
            groups = [topics]
        for group in groups:
            for start in range(0, len(group), SUBSCRIBE_CHUNK):
                yield group[start:start + SUBSCRIBE_CHUNK]

    def _handle(self, reply: Any) -> None:
        """One reply: a message, a (un)subscribe or a PONG."""
        if not isinstance(reply, list):  # PONG outside subscribed mode: b"PONG" or the text
            self._pong(reply)
            return
        kind = reply[0]
        if kind in (b"message", b"smessage"):
            self.broker.message(reply[1], reply[2])
        elif kind in (b"subscribe", b"ssubscribe"):
            self._confirm(reply[1], True)
        elif kind in (b"unsubscribe", b"sunsubscribe"):
            if self._confirm(reply[1], False) and kind == b"sunsubscribe":
                # Not asked for: the slot moved (a migration, a failover).
                self.broker.remap()
        elif kind == b"pong":
            self._pong(reply[1])

    def _confirm(self, channel: bytes, subscribed: bool) -> bool:
        """Redis answered a (un)subscribe of ``channel``; whether this listener still
        carries its topic."""
        topic = self.broker.topic_of(channel)
        if topic is None:
            return False
        carried = topic in self.topics
        if not subscribed or not carried:
            self._confirmed.discard(topic)
            return carried
        self._confirmed.add(topic)
        for missing, waiter in list(self._waiters):
            missing.discard(topic)
            if not missing and not waiter.done():
                waiter.set_result(None)
        return carried

    def _pong(self, text: Any) -> None:
        for waiter in self._pinged.pop(text, ()):
            if not waiter.done():
                waiter.set_result(None)
        moved = self._gap_pings.pop(text, None)
        if moved:
            self.broker.gap_closed(moved & self.topics)
        if text == b"subscribed" and not self.listening:
            self.listening = True
            self.broker.listener_up(self)
            if self._moved:  # report the topics taken over (a PING after their SUBSCRIBE)
                self._wake.set()
