"""Durable polls: ``PollStore`` keeps polls and votes in SQLite, off the event loop.

Every database call runs on **one dedicated worker thread**
(``realtime.storage.sqlite.SqliteWorker``), so the IOLoop never waits for the disk and the
connection is only ever used by the thread that opened it. One thread also means the jobs
run one at a time, in the order they were submitted, and their results come back to the loop
in that same order; the vote session relies on this to publish tallies in commit order (see
``realtime/votes/session.py``).

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

Managing a poll: its creator gets a random manage token, once; the database keeps only the
token's SHA-256, so a copy of the file lets nobody close or delete polls. Schema version 2
added ``listed``, ``closed`` and ``manage_hash`` to ``polls`` and ``gloss`` to ``options``;
a version 1 database is migrated when it is opened: its polls stay **listed** (they were
created when every poll was public, and their creators expect them there), stay open, and
have no manage token (nobody can close or delete them through the API). The demo poll gets
its glosses; its option ids, and so its votes, are unchanged. Schema version 3 added
``join_code`` (unique; ``realtime/votes/ids.py``): every poll of an older database is given
one when it is opened; and ``results``, ``revealed``, ``allow_change`` and ``max_choices``
(older polls show results live, take one choice and no change). A ballot's ``option_id``
holds the ids it chose joined by commas (one id for all but multiple choice).
"""

import hashlib
import hmac
import logging
import secrets
import sqlite3
import time
from typing import Optional, Protocol, Sequence, Union

from realtime.storage.sqlite import SqliteWorker, transaction
from realtime.votes.ids import new_join_code, new_poll_id
from realtime.votes.spec import NewPoll, Option, Poll, Tally
from realtime.wire.messages import ClientError

log = logging.getLogger("realtime.polls")

DB_FILENAME = "polls.sqlite3"
LIST_LIMIT = 100  # GET /api/polls answers the newest polls, at most this many
SCHEMA_VERSION = 3

