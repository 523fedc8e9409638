"""bench/cluster.py runs end to end: ``--quick`` (about 20 s) starts its redis-server and
server processes, measures all three setups and prints a table with a number in every
cell it promises, and stops everything it started."""

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT
from tests.support import find_program

BENCH = ROOT / "bench" / "cluster.py"
RUN_TIMEOUT = 180  # seconds: --quick takes about 20 on the 2-core development VM


def test_quick_run_measures_every_setup(python, tmp_path):
    """``--quick`` exits 0 with a full table, the cost of Redis per publish and its JSON."""
    redis = find_program("REDIS_SERVER", "redis-server")
    run = subprocess.run(
        [python, str(BENCH), "--quick", "--results", str(tmp_path)], cwd=ROOT,
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
        env=dict(os.environ, REDIS_SERVER=redis))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == ("| measurement | (a) 1 process | (b) 2 processes + Redis "
                        "| (c) 1 process + Redis |")
    rows = [line.split(" | ") for line in lines[2:] if line.startswith("| ")]
    assert len(rows) == 8
    for label, *cells in rows:
        assert all(cell.strip(" |") for cell in cells), label
        assert not any("error" in cell or "timeout" in cell for cell in cells), label
    # The rows where (a) has no Redis, or no second process, say so with a dash.
    assert [row[1] for row in rows[-2:]] == ["—", "—"]
    assert next(line for line in lines if line.startswith("The cost Redis adds per publish"))
    assert "Load average" in run.stdout and "Warning" not in run.stdout
    saved = json.loads(next(tmp_path.glob("cluster-*.json")).read_text())
    assert set(saved["results"]) == {"a", "b", "c"}


@pytest.mark.parametrize("args", [["--subscribers", "5000"], ["--subscribers", "1"]])
def test_subscribers_are_bounded(python, args):
    """More than 2,000 subscribers (or fewer than 2) is refused before anything starts."""
    run = subprocess.run([python, str(BENCH), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 2 and "--subscribers takes 2 to 2000" in run.stderr
