"""What the tests of the shipped ``deploy/`` files share: nginx run with a site file in the
test's directory, and systemd units read and their commands made runnable here.

A unit is read as systemd reads it for what the tests need (sections of ``Key=value``
lines, keys that may repeat, ``#`` comments); a command line is split like systemd splits
it (whitespace, double quotes), then ``%i`` becomes the instance and ``${NAME}`` a value of
the unit's environment, and each rewrite the test asks for must match: a unit that changed
shape fails the test instead of being run half rewritten.
"""

import os
import pwd
import re
import shlex
from pathlib import Path
from typing import Iterable, Mapping

from tests.conftest import ROOT
from tests.support import find_program

DEPLOY = ROOT / "deploy"

Unit = dict[str, list[tuple[str, str]]]  # section -> [(key, value), ...] in file order


def nginx_path() -> str:
    """nginx from $NGINX or the PATH (Debian puts it in /usr/sbin). Missing fails under CI."""
    return find_program("NGINX", "nginx", "/usr/sbin/nginx")


def nginx_main_config(prefix: Path, site: Path) -> str:
    """The nginx.conf a host would have, but everything in the test's directory."""
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
daemon off;
master_process off;
{user}
pid {prefix / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""


def rewrite(text: str, rewrites: Iterable[tuple[str, str]], name: str) -> str:
    """``text`` with each regex replaced; each must match exactly once."""
    for pattern, value in rewrites:
        text, count = re.subn(pattern, value, text)
        assert count == 1, f"{name} no longer has exactly one {pattern!r}"
    return text


def read_unit(path: Path) -> Unit:
    """A systemd unit file's settings by section."""
    unit: Unit = {}
    section = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, [])
            continue
        key, equals, value = line.partition("=")
        assert section is not None and equals, f"{path.name}:{number}: not a setting: {line}"
        assert not value.endswith("\\"), f"{path.name}:{number}: continued lines not handled"
        unit[section].append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section``, in file order."""
    return [value for name, value in unit.get(section, []) if name == key]


def the_value(unit: Unit, section: str, key: str) -> str:
    """The one value of ``key`` in ``section``."""
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= is set {len(found)} times"
    return found[0]


def unit_environment(unit: Unit, env_file: Mapping[str, str]) -> dict[str, str]:
    """The environment systemd gives the service: its ``Environment=`` assignments, then
    ``env_file`` (what the ``EnvironmentFile=`` would hold) over them."""
    env: dict[str, str] = {}
    for assignments in values(unit, "Service", "Environment"):
        for assignment in shlex.split(assignments):
            name, _, value = assignment.partition("=")
            env[name] = value
    env.update(env_file)
    return env


def command(line: str, instance: str, env: Mapping[str, str],
            programs: Mapping[str, list[str]], paths: Mapping[str, str]) -> list[str]:
    """An ``Exec*=`` line as the argv to run here: ``%i`` is ``instance``, ``${NAME}`` comes
    from ``env`` (an unset one is an error), an argument equal to a key of ``programs`` is
    replaced by that argv (``/opt/realtime/venv/bin/tornado-realtime`` -> ``python
    server.py``), and each prefix in ``paths`` that starts an argument is replaced (the state
    directory -> the test's)."""
    assert not line.startswith(("-", "+", "!", "@", ":")), f"prefix not handled: {line}"
    argv = []
    for word in shlex.split(line):
        word = word.replace("%i", instance)
        assert "%" not in word, f"specifier not handled: {word}"
        word = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)
        for prefix, replacement in paths.items():
            if word.startswith(prefix):
                word = replacement + word[len(prefix):]
        argv.extend(programs.get(word, [word]))
    return argv


def documented_instances(text: str) -> list[int]:
    """The ports of the ``systemctl enable --now realtime@8001 ...`` line in ``text``."""
    lines = [line for line in text.splitlines() if "systemctl enable --now realtime@" in line]
    assert len(lines) == 1, "expected one `systemctl enable --now realtime@...` line"
    return [int(port) for port in re.findall(r"realtime@(\d+)", lines[0])]


def upstream_ports(site: str) -> list[int]:
    """The ports of the ``server 127.0.0.1:<port> [parameters];`` lines of the ``upstream
    realtime`` block."""
    return [int(port) for port, _ in upstream_servers(site)]


def upstream_servers(site: str) -> list[tuple[int, str]]:
    """(port, parameters) of each ``server 127.0.0.1:<port> [parameters];`` line of the
    ``upstream realtime`` block."""
    block = re.search(r"^upstream realtime \{\n(.*?)^\}", site, re.M | re.S)
    assert block, "no `upstream realtime` block"
    return [(int(port), parameters.strip()) for port, parameters in re.findall(
        r"^\s*server 127\.0\.0\.1:(\d+)((?: [^;\n]*)?);", block.group(1), re.M)]
