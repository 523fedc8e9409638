"""The shipped deploy/ files agree with each other: the systemd template unit, the
single-process unit, both nginx sites and the commands of docs/scaling.md.

tests/test_nginx_cluster.py runs the template's commands behind nginx-cluster.conf; this
file checks what a run cannot show (the hardening, the instances documented, the parts the
two nginx sites share) and has ``systemd-analyze verify`` read both units where it is
installed.
"""

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.deploy import (
    DEPLOY, command, documented_instances, read_unit, the_value, unit_environment,
    upstream_ports, upstream_servers, values,
)

TEMPLATE = DEPLOY / "realtime@.service"
SINGLE = DEPLOY / "realtime.service"
CLUSTER_SITE = DEPLOY / "nginx-cluster.conf"
STATE = "/var/lib/realtime"
VENV = "/opt/realtime/venv/bin/"
# [Service] settings the template sets its own way; every other one is the single unit's.
OWN_SETTINGS = {"ExecStart", "Environment", "EnvironmentFile"}


def section_body(site: str) -> str:
    """A site file without its header comment (everything before the first directive)."""
    return site[re.search(r"^[a-z]", site, re.M).start():]


def without_upstream(site: str) -> str:
    """A site file with its ``upstream realtime`` block cut out."""
    cut, count = re.subn(r"^upstream realtime \{\n.*?^\}\n", "", site, flags=re.M | re.S)
    assert count == 1
    return cut


def option_values(argv: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line (``--xheaders`` takes no value)."""
    pairs = [arg for arg in argv[1:] if arg != "--xheaders"]
    return dict(zip(pairs[::2], pairs[1::2]))


def test_upstream_ports_are_the_documented_instances():
    """nginx-cluster.conf's upstream lists the ports that the unit and docs/scaling.md enable."""
    ports = upstream_ports(CLUSTER_SITE.read_text())
    assert ports == [8001, 8002, 8003, 8004]
    assert documented_instances(TEMPLATE.read_text()) == ports
    scaling = (ROOT / "docs" / "scaling.md").read_text()
    assert scaling.startswith("# Scaling out\n"), "docs/scaling.md is not the Scaling out page"
    assert documented_instances(scaling) == ports


def test_cluster_site_is_the_single_site_but_for_its_upstream():
    """Past the header comment, nginx-cluster.conf is nginx.conf with another upstream: the
    proxy settings are declared once, and a change to one file fails here until the other
    has it."""
    single = section_body((DEPLOY / "nginx.conf").read_text())
    cluster = section_body(CLUSTER_SITE.read_text())
    assert without_upstream(cluster) == without_upstream(single)


def test_cluster_upstream_balances_by_least_connections_before_keepalive():
    """The upstream balances by open connections, declared before keepalive as nginx needs."""
    block = re.search(r"^upstream realtime \{\n(.*?)^\}", CLUSTER_SITE.read_text(),
                      re.M | re.S).group(1)
    directives = [line.split()[0].rstrip(";") for line in block.splitlines()
                  if line.strip() and not line.strip().startswith("#")]
    assert directives.index("least_conn") < directives.index("keepalive")
    assert "ip_hash" not in directives and "hash" not in directives


def test_every_cluster_upstream_server_is_never_marked_failed():
    """Every server of the cluster upstream has max_fails=0 (a restarted process takes new
    sockets at once), the two that tests/test_nginx_cluster.py runs and the two it drops."""
    servers = upstream_servers(CLUSTER_SITE.read_text())
    assert servers == [(port, "max_fails=0") for port in (8001, 8002, 8003, 8004)]


def test_template_has_the_single_units_settings():
    """Every [Unit]/[Service]/[Install] setting of realtime.service but the command lines
    and the environment is in the template too (hardening, limits, shutdown), Redis added
    to the ordering and wants."""
    single, template = read_unit(SINGLE), read_unit(TEMPLATE)
    for key, value in single["Service"]:
        if key not in OWN_SETTINGS:
            assert values(template, "Service", key) == values(single, "Service", key), key
    assert template["Install"] == single["Install"]
    for key in ("After", "Wants"):
        wanted = " ".join(values(template, "Unit", key)).split()
        assert "redis-server.service" in wanted
        assert set(" ".join(values(single, "Unit", key)).split()) <= set(wanted)
    assert "Requires" not in dict(template["Unit"]), "a Redis restart must not stop the servers"


def test_template_command_is_one_instance_per_port_sharing_redis_and_the_secret():
    """ExecStart listens on 127.0.0.1:%i behind the proxy, takes Redis from the environment
    (file), keeps its SQLite files in a directory of its own and the cookie secret in one
    file for every instance, inside the one state directory."""
    unit = read_unit(TEMPLATE)
    assert values(unit, "Service", "EnvironmentFile") == ["-/etc/tornado-realtime/env"]
    env = unit_environment(unit, {})
    assert env["REALTIME_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert unit_environment(unit, {"REALTIME_REDIS_URL": "redis://10.0.0.5:6379/2"})[
        "REALTIME_REDIS_URL"] == "redis://10.0.0.5:6379/2"
    assert the_value(unit, "Service", "StateDirectory") == "realtime"
    argv = {port: command(the_value(unit, "Service", "ExecStart"), str(port), env, {}, {})
            for port in (8001, 8002)}
    assert argv[8001][0] == VENV + "tornado-realtime" and "--xheaders" in argv[8001]
    first, second = option_values(argv[8001]), option_values(argv[8002])
    assert (first["--address"], first["--port"], second["--port"]) == (
        "127.0.0.1", "8001", "8002")
    assert first["--redis-url"] == "redis://127.0.0.1:6379/0"
    assert first["--cookie-secret-file"] == second["--cookie-secret-file"] == (
        STATE + "/cookie_secret")
    assert (first["--data-dir"], second["--data-dir"]) == (STATE + "/8001", STATE + "/8002")


@pytest.mark.parametrize("unit_file, instance", [
    (TEMPLATE, "realtime@8001.service"), (SINGLE, "realtime.service"),
])
def test_systemd_analyze_verify_finds_nothing(tmp_path, unit_file, instance):
    """``systemd-analyze verify`` reads the unit without a warning (the venv's program
    stood in for by an empty executable, since verify checks that it exists)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tornado-realtime").write_text("#!/bin/sh\n")
    (bin_dir / "tornado-realtime").chmod(0o755)
    text = unit_file.read_text()
    assert VENV in text
    (tmp_path / unit_file.name).write_text(text.replace(VENV, f"{bin_dir}/"))
    checked = subprocess.run([analyze, "verify", str(tmp_path / instance)],
                             capture_output=True, text=True, timeout=60)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
