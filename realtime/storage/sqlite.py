"""What the SQLite stores share: how a database file is opened, a transaction, and the one
worker thread a store's connection lives on.

Each store (polls, chat history) keeps one connection on one worker thread of its own
(``SqliteWorker``), so the event loop never waits on the disk; this module is the part of
that which is the same for both. How hard each store syncs is its own choice: votes are
acknowledged, so their store syncs every commit (``FULL``); chat syncs at checkpoints
(``NORMAL``).
"""

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, TypeVar

T = TypeVar("T")

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


class SqliteWorker:
    """One SQLite connection, opened and used on one thread of its own.

    Jobs run on that thread one at a time, in the order they were submitted, and their
    results come back in that order; the connection is only ever touched by the thread
    that opened it. It is opened by the first job (``connect`` with ``synchronous``, then
    ``setup``), so a worker nobody uses starts no thread and creates no file; a failed
    open raises to that job's caller, and the next job tries again.

    Args:
        path: the database file, or None for a private in-memory database.
        synchronous: the file's ``PRAGMA synchronous`` (``FULL``, ``NORMAL``).
        setup: called on the worker with the new connection (schema, the store's own
            pragmas); if it raises, the connection is closed.
        name: the thread's name prefix (``polls-db``), for logs and debuggers.
    """

    def __init__(
        self,
        path: Optional[str],
        synchronous: str,
        setup: Callable[[sqlite3.Connection], None] = lambda conn: None,
        name: str = "sqlite",
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._setup = setup
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: Optional[sqlite3.Connection] = None  # opened and used on the worker only
        self._used = False  # whether any job was submitted (closing need not start the thread)
        self._closed = False

    async def open(self) -> None:
        """Open the database now (the first job would anyway): a bad path fails here."""
        await self.run(_nothing)

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """``job(conn, *args)`` on the worker thread, after every job submitted before it.

        Raises:
            RuntimeError: the worker is closed.
            Exception: whatever opening the database or ``job`` raised; the worker goes on.
        """
        if self._closed:
            raise RuntimeError(f"the database {self.path or ':memory:'} is closed")
        self._used = True
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, job, args
        )

    def close(self) -> None:
        """Finish the jobs already submitted, close the database and stop the thread (blocks;
        at shutdown). Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            if self._used:
                self._executor.submit(self._close_conn)
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """``close`` without blocking the event loop."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._used:
                # Queued behind every job already submitted: they finish first.
                await asyncio.wrap_future(self._executor.submit(self._close_conn))
        finally:
            self._executor.shutdown(wait=False)  # the thread ends once its queue is empty

    # On the worker thread.

    def _call(self, job: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._conn is None:
            self._conn = self._open()
        return job(self._conn, *args)

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path, self._synchronous)
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _nothing(conn: sqlite3.Connection) -> None:
    """The job that only opens the database."""
