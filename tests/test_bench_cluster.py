"""bench/cluster.py runs end to end: ``--quick`` (about 40 s) starts its redis-server and
server processes, measures all three setups and the appends per second with pipelining
off and on (without sockets and through them), prints every table with a number in every
cell they promise, and stops everything it started."""

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT
from tests.support import find_program

BENCH = ROOT / "bench" / "cluster.py"
RUN_TIMEOUT = 240  # seconds: --quick takes about 40 on the 2-core development VM


def test_quick_run_measures_every_setup(python, tmp_path):
    """``--quick`` exits 0 with both full tables, the cost of Redis per publish, the gain of
    pipelining and its JSON."""
    redis = find_program("REDIS_SERVER", "redis-server")
    run = subprocess.run(
        [python, str(BENCH), "--quick", "--results", str(tmp_path)], cwd=ROOT,
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
        env=dict(os.environ, REDIS_SERVER=redis))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == ("| measurement | (a) 1 process | (b) 2 processes + Redis "
                        "| (c) 1 process + Redis |")
    rows = table_rows(lines, 0)
    assert len(rows) == 8
    # The rows where (a) has no Redis, or no second process, say so with a dash.
    assert [row[1] for row in rows[-2:]] == ["—", "—"]
    assert next(line for line in lines if line.startswith("The cost Redis adds per publish"))
    # The appends per second, pipelining off and on, without sockets and through them,
    # each in a table of its own.
    modes = "| pipelining off (`--redis-batch 1`) | pipelining on (`--redis-batch 500`) |"
    for header, gain in (("Redis appends, no sockets", "Pipelining, no sockets: "),
                         ("Redis appends, through WebSockets",
                          "Pipelining, through WebSockets: ")):
        assert len(table_rows(lines, lines.index(f"| {header} {modes}"))) == 3
        assert next(line for line in lines if line.startswith(gain))
    assert "Load average" in run.stdout and "Warning" not in run.stdout
    saved = json.loads(next(tmp_path.glob("cluster-*.json")).read_text())
    assert set(saved["results"]) == {"a", "b", "c"}
    assert set(saved["appends"]) == set(saved["direct"]) == {"off", "on"}


def table_rows(lines: list[str], header: int) -> list[list[str]]:
    """The cells of the Markdown table whose header is ``lines[header]``, every cell checked
    to hold a value, not an error."""
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("| "):
            break
        label, *cells = line.split(" | ")
        assert all(cell.strip(" |") for cell in cells), label
        assert not any("error" in cell or "timeout" in cell for cell in cells), label
        rows.append([label, *cells])
    return rows


@pytest.mark.parametrize("args", [["--subscribers", "5000"], ["--subscribers", "1"]])
def test_subscribers_are_bounded(python, args):
    """More than 2,000 subscribers (or fewer than 2) is refused before anything starts."""
    run = subprocess.run([python, str(BENCH), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 2 and "--subscribers takes 2 to 2000" in run.stderr
