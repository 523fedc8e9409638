"""The in-process pub/sub hub: who listens to which topic, and fan-out with flow control.

Every connection of the process is registered here while it is open. The hub

* wraps a published message in one ``Envelope`` (``realtime.pubsub.envelope``): serialized once,
  and each wire form (the WebSocket frame) built once, for every subscriber of every kind;
* hands the envelope to each subscriber's ``write_envelope``: an uncompressed WebSocket
  puts the prebuilt frame straight into its stream (``realtime.pubsub.tornado_internals``), with
  no Task, Future, header or copy per subscriber; others fall back to ``write_message``;
* bounds, per connection, what is still unsent. Before each frame the subscriber checks
  how many bytes the kernel has not taken yet (frame headers included); if that is already
  over ``max_pending_bytes`` the client has stopped reading, so instead of writing the
  frame the hub removes the connection from every topic at once and closes it as slow.
  A stalled reader thus costs the server at most the bound plus one frame, and never holds
  up the others. Bytes the kernel took do not count, so a client that keeps reading is not
  dropped for a burst larger than the bound, nor for one frame larger than the bound;
* never holds the loop long: a fan-out of more than ``slice_size`` writes is delivered in
  slices of at most ``slice_size`` writes and ``slice_seconds`` of time (the clock read
  every ``CLOCK_EVERY`` writes), the loop serving other clients in between; a later
  publish or send to a
  connection that still has a frame queued waits behind it, so every connection gets its
  frames in order, while connections with nothing queued are served at once;
* closes a connection with a reason (``realtime.pubsub.delivery.CloseReason``: slow, shutdown,
  error), never a close code: each transport turns the reason into its own close (1008,
  1001 or 1011 on a WebSocket; the end of an event stream; a closed TCP connection);
* hands envelopes to a broker (``realtime.pubsub.brokers``) and takes them back through
  ``deliver``, so several processes can share topics without the handlers knowing; the
  broker hears when a topic gets its first local subscriber and loses its last;
* after a broker's subscription was interrupted (``catch_up``), has the gap handlers
  registered with ``on_gap`` (the chat state's, the polls') catch the subscribers of the
  topics up, and ends those of the topics no handler takes with ``CloseReason.GAP``, so a
  gap is never silent.

Topics are lowercase dotted names, endpoint first: ``chat.lobby``, ``vote.demo``.
"""

import asyncio
import logging
import time
from collections import deque
from typing import Any, Awaitable, Callable, Iterable, Optional, Protocol, Sequence, Union

from realtime.pubsub.brokers import Broker, LocalBroker
from realtime.pubsub.delivery import CLOSED, STALLED, WRITTEN, CloseReason
from realtime.pubsub.envelope import Envelope
from realtime.wire.messages import Message

log = logging.getLogger("realtime.hub")

DEFAULT_MAX_PENDING_BYTES = 1024 * 1024
# Writes per turn of the loop at most; also the largest fan-out written at once, in the
# publish's own turn, rather than queued (500 writes to a 10,000-member room: about 9 ms of
# CPU on the 2-core development VM).
DEFAULT_SLICE_SIZE = 500
# Seconds of writing per turn of the loop at most, whatever a write costs on this machine,
# under this load, for these frames. An echo's round trip while a fan-out drains spans
# three to five turns of the loop (its read, the task it wakes, its reply: each behind a
# slice), so 5 ms slices keep it near 25 ms with the 10,000-subscriber burst, where slices
# of 500 writes (10-15 ms, more under load) made it 100 ms (docs/benchmarks.md, "Loop lag
# during a large fan-out").
DEFAULT_SLICE_SECONDS = 0.005
# Writes between two reads of the clock in a slice: a read costs well under a microsecond
# against 10-20 us per write, and 32 writes (under a millisecond) are the most a slice runs
# past its budget.
CLOCK_EVERY = 32
# Seconds the gap handlers have, together, to catch topics up after an interruption; the
# subscribers of topics not caught up by then are ended (their clients reconnect, since).
GAP_DEADLINE = 7.0

