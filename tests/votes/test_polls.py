"""PollStore against a real SQLite file in a temporary directory."""

import asyncio
import hashlib
import os
import sqlite3
import time
from dataclasses import replace

import pytest

from realtime.votes.spec import NewPoll
from realtime.votes.store import DB_FILENAME, DEMO_ID, PollStore
from realtime.wire.messages import ClientError

ONE_VOTE = NewPoll("Pick one", ("a", "b"), one_vote_per_voter=True)
EVERY_CLICK = NewPoll("Click away", ("a", "b"), one_vote_per_voter=False)


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
    poll, _ = await store.create(ONE_VOTE)
    assert len(poll.id) >= 8 and poll.id.replace("-", "").replace("_", "").isalnum()
    assert await store.get(poll.id) == poll
    assert [o.id for o in poll.options] == ["1", "2"]


async def test_recent_is_newest_first(store):
    """recent puts the newest listed poll first and the demo poll last."""
    first, _ = await store.create(replace(ONE_VOTE, listed=True))
    second, _ = await store.create(replace(EVERY_CLICK, listed=True))
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
    poll, _ = await store.create(ONE_VOTE)
    assert await vote_error(store, poll.id, "1", None) == "no_voter_id"


async def test_one_vote_poll_counts_a_voter_once(store):
    """A second vote of the same voter is refused, even for another option."""
    poll, _ = await store.create(ONE_VOTE)
    await store.vote(poll.id, "1", "alice")
    assert await vote_error(store, poll.id, "2", "alice") == "already_voted"
    assert (await store.snapshot(poll.id, "alice"))[1] == "1"
    assert (await store.get(poll.id)).total == 1


async def test_simultaneous_votes_of_one_voter_count_once(store):
    """Of many votes sent at the same instant by one voter exactly one counts."""
    poll, _ = await store.create(ONE_VOTE)
    results = await asyncio.gather(
        *(store.vote(poll.id, "1", "bob") for _ in range(10)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert {r.code for r in results if isinstance(r, ClientError)} == {"already_voted"}
    assert (await store.get(poll.id)).total == 1


async def test_every_click_poll_counts_every_vote(store):
    """Without one_vote_per_voter the same voter may vote again and again."""
    poll, _ = await store.create(EVERY_CLICK)
    for _ in range(3):
        await store.vote(poll.id, "1", "carol")
    assert (await store.get(poll.id)).total == 3


async def test_votes_survive_reopening(path):
    """Votes and polls are on disk once vote() has returned."""
    store = PollStore(path)
    poll, _ = await store.create(ONE_VOTE)
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
    poll, _ = await store.create(ONE_VOTE)
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
    near the time the votes take (done on the loop, one stall would be all of it; a busy
    machine may pause the process for a while, so "near" is nine tenths)."""
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
    assert len(gaps) > 10 and max(gaps) < took * 0.9


# Schema version 1, as databases made before manage tokens have it.
SCHEMA_V1 = """
CREATE TABLE polls (id TEXT PRIMARY KEY, title TEXT NOT NULL,
    one_vote_per_voter INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE INDEX polls_by_age ON polls (created_at);
CREATE TABLE options (poll_id TEXT NOT NULL REFERENCES polls (id), id TEXT NOT NULL,
    position INTEGER NOT NULL, label TEXT NOT NULL, votes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (poll_id, id));
CREATE TABLE ballots (poll_id TEXT NOT NULL REFERENCES polls (id), voter_id TEXT NOT NULL,
    option_id TEXT NOT NULL, cast_at REAL NOT NULL, PRIMARY KEY (poll_id, voter_id));
INSERT INTO polls VALUES ('demo', 'Who wins?', 0, 1), ('old', 'Old one', 1, 2);
INSERT INTO options VALUES ('demo', '1', 1, '钢弹', 5), ('demo', '2', 2, '铁锤', 0),
    ('demo', '3', 3, '贝贝', 7), ('old', '1', 1, 'x', 1), ('old', '2', 2, 'y', 0);
INSERT INTO ballots VALUES ('old', 'alice', '1', 3);
PRAGMA user_version = 1;
"""


async def test_version_1_database_is_migrated_keeping_votes(path):
    """A version 1 file gains the new columns: old polls stay listed and open with their
    votes and ballots, the demo gets its glosses, and votes still count."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1)
    conn.close()
    store = PollStore(path)
    try:
        demo = await store.get(DEMO_ID)
        assert [(o.label, o.votes) for o in demo.options] == [("钢弹", 5), ("铁锤", 0), ("贝贝", 7)]
        assert all(o.gloss for o in demo.options) and demo.listed and not demo.closed
        assert [p.id for p in await store.recent()] == ["old", DEMO_ID]
        assert await vote_error(store, "old", "2", "alice") == "already_voted"
        assert (await store.vote(DEMO_ID, "3", None)).votes["3"] == 8
        assert await store.is_owner("old", "anything") is False
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()


async def test_only_a_hash_of_the_manage_token_is_stored(store, path):
    """The database keeps the token's SHA-256, never the token; the token is the owner's."""
    poll, token = await store.create(ONE_VOTE)
    assert await store.is_owner(poll.id, token) is True
    assert await store.is_owner(poll.id, token + "x") is False
    assert await store.is_owner(poll.id, None) is False
    assert await store.is_owner("nope", token) is None
    store.close()
    conn = sqlite3.connect(path)
    (stored,) = conn.execute("SELECT manage_hash FROM polls WHERE id = ?", (poll.id,)).fetchone()
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in dump


async def test_closed_poll_refuses_votes_and_delete_removes_everything(store):
    """A closed poll answers poll_closed; reopened it counts; deleted it is gone."""
    poll, _ = await store.create(ONE_VOTE)
    await store.vote(poll.id, "1", "v1")
    assert (await store.set_closed(poll.id, True)).closed
    assert await vote_error(store, poll.id, "2", "v2") == "poll_closed"
    assert not (await store.set_closed(poll.id, False)).closed
    await store.vote(poll.id, "2", "v2")
    assert await store.delete(poll.id) is True
    assert await store.get(poll.id) is None and await store.delete(poll.id) is False
    assert await vote_error(store, poll.id, "1", "v3") == "no_such_poll"


async def test_older_polls_get_a_join_code_when_migrated(path):
    """Opening a version 1 database gives each of its polls a join code of its own."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1)
    conn.close()
    store = PollStore(path)
    try:
        codes = [(await store.get(poll_id)).code for poll_id in (DEMO_ID, "old")]
        assert all(codes) and codes[0] != codes[1]
        assert await store.find_code(codes[1]) == "old"
    finally:
        store.close()
