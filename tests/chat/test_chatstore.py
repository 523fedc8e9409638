"""Chat history in SQLite without a server: what a restart keeps, bounds, ids, honesty."""

import os
import sqlite3

import pytest

from realtime.chat.rules import Rooms
from realtime.chat.store import DB_FILENAME, ChatStore
from realtime.wire.messages import ClientError

HEAVY = "\x01" * 4000  # about 24 KB as a JSON frame


@pytest.fixture
def path(tmp_path):
    """The database file of the test."""
    return str(tmp_path / DB_FILENAME)


@pytest.fixture
def open_store(path, io_loop):
    """``await open_store(**rooms_options)``: fresh rooms journaled in the test's file, as a
    server would have them after a (re)start; every store is closed after the test."""
    stores = []

    async def start(clock=None, **options):
        rooms = Rooms(**options) if clock is None else Rooms(clock=clock, **options)
        store = ChatStore(path, rooms)
        await store.start()
        stores.append(store)
        return rooms, store

    yield start
    for store in stores:
        io_loop.run_sync(store.aclose)  # closing twice is harmless


def enter(room, cookie=None, nick=None):
    """A new connection in ``room``, with a nickname if given."""
    connection = object()
    room.enter(connection, cookie)
    if nick is not None:
        room.join(connection, nick)
    return connection


def rows(path, sql="SELECT count(*) FROM messages"):
    """A query on the file, as another process would read it."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def mark_unclean(path):
    """Leave the file as a killed run leaves it: not marked clean."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = 0 WHERE key = 'clean'")
    conn.close()


async def test_history_and_recovery_survive_a_restart(open_store):
    """After a graceful restart a newcomer sees the history and since replays exactly."""
    rooms, store = await open_store()
    speaker = enter(rooms.get("lobby"))
    frames = [rooms.get("lobby").say(speaker, f"m{n}") for n in range(6)]
    await store.aclose()

    rooms, _ = await open_store()
    room = rooms.get("lobby")
    newcomer = enter(room)
    assert room.history(newcomer) == (frames, None)
    assert room.history(newcomer, since=frames[2]["id"]) == (frames[3:], True)
    assert room.history(newcomer, since=frames[-1]["id"]) == ([], True)


async def test_ids_keep_increasing_across_a_restart_even_if_the_clock_goes_back(open_store):
    """A restarted room's ids start above every stored one, whatever the clock says."""
    rooms, store = await open_store(clock=lambda: 2_000.0)
    speaker = enter(rooms.get("lobby"))
    last = [rooms.get("lobby").say(speaker, "x")["id"] for _ in range(50)][-1]
    other = rooms.get("other").say(enter(rooms.get("other")), "y")["id"]
    await store.aclose()

    rooms, _ = await open_store(clock=lambda: 1_000.0)
    assert rooms.get("lobby").say(enter(rooms.get("lobby")), "z")["id"] > max(last, other)
    assert rooms.get("new").say(enter(rooms.get("new")), "z")["id"] > max(last, other)


async def test_batches_are_written_without_closing(open_store, path):
    """Messages reach the file in batches while the store runs (flush waits for them)."""
    rooms, store = await open_store()
    speaker = enter(rooms.get("lobby"))
    for n in range(250):
        rooms.get("lobby").say(speaker, str(n))
    await store.flush()
    assert rows(path) == [(250,)]


async def test_evicted_messages_are_deleted_from_the_file(open_store, path):
    """The file holds what the room holds: past the count bound the oldest rows go."""
    rooms, store = await open_store(history=5, replay=10)
    room = rooms.get("lobby")
    speaker = enter(room)
    frames = [room.say(speaker, str(n)) for n in range(25)]
    await store.flush()
    assert rows(path, "SELECT id FROM messages ORDER BY id") == [(f["id"],) for f in frames[-10:]]
    await store.aclose()

    rooms, _ = await open_store(history=5, replay=10)
    room = rooms.get("lobby")
    assert room.history(enter(room), since=frames[15]["id"]) == (frames[16:], True)
    history, recovered = room.history(enter(room), since=frames[5]["id"])
    assert recovered is False and history == frames[-5:]


async def test_rooms_without_history_leave_the_file(open_store, path):
    """A room whose messages the budget took is gone from the file, rows and state."""
    rooms, store = await open_store(history_bytes=200_000)
    quiet = rooms.get("quiet")
    visitor = enter(quiet)
    quiet.say(visitor, "hello")
    quiet.close(visitor)
    busy = rooms.get("busy")
    speaker = enter(busy)
    for _ in range(20):
        busy.say(speaker, HEAVY)  # pushes "quiet" out of the shared budget
    await store.flush()
    assert "quiet" not in rooms
    assert rows(path, "SELECT name FROM rooms") == [("busy",)]
    assert rows(path, "SELECT count(*) FROM messages WHERE room = 'quiet'") == [(0,)]


