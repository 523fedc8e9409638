"""One connection's view of one poll, whatever carries it: ``VoteSession``.

The vote socket ``/ws/vote/<id>`` and the event stream ``/sse/vote/<id>`` are the same
conversation with the poll store and the hub: find the poll before the handshake is
answered, read its snapshot and join its topic so that no tally is missed or repeated, send
the ``poll`` frame; and, on the socket, vote: the store counts it, the poll's topic hears the
tally, the voter gets ``voted`` with it. ``VoteSession`` is that choreography, written once.
It does no I/O of its own: it awaits the ``Polls`` store (which may be Redis), subscribes its
``Connection`` to the hub, and hands the frames meant for its connection alone to the
``send`` callable it was given, which each transport turns into its own wire form (a JSON
frame, an event). A refusal is a ``ClientError`` raised for the transport to answer in its
own form. So it is tested without a server (tests/votes/test_votesession.py).

Ordering. The connection joins the poll's topic first, with the hub holding what is
published on it (``Hub.hold``), and waits until the broker confirms the subscription (on
Redis, a tally another process publishes from then on reaches this one); then the snapshot
is read, the ``poll`` frame sent, and the held frames follow it, less the tallies the
snapshot already counts (a tally's ``total`` grows by one per vote: one at or below the
snapshot's is in it). So no tally is missed, from this process or another, and none is
repeated. A vote publishes its tally as soon as the store hands it back, with no await in
between: a process's tallies go out in commit order.

Voter identity (the signed cookie) is the transport's to read; the session is given it.

Gaps. Tallies are not kept anywhere to be replayed: after the broker missed what other
processes published (``Hub.catch_up``), ``poll_refresher`` sends each poll's subscribers
here a fresh ``tally`` read from the store (or ``deleted``), which replaces the counts the
page shows.
"""

import asyncio
import time
from typing import TYPE_CHECKING, Iterator, Optional

import orjson

from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Connection, GapHandler, Hub, Send
from realtime.votes.spec import POLL_ID_MAX, Poll, Tally
from realtime.votes.store import Choice, Polls, choices, refused
from realtime.wire.messages import ClientError, Message

if TYPE_CHECKING:  # participants.py imports this module (poll_topic)
    from realtime.votes.participants import ParticipantCounts


TOPIC_PREFIX = "vote."
# Seconds a refresh after a gap waits for the store to answer (it may find Redis back a
# moment after the broker); past that the poll's subscribers here are ended instead.
REFRESH_WAIT = 5.0


def poll_topic(poll_id: str) -> str:
    """The hub topic of one poll's tallies and state changes (``closed``, ``reopened``,
    ``deleted``, ``participants``)."""
    return f"{TOPIC_PREFIX}{poll_id}"


class _StillUnavailable(Exception):
    """The store did not answer within ``REFRESH_WAIT`` seconds."""


async def _poll_soon(store: Polls, poll_id: str) -> Optional[Poll]:
    """``find_poll``, tried again for up to ``REFRESH_WAIT`` seconds while the store is
    unavailable.

    Raises:
        _StillUnavailable: it did not answer in that time.
    """
    deadline = time.monotonic() + REFRESH_WAIT
    while True:
        try:
            return await find_poll(store, poll_id)
        except ClientError:  # unavailable: the store has not found Redis back yet
            if time.monotonic() >= deadline:
                raise _StillUnavailable() from None
        await asyncio.sleep(0.1)


def poll_refresher(store: Polls, hub: Hub) -> GapHandler:
    """The hub's gap handler for polls: each poll topic's subscribers here get a fresh
    ``tally`` (or ``deleted``), or are ended if the store cannot say; see Gaps in the
    module docstring."""

    async def refresh(topics: set[str]) -> set[str]:
        mine = {topic for topic in topics if topic.startswith(TOPIC_PREFIX)}
        for topic in mine:
            poll_id = topic[len(TOPIC_PREFIX):]
            try:
                poll = await _poll_soon(store, poll_id)
            except _StillUnavailable:
                hub.end_topics({topic})
                continue
            if poll is None:
                hub.publish_here(topic, {"type": "deleted", "poll": poll_id})
            else:
                votes = {option.id: option.votes for option in poll.options}
                hub.publish_here(topic, Tally(poll.id, votes, hidden=poll.hidden).to_json())
        return mine

    return refresh


async def find_poll(store: Polls, poll_id: str) -> Optional[Poll]:
    """The poll with that id, or None; absurdly long ids are not looked up."""
    return await store.get(poll_id) if len(poll_id) <= POLL_ID_MAX else None


