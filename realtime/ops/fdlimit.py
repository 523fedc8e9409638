"""The process's own open-files limit, raised as far as it may go without privileges.

Every connection is a file descriptor. Shells and many service managers still start
processes with a soft ``RLIMIT_NOFILE`` of 1024 (or less) under a hard limit far above it,
and the soft limit is what makes ``accept()`` fail with ``EMFILE``. Any process may raise
its soft limit up to its hard limit, so the server does it at start rather than relying on
whoever launched it. The hard limit is the operator's ceiling (``LimitNOFILE=`` in the
systemd unit, ``ulimit -Hn``); it is never touched.
"""

import resource

# Linux refuses a soft limit of RLIM_INFINITY for open files; fs.nr_open is the real cap.
NR_OPEN_PATH = "/proc/sys/fs/nr_open"


def _ceiling(hard: int) -> int:
    """The highest soft limit we may ask for under ``hard``."""
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        with open(NR_OPEN_PATH, encoding="ascii") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1 << 20  # Linux's default fs.nr_open


def raise_open_files_limit() -> tuple[int, int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return (soft before, soft now,
    hard). If the system refuses, the soft limit stays where it was."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _ceiling(hard)
    if before != resource.RLIM_INFINITY and before < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass  # e.g. macOS caps it below the hard limit; the caller logs what we have
    now, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return before, now, hard
