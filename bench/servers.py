"""The servers ``compare.py`` measures: how each is started, pinned, watched and stopped.

* ``real``: this project's ``server.py`` as it is in the checkout at run time, with a
  temporary ``--data-dir``, pings off and every limit off. The limits are found in
  ``server.Config`` when the bench runs (see ``real_server_flags``), so an option added
  later that documents ``0`` as "off" is turned off without editing the bench.
* ``tornado``: ``peers/tornado_classic.py``, the classic ``write_message`` loop (the baseline
  every ratio is taken against).
* ``websockets``: ``peers/websockets_broadcast.py``, ``websockets``' ``broadcast()``.
* ``aiohttp``: ``peers/aiohttp_broadcast.py``, aiohttp's ``await ws.send_str()`` per member;
  left out, with a line saying so, where aiohttp is not installed (``requirements/bench.txt``
  has it, ``requirements/test.txt`` does not).

The real server also listens for the raw TCP chat (``--tcp-port``, its ``tcp_port``); the
peers have no such thing.

Every server binds 127.0.0.1 on a free port and is stopped by its pid.
"""

import dataclasses
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from procs import accepts, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Options of the real server the bench sets whatever their help says.
FIXED: dict[str, Any] = {
    "address": "127.0.0.1",
    "rate_limit": 0,  # frames per second per socket: off
    "max_connections_per_ip": 0,  # every client is 127.0.0.1: no cap
    "ping_interval": 0,  # no pings during a measurement
    "max_pending_bytes": 16 * 1024 * 1024,  # a burst to a slow client is not a slow consumer
}
# An option whose name looks like a limit and whose help says `0` switches it off.
LIMIT_NAME = re.compile(r"rate|limit|per_ip|per_room|max_conn|quota|throttle")
ZERO_IS_OFF = re.compile(
    r"`0`[^.;]{0,40}\b(off|no limit|unlimited|disables?)\b"
    r"|\b(off|no limit|unlimited|disabled?)\b[^.;]{0,20}`0`", re.IGNORECASE)


def real_server_flags() -> tuple[dict[str, Any], list[str]]:
    """The values the bench gives the real server's options, read from ``server.Config``
    now, and the names of limit-like options it could not turn off (left at their default).
    """
    sys.path.insert(0, ROOT)
    import server  # the checkout's, as it is today

    fields = dataclasses.fields(server.Config)
    values = {f.name: FIXED[f.name] for f in fields if f.name in FIXED}
    untouched = []
    for f in fields:
        help_text = str(f.metadata.get("option.help", ""))
        if f.name in FIXED or not help_text or not LIMIT_NAME.search(f.name):
            continue  # set above, not an option, or not a limit
        if ZERO_IS_OFF.search(help_text):
            values[f.name] = 0
        else:
            untouched.append(f.name)
    return values, [name for name in untouched if not moot(name, values)]


def moot(name: str, values: dict[str, Any]) -> bool:
    """Whether option ``name`` only tunes a limit that is off: ``rate_burst`` and
    ``rate_limit_strikes`` once ``rate_limit`` is 0, ``ip_rate_burst`` once
    ``ip_rate_limit`` is."""
    prefix, _, suffix = name.rpartition("_")
    if suffix not in ("burst", "strikes"):
        return False
    return values.get(prefix) == 0 or values.get(f"{prefix}_limit") == 0


