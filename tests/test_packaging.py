"""``pip install .`` (not editable) into a fresh virtual environment gives a working server."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support import free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent
# What a source distribution of the project holds; the rest (.git, venvs, data) stays out.
SOURCES = ["server.py", "setup.cfg", "pyproject.toml", "README.md", "handlers", "realtime",
           "templates", "static", "requirements"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the project installed from a copy of its sources;
    the path of its ``bin`` directory."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", "-c", str(source / "requirements" / "server.txt"),
         str(source)],
        check=True, timeout=300,
    )
    shutil.rmtree(source)  # the installed server must not lean on the sources
    return venv / "bin"


async def test_console_command_serves_every_page(
    installed: Path, spawn: Callable[..., Any], tmp_path: Path
) -> None:
    """``tornado-realtime`` from the wheel serves each page with its template and static
    files, and keeps its data in the directory it is given."""
    port = free_port()
    command = str(installed / "tornado-realtime")
    process = spawn("installed", [command, "--port", str(port),
                                  "--data-dir", str(tmp_path / "data")])
    await wait_listening("127.0.0.1", port, process)
    client = AsyncHTTPClient()
    for path, text in [("/", "Chat"), ("/echo", "echo.js"), ("/chat", "chat.js"),
                       ("/vote", "vote"), ("/static/js/socket.js", "WebSocket"),
                       ("/static/css/site.css", "{"), ("/static/favicon.svg", "<svg")]:
        response = await client.fetch(f"http://127.0.0.1:{port}{path}")
        assert text in response.body.decode(), path
    assert (tmp_path / "data" / "cookie_secret").exists()
