"""bench/memory_profile.py runs end to end: a small run opens its connections, prints the
per-connection tables and stops the load client it started."""

import re
import subprocess

from tests.conftest import ROOT

BENCH = ROOT / "bench" / "memory_profile.py"
RUN_TIMEOUT = 120  # seconds: 50 connections take a few on the 2-core development VM


def test_a_small_run_prints_the_heap_per_connection_by_component(python):
    """``--connections 50`` exits 0 with a component table whose rows add up to its total."""
    run = subprocess.run([python, str(BENCH), "--connections", "50"], cwd=ROOT,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.match(r"Python heap per idle nicknamed chat connection \(50 open", run.stdout)
    rows = re.findall(r"^\| ([^|]+) \| (-?[\d,]+) \| [\d.-]+ \| -?\d+% \|$", run.stdout, re.M)
    sizes = {name: int(size.replace(",", "")) for name, size in rows}
    assert "ours: socket handler" in sizes and "Tornado IOStream and its buffers" in sizes
    total = sizes.pop("total")
    # Rounding, and the components under a byte a connection the table leaves out.
    assert total > 0 and abs(sum(sizes.values()) - total) <= 30
    assert "tornado/" in run.stdout.split("source lines")[1]


def test_too_many_connections_are_refused(python):
    """More than 20,000 connections is refused before anything starts."""
    run = subprocess.run([python, str(BENCH), "--connections", "20001"], cwd=ROOT,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 2 and "--connections takes 1 to 20,000" in run.stderr
