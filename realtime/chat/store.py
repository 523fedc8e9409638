"""Chat history on disk: ``ChatStore`` keeps every room's retained messages in SQLite.

The rooms (``realtime.chat.rules``) stay the truth while the server runs; the store is their
journal. A room tells it when it stored a message or dropped some, and the store writes
what changed in small batches on **one worker thread** (``realtime.storage.sqlite.SqliteWorker``,
as ``realtime.votes.store`` does: one thread, jobs in order, WAL), so the IOLoop never waits for
the disk. A batch goes 50 ms after the first change, or at once when 100 messages wait;
one batch is written at a time, and changes made meanwhile go in the next one. A batch is,
per room that changed: insert the messages held that were not written yet, delete every
row older than the oldest one held, record the room's ``next_id`` and ``lost_through``; so
the file holds what the rooms hold, bounded by the same counts and bytes, plus at most one
batch.

At startup (``start()``, before the server listens) the store reads the newest messages
that fit the history byte budget back into the rooms, so creating a room on the loop never
touches the disk, and a welcome's history and ``since`` recovery work across a restart.

Durability: WAL with ``synchronous=NORMAL``: a commit survives a killed process at once (the
WAL is in the OS's page cache) and a power cut once the WAL is checkpointed. Chat accepts
that; votes, which are acknowledged, stay ``FULL`` (``realtime.votes.store``). A graceful stop
(``aclose``, a shutdown closer) writes everything and marks the file clean. After a stop
that was not clean (SIGKILL, a crash, a failed write) the last batch and what waited for it
(under about 50 ms of messages) may be missing, so the restored rooms answer no ``since``
from before the restart as recovered: the client gets the newest messages and
``recovered: false``, never a replay with a hole in it.

Ids: the store keeps the highest ``next_id`` any room reached; every room after a restart
starts there or at the clock in microseconds, whichever is higher, so ids never repeat.

Private messages keep who may see them: a cookie holder is stored as the cookie, so that
browser sees them again after a restart; a connection without a cookie is known only by a
serial number that means nothing in the next run, so it is stored as null, which no
connection ever matches: such a message is never replayed after a restart.
"""

import asyncio
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Optional

from realtime.chat.history import entry_cost
from realtime.chat.rules import Parties, Room, Rooms, Stored
from realtime.storage.sqlite import SqliteWorker, transaction
from realtime.wire.messages import ClientError, encode

log = logging.getLogger("realtime.chatstore")

DB_FILENAME = "chat.sqlite3"
SCHEMA_VERSION = 1
FLUSH_DELAY = 0.05  # seconds from the first unwritten change to its batch
FLUSH_MESSAGES = 100  # unwritten messages that start a batch at once
WAL_SIZE_LIMIT = 4 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint

SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    next_id INTEGER NOT NULL,
    lost_through INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    id INTEGER NOT NULL,
    frame TEXT NOT NULL,
    parties TEXT,
    UNIQUE (room, id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass
class RoomChange:
    """What one batch writes for one room, taken on the loop."""

    name: str
    new: list[Stored]  # messages held and not written yet, oldest first
    oldest_id: Optional[int]  # rows below it go; None: the room holds nothing, so all go
    next_id: int
    lost_through: int


@dataclass
class Batch:
    """One transaction: the rooms' changes in the order they happened."""

    rooms: list[RoomChange] = field(default_factory=list)
    id_floor: int = 0  # the highest next_id of any room so far
    clean: Optional[bool] = None  # set the clean mark to this, if not None


class ChatStore:
    """The chat rooms' journal in ``chat.sqlite3``; the rooms' ``Journal`` once started.

    Args:
        path: the database file; None keeps history in memory only (``start`` and
            ``aclose`` do nothing).
        rooms: the rooms whose history it keeps.
    """

    def __init__(self, path: Optional[str], rooms: Rooms) -> None:
        self.path = path
        self.rooms = rooms
        # NORMAL: a commit survives a killed process, not a power cut (the module docstring).
        self._worker = SqliteWorker(path, "NORMAL", self._setup, name="chat-db")
        self._started = False
        self._accepting = True  # False once closing: rooms refuse new messages
        # Rooms changed since their last batch, in the order they first changed.
        self._dirty: dict[Room, None] = {}
        self._written: dict[Room, int] = {}  # room -> newest id written (or being written)
        self._unwritten = 0  # messages added since the last batch was taken
        self._id_floor = 0
        self._timer: Optional[asyncio.Handle] = None
        self._writing: Optional["asyncio.Future[None]"] = None  # the batch being written
        self._failed = False  # a batch failed: the run can no longer be marked clean
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # The coroutine API, for the event loop.

    async def start(self) -> None:
        """Open the database, put its history back into the rooms and start journaling.

        Call it before serving: the rooms must be empty. Raises if the file cannot be
        opened (a bad data directory stops the server here).
        """
        if self.path is None or self._started:
            return
        self._loop = asyncio.get_running_loop()
        budget = self.rooms.budget
        clean, id_floor, rooms = await self._worker.run(
            self._load, budget.max_bytes, budget.entry_overhead
        )
        self._started = True
        self.rooms.journal = self
        self.rooms.restore(id_floor, (
            (name, lost_through if clean else None, messages)
            for name, lost_through, messages in rooms
        ))
        self._id_floor = id_floor
        # Write back what the bounds changed while restoring (and forget what was not read),
        # with the file marked not clean until a graceful stop.
        stored = set()
        for room in self.rooms:
            stored.add(room.name)
            newest = room.held_after(None)
            if newest:
                self._written[room] = newest[-1].id
            self._dirty[room] = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take_batch()
        batch.clean = False
        await self._worker.run(
            self._write, batch, [name for name, _, _ in rooms if name not in stored]
        )
        held = sum(len(room.held_after(None)) for room in self.rooms)
        log.info("chat history %s open: %d room(s), %d message(s)%s", self.path,
                 len(self.rooms), held, "" if clean else "; the last run did not stop cleanly")

    async def aclose(self) -> None:
        """Write every pending change, mark the file clean and close it (a shutdown closer).

        From now on rooms refuse new messages with ``shutting_down``.
        """
        if not self._started:
            await self._worker.aclose()
            return
        self._accepting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            await asyncio.wait([self._writing])  # its outcome is handled by _wrote
        batch = self._take_batch()
        batch.clean = not self._failed
        try:
            await self._worker.run(self._write, batch, [])
        finally:
            self._started = False
            await self._worker.aclose()

    async def flush(self) -> None:
        """Write every change made so far and return once it is committed."""
        while self._started and (self._writing is not None or self._dirty):
            if self._writing is None:
                if self._timer is not None:
                    self._timer.cancel()
                self._flush()
            if self._writing is not None:
                await asyncio.wait([self._writing])

    # The Journal, called by the rooms on the loop.

    def admit(self, room: Room) -> None:
        """Refuse a new message once the store is closing: it could not be written."""
        if not self._accepting:
            raise ClientError(
                "shutting_down", "The server is stopping; send it again once reconnected."
            )

    def added(self, room: Room) -> None:
        """``room`` stored a message: write it with the next batch."""
        self._unwritten += 1
        self._changed(room)

    def dropped(self, room: Room) -> None:
        """``room`` dropped messages: delete them with the next batch."""
        self._changed(room)

    # Batching, on the loop.

    def _changed(self, room: Room) -> None:
        self._dirty[room] = None
        if self._writing is not None or not self._accepting:
            return  # the batch being written (or aclose) takes it next
        if self._unwritten >= FLUSH_MESSAGES:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop_().call_soon(self._flush)
        elif self._timer is None:
            self._timer = self._loop_().call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._writing is not None or not self._dirty or not self._accepting:
            return
        writing = asyncio.ensure_future(self._worker.run(self._write, self._take_batch(), []))
        self._writing = writing
        writing.add_done_callback(self._wrote)

    def _wrote(self, writing: "asyncio.Future[None]") -> None:
        self._writing = None
        if not writing.cancelled() and writing.exception() is not None:
            if not self._failed:
                log.error("chat history: a batch was not written; history since is only in "
                          "memory", exc_info=writing.exception())
            self._failed = True
        if self._dirty and self._accepting:
            delay = 0.0 if self._unwritten >= FLUSH_MESSAGES else FLUSH_DELAY
            self._timer = self._loop_().call_later(delay, self._flush)

    def _take_batch(self) -> Batch:
        """What changed since the last batch, read from the rooms now (on the loop)."""
        batch = Batch()
        for room in self._dirty:
            new = room.held_after(self._written.get(room))
            oldest_id = room.oldest_id
            if oldest_id is None:
                self._written.pop(room, None)
            elif new:
                self._written[room] = new[-1].id
            self._id_floor = max(self._id_floor, room.next_id)
            batch.rooms.append(
                RoomChange(room.name, new, oldest_id, room.next_id, room.lost_through)
            )
        batch.id_floor = self._id_floor
        self._dirty = {}
        self._unwritten = 0
        return batch

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the chat store is not started"
        return self._loop

    # The jobs, on the worker thread, each given the connection.

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        with transaction(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(
        self, conn: sqlite3.Connection, max_bytes: int, entry_overhead: int
    ) -> tuple[bool, int, list[tuple[str, int, list[Stored]]]]:
        """The clean mark, the id floor, and each room's state and newest messages that fit
        in ``max_bytes`` together, the least recently active room first."""
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        states = {
            name: (next_id, lost_through)
            for name, next_id, lost_through in conn.execute(
                "SELECT name, next_id, lost_through FROM rooms")
        }
        id_floor = max([meta.get("id_floor", 0), *(next_id for next_id, _ in states.values())])
        kept: dict[str, list[Stored]] = {}  # newest active room first, messages newest first
        taken = 0
        for room, frame, parties in conn.execute(
            "SELECT room, frame, parties FROM messages ORDER BY rowid DESC"
        ):
            if room not in states:
                continue  # no state: not written by a whole batch; cannot happen
            message = Stored(json.loads(frame), load_parties(parties))
            taken += entry_cost(message, entry_overhead)
            if taken > max_bytes:
                break
            kept.setdefault(room, []).append(message)
        rooms = []
        for name, messages in reversed(kept.items()):
            messages.sort(key=lambda message: message.id)
            # Everything after lost_through is held; if older messages did not fit, a since
            # before the first one read is not recoverable.
            rooms.append((name, max(states[name][1], messages[0].id - 1), messages))
        # Rooms whose messages did not fit come first, with none: restoring forgets them.
        rooms[:0] = [(name, states[name][1], []) for name in states if name not in kept]
        return bool(meta.get("clean", 1)), id_floor, rooms

    def _write(self, conn: sqlite3.Connection, batch: Batch, forget: list[str]) -> None:
        with transaction(conn):
            for change in batch.rooms:
                conn.executemany(
                    "INSERT OR REPLACE INTO messages (room, id, frame, parties)"
                    " VALUES (?, ?, ?, ?)",
                    [(change.name, message.id, encode(message.frame),
                      dump_parties(message.parties)) for message in change.new],
                )
                if change.oldest_id is None:
                    conn.execute("DELETE FROM messages WHERE room = ?", (change.name,))
                    conn.execute("DELETE FROM rooms WHERE name = ?", (change.name,))
                    continue
                conn.execute("DELETE FROM messages WHERE room = ? AND id < ?",
                             (change.name, change.oldest_id))
                conn.execute(
                    "INSERT INTO rooms (name, next_id, lost_through) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET next_id = excluded.next_id,"
                    " lost_through = excluded.lost_through",
                    (change.name, change.next_id, change.lost_through),
                )
            for name in forget:
                conn.execute("DELETE FROM messages WHERE room = ?", (name,))
                conn.execute("DELETE FROM rooms WHERE name = ?", (name,))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('id_floor', ?) ON CONFLICT (key)"
                " DO UPDATE SET value = max(value, excluded.value)", (batch.id_floor,)
            )
            if batch.clean is not None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('clean', ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = excluded.value", (int(batch.clean),)
                )


def dump_parties(parties: Optional[Parties]) -> Optional[str]:
    """A private message's parties as JSON, a connection's serial stored as null."""
    if parties is None:
        return None
    return json.dumps({key: holder if isinstance(holder, str) else None
                       for key, holder in parties.items()})


def load_parties(text: Optional[str]) -> Optional[Parties]:
    """The parties ``dump_parties`` wrote: cookies as they were, serials as None."""
    if text is None:
        return None
    return {key: holder if isinstance(holder, str) else None
            for key, holder in json.loads(text).items()}