async def test_private_messages_of_cookie_holders_survive_for_them_only(open_store):
    """After a restart the same browser (cookie) sees its private message; others do not."""
    rooms, store = await open_store()
    room = rooms.get("lobby")
    alice = enter(room, "alice-cookie-0123456789", "alice")
    enter(room, "bob-cookie-0123456789abc", "bob")
    frame, _ = room.whisper(alice, "bob", "psst")
    await store.aclose()

    rooms, _ = await open_store()
    room = rooms.get("lobby")
    assert room.history(enter(room, "bob-cookie-0123456789abc", "bob")) == ([frame], None)
    assert room.history(enter(room, "alice-cookie-0123456789", "alice")) == ([frame], None)
    assert room.history(enter(room, "mallory-cookie-0123456789", "mallory")) == ([], None)


async def test_private_messages_of_cookieless_connections_are_never_replayed(open_store):
    """A cookie-less holder's serial means nothing after a restart: it matches nobody."""
    rooms, store = await open_store()
    room = rooms.get("lobby")
    carol = enter(room, None, "carol")
    enter(room, None, "dave")
    room.whisper(carol, "dave", "psst")
    await store.aclose()

    rooms, _ = await open_store()
    room = rooms.get("lobby")
    # The first connections of the new run get the serials the old ones had.
    for nick in ("carol", "dave"):
        assert room.history(enter(room, None, nick)) == ([], None)
    assert room.history(enter(room, "a-cookie-0123456789abcdef", "erin")) == ([], None)


async def test_a_run_that_did_not_stop_cleanly_answers_since_as_not_recovered(open_store, path):
    """After a kill the history is back, but since says recovered false: a batch may be lost."""
    rooms, store = await open_store()
    speaker = enter(rooms.get("lobby"))
    frames = [rooms.get("lobby").say(speaker, str(n)) for n in range(5)]
    await store.aclose()
    mark_unclean(path)

    rooms, store = await open_store()
    room = rooms.get("lobby")
    assert room.history(enter(room), since=frames[2]["id"]) == (frames, False)
    # The next graceful stop writes that, so it stays honest after one more restart.
    await store.aclose()
    rooms, _ = await open_store()
    room = rooms.get("lobby")
    assert room.history(enter(room), since=frames[2]["id"]) == (frames, False)


async def test_a_smaller_budget_reads_back_only_the_newest_and_trims_the_file(open_store, path):
    """Restarted with a smaller byte budget: the newest messages that fit, the rest deleted."""
    rooms, store = await open_store()
    room = rooms.get("lobby")
    speaker = enter(room)
    frames = [room.say(speaker, HEAVY) for _ in range(8)]
    await store.aclose()

    rooms, store = await open_store(history_bytes=100_000)
    room = rooms.get("lobby")
    history, _ = room.history(enter(room))
    assert 1 <= len(history) < 8 and history == frames[-len(history):]
    assert room.history(enter(room), since=frames[0]["id"])[1] is False
    assert room.history(enter(room), since=frames[-2]["id"]) == ([frames[-1]], True)
    assert rows(path) == [(len(history),)]


async def test_closing_store_refuses_new_messages(open_store):
    """Once the store is closing, a message is refused (it could not be kept)."""
    rooms, store = await open_store()
    room = rooms.get("lobby")
    speaker = enter(room)
    await store.aclose()
    with pytest.raises(ClientError) as refused:
        room.say(speaker, "too late")
    assert refused.value.code == "shutting_down"


async def test_the_file_stays_bounded_under_a_flood_of_big_messages(open_store, path):
    """40 MB of 24 KB messages into a 2 MB budget: the file stays around the budget."""
    budget = 2 * 1024 * 1024
    rooms, store = await open_store(history_bytes=budget)
    speakers = {name: enter(rooms.get(name)) for name in ("a", "b", "c")}
    largest = 0
    for n in range(1700):
        name = "abc"[n % 3]
        rooms.get(name).say(speakers[name], HEAVY)
        if n % 50 == 49:
            await store.flush()
            largest = max(largest, os.path.getsize(path) + os.path.getsize(path + "-wal"))
    await store.aclose()
    assert os.path.getsize(path) < 2 * budget
    assert largest < 2 * budget + 8 * 1024 * 1024  # the WAL is cut back to 4 MB


async def test_memory_mode_keeps_nothing(tmp_path):
    """Without a data directory the store does nothing and history stays in memory."""
    rooms = Rooms()
    store = ChatStore(None, rooms)
    await store.start()
    room = rooms.get("lobby")
    room.say(enter(room), "x")
    await store.aclose()
    assert rooms.journal is None and os.listdir(tmp_path) == []
