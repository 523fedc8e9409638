"""One process per data directory: an exclusive ``flock`` on ``<data-dir>/server.lock``.

Two processes writing one SQLite file each believe they own the chat history and the poll
database, and each batches writes the other never sees; nothing would warn. The lock makes
the second process refuse to start, saying which process holds the directory. The kernel
drops the lock when its holder exits, however it exits (SIGKILL, a crash), so a stale lock
file never blocks a restart; the file itself stays, holding the last holder's pid.
"""

import fcntl
import os
from types import TracebackType
from typing import Optional

LOCK_FILENAME = "server.lock"


class DataDirInUse(Exception):
    """Another process holds the data directory."""


class DataDirLock:
    """The lock of one data directory, held from ``acquire()`` until ``release()``.

    Usable as a context manager: ``with DataDirLock(path): ...``.
    """

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, LOCK_FILENAME)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock, creating the directory if needed, and write our pid into the file.

        Raises:
            DataDirInUse: another process holds it; the message names the directory and
                that process's pid.
        """
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"the data directory {os.path.dirname(self.path)} is in use by another "
                f"server process (pid {holder}); give each process its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Let the directory go (closing the file drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        self.acquire()
        return self

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        self.release()
