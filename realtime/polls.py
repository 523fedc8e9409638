"""Durable polls: ``PollStore`` keeps polls and votes in SQLite, off the event loop.

Every database call runs on **one dedicated worker thread** (a single-thread executor), so
the IOLoop never waits for the disk and the connection is only ever used by the thread
that opened it. One thread also means the jobs run one at a time, in the order they were
submitted, and their results come back to the loop in that same order; the vote handler
relies on this to publish tallies in commit order (see ``handlers/vote.py``).

Durability: the database is in WAL mode with ``synchronous=FULL``, so a commit returns
only once the WAL is on disk. ``synchronous=NORMAL`` would survive a killed process just
as well (the WAL is in the OS's page cache), but could lose the last votes on a power cut;
an acknowledged vote must not vanish, so we pay one fsync per vote.

One vote per voter is enforced by the database, not by a check-then-write in Python: the
``ballots`` table's primary key is ``(poll_id, voter_id)``, so of two votes arriving at the
same instant from two tabs of one browser exactly one is stored. The count shown for each
option is a counter updated in the same transaction as the ballot, so counts and ballots
never disagree; polls where every click counts keep only the counter, so clicking forever
does not grow the database.
"""

import asyncio
import logging
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, TypeVar

from realtime.messages import ClientError
from realtime.pollspec import NewPoll, Option, Poll, Tally

log = logging.getLogger("realtime.polls")

T = TypeVar("T")

DB_FILENAME = "polls.sqlite3"
LIST_LIMIT = 100  # GET /api/polls answers the newest polls, at most this many
SCHEMA_VERSION = 1

DEMO_ID = "demo"
DEMO = NewPoll(title="Who wins?", labels=("钢弹", "铁锤", "贝贝"), one_vote_per_voter=False)

SCHEMA = """
CREATE TABLE IF NOT EXISTS polls (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    one_vote_per_voter INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS polls_by_age ON polls (created_at);
CREATE TABLE IF NOT EXISTS options (
    poll_id TEXT NOT NULL REFERENCES polls (id),
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    label TEXT NOT NULL,
    votes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (poll_id, id)
);
CREATE TABLE IF NOT EXISTS ballots (
    poll_id TEXT NOT NULL REFERENCES polls (id),
    voter_id TEXT NOT NULL,
    option_id TEXT NOT NULL,
    cast_at REAL NOT NULL,
    PRIMARY KEY (poll_id, voter_id)
);
"""


def new_poll_id() -> str:
    """A short random URL-safe id (48 bits: guessing one is hopeless, listing is the way)."""
    return secrets.token_urlsafe(6)


