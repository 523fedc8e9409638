"""scripts/cluster, run for real: several server processes on one real Redis in the
foreground, stopped together by Ctrl-C (SIGINT) or by one of them failing."""

import signal
import socket

from tests.deploy import DEPLOY, upstream_ports
from tests.support import (
    accepts, free_port, poll_until, receive_type, send_json, wait_listening,
)

SCRIPT = "scripts/cluster"


def start_cluster(spawn, python, tmp_path, redis_url, ports):
    """``scripts/cluster`` on ``ports`` with the state in the test's directory."""
    return spawn("cluster", [
        python, SCRIPT, "--ports", ",".join(map(str, ports)),
        "--state-dir", str(tmp_path / "state"), "--", "--redis-url", redis_url,
        "--ping-interval", "0",
    ])


def cluster_log(tmp_path) -> str:
    return (tmp_path / "cluster.log").read_text()


async def test_processes_share_chat_and_stop_together_on_ctrl_c(
        spawn, python, tmp_path, redis_server, ws_open):
    """Two processes started by the script share a chat room through Redis; SIGINT to the
    script stops both, and it exits 0."""
    ports = [free_port(), free_port()]
    cluster = start_cluster(spawn, python, tmp_path, redis_server.url, ports)
    for port in ports:
        await wait_listening("127.0.0.1", port, cluster)
    alice = await ws_open(f"ws://127.0.0.1:{ports[0]}/ws/chat/lobby?nick=alice")
    await receive_type(alice, "welcome")
    bob = await ws_open(f"ws://127.0.0.1:{ports[1]}/ws/chat/lobby?nick=bob")
    await receive_type(bob, "welcome")
    await send_json(alice, {"type": "message", "text": "across processes"})
    assert (await receive_type(bob, "message"))["text"] == "across processes"

    cluster.send_signal(signal.SIGINT)
    await poll_until(lambda: cluster.poll() is not None)
    assert cluster.returncode == 0
    assert not any(accepts("127.0.0.1", port) for port in ports)
    log = cluster_log(tmp_path)
    assert f"[{ports[0]}] " in log and f"[{ports[1]}] " in log
    assert "cluster: stopped" in log


async def test_one_process_failing_stops_the_others(spawn, python, tmp_path, redis_server):
    """When one process cannot start (its port is taken), the script stops the others, says
    which port failed and exits non-zero."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        ports = [free_port(), taken.getsockname()[1]]
        cluster = start_cluster(spawn, python, tmp_path, redis_server.url, ports)
        await poll_until(lambda: cluster.poll() is not None)
    finally:
        taken.close()
    assert cluster.returncode == 1
    assert not accepts("127.0.0.1", ports[0])
    assert f"the process on port {ports[1]} exited with status" in cluster_log(tmp_path)


def test_default_ports_are_the_cluster_sites_upstream():
    """Without --ports the script runs the processes nginx-cluster.conf sends to."""
    script = (DEPLOY.parent / SCRIPT).read_text()
    default = script.split('DEFAULT_PORTS = "', 1)[1].split('"', 1)[0]
    assert [int(port) for port in default.split(",")] == upstream_ports(
        (DEPLOY / "nginx-cluster.conf").read_text())