Publishable = Union[Envelope, Message, str, bytes]


class Subscriber(Protocol):
    """What the hub needs of a connection (``handlers.websocket.SocketHandler`` has it)."""

    def write_envelope(self, envelope: Envelope, max_pending: int) -> int:
        """Write the envelope's wire form unless the connection is closed (``CLOSED``) or
        holds more than ``max_pending`` unsent bytes (``STALLED``); else ``WRITTEN``."""

    def unflushed_bytes(self) -> int:
        """Bytes written and not yet taken by the kernel."""

    def close_for(self, reason: CloseReason) -> None:
        """Close the connection, as its transport closes for ``reason``."""


class Connection(Subscriber, Protocol):
    """What a session (``realtime.chat.session``, ``realtime.votes.session``) needs of its
    connection: the hub's subscriber, that subscribes itself (or not, once its client has
    left)."""

    def subscribe(self, topic: str) -> None:
        """Receive ``topic`` from the hub."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""


Send = Callable[[Message], Any]  # how a session writes a frame to its connection alone
# Given topics whose subscribers may have missed messages (the broker's subscription was
# interrupted), catch up those it knows (deliver what was missed, or end their subscribers
# with ``CloseReason.GAP``) and return them; the others are left to the next handler.
GapHandler = Callable[[set[str]], Awaitable[set[str]]]


class _Held:
    """The frames kept for one connection while its welcome is built."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: list[Envelope] = []
        self.size = 0  # their bytes


