"""The cookie secret kept in the data directory, or in one file every process shares."""

import asyncio
import os
import stat
import threading

import pytest
from tornado.httpclient import AsyncHTTPClient

from server import load_cookie_secret
from tests.support import free_port, wait_listening

PROCESSES = 4  # server processes started at once on one fresh secret file


def test_secret_is_generated_once_and_kept(tmp_path):
    """The first call writes a long secret readable by the owner only; later calls reread it."""
    path = str(tmp_path / "cookie_secret")
    secret = load_cookie_secret(path)
    assert len(secret) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_cookie_secret(path) == secret
    assert os.listdir(tmp_path) == ["cookie_secret"]  # no draft left behind


def test_short_secret_is_refused(tmp_path):
    """A secret file with fewer than 32 characters stops the server from starting."""
    path = tmp_path / "cookie_secret"
    path.write_text("too short\n")
    with pytest.raises(ValueError):
        load_cookie_secret(str(path))


def test_loaders_racing_on_a_fresh_file_all_get_the_one_secret(tmp_path):
    """Eight loaders released at once on a missing file, fifty times over, all come back with
    the same secret: none reads a file another is still writing."""
    for round_ in range(50):
        path = str(tmp_path / f"cookie_secret{round_}")
        start = threading.Barrier(8)
        found: list[object] = []

        def load() -> None:
            start.wait()
            try:
                found.append(load_cookie_secret(path))
            except ValueError as error:
                found.append(error)

        threads = [threading.Thread(target=load) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert found == [load_cookie_secret(path)] * 8


async def test_processes_started_together_sign_voter_cookies_alike(spawn, python, tmp_path):
    """Server processes started at the same moment on one fresh --cookie-secret-file, each
    with its own data directory, all accept the voter cookie any of them issued."""
    secret = tmp_path / "shared" / "cookie_secret"
    secret.parent.mkdir()
    ports = [free_port() for _ in range(PROCESSES)]
    processes = [
        spawn(f"server{n}", [python, "server.py", "--port", str(port),
                             "--data-dir", str(tmp_path / f"data{n}"),
                             "--cookie-secret-file", str(secret)])
        for n, port in enumerate(ports)
    ]
    await asyncio.gather(*(wait_listening("127.0.0.1", port, process)
                           for port, process in zip(ports, processes)))
    client = AsyncHTTPClient()
    issued = await client.fetch(f"http://127.0.0.1:{ports[0]}/vote/demo")
    cookie = issued.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("voter=")
    for port in ports:
        page = await client.fetch(f"http://127.0.0.1:{port}/vote/demo",
                                  headers={"Cookie": cookie})
        assert "Set-Cookie" not in page.headers  # a valid voter: no new cookie issued