class VoteSession:
    """One connection's view of one poll; see the module docstring.

    Args:
        store: the poll store (SQLite or Redis).
        hub: where the poll's tallies are published and the connection subscribes.
        connection: the connection as the hub knows it; it subscribes nothing once its
            client has left (an await here may outlast it).
        send: writes a frame to this connection alone (the ``poll`` frame, ``voted``).
        poll_id: the poll, as the request named it.
        voter: the voter id of the request's cookie, or None.
        participants: told when this connection starts or stops viewing the poll and when
            it votes (the ``participants`` frames); None counts nothing.
    """

    def __init__(
        self, store: Polls, hub: Hub, connection: Connection, send: Send, poll_id: str,
        voter: Optional[str] = None, participants: Optional["ParticipantCounts"] = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.connection = connection
        self.send = send
        self.poll_id = poll_id
        self.voter = voter
        # The poll as last read (options never change; counts come from the store).
        self.poll: Optional[Poll] = None
        self.participants = participants
        self.viewing = False  # counted among the poll's viewers (``open`` succeeded)

    async def find(self) -> Optional[Poll]:
        """Look the poll up before the handshake is answered; None if there is none (each
        transport refuses in its own form: a 404, a JSON error)."""
        if self.participants is not None:
            # Its flushing task starts now, while the handshake is still to come, not at
            # the first change, which may come as the server closes every connection.
            self.participants.start()
        self.poll = await find_poll(self.store, self.poll_id)
        return self.poll

    async def open(self) -> Message:
        """Send the ``poll`` frame (the poll with its counts, and the option this voter
        chose, if any) and from then on every frame published on the poll's topic;
        returns the ``poll`` frame. See Ordering in the module docstring.

        Raises:
            ClientError: ``no_such_poll`` if the poll was deleted since it was found.
        """
        topic = poll_topic(self.poll_id)
        self.hub.hold(self.connection)
        try:
            self.connection.subscribe(topic)
            await self.hub.subscribed(topic)
            snapshot = await self.store.snapshot(self.poll_id, self.voter)
        finally:
            held = self.hub.release(self.connection)
        if snapshot is None:
            self.connection.unsubscribe(topic)
            raise ClientError("no_such_poll", "This poll no longer exists.")
        self.poll, ballot = snapshot
        frame = poll_frame(self.poll, ballot)
        self.send(frame)
        for envelope in _not_counted(held, self.poll):
            if not self.hub.send(self.connection, envelope):
                break
        if self.participants is not None:  # the counts follow, this viewer in them
            self.viewing = True
            self.participants.changed(self.poll_id)
        return frame

    def left(self) -> None:
        """The connection is over (and out of the hub): the poll's viewers go down by one."""
        if self.viewing and self.participants is not None:
            self.viewing = False
            self.participants.changed(self.poll_id)

    async def vote(self, option: Choice) -> Message:
        """Count a vote for ``option``, publish the poll's counts, then tell this voter it
        counted, with the counts that include it; returns the ``voted`` frame.

        The acknowledgement carries the counts with this vote in them, so what it means
        does not hang on how the broadcast travels: through another process it may come
        before or after this frame.

        Raises:
            ClientError: ``no_such_option`` (checked before the store is asked, which
                checks again), ``no_such_poll``, ``poll_closed``, ``no_voter_id``,
                ``already_voted`` (``realtime.votes.store.VOTE_REFUSALS``), ``unavailable``.
        """
        assert self.poll is not None, "a vote before the poll was found"
        voted = await cast_vote(
            self.store, self.hub, self.poll, option, self.voter, self.participants)
        self.send(voted)
        return voted


async def cast_vote(
    store: Polls, hub: Hub, poll: Poll, option: Choice, voter: Optional[str],
    participants: Optional["ParticipantCounts"] = None,
) -> Message:
    """Count ``voter``'s ballot (an option id of ``poll``, or several where it takes
    multiple choice), publish the poll's counts on its topic, and return the ``voted``
    frame (the vote socket's and ``POST .../vote``'s): ``option`` the first choice,
    ``options`` all of them, ``tally`` the counts with this ballot in them.

    Raises:
        ClientError: ``no_such_option``, ``too_many_choices`` (checked before the store is
            asked, which checks again), ``no_such_poll``, ``poll_closed``, ``no_voter_id``,
            ``already_voted`` (``realtime.votes.store.VOTE_REFUSALS``), ``unavailable``.
    """
    chosen = choices(option)
    if not chosen or len(chosen) > poll.max_choices or len(set(chosen)) < len(chosen):
        raise refused("too_many_choices")
    if not set(chosen) <= poll.option_ids():
        raise refused("no_such_option")
    tally = await store.vote(poll.id, chosen[0] if len(chosen) == 1 else chosen, voter)
    counts = tally.to_json()
    hub.publish(poll_topic(poll.id), counts)  # no await since the commit: in order
    if participants is not None:  # a new voter, perhaps (a changed vote is not one)
        participants.changed(poll.id)
    return {"type": "voted", "option": chosen[0], "options": list(chosen), "tally": counts}


def poll_frame(poll: Poll, ballot: Optional[str]) -> Message:
    """The ``poll`` frame: the poll, and the ballot this voter cast in it (the store's
    comma-joined ids): ``voted`` its first choice (or null), ``choices`` all of them."""
    chosen = ballot.split(",") if ballot else []
    return {"type": "poll", "poll": poll.to_json(), "voted": chosen[0] if chosen else None,
            "choices": chosen}


def _not_counted(held: list[Envelope], poll: Poll) -> Iterator[Envelope]:
    """The frames held while the snapshot was read, less the tallies it counts already: a
    lower total, or the same total with the same counts (a changed vote keeps the total)."""
    counted = poll.total
    counts = {option.id: option.votes for option in poll.options}
    for envelope in held:
        frame = orjson.loads(envelope.data)
        if frame.get("type") != "tally":
            yield envelope
        elif frame.get("total", 0) > counted or (
                frame.get("total") == counted and frame.get("votes") not in (None, counts)):
            yield envelope