class Hub:
    """Topics, connections and flow control; see the module docstring.

    Args:
        broker: carries envelopes between processes; default: this process only.
        max_pending_bytes: a connection holding more unsent bytes than this when a new
            frame is due is dropped instead.
        slice_size: the most writes one turn of the loop makes before yielding.
        slice_seconds: the longest one turn of the loop writes queued frames before
            yielding (the clock is read every ``CLOCK_EVERY`` writes).
        clock: seconds, for the slices' time budget; tests pass their own.
    """

    def __init__(
        self,
        broker: Optional[Broker] = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        slice_size: int = DEFAULT_SLICE_SIZE,
        slice_seconds: float = DEFAULT_SLICE_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.max_pending_bytes = max_pending_bytes
        self.slice_size = slice_size
        self.slice_seconds = slice_seconds
        self._clock = clock
        self._topics: dict[str, set[Subscriber]] = {}  # topic -> its local subscribers
        self._connections: dict[Subscriber, None] = {}  # open connections, in order (a set)
        # connection -> its topics: a tuple, not a set, since a connection has one or two
        # (a set is 216 bytes each, some 1% of an idle connection; bench/memory_profile.py)
        self._subscriptions: dict[Subscriber, tuple[str, ...]] = {}
        # Frames not yet fully written, oldest first: (topic, or None for a direct send; the
        # envelope; its subscribers; how many are done).
        self._queue: deque[
            tuple[Optional[str], Envelope, tuple[Subscriber, ...], int]] = deque()
        self._queued_sends: dict[Subscriber, int] = {}  # connection -> direct sends queued
        self._draining = False  # a drain is scheduled on the loop
        # Connections whose frames are kept, not written, while their welcome is built
        # (``hold``): connection -> the frames, oldest first.
        self._held: dict[Subscriber, _Held] = {}
        self.published = 0  # messages published from this process
        self.sent = 0  # frames written to connections
        self.dropped = 0  # connections dropped for not reading
        self.gap_closed = 0  # connections ended because they missed messages (GAP)
        self._gap_handlers: list[GapHandler] = []
        self.broker.attach(self.deliver)
        attach_gaps = getattr(self.broker, "attach_gaps", None)
        if attach_gaps is not None:
            attach_gaps(self.catch_up, self.end_topics)

    # Connections

    def register(self, subscriber: Subscriber) -> None:
        """Start tracking an open connection (done by the socket base class)."""
        self._connections.setdefault(subscriber, None)

    def forget(self, subscriber: Subscriber) -> None:
        """Drop every trace of a connection: it and its topics."""
        for topic in self._subscriptions.pop(subscriber, ()):
            self._remove(topic, subscriber)
        self._connections.pop(subscriber, None)
        self._held.pop(subscriber, None)

    @property
    def connections(self) -> list[Subscriber]:
        """The open connections, in the order they registered."""
        return list(self._connections)

    def pending_bytes(self, subscriber: Subscriber) -> int:
        """Bytes written to ``subscriber`` that its socket has not taken yet, headers included."""
        return subscriber.unflushed_bytes()

    # Topics

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Deliver what is published on ``topic`` to ``subscriber`` from now on."""
        self.register(subscriber)
        members = self._topics.get(topic)
        if members is None:
            members = self._topics[topic] = set()
            self.broker.subscribe(topic)
        members.add(subscriber)
        topics = self._subscriptions.get(subscriber, ())
        if topic not in topics:
            self._subscriptions[subscriber] = (*topics, topic)

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Stop delivering ``topic`` to ``subscriber``; unknown pairs are ignored."""
        topics = self._subscriptions.get(subscriber)
        if topics is not None and topic in topics:
            self._subscriptions[subscriber] = tuple(t for t in topics if t != topic)
        self._remove(topic, subscriber)

    async def subscribed(self, *topics: str) -> None:
        """Wait until what other processes publish on ``topics`` reaches this one (a
        networked broker's subscription takes a round trip; a local one none). A client's
        welcome is built after this, so it misses nothing published after its history."""
        ready = getattr(self.broker, "ready", None)
        if ready is not None and topics:
            await ready(topics)

    def subscribers(self, topic: str) -> set[Subscriber]:
        """The local subscribers of ``topic`` (a copy)."""
        return set(self._topics.get(topic, ()))

    def subscriber_count(self, topic: str) -> int:
        """How many local subscribers ``topic`` has (no copy, unlike ``subscribers``)."""
        members = self._topics.get(topic)
        return len(members) if members is not None else 0

    def topics(self, subscriber: Subscriber) -> set[str]:
        """The topics ``subscriber`` listens to (a copy)."""
        return set(self._subscriptions.get(subscriber, ()))

    def _remove(self, topic: str, subscriber: Subscriber) -> None:
        members = self._topics.get(topic)
        if members is None:
            return
        members.discard(subscriber)
        if not members:
            del self._topics[topic]
            self.broker.unsubscribe(topic)

    # Holding

    def hold(self, subscriber: Subscriber) -> None:
        """Keep every frame due to ``subscriber`` from now on instead of writing it, until
        ``release``: a connection subscribes, then builds its welcome from history, and
        what was published meanwhile must follow the welcome, not precede it. Held bytes
        count toward ``max_pending_bytes`` as unsent ones do."""
        self._held[subscriber] = _Held()

    def release(self, subscriber: Subscriber) -> list[Envelope]:
        """Stop holding ``subscriber``'s frames; returns them, oldest first, for the caller
        to ``send`` after the welcome (less those the welcome holds already)."""
        held = self._held.pop(subscriber, None)
        return held.frames if held is not None else []

    def _keep(self, subscriber: Subscriber, envelope: Envelope) -> int:
        held = self._held[subscriber]
        held.frames.append(envelope)
        held.size += len(envelope.data)
        return STALLED if held.size > self.max_pending_bytes else WRITTEN

    # Sending

    def publish(self, topic: str, message: Publishable) -> Envelope:
        """Send ``message`` to every subscriber of ``topic``, in every process.

        A dict goes as JSON text, ``str`` as text, ``bytes`` as binary, an ``Envelope`` as
        it says. Returns the envelope, to publish the same bytes on another topic.
        """
        envelope = Envelope.of(message)
        self.published += 1
        self.broker.publish(topic, envelope)
        return envelope

    def publish_here(self, topic: str, message: Publishable) -> Envelope:
        """Send ``message`` to this process's subscribers of ``topic`` only, counted as a
        publish: what must not reach the other processes (a chat message Redis could not
        store, under an id only this process handed out)."""
        envelope = Envelope.of(message)
        self.published += 1
        self.deliver(topic, envelope)
        return envelope

    async def publish_with_history(
        self, topics: Sequence[str], head: bytes, tail: bytes, history: Any
    ) -> Optional[int]:
        """Store a message in ``history`` and publish it on ``topics`` in one operation of
        the broker's (atomic on Redis), its id put between ``head`` and ``tail``. Returns
        the id, or None when the broker stored nothing (the caller decides what then)."""
        append = getattr(self.broker, "publish_with_history", None)
        if append is None:
            raise TypeError(f"the {self.broker.name} broker keeps no history")
        message_id: Optional[int] = await append(topics, head, tail, history)
        if message_id is not None:
            self.published += 1
        return message_id

    def deliver(self, topic: str, envelope: Envelope) -> None:
        """Write ``envelope`` to this process's subscribers of ``topic`` (the broker calls
        it): at once if it is small and none of them waits for an earlier frame, else
        queued behind what waits."""
        members = self._topics.get(topic)
        if not members:
            return
        subscribers = tuple(members)  # a drop may change the set
        if len(subscribers) > self.slice_size or (
            self._queue and any(map(self._waits, subscribers))
        ):
            self._enqueue(topic, envelope, subscribers)
            return
        for subscriber in subscribers:
            self._write_safely(subscriber, envelope)

    def send(self, subscriber: Subscriber, message: Publishable) -> bool:
        """Write one frame to one connection, after any frame still queued for it.

        Returns False if the connection is closed or was dropped for its backlog.
        """
        envelope = Envelope.of(message)
        if self._waits(subscriber):
            self._enqueue(None, envelope, (subscriber,))
            return subscriber in self._connections
        return self._write(subscriber, envelope)

    def _waits(self, subscriber: Subscriber) -> bool:
        """Whether a queued frame is still due to ``subscriber``, so a new one must queue
        behind it: a direct send to it, or a fan-out on one of its topics. Connections with
        nothing queued (an echo client while a big room fans out) are served at once."""
        if not self._queue:
            return False
        if self._queued_sends.get(subscriber):
            return True
        topics = self._subscriptions.get(subscriber)
        return bool(topics) and any(item[0] in topics for item in self._queue)

    def _write(self, subscriber: Subscriber, envelope: Envelope) -> bool:
        if self._held and subscriber in self._held:
            outcome = self._keep(subscriber, envelope)
        else:
            outcome = subscriber.write_envelope(envelope, self.max_pending_bytes)
        if not outcome:  # WRITTEN
            self.sent += 1
            return True
        if outcome == STALLED:
            # A dropped connection is forgotten at once but its stream lives on until the
            # closing handshake ends; frames still due to it then are refused quietly.
            if subscriber in self._connections:
                self.drop(subscriber)
        elif outcome == CLOSED:
            self.forget(subscriber)
        return False

    def _write_safely(self, subscriber: Subscriber, envelope: Envelope) -> None:
        # One subscriber's failure is its own: logged, and every other still gets the frame
        # (and a queued fan-out is never left stuck half way).
        try:
            self._write(subscriber, envelope)
        except Exception:
            log.exception("writing to %r failed; dropping it", subscriber)
            self.forget(subscriber)
            subscriber.close_for(CloseReason.ERROR)

    def _enqueue(
        self, topic: Optional[str], envelope: Envelope, subscribers: tuple[Subscriber, ...],
    ) -> None:
        self._queue.append((topic, envelope, subscribers, 0))
        if topic is None:
            (subscriber,) = subscribers
            self._queued_sends[subscriber] = self._queued_sends.get(subscriber, 0) + 1
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """Write queued frames, oldest first, until ``slice_size`` writes are made or
        ``slice_seconds`` have passed; come back on the next turn of the loop if any are
        left."""
        budget = self.slice_size
        clock = self._clock
        deadline = clock() + self.slice_seconds
        queue = self._queue
        subscriptions = self._subscriptions
        while queue and budget > 0:
            topic, envelope, subscribers, done = queue[0]
            end = min(len(subscribers), done + budget, done + CLOCK_EVERY)
            for index in range(done, end):
                subscriber = subscribers[index]
                # A connection that left the topic since the publish gets nothing more of it.
                if topic is None or topic in subscriptions.get(subscriber, ()):
                    self._write_safely(subscriber, envelope)
            budget -= end - done
            if end < len(subscribers):
                queue[0] = (topic, envelope, subscribers, end)
            else:
                queue.popleft()
                if topic is None:
                    (subscriber,) = subscribers
                    left = self._queued_sends.pop(subscriber) - 1
                    if left:
                        self._queued_sends[subscriber] = left
            if clock() >= deadline:
                break
        if queue:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._draining = False

    @property
    def queued(self) -> int:
        """Writes waiting for a later turn of the loop."""
        return sum(len(subscribers) - done for _, _, subscribers, done in self._queue)

    def drop(self, subscriber: Subscriber) -> None:
        """Remove a connection that stopped reading from every topic and close it as slow."""
        log.warning(
            "dropping slow consumer %r: %d bytes unflushed (bound %d)",
            subscriber, subscriber.unflushed_bytes(), self.max_pending_bytes,
        )
        self.forget(subscriber)
        self.dropped += 1
        subscriber.close_for(CloseReason.SLOW)

    # Gaps

    def on_gap(self, handler: GapHandler) -> None:
        """Have ``handler`` catch up the topics it knows after a broker's gap."""
        self._gap_handlers.append(handler)

    async def catch_up(self, topics: set[str]) -> None:
        """The broker missed what other processes published on ``topics`` for a while
        (now subscribed again): each gap handler catches up the topics it knows, within
        ``GAP_DEADLINE`` seconds in all; the subscribers of the others (and of a handler
        that failed or ran out of time) are ended with ``CloseReason.GAP``."""
        left = set(topics)
        try:
            async with asyncio.timeout(GAP_DEADLINE):
                for handler in self._gap_handlers:
                    if not left:
                        break
                    try:
                        left -= await handler(set(left))
                    except Exception:
                        log.exception("a gap handler failed; its topics' subscribers are "
                                      "ended instead")
        except TimeoutError:
            log.warning("catching up after a gap took over %.0f s; the subscribers left "
                        "are ended", GAP_DEADLINE)
        self.end_topics(left)

    def end_topics(self, topics: Iterable[str], reason: CloseReason = CloseReason.GAP) -> None:
        """Remove every local subscriber of ``topics`` from every topic and close it for
        ``reason`` (by default: it missed messages it cannot be given)."""
        ended: dict[Subscriber, None] = {}
        for topic in topics:
            ended.update(dict.fromkeys(self._topics.get(topic, ())))
        if ended:
            log.warning("ending %d connections that missed messages of %s", len(ended),
                        ", ".join(sorted(topics)[:5]))
        for subscriber in ended:
            self.forget(subscriber)
            if reason is CloseReason.GAP:
                self.gap_closed += 1
            subscriber.close_for(reason)

    def close_all(self, reason: CloseReason) -> None:
        """Close every open connection for ``reason`` (server shutdown)."""
        for subscriber in self.connections:
            subscriber.close_for(reason)

    def topic_count(self) -> int:
        """How many topics have local subscribers."""
        return len(self._topics)
