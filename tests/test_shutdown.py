"""Graceful shutdown of the real process: SIGTERM/SIGINT -> 1001 to every socket, closers
run after the server stopped accepting, pending votes are committed, exit 0 within 5 seconds."""

import json
import signal
import struct
import time
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from realtime.wire.closecodes import CloseCode
from tests.support import (
    OP_CLOSE, accepts, closed, eof, free_port, poll_until, raw_handshake, read_frame,
    receive, receive_type, send_json, wait_listening,
)

DEADLINE = 5.0  # seconds from the signal to the exit, as the deployment promises
BURST = 50  # votes sent at once, none waiting for its tally
# Sockets open at once whose clients never answer the close: within the default per-address
# connection cap and handshake burst (100), since every test client is 127.0.0.1.
SILENT = 60


def server_argv(python: str, port: int, tmp_path: Path) -> list[str]:
    """``server.py`` on ``port`` with its data in the test's directory, never the repo's."""
    return [python, "server.py", "--port", str(port), "--data-dir", str(tmp_path / "data")]


async def start(spawn, argv, port, name: str = "server"):
    """Spawn ``argv`` (its output in ``tmp_path/<name>.log``) and wait until it listens."""
    process = spawn(name, argv)
    await wait_listening("127.0.0.1", port, process)
    return process


async def exit_status(process, timeout: float = DEADLINE) -> int:
    """Wait for the process to exit (failing past ``timeout``) and return its status."""
    started = time.monotonic()
    await poll_until(lambda: process.poll() is not None, timeout)
    assert time.monotonic() - started < timeout
    return process.returncode


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_closes_every_socket_with_1001_and_exits_0(
    spawn, python, ws_open, tmp_path, signum
):
    """On SIGTERM or SIGINT every client gets close 1001 and the process exits 0 in time."""
    port = free_port()
    process = await start(spawn, server_argv(python, port, tmp_path), port)
    clients = [await ws_open(f"ws://127.0.0.1:{port}/ws/echo") for _ in range(5)]
    for conn in clients:
        await conn.write_message("before")
        assert await receive(conn) == "before"

    process.send_signal(signum)
    for conn in clients:
        assert await closed(conn) == CloseCode.GOING_AWAY
    assert await exit_status(process) == 0


async def test_sigterm_during_a_vote_burst_keeps_every_acknowledged_vote(
    spawn, python, ws_open, tmp_path
):
    """SIGTERM amid a burst of votes: close 1001, exit 0 in time, every acked vote on disk."""
    port = free_port()
    process = await start(spawn, server_argv(python, port, tmp_path), port)
    conn = await ws_open(f"ws://127.0.0.1:{port}/ws/vote/demo")
    before = (await receive_type(conn, "poll"))["poll"]["total"]
    for n in range(BURST):
        await send_json(conn, {"type": "vote", "option": str(n % 3 + 1)})
    # Signal once the first vote is acknowledged, the rest of the burst still pending, so the
    # check below always covers at least one acknowledged vote.
    await receive_type(conn, "voted")
    process.send_signal(signal.SIGTERM)

    acknowledged = 1
    while (frame := await receive(conn)) is not None:
        acknowledged += json.loads(frame)["type"] == "voted"
    assert conn.close_code == CloseCode.GOING_AWAY
    assert await exit_status(process) == 0
    assert "Traceback" not in (tmp_path / "server.log").read_text()

    port = free_port()
    await start(spawn, server_argv(python, port, tmp_path), port, "restarted")
    poll = json.loads((await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/api/polls/demo")).body)
    assert before + acknowledged <= poll["total"] <= before + BURST


async def test_closers_run_after_accepting_stopped_and_sockets_closed(
    spawn, python, ws_open, tmp_path
):
    """A registered closer runs once the server refuses connections and no socket is open."""
    port = free_port()
    process = await start(spawn, [python, "tests/closer_server.py", str(port)], port)
    conn = await ws_open(f"ws://127.0.0.1:{port}/ws/echo")
    process.send_signal(signal.SIGTERM)
    assert await closed(conn) == CloseCode.GOING_AWAY
    assert await exit_status(process) == 0
    output = (tmp_path / "server.log").read_text()
    assert "closer ran: accepting=no open_sockets=0" in output


async def test_client_that_never_answers_the_close_does_not_delay_exit(
    spawn, python, tmp_path
):
    """A client that stopped reading cannot hold the shutdown past the deadline."""
    port = free_port()
    process = await start(spawn, server_argv(python, port, tmp_path), port)
    _, writer, head = await raw_handshake(port, "/ws/echo")
    assert head.startswith(b"HTTP/1.1 101")
    process.send_signal(signal.SIGTERM)
    assert await exit_status(process) == 0
    writer.close()


async def test_clients_that_never_answer_the_close_are_closed_before_the_closers_run(
    spawn, python, tmp_path
):
    """Many clients that never answer the close each get 1001 and the end of the connection,
    and the closers then find no socket open: nobody waits for their replies."""
    port = free_port()
    process = await start(spawn, [python, "tests/closer_server.py", str(port)], port)
    clients = [await raw_handshake(port, "/ws/echo") for _ in range(SILENT)]
    assert all(head.startswith(b"HTTP/1.1 101") for _, _, head in clients)
    process.send_signal(signal.SIGTERM)
    for reader, transport, _ in clients:
        assert await read_frame(reader) == (OP_CLOSE, struct.pack("!H", CloseCode.GOING_AWAY)
                                            + b"server shutting down")
        assert await eof(reader)
        transport.close()
    assert await exit_status(process) == 0
    output = (tmp_path / "server.log").read_text()
    assert "closer ran: accepting=no open_sockets=0" in output


async def test_hanging_closer_is_cut_at_the_deadline(spawn, python, tmp_path):
    """A closer that never finishes is cancelled at the deadline and the exit status is 1;
    meanwhile the port already refuses connections."""
    port = free_port()
    process = await start(spawn, [python, "tests/closer_server.py", str(port), "hang"], port)
    process.send_signal(signal.SIGTERM)
    await poll_until(lambda: not accepts("127.0.0.1", port))
    assert process.poll() is None  # still in its hanging closer, yet no longer accepting
    assert await exit_status(process) == 1
    assert "did not finish in time" in (tmp_path / "server.log").read_text()
