"""Chat history across restarts of the real server process (the embedded default)."""

import os
import signal
import sqlite3

from realtime.chat.store import DB_FILENAME
from tests.process import start_server_process
from tests.support import poll_until, receive_json, receive_type, send_json

ALICE = "alice-browser-0123456789"  # chat cookies, as /chat hands them out
BOB = "bob-browser-0123456789ab"


async def open_chat(ws_open, port, room="lobby", cookie=None, **query):
    """Open ``room`` on the server at ``port``; return the connection and its welcome."""
    args = "&".join(f"{key}={value}" for key, value in query.items())
    url = f"ws://127.0.0.1:{port}/ws/chat/{room}" + (f"?{args}" if args else "")
    conn = await ws_open(url, {"Cookie": f"chat_id={cookie}"} if cookie else None)
    welcome = await receive_json(conn)
    assert welcome["type"] == "welcome"
    return conn, welcome


async def stop(process, signum=signal.SIGTERM):
    """Send ``signum`` and wait for the process to exit; return its status."""
    process.send_signal(signum)
    await poll_until(lambda: process.poll() is not None)
    return process.returncode


def stored_messages(tmp_path) -> int:
    """Messages committed to the chat database, read as another process would."""
    path = tmp_path / "data" / DB_FILENAME
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the schema is not there yet
    finally:
        conn.close()


async def test_graceful_restart_keeps_history_and_since_recovers(
    spawn, python, ws_open, tmp_path
):
    """SIGTERM, restart: since=<seen id> replays exactly the rest with recovered true, and a
    newcomer's welcome holds the history."""
    process, port = await start_server_process(spawn, python, tmp_path)
    alice, _ = await open_chat(ws_open, port, cookie=ALICE, nick="alice")
    bob, _ = await open_chat(ws_open, port, cookie=BOB, nick="bob")
    await receive_type(alice, "joined")
    for n in range(6):
        await send_json(alice, {"type": "message", "text": f"m{n}"})
    await send_json(alice, {"type": "message", "text": "psst", "to": "bob"})
    seen = [await receive_type(bob, "message") for _ in range(6)]
    seen.append(await receive_type(bob, "private"))

    assert await stop(process) == 0
    process, port = await start_server_process(spawn, python, tmp_path, name="restarted")

    _, welcome = await open_chat(ws_open, port, cookie=BOB, nick="bob", since=seen[2]["id"])
    assert welcome["recovered"] is True and welcome["history"] == seen[3:]
    _, newcomer = await open_chat(ws_open, port)
    assert newcomer["history"] == seen[:6]  # the public ones: the private one is not theirs
    _, early = await open_chat(ws_open, port, since=seen[0]["id"] - 2)
    assert early["recovered"] is False  # from before the room's first message: unknown
    # And the room goes on above the old ids.
    alice, _ = await open_chat(ws_open, port, cookie=ALICE)
    await send_json(alice, {"type": "message", "text": "after"})
    assert (await receive_type(alice, "message"))["id"] > seen[-1]["id"]
    assert "Traceback" not in (tmp_path / "server.log").read_text()


async def test_cookieless_private_message_is_not_replayed_after_restart(
    spawn, python, ws_open, tmp_path
):
    """A private message between connections without cookies is nobody's after a restart."""
    process, port = await start_server_process(spawn, python, tmp_path)
    carol, _ = await open_chat(ws_open, port, nick="carol")
    dave, _ = await open_chat(ws_open, port, nick="dave")
    await send_json(carol, {"type": "message", "text": "psst", "to": "dave"})
    whispered = await receive_type(dave, "private")
    await send_json(carol, {"type": "message", "text": "public"})
    await receive_type(dave, "message")

    assert await stop(process) == 0
    process, port = await start_server_process(spawn, python, tmp_path, name="restarted")

    # The first connections of the new run get the serial numbers the old ones had.
    for nick in ("carol", "dave"):
        _, welcome = await open_chat(ws_open, port, nick=nick, since=whispered["id"] - 1)
        assert [m["text"] for m in welcome["history"]] == ["public"]
    _, welcome = await open_chat(ws_open, port, cookie=ALICE, nick="dave")
    assert [m["text"] for m in welcome["history"]] == ["public"]


async def test_sigkill_keeps_committed_history_and_since_says_not_recovered(
    spawn, python, ws_open, tmp_path
):
    """After kill -9 the committed history is back, and since answers recovered false: the
    last batch may be lost, so no replay claims to be whole."""
    process, port = await start_server_process(spawn, python, tmp_path)
    conn, _ = await open_chat(ws_open, port)
    for n in range(5):
        await send_json(conn, {"type": "message", "text": f"m{n}"})
    seen = [await receive_type(conn, "message") for _ in range(5)]
    await poll_until(lambda: stored_messages(tmp_path) == 5)  # the batch is committed

    assert await stop(process, signal.SIGKILL) == -signal.SIGKILL
    process, port = await start_server_process(spawn, python, tmp_path, name="restarted")

    _, welcome = await open_chat(ws_open, port, since=seen[-1]["id"])
    assert welcome["recovered"] is False and welcome["history"] == seen


async def test_the_file_stays_bounded_under_a_flood_of_big_messages(
    spawn, python, ws_open, tmp_path
):
    """1,000 messages of 24 KB (24 MB) into a 2 MB history budget: the file stays near 2 MB."""
    budget = 2 * 1024 * 1024
    process, port = await start_server_process(
        spawn, python, tmp_path, "--chat-history-bytes", str(budget), "--rate-limit", "0",
        "--ip-rate-limit", "0", "--room-rate-limit", "0",
    )
    conn, _ = await open_chat(ws_open, port)
    heavy = "\x01" * 4000  # 24 KB once escaped as JSON
    for _ in range(20):
        for _ in range(50):
            await send_json(conn, {"type": "message", "text": heavy})
        for _ in range(50):
            await receive_type(conn, "message")  # at the pace the server takes them
    path = tmp_path / "data" / DB_FILENAME
    running = os.path.getsize(path) + os.path.getsize(f"{path}-wal")
    assert await stop(process) == 0

    assert running < 2 * budget + 8 * 1024 * 1024  # the WAL is cut back to 4 MB
    assert os.path.getsize(path) < 2 * budget
    assert 0 < stored_messages(tmp_path) <= budget // 24_000
