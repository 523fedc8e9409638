"""Durability: acknowledged votes survive a SIGKILL of the real server process."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tests.support import TIMEOUT, receive_json, receive_type, send_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOTES = 25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_server(tmp_path) -> Iterator:
    """``await start_server(data_dir)`` runs ``server.py`` as a process; all are killed after."""
    processes: list[subprocess.Popen] = []

    async def start(data_dir: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        log = open(tmp_path / f"server-{len(processes)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "server.py", "--port", str(port), "--data-dir", data_dir],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(base, process)
        return base, process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)


async def wait_healthy(base: str, process: subprocess.Popen) -> None:
    """Wait until /healthz answers 200 (the process is listening), or fail."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during startup"
        try:
            response = await AsyncHTTPClient().fetch(f"{base}/healthz", request_timeout=2)
            if response.code == 200:
                return
        except (ConnectionError, HTTPClientError, OSError):
            pass
        await asyncio.sleep(0.05)  # not yet listening: poll again
    pytest.fail("the server did not become healthy in time")


async def get_json(url: str, **kwargs):
    return json.loads((await AsyncHTTPClient().fetch(url, **kwargs)).body)


async def test_acknowledged_votes_survive_sigkill(start_server, tmp_path):
    """Every vote whose tally and ack arrived is there after kill -9 and a restart."""
    data_dir = str(tmp_path / "data")
    base, server = await start_server(data_dir)
    ws_base = base.replace("http://", "ws://")

    # A one-vote poll and a voter cookie, as a browser would get them.
    created = await AsyncHTTPClient().fetch(
        f"{base}/api/polls", method="POST",
        body=json.dumps({"title": "Keep?", "options": ["yes", "no"], "one_vote_per_voter": True}),
        headers={"Content-Type": "application/json"},
    )
    poll_id = json.loads(created.body)["id"]
    page = await AsyncHTTPClient().fetch(f"{base}/vote/{poll_id}")
    cookie = {"Cookie": page.headers["Set-Cookie"].split(";")[0]}

    demo = await websocket_connect(f"{ws_base}/ws/vote/demo")
    await receive_type(demo, "poll")
    for n in range(VOTES):
        await send_json(demo, {"type": "vote", "option": str(n % 3 + 1)})
        await receive_type(demo, "tally")
        await receive_type(demo, "voted")
    one = await websocket_connect(HTTPRequest(f"{ws_base}/ws/vote/{poll_id}", headers=cookie))
    await receive_type(one, "poll")
    await send_json(one, {"type": "vote", "option": "2"})
    await receive_type(one, "voted")

    # The last ack is in: SIGKILL, so no shutdown code of ours runs and nothing is flushed.
    server.send_signal(signal.SIGKILL)
    assert server.wait(TIMEOUT) == -signal.SIGKILL
    demo.close()
    one.close()

    base, _ = await start_server(data_dir)
    counts = await get_json(f"{base}/api/polls/demo")
    assert [o["votes"] for o in counts["options"]] == [9, 8, 8]
    assert (await get_json(f"{base}/api/polls/{poll_id}"))["total"] == 1

    # The ballot and the cookie secret survived too: the same browser cannot vote again.
    again = await websocket_connect(
        HTTPRequest(f"{base.replace('http://', 'ws://')}/ws/vote/{poll_id}", headers=cookie)
    )
    assert (await receive_json(again))["voted"] == "2"
    await send_json(again, {"type": "vote", "option": "1"})
    assert (await receive_type(again, "error"))["code"] == "already_voted"
    again.close()
