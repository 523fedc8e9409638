"""SqliteWorker without a server: one connection on one thread, jobs in order, a clean close."""

import asyncio
import os
import sqlite3
import threading
import time
from typing import Any

import pytest

from realtime.storage.sqlite import SqliteWorker

TIMEOUT = 5.0  # seconds a test waits for the worker thread before giving up


def thread_name(conn: sqlite3.Connection) -> str:
    """A job answering the name of the thread it runs on."""
    return threading.current_thread().name


def fail(conn: sqlite3.Connection) -> None:
    """A job that raises."""
    raise ValueError("job failed")


def select_one(conn: sqlite3.Connection) -> int:
    """A job that needs the connection to be open."""
    return conn.execute("SELECT 1").fetchone()[0]


async def test_jobs_run_in_submission_order_on_one_thread_off_the_loop():
    """Jobs submitted together run one after the other in that order, all on the one worker
    thread, never on the event loop's."""
    worker = SqliteWorker(None, "FULL", name="test-db")
    ran: list[tuple[int, str]] = []

    def job(conn: sqlite3.Connection, n: int) -> int:
        ran.append((n, threading.current_thread().name))
        return n

    try:
        results = await asyncio.gather(*(worker.run(job, n) for n in range(20)))
    finally:
        await worker.aclose()
    assert results == list(range(20))
    assert [n for n, _ in ran] == list(range(20))
    assert len({name for _, name in ran}) == 1
    assert ran[0][1].startswith("test-db") and ran[0][1] != threading.current_thread().name


async def test_every_job_gets_the_one_connection_set_up_once():
    """The connection is opened and set up by the first job; later jobs get the same one."""
    opened: list[sqlite3.Connection] = []
    worker = SqliteWorker(None, "FULL", opened.append)

    def same(conn: sqlite3.Connection) -> sqlite3.Connection:
        return conn

    try:
        first, second = await worker.run(same), await worker.run(same)
    finally:
        await worker.aclose()
    assert opened == [first] and second is first


async def test_file_is_opened_in_wal_mode_with_the_synchronous_asked_for(tmp_path):
    """A file database is in WAL mode with the store's ``synchronous`` and a busy timeout."""
    worker = SqliteWorker(str(tmp_path / "x.sqlite3"), "NORMAL")

    def pragmas(conn: sqlite3.Connection) -> tuple[Any, ...]:
        return tuple(conn.execute(f"PRAGMA {name}").fetchone()[0]
                     for name in ("journal_mode", "synchronous", "busy_timeout"))

    try:
        assert await worker.run(pragmas) == ("wal", 1, 5000)  # synchronous NORMAL is 1
    finally:
        await worker.aclose()


async def test_a_failing_job_raises_to_its_caller_and_the_worker_goes_on():
    """A job's exception reaches the coroutine that awaited it; the next job still runs on the
    same connection."""
    worker = SqliteWorker(None, "FULL")
    try:
        before = await worker.run(thread_name)
        with pytest.raises(ValueError, match="job failed"):
            await worker.run(fail)
        assert await worker.run(select_one) == 1
        assert await worker.run(thread_name) == before
    finally:
        await worker.aclose()


async def test_a_failed_setup_closes_that_connection_and_the_next_job_opens_again():
    """If setting up the connection raises, the job's caller gets the error, that connection is
    closed, and the next job opens a fresh one."""
    tried: list[sqlite3.Connection] = []

    def setup(conn: sqlite3.Connection) -> None:
        tried.append(conn)
        if len(tried) == 1:
            raise sqlite3.OperationalError("disk I/O error")

    worker = SqliteWorker(None, "FULL", setup)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await worker.run(select_one)
        assert await worker.run(select_one) == 1
    finally:
        await worker.aclose()
    assert len(tried) == 2
    with pytest.raises(sqlite3.ProgrammingError):
        tried[0].execute("SELECT 1")  # closed, not leaked


async def test_aclose_waits_for_the_jobs_already_submitted_then_closes_the_connection():
    """A job still running when ``aclose`` is called finishes first; then the connection is
    closed."""
    worker = SqliteWorker(None, "FULL")
    started, release = threading.Event(), threading.Event()

    def held(conn: sqlite3.Connection) -> sqlite3.Connection:
        started.set()
        release.wait(TIMEOUT)
        return conn

    running = asyncio.ensure_future(worker.run(held))
    assert await asyncio.to_thread(started.wait, TIMEOUT)
    closing = asyncio.ensure_future(worker.aclose())
    done, _ = await asyncio.wait([closing], timeout=0.05)
    assert not done  # still waiting for the held job
    release.set()
    await asyncio.wait_for(closing, TIMEOUT)
    assert running.done()
    with pytest.raises(sqlite3.ProgrammingError):
        running.result().execute("SELECT 1")


async def test_a_job_submitted_after_closing_raises_runtime_error():
    """Once closed, the worker refuses jobs instead of opening the database again."""
    worker = SqliteWorker(None, "FULL")
    assert await worker.run(select_one) == 1
    await worker.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await worker.run(select_one)


async def test_close_blocks_until_the_running_job_is_done_and_twice_is_harmless():
    """The blocking ``close`` returns only after the job on the thread finished; a second
    close does nothing."""
    worker = SqliteWorker(None, "FULL")
    started = threading.Event()
    finished: list[bool] = []

    def slow(conn: sqlite3.Connection) -> None:
        started.set()
        time.sleep(0.1)  # long enough that a close that did not wait would return first
        finished.append(True)

    running = asyncio.ensure_future(worker.run(slow))
    assert await asyncio.to_thread(started.wait, TIMEOUT)
    worker.close()
    assert finished == [True]
    worker.close()
    await asyncio.wait_for(running, TIMEOUT)  # its result was delivered, not lost


async def test_a_worker_never_used_creates_no_file_and_closes_at_once(tmp_path):
    """Closing a worker no job ran on opens nothing: no file appears."""
    worker = SqliteWorker(str(tmp_path / "unused.sqlite3"), "FULL")
    await worker.aclose()
    worker.close()
    assert os.listdir(tmp_path) == []