@dataclass
class Server:
    """One server under test, as a subprocess pinned to ``cores``."""

    key: str  # its name on the command line: real, tornado, websockets, aiohttp
    name: str  # the column heading
    label: str  # what it is, for the table's legend
    argv: list[str]
    port: int
    chat_path: str = "/ws/chat/{room}"  # a room subscriber
    echo_path: str = "/ws/echo"
    idle_path: str = "/ws/bare"  # a connection for the idle-memory row
    idle_welcome: bool = False  # the idle connection gets a first frame to wait for
    idle_room_size: int = 1  # connections per room in the idle path's {room}
    tcp_port: Optional[int] = None  # the raw TCP chat's port, if it has one
    log_path: Optional[str] = None
    cores: Optional[set[int]] = None  # the CPUs it was last started on
    process: Optional[subprocess.Popen] = field(default=None, repr=False)  # type: ignore

    def start(self, cores: Optional[set[int]], timeout: float = 30.0,
              poll: float = 0.05) -> None:
        """Start the process and wait until its port accepts connections (checked every
        ``poll`` seconds)."""
        self.cores = cores
        env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
        log = open(self.log_path or os.devnull, "ab")  # a restart keeps what was logged
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
        log.close()
        deadline = time.monotonic() + timeout
        while not accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start: {' '.join(self.argv)}"
                                   f"{self.log_tail()}")
            time.sleep(poll)

    def log_tail(self) -> str:
        """The end of the server's log, for an error message."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as log:
            return "\n" + log.read()[-2000:].decode(errors="replace")

    def log_errors(self) -> int:
        """Lines of the server's log that report an error or start a traceback."""
        return len(self.error_lines())

    def error_lines(self) -> list[str]:
        """The lines of the server's log that report an error or start a traceback."""
        if not self.log_path or not os.path.exists(self.log_path):
            return []
        with open(self.log_path, "rb") as log:
            return [line.decode(errors="replace").rstrip() for line in log
                    if line.startswith(b"Traceback") or b"ERROR" in line[:40]
                    or line.startswith(b"[E ")]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds, to this process only."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# The per-address admission budgets: the reconnect storm row runs with their defaults, as a
# deployment does, its pages coming from enough addresses to stay within them.
ADMISSION = ("handshake_rate_limit", "handshake_rate_burst", "max_connections_per_ip")


def with_default_admission(argv: list[str]) -> list[str]:
    """The real server's ``argv`` less the flags that set the ``ADMISSION`` options: the
    per-address handshake budget and connection cap back at their defaults."""
    flags = tuple(f"--{name.replace('_', '-')}=" for name in ADMISSION)
    return [arg for arg in argv if not arg.startswith(flags)]


def real_server(tmp: str, key: str = "real", name: str = "real server",
                **options: Any) -> tuple[Server, dict[str, Any], list[str]]:
    """This project's ``server.py`` (not started) on a free port with every limit off
    (``real_server_flags``), its data in ``tmp/data-<key>``, its log in ``tmp/<key>.log``
    and ``options`` on top (``redis_url="redis://..."``); with the option values it runs
    with and its limit-like options left at their defaults."""
    values, untouched = real_server_flags()
    port = free_port()
    values = dict(values, port=port, data_dir=os.path.join(tmp, f"data-{key}"), **options)
    flags = [f"--{option.replace('_', '-')}={value}" for option, value in values.items()]
    server = Server(
        key, name, "this project's `server.py` (`/ws/chat/<room>`, `/ws/echo`)",
        [sys.executable, os.path.join(ROOT, "server.py"), *flags], port,
        log_path=os.path.join(tmp, f"{key}.log"))
    return server, values, untouched


# The peers: (key, column heading, legend, script, the module it needs).
PEERS = [
    ("tornado", "Tornado classic", "Tornado, `for c in room: c.write_message(text)`",
     "tornado_classic.py", "tornado"),
    ("websockets", "websockets", "`websockets` asyncio server, `broadcast()`",
     "websockets_broadcast.py", "websockets"),
    ("aiohttp", "aiohttp", "aiohttp, `for ws in room: await ws.send_str(text)`",
     "aiohttp_broadcast.py", "aiohttp"),
]


def build(tmp: str, room_size: int
          ) -> tuple[list[Server], dict[str, Any], list[str], dict[str, str]]:
    """The servers (not started), the real server's option values, its limit-like options
    left at their defaults, and the peers left out (key: why) because the module they need
    is not installed."""
    real, values, untouched = real_server(tmp, tcp_port=free_port())
    real.tcp_port = values["tcp_port"]
    real.idle_path, real.idle_welcome = "/ws/chat/idle{room}?nick=u{i}", True
    real.idle_room_size = room_size
    peers, missing = [], {}
    for key, name, label, script, module in PEERS:
        if importlib.util.find_spec(module) is None:
            missing[key] = f"{module} is not installed (pip install -r requirements/bench.txt)"
            continue
        port = free_port()
        argv = [sys.executable, os.path.join(HERE, "peers", script), f"--port={port}",
                "--backlog=4096"]
        peers.append(Server(key, name, label, argv, port,
                            log_path=os.path.join(tmp, script + ".log")))
    return [real, *peers], values, untouched, missing
