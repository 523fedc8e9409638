"""Accepting connections with no descriptor left: the server pauses instead of spinning,
logs it at most once a second, and serves again once descriptors free up."""

import asyncio
import errno
import logging
import re
import socket
import time
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from realtime.ops.accept import Acceptor, ThrottledLog
from tests.process import start_server_process
from tests.support import poll_until

# More idle connections than the 64 descriptors the server gets, and a bound on the test.
IDLE = 100
NOFILE = (64, 64)  # soft and hard alike, so raising the soft limit cannot help
WAIT = 30.0  # seconds a test waits for what the server must do, far above what it takes


class FakeClock:
    """A clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttled_log_holds_back_repeats_and_counts_them(caplog):
    """Within the interval only the first warning is logged; the next one, past it, says
    how many were held back."""
    clock = FakeClock()
    throttled = ThrottledLog(logging.getLogger("test.throttled"), interval=1.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.throttled"):
        assert throttled.warning(event="full")
        for _ in range(5):
            clock.now += 0.1
            assert not throttled.warning(event="full")
        clock.now += 0.6
        assert throttled.warning(event="full")
    assert [r.getMessage() for r in caplog.records] == [
        "event=full repeats=0", "event=full repeats=5"]


class ShortOfDescriptors:
    """A listening socket whose first ``failures`` accepts fail with EMFILE."""

    def __init__(self, sock: socket.socket, failures: int) -> None:
        self.sock = sock
        self.failures = failures

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock.accept()


async def test_acceptor_pauses_on_emfile_and_accepts_once_it_clears(caplog):
    """EMFILE pauses accepting; the queued client is accepted once accept() works again,
    with one report of the failure (repeats held back) and one of the recovery."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    accepted: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()
    acceptor = Acceptor(ShortOfDescriptors(listener, 5),  # type: ignore[arg-type]
                        lambda conn, _: accepted.set_result(conn), retry_delay=0.01,
                        failures=ThrottledLog(logging.getLogger("realtime.accept"), 3600.0))
    with caplog.at_level(logging.WARNING, "realtime.ops.accept"):
        _, writer = await asyncio.open_connection(*listener.getsockname())
        connection = await asyncio.wait_for(accepted, WAIT)
    acceptor.close()
    connection.close()
    writer.close()
    listener.close()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("event=accept_paused error=EMFILE")
    assert messages[1] == "event=accept_resumed refused=5 repeats=0"


def accept_reports(log_path: Any) -> list[str]:
    """The accept_paused lines of the server's log."""
    return re.findall(r".*event=accept_paused.*", log_path.read_text())


async def healthz(port: int) -> bool:
    """Whether GET /healthz answers 200 right now (one try)."""
    try:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/healthz", request_timeout=WAIT, raise_error=False)
    except OSError:
        return False
    return response.code == 200


async def test_out_of_descriptors_is_logged_once_a_second_and_passes(spawn, python, tmp_path):
    """With every descriptor taken by idle clients the server logs accept_paused at most
    once a second (never a flood of tracebacks), and answers /healthz again once they go."""
    process, port = await start_server_process(spawn, python, tmp_path, nofile=NOFILE)
    log_path = tmp_path / "server.log"
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE)]
    try:
        # The second report comes a second or more after the first: by then a server that
        # spins would have written thousands of lines.
        await poll_until(lambda: len(accept_reports(log_path)) >= 2, WAIT)
        log = log_path.read_text()
    finally:
        for sock in idle:
            sock.close()
    reports = accept_reports(log_path)
    assert all("error=EMFILE" in line and "repeats=" in line for line in reports)
    assert log.count("Too many open files") == len(re.findall("event=accept_paused", log))
    assert "Traceback" not in log

    deadline = time.monotonic() + WAIT
    while not await healthz(port):
        assert time.monotonic() < deadline, "the server never answered /healthz again"
    assert "event=accept_resumed" in log_path.read_text()
    assert process.poll() is None


async def test_out_of_descriptors_recovers_by_itself_through_the_idle_timeout(
    spawn, python, tmp_path
):
    """Idle clients that hold every descriptor and never leave are cut by the idle timeout,
    so a client queued behind them is served without anyone's help."""
    _, port = await start_server_process(spawn, python, tmp_path,
                                         "--idle-connection-timeout", "1", nofile=NOFILE)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE)]
    try:
        await poll_until(lambda: bool(accept_reports(tmp_path / "server.log")), WAIT)
        assert await healthz(port)
    finally:
        for sock in idle:
            sock.close()
