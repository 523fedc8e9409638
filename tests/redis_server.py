"""A real ``redis-server`` for the tests, on a free loopback port with its own directory.

``RedisServer(tmp_path / "redis").start()`` writes a config file there (loopback only, the
port, the data directory, no snapshots, no AOF unless ``config`` says otherwise, e.g.
``shipped_settings(deploy/redis.conf)``), starts the server, and waits until it answers
PING. ``kill()`` SIGKILLs it mid-run, ``start()`` again brings it back on the same port
with the same directory, ``stop()`` ends it. Every process is started and stopped by pid.
``redis-server`` comes from ``$REDIS_SERVER`` or the PATH; missing, the test fails under CI
and is skipped elsewhere (``find_program``).
"""

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from tests.support import find_program, free_port, stop_process

# What the broker tests need: nothing kept on disk.
EPHEMERAL = {"save": '""', "appendonly": "no"}
START_TIMEOUT = 10.0
# Settings the fixture owns whatever a shipped config says: where it listens and writes.
OWN_SETTINGS = {"bind", "port", "dir", "daemonize", "logfile", "pidfile", "unixsocket"}


def shipped_settings(path: Path) -> dict[str, str]:
    """The settings of a redis.conf (``deploy/redis.conf``) for ``RedisServer(config=...)``:
    every ``name value`` line but comments and the ones the fixture owns (``OWN_SETTINGS``)."""
    settings = {}
    for line in path.read_text().splitlines():
        name, _, value = line.strip().partition(" ")
        if name and not name.startswith("#") and name not in OWN_SETTINGS:
            settings[name] = value.strip()
    return settings


def answers_ping(port: int) -> bool:
    """Whether a Redis on loopback ``port`` answers PING right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


async def answers_ping_async(port: int) -> bool:
    """``answers_ping`` without blocking the loop."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), 0.5)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        return (await asyncio.wait_for(reader.read(64), 0.5)).startswith(b"+PONG")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


class RedisServer:
    """One ``redis-server`` process the test controls; see the module docstring."""

    def __init__(self, directory: Path, config: Optional[dict[str, str]] = None,
                 port: Optional[int] = None) -> None:
        self.program = find_program("REDIS_SERVER", "redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        settings = {
            "bind": "127.0.0.1", "port": str(self.port), "dir": str(directory),
            "daemonize": "no", "protected-mode": "yes",
            "logfile": str(directory / "redis.log"), **EPHEMERAL, **(config or {}),
        }
        self.config_file = directory / "redis.conf"
        self.config_file.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
        self.process: Optional[subprocess.Popen] = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        """The URL a client connects with."""
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self) -> None:
        """Start the server process without waiting for it."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [self.program, str(self.config_file)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "redis.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise AssertionError(f"redis-server exited with {self.process.returncode}:\n{tail}")

    def start(self) -> "RedisServer":
        """Start the server and wait (blocking) until it answers PING."""
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self.port):
            self._check_alive()
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.02)
        return self

    async def restart(self) -> None:
        """Start the server again on the same port and wait, without blocking the loop,
        until it answers PING."""
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while not await answers_ping_async(self.port):
            self._check_alive()
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would end it, and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP the server: its connections stay open and nothing answers (half-open)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End the server if it runs: SIGTERM, then SIGKILL after 5 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server could not act on SIGTERM
        stop_process(process)
