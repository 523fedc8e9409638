"""The live participant count of each poll: ``ParticipantCounts``.

A poll's pages show how many have voted and how many are watching: the ``participants``
frame, ``{"type": "participants", "poll": <id>, "voters": n, "viewers": m}``, published on
the poll's topic. ``voters`` is the number of distinct voters of a one-vote poll, and the
number of votes of an every-click poll (which knows no voters; one person clicking five
times counts five). Neither says anything per option, so a poll whose results are hidden
leaks nothing through it (its total is shown anyway). ``viewers`` is the number of
connections subscribed to the poll's topic (vote sockets and event streams), over every
process: each process counts its own (``Hub.subscriber_count``) and the store adds them up
(``Polls.participants``; on Redis through the hash ``poll:{<id>}:viewers``, where each
process's count is valid for ``VALIDITY`` refresh periods and re-recorded every ``REFRESH``
seconds, so a crashed process's viewers drop out of the count within 30 s).

A change (a connection opens or closes, a vote is counted) schedules one frame for its
poll: on the next turn of the loop if the poll was not told within ``interval``, else when
the interval is up, with the counts as they are then. So a wave of 500 page loads costs a
few fan-outs, not 500 (as the chat's ``readers`` frames, ``realtime.chat.session``).
"""

import asyncio
import logging
import math
import time
from collections import deque
from typing import Callable, Optional

from tornado.ioloop import IOLoop, PeriodicCallback

from realtime.pubsub.hub import Hub
from realtime.votes.session import poll_topic
from realtime.votes.store import Polls
from realtime.wire.messages import ClientError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.25  # seconds: at most four participants frames a second per poll
REFRESH = 10.0  # seconds between two recordings of this process's viewers of a poll
VALIDITY = 3  # refresh periods a recorded count lasts unless recorded again

Counts = tuple[int, int]  # (voters, viewers)


class ParticipantCounts:
    """Tells each poll's pages its voters and viewers, at most once per ``interval``; see
    the module docstring.

    Args:
        hub: where the frames are published (``vote.<id>``) and local viewers counted.
        store: the poll store, which counts voters and adds up every process's viewers.
        interval: the shortest time, in seconds, between two frames of one poll.
        refresh: seconds between two recordings of this process's counts (on Redis, what
            keeps them valid); each also tells the poll if its counts changed meanwhile
            (another process's viewers expired).
        clock: monotonic seconds, for tests.
    """

    def __init__(
        self, hub: Hub, store: Polls, interval: float = DEFAULT_INTERVAL,
        refresh: float = REFRESH, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.store = store
        self.interval = interval
        self.refresh = refresh
        self._clock = clock
        self._told: dict[str, Counts] = {}  # poll -> the counts it was last told from here
        self._sent_at: dict[str, float] = {}  # poll -> when its last frame went out
        self._due: set[str] = set()  # polls with a frame scheduled
        self._ready: deque[tuple[str, bool]] = deque()  # (poll, quiet) to flush, in order
        # One task flushes, one poll after the other (so two frames of a poll go out in the
        # order their counts were read). It lives from the first change on: a task made
        # later, at each flush, could be made as the loop stops and never run.
        self._pump: Optional["asyncio.Task[None]"] = None
        self._wake: Optional[asyncio.Event] = None
        self._refresher: Optional[PeriodicCallback] = None

    def changed(self, poll_id: str) -> None:
        """The counts of ``poll_id`` may have changed: tell the poll, coalesced."""
        self._start()
        if self._pump is None or poll_id in self._due:  # no running loop: nobody to tell
            return
        self._due.add(poll_id)
        last = self._sent_at.get(poll_id, -math.inf)
        wait = max(0.0, last + self.interval - self._clock())
        IOLoop.current().call_later(wait, self._spawn, poll_id, False)

    async def aclose(self) -> None:
        """Stop refreshing and flushing (the shutdown closer; the counts die with the
        connections, and on Redis this process's expire)."""
        if self._refresher is not None:
            self._refresher.stop()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)

    def start(self) -> None:
        """Start flushing (idempotent; ``changed`` does it too): a viewer's session calls
        it as it begins, so the task runs well before the first change."""
        self._start()

    def _start(self) -> None:
        if self._pump is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                # A connection closed while the loop is not running (it is being closed):
                # a task made now would never run.
                return
            self._wake = asyncio.Event()
            self._pump = asyncio.ensure_future(self._run())
            self._refresher = PeriodicCallback(self._refresh_all, self.refresh * 1000)
            self._refresher.start()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ready:
                await self._flush(*self._ready.popleft())

    def _refresh_all(self) -> None:
        """Record again every poll this process has viewers of; tell those whose counts
        moved (a crashed process's viewers expired) without a change here."""
        for poll_id in list(self._told):
            if poll_id not in self._due:
                self._spawn(poll_id, True)

    def _spawn(self, poll_id: str, quiet: bool) -> None:
        self._ready.append((poll_id, quiet))
        if self._wake is not None:
            self._wake.set()

    async def _flush(self, poll_id: str, quiet: bool) -> None:
        """Record this process's viewers of the poll and publish the counts (``quiet``:
        only if they differ from what this process last told the poll)."""
        if not quiet:
            self._due.discard(poll_id)
            self._sent_at[poll_id] = self._clock()
        topic = poll_topic(poll_id)
        here = self.hub.subscriber_count(topic)
        try:
            counts = await self.store.participants(poll_id, here, VALIDITY * self.refresh)
        except ClientError:  # the store is unavailable (it logs that once): the next change
            return
        except Exception:
            log.exception("counting the participants of poll %s failed", poll_id)
            return
        if counts is None:  # the poll is gone
            self._forget(poll_id)
            return
        if here == 0:  # nobody here to refresh for; the others still hear the change
            self._forget(poll_id)
            if quiet:
                return
        elif quiet and self._told.get(poll_id) == counts:
            return
        else:
            self._told[poll_id] = counts
        voters, viewers = counts
        self.hub.publish(topic, {"type": "participants", "poll": poll_id, "voters": voters,
                                 "viewers": viewers})

    def _forget(self, poll_id: str) -> None:
        self._told.pop(poll_id, None)
        self._sent_at.pop(poll_id, None)
