"""What every benchmark here needs of the processes it starts: a free loopback port, a wait
until the port accepts, and the process's CPU time and resident memory (Linux /proc)."""

import asyncio
import os
import socket
import time
from typing import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


async def wait_accepting(port: int, exited: Callable[[], bool], timeout: float) -> None:
    """Return once ``port`` accepts connections.

    Raises:
        RuntimeError: the process ``exited()`` first, or ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while not accepts(port):
        if exited() or time.monotonic() > deadline:
            raise RuntimeError(f"nothing started listening on port {port}")
        await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    """Resident bytes of ``pid``."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
