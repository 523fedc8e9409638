"""docs/extending.md, "Adding an endpoint", run as written: its session module is loaded under the
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
from tests.docs import unrouted

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def section_blocks() -> list[str]:
    """The python blocks of docs/extending.md ("Adding an endpoint"), dedented."""
    section = GUIDE.read_text(encoding="utf-8")
    assert section.startswith("# Adding an endpoint\n"), "docs/extending.md is not the guide"
    blocks = []
    for indent, body in BLOCK.findall(section):
        blocks.append("".join(line[len(indent):] for line in body.splitlines(keepends=True)))
    return blocks


MODULE, ROUTES, TESTS = section_blocks()
# The module's path, from the step that introduces it: "`realtime/apps/reactions.py`, ...".
MODULE_NAME = re.search(r"`([\w/]+)\.py`, the session", GUIDE.read_text(encoding="utf-8"))


def load_tests() -> types.ModuleType:
    """The guide's test module (its fixtures come from this suite)."""
    module = types.ModuleType("readme_tests")
    exec(compile(TESTS, "docs/extending.md (tests)", "exec"), module.__dict__)
    return module


GUIDE_TESTS = sorted(name for name in vars(load_tests()) if name.startswith("test_"))


@pytest.fixture
def session_module() -> Iterator[types.ModuleType]:
    """The guide's session module, importable under the name it is given there."""
    assert MODULE_NAME is not None, "the guide names the session's module"
    name = MODULE_NAME.group(1).replace("/", ".")
    module = types.ModuleType(name)
    exec(compile(MODULE, f"docs/extending.md ({name})", "exec"), module.__dict__)
    sys.modules[name] = module
    yield module
    del sys.modules[name]


@pytest.fixture
def app(config: Config, io_loop: Any, session_module: types.ModuleType
        ) -> Iterator[tornado.web.Application]:
    """The application ``make_app`` builds, with the guide's route line added."""
    app = make_app(config)
    scope: dict[str, Any] = {"apps": app.settings["apps"]}
    exec(compile(ROUTES, "docs/extending.md (routes)", "exec"), scope)
    app.add_handlers(r".*", scope["routes"])
    yield app
    io_loop.run_sync(app.settings["polls"].aclose, timeout=10)


def test_the_section_has_a_module_a_route_line_and_tests():
    """The section shows the session, the route line with its imports, and tests."""
    assert "class " in MODULE and "(AppSession)" in MODULE
    assert "import" in ROUTES and "*app_routes(" in ROUTES
    assert GUIDE_TESTS


@pytest.mark.parametrize("name", GUIDE_TESTS)
async def test_readme_test_passes(name, ws_connect, http_server_client):
    """Each test the guide shows passes against the guide's endpoint."""
    test = getattr(load_tests(), name)
    fixtures = {"ws_connect": ws_connect, "http_server_client": http_server_client}
    await test(**{arg: fixtures[arg] for arg in inspect.signature(test).parameters})


def test_every_endpoint_the_guide_names_is_routed(app):
    """Each URL path the guide names is served once its route line is added, its own
    endpoints (`/ws/reactions/<room>`, ...) and the server's alike."""
    assert unrouted(app, GUIDE, set()) == set()
