"""PollStore against a real SQLite file in a temporary directory."""

import asyncio
import os
import sqlite3
import time

import pytest

from realtime.messages import ClientError
from realtime.polls import DB_FILENAME, DEMO_ID, PollStore
from realtime.pollspec import NewPoll

ONE_VOTE = NewPoll("Pick one", ("a", "b"), one_vote_per_voter=True)
EVERY_CLICK = NewPoll("Click away", ("a", "b"))


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / DB_FILENAME)


@pytest.fixture
def store(path):
    store = PollStore(path)
    yield store
    store.close()


async def vote_error(store, *args) -> str:
    with pytest.raises(ClientError) as caught:
        await store.vote(*args)
    return caught.value.code


async def test_fresh_store_has_the_demo_poll(store):
    """A new database holds the demo poll with its three candidates and no votes."""
    demo = await store.get(DEMO_ID)
    assert [o.label for o in demo.options] == ["钢弹", "铁锤", "贝贝"]
    assert not demo.one_vote_per_voter and demo.total == 0


async def test_database_is_in_wal_mode(store, path):
    """The file is a WAL-mode database."""
    await store.start()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_created_poll_can_be_read_back(store):
    """create returns the poll with a short URL-safe id and get finds it."""
    poll = await store.create(ONE_VOTE)
    assert len(poll.id) >= 8 and poll.id.replace("-", "").replace("_", "").isalnum()
    assert await store.get(poll.id) == poll
    assert [o.id for o in poll.options] == ["1", "2"]


async def test_recent_is_newest_first(store):
    """recent puts the newest poll first and the demo poll last."""
    first = await store.create(ONE_VOTE)
    second = await store.create(EVERY_CLICK)
    assert [p.id for p in await store.recent()] == [second.id, first.id, DEMO_ID]


async def test_vote_returns_the_full_tally(store):
    """A vote returns every option's count."""
    tally = await store.vote(DEMO_ID, "2", None)
    assert tally.votes == {"1": 0, "2": 1, "3": 0}


async def test_vote_for_an_unknown_option_or_poll_is_refused(store):
    """Unknown options and polls are refused and count nothing."""
    assert await vote_error(store, DEMO_ID, "9", None) == "no_such_option"
    assert await vote_error(store, "nope", "1", None) == "no_such_poll"
    assert (await store.get(DEMO_ID)).total == 0


async def test_one_vote_poll_needs_a_voter(store):
    """A one-vote poll refuses a vote without a voter id."""
    poll = await store.create(ONE_VOTE)
    assert await vote_error(store, poll.id, "1", None) == "no_voter_id"


async def test_one_vote_poll_counts_a_voter_once(store):
    """A second vote of the same voter is refused, even for another option."""
    poll = await store.create(ONE_VOTE)
    await store.vote(poll.id, "1", "alice")
    assert await vote_error(store, poll.id, "2", "alice") == "already_voted"
    assert (await store.snapshot(poll.id, "alice"))[1] == "1"
    assert (await store.get(poll.id)).total == 1


async def test_simultaneous_votes_of_one_voter_count_once(store):
    """Of many votes sent at the same instant by one voter exactly one counts."""
    poll = await store.create(ONE_VOTE)
    results = await asyncio.gather(
        *(store.vote(poll.id, "1", "bob") for _ in range(10)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert {r.code for r in results if isinstance(r, ClientError)} == {"already_voted"}
    assert (await store.get(poll.id)).total == 1


async def test_every_click_poll_counts_every_vote(store):
    """Without one_vote_per_voter the same voter may vote again and again."""
    poll = await store.create(EVERY_CLICK)
    for _ in range(3):
        await store.vote(poll.id, "1", "carol")
    assert (await store.get(poll.id)).total == 3


async def test_votes_survive_reopening(path):
    """Votes and polls are on disk once vote() has returned."""
    store = PollStore(path)
    poll = await store.create(ONE_VOTE)
    await store.vote(poll.id, "2", "dave")
    await store.vote(DEMO_ID, "1", None)
    store.close()

    reopened = PollStore(path)
    try:
        assert (await reopened.get(poll.id)).options[1].votes == 1
        assert (await reopened.get(DEMO_ID)).options[0].votes == 1
    finally:
        reopened.close()


async def test_counts_agree_with_ballots(store, path):
    """In a one-vote poll the stored counts equal the stored ballots."""
    poll = await store.create(ONE_VOTE)
    for voter in ["v1", "v2", "v3"]:
        await store.vote(poll.id, "2", voter)
    store.close()
    conn = sqlite3.connect(path)
    ballots = conn.execute("SELECT count(*) FROM ballots WHERE poll_id = ?", (poll.id,)).fetchone()
    counted = conn.execute(
        "SELECT sum(votes) FROM options WHERE poll_id = ?", (poll.id,)
    ).fetchone()
    conn.close()
    assert ballots == counted == (3,)


async def test_memory_store_writes_no_file(tmp_path, monkeypatch):
    """A store without a path keeps everything in memory: nothing is written to the working
    directory, where a relative database file would land."""
    monkeypatch.chdir(tmp_path)
    store = PollStore(None)
    try:
        await store.vote(DEMO_ID, "1", None)
        assert (await store.get(DEMO_ID)).total == 1
    finally:
        store.close()
    assert os.listdir(tmp_path) == []


async def test_votes_do_not_block_the_event_loop(store):
    """While 300 votes are committed to disk the event loop keeps turning: no stall comes
    near the time the votes take (done on the loop, one stall would be all of it)."""
    await store.start()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:  # how late the loop gets back to a 1 ms timer
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(store.vote(DEMO_ID, "1", None) for _ in range(300)))
    took = time.perf_counter() - started
    done.set()
    await ticking
    assert (await store.get(DEMO_ID)).total == 300
    assert len(gaps) > 10 and max(gaps) < took / 2
