"""``realtime.votes.session.VoteSession`` without a server: events in (find, open, vote),
frames out (what the hub writes to each connection), on an in-memory ``PollStore`` and a
real hub."""

import asyncio
from typing import Any, Iterator, Optional

import pytest

from realtime.pubsub.brokers import LocalBroker
from realtime.pubsub.delivery import CloseReason
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.votes.redisstore import PollsUnavailable
from realtime.votes.session import VoteSession, poll_topic
from tests.support import RecordingConnection
from realtime.votes.spec import NewPoll
from realtime.votes.store import DEMO_ID, PollStore
from realtime.wire.messages import ClientError

ONE_VOTE = NewPoll("Pick one", ("a", "b"), one_vote_per_voter=True)


class Connection(RecordingConnection):
    """A recording connection with its vote session (which sends through the hub, as a
    handler's ``send`` does); the hub never closes it in these tests."""

    def __init__(self, hub: Hub, store: PollStore, poll_id: str = DEMO_ID,
                 voter: Optional[str] = None) -> None:
        super().__init__(hub)
        self.session = VoteSession(store, hub, self, lambda frame: hub.send(self, frame),
                                   poll_id, voter)

    async def open(self) -> dict[str, Any]:
        """Find the poll, then open the session, as a handler does."""
        assert await self.session.find() is not None
        return await self.session.open()

    def close_for(self, reason: CloseReason) -> None:
        raise AssertionError(f"closed for {reason}")


@pytest.fixture
def store() -> Iterator[PollStore]:
    store = PollStore(None)
    yield store
    store.close()


async def refusal(session: VoteSession, option: str) -> str:
    """The code ``session.vote(option)`` is refused with."""
    with pytest.raises(ClientError) as caught:
        await session.vote(option)
    return caught.value.code


async def test_open_sends_the_poll_frame_first(hub, store):
    """An opened session's first frame is the poll with its counts, the one it returns."""
    watcher = Connection(hub, store)
    frame = await watcher.open()
    assert watcher.frames == [frame]
    assert frame["type"] == "poll" and frame["voted"] is None
    assert frame["poll"]["id"] == DEMO_ID and frame["poll"]["total"] == 0


async def test_open_tells_a_voter_the_option_it_chose(hub, store):
    """A voter opening a one-vote poll it voted in is told its option."""
    poll, _ = await store.create(ONE_VOTE)
    await store.vote(poll.id, "2", "alice")
    frame = await Connection(hub, store, poll.id, "alice").open()
    assert frame["voted"] == "2" and frame["poll"]["total"] == 1


async def test_votes_around_an_open_are_in_the_snapshot_or_a_tally_once(hub, store):
    """Votes cast just before and just after a session opens each show once: in its poll
    frame or as a tally after it, in commit order."""
    voter = Connection(hub, store)
    await voter.open()
    watcher = Connection(hub, store)
    assert await watcher.session.find() is not None
    before = [voter.session.vote("1") for _ in range(3)]
    after = [voter.session.vote("2") for _ in range(4)]
    await asyncio.gather(*before, watcher.session.open(), *after)
    poll, *tallies = watcher.frames
    assert poll["type"] == "poll" and poll["poll"]["total"] == 3
    assert [tally["total"] for tally in tallies] == [4, 5, 6, 7]
    assert tallies[-1]["votes"] == {"1": 3, "2": 4, "3": 0}


async def test_a_vote_reaches_every_session_then_its_voter_is_acknowledged(hub, store):
    """A vote's tally reaches every open session of the poll; its voter then gets
    ``voted``."""
    voter, watcher = Connection(hub, store), Connection(hub, store)
    await voter.open()
    await watcher.open()
    await voter.session.vote("3")
    assert voter.kinds() == ["poll", "tally", "voted"]
    assert watcher.kinds() == ["poll", "tally"]
    assert watcher.frames[-1] == voter.frames[1]


async def test_voted_carries_the_counts_with_the_vote(hub, store):
    """``voted`` names the option and carries the tally that includes the vote."""
    voter = Connection(hub, store)
    await voter.open()
    await voter.session.vote("1")
    voted = await voter.session.vote("1")
    assert voted == voter.frames[-1]
    assert voted == {"type": "voted", "option": "1", "options": ["1"], "tally": {
        "type": "tally", "poll": DEMO_ID, "votes": {"1": 2, "2": 0, "3": 0}, "total": 2}}


async def test_an_unknown_option_is_refused_before_the_store(hub, store, monkeypatch):
    """A vote for an option the poll lacks is ``no_such_option`` without asking the store;
    nothing is published."""
    voter = Connection(hub, store)
    await voter.open()

    async def no_store(*_: Any) -> Any:
        raise AssertionError("the store was asked")

    monkeypatch.setattr(store, "vote", no_store)
    assert await refusal(voter.session, "4") == "no_such_option"
    assert voter.kinds() == ["poll"]


async def test_a_second_vote_of_one_voter_is_already_voted(hub, store):
    """A voter's second vote in a one-vote poll is ``already_voted``; its first stands."""
    poll, _ = await store.create(ONE_VOTE)
    alice = Connection(hub, store, poll.id, "alice")
    await alice.open()
    await alice.session.vote("1")
    assert await refusal(alice.session, "2") == "already_voted"
    assert alice.kinds() == ["poll", "tally", "voted"]


