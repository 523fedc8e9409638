"""The README's "Adding an endpoint", run as written: its session module is loaded under the
name it gives, its route line is added to an application ``make_app`` built, and its
tests run against that application with this suite's fixtures."""

import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
import tornado.web

from server import Config, make_app

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def section_blocks() -> list[str]:
    """The python blocks of the README's "Adding an endpoint" section, dedented."""
    readme = README.read_text(encoding="utf-8")
    section = readme.split("\n## Adding an endpoint\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for indent, body in BLOCK.findall(section):
        blocks.append("".join(line[len(indent):] for line in body.splitlines(keepends=True)))
    return blocks


MODULE, ROUTES, TESTS = section_blocks()
# The module's path, from the step that introduces it: "`realtime/apps/reactions.py`, ...".
MODULE_NAME = re.search(r"`([\w/]+)\.py`, the session", README.read_text(encoding="utf-8"))


def load_tests() -> types.ModuleType:
    """The README's test module (its fixtures come from this suite)."""
    module = types.ModuleType("readme_tests")
    exec(compile(TESTS, "README.md (tests)", "exec"), module.__dict__)
    return module


README_TESTS = sorted(name for name in vars(load_tests()) if name.startswith("test_"))


@pytest.fixture
def session_module() -> Iterator[types.ModuleType]:
    """The README's session module, importable under the name it is given there."""
    assert MODULE_NAME is not None, "the README names the session's module"
    name = MODULE_NAME.group(1).replace("/", ".")
    module = types.ModuleType(name)
    exec(compile(MODULE, f"README.md ({name})", "exec"), module.__dict__)
    sys.modules[name] = module
    yield module
    del sys.modules[name]


@pytest.fixture
def app(config: Config, io_loop: Any, session_module: types.ModuleType
        ) -> Iterator[tornado.web.Application]:
    """The application ``make_app`` builds, with the README's route line added."""
    app = make_app(config)
    scope: dict[str, Any] = {"apps": app.settings["apps"]}
    exec(compile(ROUTES, "README.md (routes)", "exec"), scope)
    app.add_handlers(r".*", scope["routes"])
    yield app
    io_loop.run_sync(app.settings["polls"].aclose, timeout=10)


def test_the_section_has_a_module_a_route_line_and_tests():
    """The section shows the session, the route line with its imports, and tests."""
    assert "class " in MODULE and "(AppSession)" in MODULE
    assert "import" in ROUTES and "*app_routes(" in ROUTES
    assert README_TESTS


@pytest.mark.parametrize("name", README_TESTS)
async def test_readme_test_passes(name, ws_connect, http_server_client):
    """Each test the README shows passes against the README's endpoint."""
    test = getattr(load_tests(), name)
    fixtures = {"ws_connect": ws_connect, "http_server_client": http_server_client}
    await test(**{arg: fixtures[arg] for arg in inspect.signature(test).parameters})