DEMO_ID = "demo"
# The original lesson's candidates, with a gloss for readers who do not read Chinese.
DEMO = NewPoll(
    title="Who wins?", labels=("钢弹", "铁锤", "贝贝"), one_vote_per_voter=False, listed=True,
    glosses=("Gāngdàn, “Steel Bullet”", "Tiěchuí, “Iron Hammer”", "Bèibei, “Little Treasure”"),
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS polls (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    one_vote_per_voter INTEGER NOT NULL,
    created_at REAL NOT NULL,
    listed INTEGER NOT NULL DEFAULT 1,
    closed INTEGER NOT NULL DEFAULT 0,
    manage_hash TEXT,
    join_code TEXT,
    results TEXT NOT NULL DEFAULT 'live',
    revealed INTEGER NOT NULL DEFAULT 0,
    allow_change INTEGER NOT NULL DEFAULT 0,
    max_choices INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS polls_by_age ON polls (created_at);
CREATE TABLE IF NOT EXISTS options (
    poll_id TEXT NOT NULL REFERENCES polls (id),
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    label TEXT NOT NULL,
    votes INTEGER NOT NULL DEFAULT 0,
    gloss TEXT,
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


# What a refused vote answers, whichever store refused it: code -> sentence.
VOTE_REFUSALS = {
    "no_such_poll": "There is no such poll.",
    "poll_closed": "This poll is closed: it takes no more votes.",
    "no_such_option": "This poll has no such option.",
    "no_voter_id": (
        "This poll takes one vote per voter and your browser sent no voter cookie: reload "
        "the page (with cookies allowed) and vote again."
    ),
    "already_voted": "You have already voted in this poll.",
    "too_many_choices": "This poll takes fewer choices than that: choose again.",
}


# What a ballot names: one option id, or several (multiple choice).
Choice = Union[str, Sequence[str]]


def choices(choice: Choice) -> tuple[str, ...]:
    """A ballot's option ids, as a tuple."""
    return (choice,) if isinstance(choice, str) else tuple(choice)


def refused(code: str) -> ClientError:
    """The ``ClientError`` of a vote refused with ``code`` (a key of ``VOTE_REFUSALS``)."""
    return ClientError(code, VOTE_REFUSALS[code])


class Polls(Protocol):
    """What the handlers and ``serve()`` need of a poll store: ``PollStore`` (SQLite, the
    default) and ``RedisPollStore`` (``realtime/votes/redisstore.py``, shared by processes).

    Every method answers with the poll as it is once the change is durable, and raises
    ``ClientError`` for what the client got wrong (see ``PollStore.vote``).
    """

    async def start(self) -> None:
        """Connect or open now, so a bad setting shows at startup."""

    async def create(self, new: NewPoll) -> tuple[Poll, str]:
        """Store a new poll; return it and its manage token."""

    async def is_owner(self, poll_id: str, token: Optional[str]) -> Optional[bool]:
        """Whether ``token`` manages the poll; None if there is no such poll."""

    async def set_closed(self, poll_id: str, closed: bool) -> Optional[Poll]:
        """Close or reopen a poll; the poll as it is now, or None."""

    async def reveal(self, poll_id: str) -> Optional[Poll]:
        """Reveal a hidden poll's results for good; the poll as it is now, or None."""

    async def delete(self, poll_id: str) -> bool:
        """Delete a poll and its votes; False if there was none."""

    async def get(self, poll_id: str) -> Optional[Poll]:
        """The poll with its counts, or None."""

    async def find_code(self, code: str) -> Optional[str]:
        """The id of the poll with that join code (``realtime.votes.ids``), or None."""

    async def recent(self, limit: int = ...) -> list[Poll]:
        """The newest listed polls first, at most ``limit``."""

    async def vote(self, poll_id: str, option_id: Choice, voter_id: Optional[str]) -> Tally:
        """Count one ballot (an option id, or several for multiple choice; a voter's new
        ballot replaces its old one where the poll allows changes) and return the counts
        that include it."""

    async def snapshot(
        self, poll_id: str, voter_id: Optional[str]
    ) -> Optional[tuple[Poll, Optional[str]]]:
        """The poll and the option ``voter_id`` chose in it, read together; or None."""

    async def participants(
        self, poll_id: str, viewers_here: int, valid_for: float
    ) -> Optional[tuple[int, int]]:
        """Record this process's ``viewers_here`` viewers of the poll (kept ``valid_for``
        seconds where processes share the store) and return ``(voters, viewers)``: the
        distinct voters of a one-vote poll (the votes of an every-click poll, which knows no
        voters) and the viewers over every process; None if there is no such poll."""

    async def aclose(self) -> None:
        """Finish pending work and let go of the database or connections."""


def new_manage_token() -> str:
    """The secret that lets a poll's creator close, reopen and delete it (192 bits)."""
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    """What the database keeps of a manage token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# Columns added by schema versions 2 and 3 to an older database: (table, column,
# definition). Version 1 polls were all public, so they stay listed.
MIGRATION_2 = [
    ("polls", "listed", "INTEGER NOT NULL DEFAULT 1"),
    ("polls", "closed", "INTEGER NOT NULL DEFAULT 0"),
    ("polls", "manage_hash", "TEXT"),
    ("options", "gloss", "TEXT"),
    ("polls", "join_code", "TEXT"),  # schema version 3
    ("polls", "results", "TEXT NOT NULL DEFAULT 'live'"),
    ("polls", "revealed", "INTEGER NOT NULL DEFAULT 0"),
    ("polls", "allow_change", "INTEGER NOT NULL DEFAULT 0"),
    ("polls", "max_choices", "INTEGER NOT NULL DEFAULT 1"),
]


class PollStore:
    """Polls and their votes in one SQLite file; every method but ``close`` is a coroutine.

    Args:
        path: the database file; ``None`` keeps everything in memory (tests, throwaway
            servers). The file and its WAL are created on first use.
    """

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        # An acknowledged vote is on disk: FULL syncs every commit.
        self._worker = SqliteWorker(path, "FULL", self._setup, name="polls-db")

    # The coroutine API, for the event loop.

    async def start(self) -> None:
        """Open the database now (it opens on first use anyway): a bad path fails at once."""
        await self._worker.open()

    async def create(self, new: NewPoll) -> tuple[Poll, str]:
        """Store a new poll under a fresh random id; return it and its manage token (the
        only time the token exists outside the creator's hands: only its hash is kept)."""
        return await self._worker.run(self._create, new)

    async def is_owner(self, poll_id: str, token: Optional[str]) -> Optional[bool]:
        """Whether ``token`` is the poll's manage token; None if there is no such poll.
        Polls from before manage tokens (the demo among them) have no owner."""
        return await self._worker.run(self._is_owner, poll_id, token)

    async def set_closed(self, poll_id: str, closed: bool) -> Optional[Poll]:
        """Close (no more votes) or reopen a poll; the poll as it is now, or None if none."""
        return await self._worker.run(self._set_closed, poll_id, closed)

    async def reveal(self, poll_id: str) -> Optional[Poll]:
        """Reveal a hidden poll's results (for good); the poll as it is now, or None."""
        return await self._worker.run(self._reveal, poll_id)

    async def delete(self, poll_id: str) -> bool:
        """Delete a poll with its options and ballots; False if there was none."""
        return await self._worker.run(self._delete, poll_id)

    async def get(self, poll_id: str) -> Optional[Poll]:
        """The poll with its current counts, or None if there is none with that id."""
        return await self._worker.run(self._get, poll_id)

    async def find_code(self, code: str) -> Optional[str]:
        """The id of the poll with that join code, or None."""
        return await self._worker.run(self._find_code, code)

    async def recent(self, limit: int = LIST_LIMIT) -> list[Poll]:
        """The newest listed polls first, at most ``limit``, with their counts."""
        return await self._worker.run(self._recent, limit)

    async def vote(self, poll_id: str, option_id: Choice, voter_id: Optional[str]) -> Tally:
        """Count one ballot and return the poll's counts once it is committed to disk.

        ``option_id`` is an option id, or a sequence of distinct ones (multiple choice, up
        to the poll's ``max_choices``). A ballot is kept per voter in one-vote polls, its
        option ids joined by commas; where the poll allows changes, a voter's new ballot
        replaces the old one (its options lose a vote, the new ones gain one), so a voter
        always counts once.

        Raises:
            ClientError: ``no_such_poll``, ``poll_closed``, ``no_such_option``,
                ``too_many_choices``, ``no_voter_id`` (a one-vote poll and no voter) or
                ``already_voted`` (this voter has voted in this poll, which allows no
                change).
        """
        return await self._worker.run(self._vote, poll_id, option_id, voter_id)

    async def snapshot(
        self, poll_id: str, voter_id: Optional[str]
    ) -> Optional[tuple[Poll, Optional[str]]]:
        """The poll with its counts and the option ``voter_id`` chose in it (None if it has
        not voted, or the poll counts every click), read in one job; None if no such poll."""
        return await self._worker.run(self._snapshot, poll_id, voter_id)

    async def participants(
        self, poll_id: str, viewers_here: int, valid_for: float
    ) -> Optional[tuple[int, int]]:
        """``(voters, viewers)`` of the poll (``Polls.participants``): one process owns the
        file, so its viewers are all there are and ``valid_for`` has nothing to bound."""
        voters = await self._worker.run(self._voters, poll_id)
        return None if voters is None else (voters, viewers_here)

    def close(self) -> None:
        """Finish the queued jobs and close the database (blocks; call at shutdown).

        Closing twice is harmless; any use after closing raises RuntimeError.
        """
        self._worker.close()

    async def aclose(self) -> None:
        """``close`` without blocking the event loop: the shutdown closer."""
        await self._worker.aclose()

    # The jobs, on the worker thread, each given the connection.

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA foreign_keys = ON")
        with transaction(conn):
            migrate(conn)
            if conn.execute("SELECT 1 FROM polls WHERE id = ?", (DEMO_ID,)).fetchone() is None:
                insert_poll(conn, DEMO_ID, DEMO, None)
        log.info("poll database %s open", self.path or ":memory:")

    def _create(self, conn: sqlite3.Connection, new: NewPoll) -> tuple[Poll, str]:
        token = new_manage_token()
        for _ in range(5):
            poll_id = new_poll_id()
            try:
                with transaction(conn):
                    insert_poll(conn, poll_id, new, token_hash(token))
            except sqlite3.IntegrityError:
                continue  # the id or the join code is taken: draw again
            poll = load_poll(conn, poll_id)
            assert poll is not None
            return poll, token
        raise RuntimeError("could not find a free poll id")

    def _is_owner(
        self, conn: sqlite3.Connection, poll_id: str, token: Optional[str]
    ) -> Optional[bool]:
        row = conn.execute(
            "SELECT manage_hash FROM polls WHERE id = ?", (poll_id,)
        ).fetchone()
        if row is None:
            return None
        if row[0] is None or not token:
            return False
        return hmac.compare_digest(row[0], token_hash(token))

    def _set_closed(
        self, conn: sqlite3.Connection, poll_id: str, closed: bool
    ) -> Optional[Poll]:
        with transaction(conn):
            conn.execute("UPDATE polls SET closed = ? WHERE id = ?", (int(closed), poll_id))
            return load_poll(conn, poll_id)

    def _reveal(self, conn: sqlite3.Connection, poll_id: str) -> Optional[Poll]:
        with transaction(conn):
            conn.execute("UPDATE polls SET revealed = 1 WHERE id = ?", (poll_id,))
            return load_poll(conn, poll_id)

    def _delete(self, conn: sqlite3.Connection, poll_id: str) -> bool:
        with transaction(conn):
            conn.execute("DELETE FROM ballots WHERE poll_id = ?", (poll_id,))
            conn.execute("DELETE FROM options WHERE poll_id = ?", (poll_id,))
            return conn.execute("DELETE FROM polls WHERE id = ?", (poll_id,)).rowcount > 0

    def _get(self, conn: sqlite3.Connection, poll_id: str) -> Optional[Poll]:
        return load_poll(conn, poll_id)

    def _find_code(self, conn: sqlite3.Connection, code: str) -> Optional[str]:
        row = conn.execute("SELECT id FROM polls WHERE join_code = ?", (code,)).fetchone()
        return None if row is None else row[0]

    def _recent(self, conn: sqlite3.Connection, limit: int) -> list[Poll]:
        ids = conn.execute(
            "SELECT id FROM polls WHERE listed = 1 ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (limit,)
        ).fetchall()
        polls = [load_poll(conn, poll_id) for (poll_id,) in ids]
        return [poll for poll in polls if poll is not None]

    def _vote(
        self, conn: sqlite3.Connection, poll_id: str, option_id: Choice,
        voter_id: Optional[str],
    ) -> Tally:
        chosen = choices(option_id)
        with transaction(conn):
            row = conn.execute(
                "SELECT one_vote_per_voter, closed, results, revealed, allow_change,"
                " max_choices FROM polls WHERE id = ?", (poll_id,)
            ).fetchone()
            if row is None:
                raise refused("no_such_poll")
            if row[1]:
                raise refused("poll_closed")
            if not chosen or len(chosen) > row[5] or len(set(chosen)) < len(chosen):
                raise refused("too_many_choices")
            self._count(conn, poll_id, chosen, 1)
            if row[0]:
                if voter_id is None:
                    raise refused("no_voter_id")
                ballot = ",".join(chosen)
                old = conn.execute(
                    "SELECT option_id FROM ballots WHERE poll_id = ? AND voter_id = ?",
                    (poll_id, voter_id),
                ).fetchone()
                if old is not None and not row[4]:
                    raise refused("already_voted")
                if old is not None:  # a change: the old ballot's options give back its vote
                    self._count(conn, poll_id, tuple(old[0].split(",")), -1)
                try:
                    conn.execute(
                        "INSERT INTO ballots (poll_id, voter_id, option_id, cast_at)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (poll_id, voter_id) DO UPDATE SET"
                        " option_id = excluded.option_id, cast_at = excluded.cast_at",
                        (poll_id, voter_id, ballot, time.time()),
                    )
                except sqlite3.IntegrityError:
                    raise refused("already_voted") from None
            votes = dict(conn.execute(
                "SELECT id, votes FROM options WHERE poll_id = ? ORDER BY position", (poll_id,)
            ).fetchall())
        return Tally(poll_id, votes, hidden=row[2] == "hidden" and not row[3])

    @staticmethod
    def _count(conn: sqlite3.Connection, poll_id: str, chosen: tuple[str, ...], step: int) -> None:
        """Add ``step`` to each chosen option's count; ``no_such_option`` if one is not the
        poll's (the caller's transaction then rolls everything back)."""
        for option in chosen:
            counted = conn.execute(
                "UPDATE options SET votes = votes + ? WHERE poll_id = ? AND id = ?",
                (step, poll_id, option),
            ).rowcount
            if counted == 0:
                raise refused("no_such_option")

    def _voters(self, conn: sqlite3.Connection, poll_id: str) -> Optional[int]:
        row = conn.execute(
            "SELECT one_vote_per_voter FROM polls WHERE id = ?", (poll_id,)).fetchone()
        if row is None:
            return None
        if row[0]:
            query = "SELECT COUNT(*) FROM ballots WHERE poll_id = ?"
        else:
            query = "SELECT COALESCE(SUM(votes), 0) FROM options WHERE poll_id = ?"
        return int(conn.execute(query, (poll_id,)).fetchone()[0])

    def _snapshot(
        self, conn: sqlite3.Connection, poll_id: str, voter_id: Optional[str]
    ) -> Optional[tuple[Poll, Optional[str]]]:
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


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables, or bring a version 1 or 2 database to version 3 (in the caller's
    transaction: a failed migration leaves the file as it was)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)  # CREATE TABLE IF NOT EXISTS leaves old tables alone
    for table, column, definition in MIGRATION_2:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    # After the columns exist (an index on a column a v1 table lacks would fail).
    conn.execute(
        "CREATE INDEX IF NOT EXISTS listed_polls_by_age ON polls (listed, created_at)"
    )
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS polls_by_code ON polls (join_code)")
    # Version 3: every poll from before gets a join code too.
    for (poll_id,) in conn.execute("SELECT id FROM polls WHERE join_code IS NULL").fetchall():
        give_join_code(conn, poll_id)
    # The demo poll of a version 1 database gets its glosses (and stays listed).
    conn.executemany(
        "UPDATE options SET gloss = ? WHERE poll_id = ? AND id = ? AND label = ? "
        "AND gloss IS NULL",
        [(gloss, DEMO_ID, str(n), label)
         for n, (label, gloss) in enumerate(zip(DEMO.labels, DEMO.glosses), start=1)],
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def give_join_code(conn: sqlite3.Connection, poll_id: str) -> None:
    """Give an existing poll a fresh join code (one that no poll has)."""
    for _ in range(20):
        try:
            conn.execute("UPDATE polls SET join_code = ? WHERE id = ?", (new_join_code(), poll_id))
            return
        except sqlite3.IntegrityError:
            continue  # taken: draw again


def insert_poll(
    conn: sqlite3.Connection, poll_id: str, new: NewPoll, manage_hash: Optional[str]
) -> None:
    """Insert a poll with a fresh join code, and its options (option ids "1", "2", ... in
    the given order). Raises ``sqlite3.IntegrityError`` if the id or the code is taken."""
    conn.execute(
        "INSERT INTO polls (id, title, one_vote_per_voter, created_at, listed, manage_hash,"
        " join_code, results, allow_change, max_choices) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (poll_id, new.title, int(new.one_vote_per_voter), time.time(), int(new.listed),
         manage_hash, new_join_code(), new.results, int(new.allow_change), new.max_choices),
    )
    glosses = new.glosses or (None,) * len(new.labels)
    conn.executemany(
        "INSERT INTO options (poll_id, id, position, label, gloss) VALUES (?, ?, ?, ?, ?)",
        [(poll_id, str(n), n, label, gloss)
         for n, (label, gloss) in enumerate(zip(new.labels, glosses), start=1)],
    )


def load_poll(conn: sqlite3.Connection, poll_id: str) -> Optional[Poll]:
    """Read one poll and its counts, or None."""
    row = conn.execute(
        "SELECT title, one_vote_per_voter, listed, closed, join_code, results, revealed,"
        " allow_change, max_choices FROM polls WHERE id = ?", (poll_id,)
    ).fetchone()
    if row is None:
        return None
    options = tuple(
        Option(option_id, label, votes, gloss)
        for option_id, label, votes, gloss in conn.execute(
            "SELECT id, label, votes, gloss FROM options WHERE poll_id = ? ORDER BY position",
            (poll_id,),
        )
    )
    return Poll(poll_id, row[0], bool(row[1]), options, listed=bool(row[2]), closed=bool(row[3]),
                code=row[4], results=row[5], revealed=bool(row[6]),
                allow_change=bool(row[7]), max_choices=row[8])
