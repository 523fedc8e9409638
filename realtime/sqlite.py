"""What the SQLite stores share: how a database file is opened, and a transaction.

Each store (polls, chat history) keeps one connection on one worker thread of its own, so
the event loop never waits on the disk; this module is the part of that which is the same
for both. How hard each store syncs is its own choice: votes are acknowledged, so their
store syncs every commit (``FULL``); chat syncs at checkpoints (``NORMAL``).
"""

import sqlite3
from contextlib import contextmanager
from typing import Iterator, Optional

BUSY_TIMEOUT_MS = 5000  # wait this long for a lock another process holds (a backup, say)


def connect(path: Optional[str], synchronous: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), to the file ``path`` in
    WAL mode with ``PRAGMA synchronous`` set, or to a private in-memory database if
    ``path`` is None.

    Raises:
        RuntimeError: SQLite refused WAL mode for the file (a file system without shared
            memory, say): the durability the stores promise would not hold.
    """
    conn = sqlite3.connect(path or ":memory:", isolation_level=None)  # explicit BEGIN
    try:
        if path is not None:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise RuntimeError(f"{path}: SQLite refused WAL mode ({mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except BaseException:
        conn.close()
        raise
    return conn


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
