"""``python server.py`` as a user runs it: every mistake in the options is one clear line on
stderr and exit status 2, never a traceback; two processes never share a data directory;
``--help`` lists this server's options first, by group."""

import os
import re
import signal
import socket
import subprocess
import sys

from tornado.httpclient import AsyncHTTPClient

import server
from realtime.ops.options import flag_name, option_fields
from tests.conftest import ROOT
from tests.process import start_server_process
from tests.support import free_port, poll_until, wait_listening

RUN_TIMEOUT = 30  # seconds a refused start may take at most (it takes well under one)


def run_server(tmp_path, *args, env=None):
    """``python server.py args`` to its end; the finished process, its output captured."""
    return subprocess.run(
        [sys.executable, "server.py", "--data-dir", str(tmp_path / "data"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL,
    )


def refusal(finished) -> str:
    """The one line a refused start printed, checked to be just that: status 2, one line
    on stderr, nothing on stdout, no traceback."""
    assert finished.returncode == 2, finished
    assert finished.stdout == ""
    lines = finished.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("server.py: error: "), finished.stderr
    return lines[0]


def test_mistyped_option_suggests_the_nearest(tmp_path):
    """--prot 9000 is refused with "did you mean --port?"."""
    line = refusal(run_server(tmp_path, "--prot", "9000"))
    assert "unknown option --prot; did you mean --port?" in line


def test_non_numeric_port_is_refused(tmp_path):
    """--port abc names the flag and says a whole number was expected."""
    line = refusal(run_server(tmp_path, "--port", "abc"))
    assert "--port: a whole number expected, not 'abc'" in line


def test_port_out_of_range_is_refused(tmp_path):
    """--port 70000 is not a port."""
    line = refusal(run_server(tmp_path, "--port", "70000"))
    assert "--port: a number from 0 to 65535 expected" in line


def test_bad_environment_value_names_the_variable(tmp_path):
    """REALTIME_RATE_LIMIT=fast is refused naming the variable, not a flag nobody typed."""
    line = refusal(run_server(tmp_path, env={"REALTIME_RATE_LIMIT": "fast"}))
    assert "REALTIME_RATE_LIMIT: a number expected, not 'fast'" in line


def test_bad_log_level_from_the_environment_is_refused(tmp_path):
    """REALTIME_LOGGING, Tornado's --logging as a variable, is read and checked too."""
    line = refusal(run_server(tmp_path, env={"REALTIME_LOGGING": "loud"}))
    assert "REALTIME_LOGGING: one of debug, info, warning, error" in line


def test_option_without_its_value_is_refused(tmp_path):
    """A trailing --port with nothing after it asks for its value."""
    assert "--port needs a value" in refusal(run_server(tmp_path, "--port"))


def test_port_in_use_is_one_line(tmp_path):
    """A port another program listens on is refused with the address, before anything is
    opened: no database file is created."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refusal(run_server(tmp_path, "--port", str(port)))
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in line
    assert not (tmp_path / "data" / "polls.sqlite3").exists()


def test_redis_url_without_the_redis_package_says_how_to_install_it(tmp_path):
    """Without the redis package (blocked for this process by a sitecustomize that sets
    sys.modules["redis"] = None, as Python does for a module that cannot be imported),
    --redis-url is refused with the pip line of the extra."""
    blocker = tmp_path / "noredis"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['redis'] = None\n")
    path = os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])
    line = refusal(run_server(tmp_path, "--port", str(free_port()), "--redis-url",
                              "redis://127.0.0.1:6379/0", env={"PYTHONPATH": path}))
    assert "--redis-url needs the redis package" in line
    assert "pip install '.[redis]'" in line


async def test_second_process_on_one_data_directory_is_refused(spawn, python, tmp_path):
    """A second server on the data directory of a running one refuses to start, naming the
    directory and the first one's pid; the first goes on serving."""
    first, port = await start_server_process(spawn, python, tmp_path)
    line = refusal(run_server(tmp_path, "--port", str(free_port())))
    assert f"the data directory {tmp_path / 'data'} is in use" in line
    assert f"(pid {first.pid})" in line
    health = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz")
    assert health.code == 200


async def test_data_directory_of_a_killed_server_is_free_at_once(spawn, python, tmp_path):
    """The lock dies with its process: after SIGKILL, the next server starts on the same
    directory."""
    first, _ = await start_server_process(spawn, python, tmp_path)
    first.send_signal(signal.SIGKILL)
    await poll_until(lambda: first.poll() is not None)
    port = free_port()
    second = spawn("second", [python, "server.py", "--port", str(port), "--data-dir",
                              str(tmp_path / "data")])
    await wait_listening("127.0.0.1", port, second)


def test_help_lists_the_servers_options_by_group_before_tornados():
    """--help exits 0 and starts with the usage, then the groups in order, every option of
    server.Config under one of them, Tornado's log options last."""
    finished = subprocess.run([sys.executable, "server.py", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert finished.returncode == 0 and finished.stderr == ""
    text = finished.stdout
    assert text.startswith("usage: tornado-realtime")
    headings = re.findall(r"^(\S[^:\n]*):$", text, re.M)
    assert headings == list(server.HELP_GROUPS)
    for f in option_fields(server.Config):
        assert re.search(rf"^  --{flag_name(f.name)}\b", text, re.M), f.name
    assert text.index("--port") < text.index("--log-file-prefix")
    assert "--log-file-prefix" not in text.split("logging:", 1)[0]