async def test_a_one_vote_poll_without_a_voter_is_no_voter_id(hub, store):
    """A vote in a one-vote poll from a session without a voter is ``no_voter_id``."""
    poll, _ = await store.create(ONE_VOTE)
    anonymous = Connection(hub, store, poll.id)
    await anonymous.open()
    assert await refusal(anonymous.session, "1") == "no_voter_id"


async def test_a_vote_in_a_closed_poll_is_poll_closed(hub, store):
    """A vote in a poll closed since the session opened is ``poll_closed``; nothing is
    published."""
    voter = Connection(hub, store)
    await voter.open()
    await store.set_closed(DEMO_ID, True)
    assert await refusal(voter.session, "1") == "poll_closed"
    assert voter.kinds() == ["poll"]


async def test_an_unavailable_store_is_unavailable(hub, store, monkeypatch):
    """A vote the store cannot take is ``unavailable``; nothing is published."""
    voter = Connection(hub, store)
    await voter.open()

    async def down(*_: Any) -> Any:
        raise PollsUnavailable()

    monkeypatch.setattr(store, "vote", down)
    assert await refusal(voter.session, "1") == "unavailable"
    assert voter.kinds() == ["poll"]


async def test_state_changes_reach_an_open_session_in_order(hub, store):
    """``closed``, ``reopened`` and ``deleted`` published on the poll's topic reach an open
    session after its poll frame, in order."""
    watcher = Connection(hub, store)
    await watcher.open()
    for kind in ("closed", "reopened", "deleted"):
        hub.publish(poll_topic(DEMO_ID), {"type": kind, "poll": DEMO_ID})
    assert watcher.kinds() == ["poll", "closed", "reopened", "deleted"]


async def test_a_poll_deleted_before_open_is_no_such_poll(hub, store):
    """A poll deleted between the lookup and the snapshot is ``no_such_poll``: nothing is
    sent and nothing subscribed."""
    poll, _ = await store.create(ONE_VOTE)
    late = Connection(hub, store, poll.id, "alice")
    assert await late.session.find() is not None
    await store.delete(poll.id)
    with pytest.raises(ClientError) as caught:
        await late.session.open()
    assert caught.value.code == "no_such_poll"
    assert late.frames == [] and hub.topics(late) == set()


async def test_a_vote_in_a_deleted_poll_is_no_such_poll(hub, store):
    """A vote in a poll deleted since the session opened is ``no_such_poll``."""
    poll, _ = await store.create(ONE_VOTE)
    alice = Connection(hub, store, poll.id, "alice")
    await alice.open()
    await store.delete(poll.id)
    assert await refusal(alice.session, "1") == "no_such_poll"


async def test_find_answers_none_for_an_unknown_poll(hub, store):
    """Looking up an id no poll has answers None."""
    assert await Connection(hub, store, "nosuchpoll").session.find() is None


async def test_find_does_not_look_up_an_absurdly_long_id(hub, store, monkeypatch):
    """An id longer than any poll's is None without asking the store."""
    async def no_store(*_: Any) -> Any:
        raise AssertionError("the store was asked")

    monkeypatch.setattr(store, "get", no_store)
    assert await Connection(hub, store, "x" * 65).session.find() is None


class ConfirmingBroker(LocalBroker):
    """As Redis pub/sub: another process's publish reaches this one only once this
    process's subscription is confirmed, a moment after the hub asks for it."""

    def __init__(self) -> None:
        super().__init__()
        self.confirmed: set[str] = set()
        self._waiting: dict[str, asyncio.Event] = {}

    def subscribe(self, topic: str) -> None:
        asyncio.get_running_loop().call_later(0.05, self._confirm, topic)

    def _confirm(self, topic: str) -> None:
        self.confirmed.add(topic)
        self._waiting.setdefault(topic, asyncio.Event()).set()

    async def ready(self, topics: Any) -> None:
        for topic in topics:
            await self._waiting.setdefault(topic, asyncio.Event()).wait()

    def from_another_process(self, topic: str, message: dict[str, Any]) -> None:
        if topic in self.confirmed:
            assert self._deliver is not None
            self._deliver(topic, Envelope.of(message))


async def test_a_tally_from_another_process_after_the_poll_frame_arrives(store):
    """A vote counted on another process right after a connection got its poll frame
    reaches that connection (its subscription was confirmed before the snapshot)."""
    broker = ConfirmingBroker()
    hub = Hub(broker=broker)
    watcher = Connection(hub, store)
    await watcher.open()
    option = (await store.get(DEMO_ID)).options[0].id
    tally = await store.vote(DEMO_ID, option, "elsewhere")  # the other process's vote
    broker.from_another_process(poll_topic(DEMO_ID), tally.to_json())
    assert watcher.kinds() == ["poll", "tally"]


async def test_a_tally_the_snapshot_counts_is_not_sent_again(hub, store):
    """A tally published while the snapshot was read, and counted in it, does not follow
    the poll frame."""
    watcher = Connection(hub, store)
    snapshot = store.snapshot

    async def snapshot_after_a_vote(*args: Any) -> Any:
        store.snapshot = snapshot  # type: ignore[method-assign]
        voter = Connection(hub, store, voter="v1")
        await voter.open()
        option = (await store.get(DEMO_ID)).options[0].id
        await voter.session.vote(option)  # committed and published before the snapshot
        return await snapshot(*args)

    store.snapshot = snapshot_after_a_vote  # type: ignore[method-assign]
    frame = await watcher.open()
    assert frame["poll"]["total"] == 1
    assert watcher.kinds() == ["poll"]
