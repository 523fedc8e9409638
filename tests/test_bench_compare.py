"""bench/compare.py: the raw TCP fan-out row and the reconnect storm row run end to end
against the real server, and a peer whose package is missing is left out of the run with
the reason."""

import json
import subprocess
import sys

from tests.conftest import ROOT

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
