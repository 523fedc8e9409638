"""The process raises its own soft open-files limit to the hard limit at start."""

import re
import resource

import pytest

from tests.process import start_server_process

SOFT = 256


def open_files_limits(pid: int) -> tuple[int, int]:
    """A process's (soft, hard) open-files limits, from /proc."""
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise RuntimeError("no open-files line in /proc limits")


async def test_server_raises_its_soft_limit_to_the_hard_limit(spawn, python, tmp_path):
    """Started with a soft limit of 256 under a higher hard limit, the server runs with the
    soft limit at the hard limit and logs both figures."""
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    if hard <= SOFT:
        pytest.skip(f"this process's hard open-files limit is only {hard}")
    process, _ = await start_server_process(spawn, python, tmp_path, nofile=(SOFT, hard))
    assert open_files_limits(process.pid) == (hard, hard)
    log = (tmp_path / "server.log").read_text()
    assert re.search(rf"event=open_files_limit before={SOFT} soft={hard} hard={hard}\b", log)
