"""bench/broker_receive.py runs end to end: it starts its redis-server and a publisher
process, measures our listener and redis-py's PubSub, and prints both rows."""

import subprocess

from tests.conftest import ROOT

BENCH = ROOT / "bench" / "broker_receive.py"


def test_small_run_prints_both_receivers(python):
    """``--messages 500`` exits 0 with a row, and a number, for each receiver."""
    run = subprocess.run([python, str(BENCH), "--messages", "500"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in run.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["RedisBroker", "redis-py"]
    assert all(float(row[-4]) > 0 and float(row[-2]) > 0 for row in rows)
