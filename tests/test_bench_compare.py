"""bench/compare.py: the raw TCP fan-out row and the reconnect storm row run end to end
against the real server, a peer whose package is missing is left out of the run with the
reason, and the held step holds what the descriptor limit allows."""

import json
import subprocess
import sys

from tests.conftest import ROOT
from tests.support import find_program

BENCH = ROOT / "bench" / "compare.py"
RUN_TIMEOUT = 180  # seconds: the quick TCP step takes about 15 on the 2-core development VM


def test_quick_tcp_fanout_measures_the_real_server_and_says_na_for_a_peer(python, tmp_path):
    """``--quick --only tcp`` exits 0 with deliveries/s and CPU per delivery for the real
    server's raw TCP chat, and "n/a" with the reason for the classic Tornado peer."""
    run = subprocess.run(
        [python, str(BENCH), "--quick", "--only", "tcp", "--servers", "real,tornado",
         "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "| measurement | real server | Tornado classic |"
    rows = [line.split(" | ") for line in lines[2:4]]
    assert rows[0][0] == "| raw TCP fan-out deliveries/s, 1,000 subscribers, burst of 50"
    assert rows[1][0] == "| server CPU µs per raw TCP delivery, 1,000 subscribers"
    for row in rows:
        assert float(row[1].replace(",", "")) > 0
        assert row[2] == "n/a: no raw TCP chat |"
    saved = json.loads(next(tmp_path.glob("compare-*.json")).read_text())
    burst = saved["results"]["real server"]["tcp fanout 1000"]["burst"]
    assert burst["complete"] == burst["total"] == 1000


def test_quick_storm_welcomes_every_page_again_after_a_restart(python, tmp_path):
    """``--quick --only storm --storm 100`` exits 0: every page of the real server and of the
    classic Tornado peer is welcomed again after the restart, from several source addresses,
    the real server's pages coming back with ``?since=`` their newest message id."""
    run = subprocess.run(
        [python, str(BENCH), "--quick", "--only", "storm", "--servers", "real,tornado",
         "--storm", "100", "--results", str(tmp_path)], cwd=ROOT, capture_output=True,
        text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[2].startswith("| reconnect storm: s from the restarted server listening to "
                               "the last welcome, 100 pages from 2 addresses, rooms of 50 | ")
    saved = json.loads(next(tmp_path.glob("compare-*.json")).read_text())
    for name, since in (("real server", 100), ("Tornado classic", 0)):
        storm = saved["results"][name]["storm"]
        assert storm["opened"] == storm["welcomed"] == 100, storm
        assert storm["with_since"] == since, storm
        assert storm["storm_s"] > 0 and storm["server_cpu_us"] > 0


def test_a_peer_whose_package_is_missing_is_left_out_with_the_reason(monkeypatch, tmp_path):
    """``build`` starts no server for a peer whose package cannot be imported and says why."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.delitem(sys.modules, "servers", raising=False)
    import servers

    ghost = ("ghost", "Ghost", "a peer", "ghost.py", "no_such_package_for_the_bench")
    monkeypatch.setattr(servers, "PEERS", [*servers.PEERS, ghost])
    built, _, _, missing = servers.build(str(tmp_path), 25)
    assert "ghost" not in {server.key for server in built}
    assert missing["ghost"] == ("no_such_package_for_the_bench is not installed "
                                "(pip install -r requirements/bench.txt)")


def test_held_step_holds_what_the_descriptor_limit_allows_and_says_so(python, tmp_path):
    """Under a hard descriptor limit of 1,200, ``--only held --held 2000`` holds 1,000
    connections (the limit less 200), says so in the table, and /healthz answers them."""
    prlimit = find_program("PRLIMIT", "prlimit")
    run = subprocess.run(
        [prlimit, "--nofile=1200:1200", python, str(BENCH), "--quick", "--only", "held",
         "--held", "2000", "--servers", "real,tornado", "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    cells = [line.strip("| ").split(" | ") for line in run.stdout.splitlines()
             if line.startswith("| ")]
    rows = {row[0]: row[1:] for row in cells}
    held = rows["idle connections held at once, target 2,000 (chat: nicknamed, rooms of 25)"]
    assert held == ["held 1,000 of 2,000 (the descriptor hard limit here is 1,200)"] * 2
    health = rows["GET /healthz p99 ms while held (50, one at a time, a new connection each)"]
    assert float(health[0]) > 0
    assert health[1] == "n/a: no /healthz (the echo probe answers for it)"
    saved = json.loads(next(tmp_path.glob("compare-*.json")).read_text())
    real = saved["results"]["real server"]["held"]
    assert real["opened"] == 1000 and real["health"]["answered"] == 50
