"""bench/faults.py runs end to end: ``--quick`` (about 15 s) starts its redis-server and
three server processes, plays every fault scenario, prints the table with a count in every
row, judges it, and stops everything it started."""

import os
import subprocess

import pytest

from tests.conftest import ROOT
from tests.support import find_program

BENCH = ROOT / "bench" / "faults.py"
RUN_TIMEOUT = 90  # seconds: --quick takes about 15 on the 2-core development VM
SCENARIOS = ["wave", "freeze", "reconnect", "graceful stop", "logs"]


def test_quick_run_counts_every_fault(python):
    """``--quick`` prints one table with every scenario, each count a number, every count
    that must be 0 is 0, and it exits 0."""
    redis = find_program("REDIS_SERVER", "redis-server")
    run = subprocess.run(
        [python, str(BENCH), "--quick"], cwd=ROOT, capture_output=True, text=True,
        timeout=RUN_TIMEOUT, env=dict(os.environ, REDIS_SERVER=redis))
    lines = run.stdout.splitlines()
    assert "| scenario | counted | count | must be |" in lines, run.stdout + run.stderr
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ")][2:]
    assert sorted({row[0] for row in rows}) == sorted(SCENARIOS), run.stdout
    for scenario, counted, count, must in rows:
        assert count.removesuffix(" ✗").isdigit(), f"{scenario}: {counted}: {count}"
        assert must in ("0", "—"), counted
    failing = [counted for _, counted, count, _ in rows if count.endswith("✗")]
    assert not failing, run.stdout
    assert run.returncode == 0, run.stdout + run.stderr
    assert "recovered: false` says" in run.stdout


@pytest.mark.parametrize("args", [["--runs", "0"], ["--runs", "6"]])
def test_runs_are_bounded(python, args):
    """Fewer than 1 run or more than 5 is refused before anything starts."""
    run = subprocess.run([python, str(BENCH), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 2 and "--runs takes 1 to 5" in run.stderr
