"""``server.py`` as a real process, for tests of what only a whole process shows: its
timeouts on raw TCP connections, its descriptor limit, its accept loop."""

from pathlib import Path
from typing import Any, Callable, Optional

from tests.support import find_program, free_port, wait_listening


async def start_server_process(
    spawn: Callable[..., Any], python: str, tmp_path: Path, *options: str,
    nofile: Optional[tuple[int, int]] = None, name: str = "server",
) -> tuple[Any, int]:
    """Spawn ``server.py`` on a free port with its data in ``tmp_path`` and ``options``;
    with ``nofile=(soft, hard)`` under that open-files limit (util-linux ``prlimit``).
    Return the process (its output in ``tmp_path/<name>.log``) and the port, once it listens.
    """
    port = free_port()
    argv = [python, "server.py", "--port", str(port), "--data-dir", str(tmp_path / "data"),
            *options]
    if nofile is not None:
        argv = [find_program("PRLIMIT", "prlimit"), f"--nofile={nofile[0]}:{nofile[1]}", *argv]
    process = spawn(name, argv)
    await wait_listening("127.0.0.1", port, process)
    return process, port