class PollStore:
    """Polls and their votes in one SQLite file; every method but ``close`` is a coroutine.

    Args:
        path: the database file; ``None`` keeps everything in memory (tests, throwaway
            servers). The file and its WAL are created on first use.
    """

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polls-db")
        self._conn: Optional[sqlite3.Connection] = None  # opened and used on the worker only
        self._used = False  # whether any job was submitted (close need not start the thread)
        self._closed = False

    # The coroutine API, for the event loop.

    async def start(self) -> None:
        """Open the database now (it opens on first use anyway): a bad path fails at once."""
        await self._run(self._db)

    async def create(self, new: NewPoll) -> Poll:
        """Store a new poll under a fresh random id and return it."""
        return await self._run(self._create, new)

    async def get(self, poll_id: str) -> Optional[Poll]:
        """The poll with its current counts, or None if there is none with that id."""
        return await self._run(self._get, poll_id)

    async def recent(self, limit: int = LIST_LIMIT) -> list[Poll]:
        """The newest polls first, at most ``limit``, with their counts."""
        return await self._run(self._recent, limit)

    async def vote(self, poll_id: str, option_id: str, voter_id: Optional[str]) -> Tally:
        """Count one vote and return the poll's counts once the vote is committed to disk.

        Raises:
            ClientError: ``no_such_poll``, ``no_such_option``, ``no_voter_id`` (a one-vote
                poll and no voter) or ``already_voted`` (this voter has voted in this poll).
        """
        return await self._run(self._vote, poll_id, option_id, voter_id)

    async def snapshot(
        self, poll_id: str, voter_id: Optional[str]
    ) -> Optional[tuple[Poll, Optional[str]]]:
        """The poll with its counts and the option ``voter_id`` chose in it (None if it has
        not voted, or the poll counts every click), read in one job; None if no such poll."""
        return await self._run(self._snapshot, poll_id, voter_id)

    def close(self) -> None:
        """Finish the queued jobs and close the database (blocks; call at shutdown).

        Closing twice is harmless; any use after closing raises RuntimeError.
        """
        if self._used and not self._closed:
            self._executor.submit(self._close_db)
        self._closed = True
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """``close`` without blocking the event loop: the shutdown closer."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def _run(self, job: Callable[..., T], *args: Any) -> T:
        self._used = True
        return await asyncio.get_running_loop().run_in_executor(self._executor, job, *args)

    # The jobs, on the worker thread.

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path or ":memory:", isolation_level=None)  # explicit BEGIN
        try:
            if self.path is not None:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise RuntimeError(f"{self.path}: SQLite refused WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 5000")  # e.g. a backup holding a lock
            with transaction(conn):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                if conn.execute("SELECT 1 FROM polls WHERE id = ?", (DEMO_ID,)).fetchone() is None:
                    insert_poll(conn, DEMO_ID, DEMO)
        except BaseException:
            conn.close()
            raise
        log.info("poll database %s open", self.path or ":memory:")
        return conn

    def _close_db(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _create(self, new: NewPoll) -> Poll:
        conn = self._db()
        for _ in range(5):
            poll_id = new_poll_id()
            try:
                with transaction(conn):
                    insert_poll(conn, poll_id, new)
            except sqlite3.IntegrityError:
                continue  # the id is taken (about one in 2**48): draw again
            poll = load_poll(conn, poll_id)
            assert poll is not None
            return poll
        raise RuntimeError("could not find a free poll id")

    def _get(self, poll_id: str) -> Optional[Poll]:
        return load_poll(self._db(), poll_id)

    def _recent(self, limit: int) -> list[Poll]:
        conn = self._db()
        ids = conn.execute(
            "SELECT id FROM polls ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        polls = [load_poll(conn, poll_id) for (poll_id,) in ids]
        return [poll for poll in polls if poll is not None]

    def _vote(self, poll_id: str, option_id: str, voter_id: Optional[str]) -> Tally:
        conn = self._db()
        with transaction(conn):
            row = conn.execute(
                "SELECT one_vote_per_voter FROM polls WHERE id = ?", (poll_id,)
            ).fetchone()
            if row is None:
                raise ClientError("no_such_poll", "There is no such poll.")
            counted = conn.execute(
                "UPDATE options SET votes = votes + 1 WHERE poll_id = ? AND id = ?",
                (poll_id, option_id),
            ).rowcount
            if counted == 0:
                raise ClientError("no_such_option", "This poll has no such option.")
            if row[0]:
                if voter_id is None:
                    raise ClientError(
                        "no_voter_id",
                        "This poll takes one vote per voter and your browser sent no voter "
                        "cookie: reload the page (with cookies allowed) and vote again.",
                    )
                try:
                    conn.execute(
                        "INSERT INTO ballots (poll_id, voter_id, option_id, cast_at)"
                        " VALUES (?, ?, ?, ?)",
                        (poll_id, voter_id, option_id, time.time()),
                    )
                except sqlite3.IntegrityError:
                    raise ClientError(
                        "already_voted", "You have already voted in this poll."
                    ) from None
            votes = dict(conn.execute(
                "SELECT id, votes FROM options WHERE poll_id = ? ORDER BY position", (poll_id,)
            ).fetchall())
        return Tally(poll_id, votes)

    def _snapshot(
        self, poll_id: str, voter_id: Optional[str]
    ) -> Optional[tuple[Poll, Optional[str]]]:
        conn = self._db()
        poll = load_poll(conn, poll_id)
        if poll is None:
            return None
        row = None
        if voter_id is not None:
            row = conn.execute(
                "SELECT option_id FROM ballots WHERE poll_id = ? AND voter_id = ?",
                (poll_id, voter_id),
            ).fetchone()
        return poll, None if row is None else row[0]


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` if the block raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert_poll(conn: sqlite3.Connection, poll_id: str, new: NewPoll) -> None:
    """Insert a poll and its options (option ids "1", "2", ... in the given order)."""
    conn.execute(
        "INSERT INTO polls (id, title, one_vote_per_voter, created_at) VALUES (?, ?, ?, ?)",
        (poll_id, new.title, int(new.one_vote_per_voter), time.time()),
    )
    conn.executemany(
        "INSERT INTO options (poll_id, id, position, label) VALUES (?, ?, ?, ?)",
        [(poll_id, str(n), n, label) for n, label in enumerate(new.labels, start=1)],
    )


def load_poll(conn: sqlite3.Connection, poll_id: str) -> Optional[Poll]:
    """Read one poll and its counts, or None."""
    row = conn.execute(
        "SELECT title, one_vote_per_voter FROM polls WHERE id = ?", (poll_id,)
    ).fetchone()
    if row is None:
        return None
    options = tuple(
        Option(option_id, label, votes)
        for option_id, label, votes in conn.execute(
            "SELECT id, label, votes FROM options WHERE poll_id = ? ORDER BY position",
            (poll_id,),
        )
    )
    return Poll(poll_id, row[0], bool(row[1]), options)
