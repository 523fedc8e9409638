"""Shutdown closers: in order, each bounded, one failure does not stop the rest."""

import asyncio
import logging
import os
import textwrap
from pathlib import Path

import pytest

from realtime.ops.lifecycle import Lifecycle
import realtime.ops.lifecycle as lifecycle_module
from realtime.votes.store import DB_FILENAME, PollStore
from server import Config

ROOT = Path(__file__).resolve().parent.parent.parent


async def test_closers_run_in_registration_order():
    """Closers run one after the other in the order they were registered."""
    lifecycle = Lifecycle()
    ran: list[str] = []

    async def first() -> None:
        await asyncio.sleep(0)
        ran.append("first")

    async def second() -> None:
        ran.append("second")

    lifecycle.on_shutdown(first)
    lifecycle.on_shutdown(second)
    assert await lifecycle.shutdown(timeout=5) is True
    assert ran == ["first", "second"]


async def test_failing_closer_is_logged_and_the_next_still_runs(caplog):
    """An exception in one closer is logged with its traceback; later closers still run."""
    lifecycle = Lifecycle()
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("disk gone")

    async def after() -> None:
        ran.append("after")

    lifecycle.on_shutdown(broken, name="store")
    lifecycle.on_shutdown(after)
    with caplog.at_level(logging.ERROR, logger="realtime.lifecycle"):
        assert await lifecycle.shutdown(timeout=5) is False
    assert ran == ["after"]
    assert any(r.exc_info and "disk gone" in str(r.exc_info[1]) for r in caplog.records)


async def test_closer_past_the_budget_is_cancelled():
    """A closer that does not finish within the budget is cancelled and reported."""
    lifecycle = Lifecycle()
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    lifecycle.on_shutdown(hangs)
    assert await lifecycle.shutdown(timeout=0.05) is False
    assert cancelled.is_set()


def test_closer_names_are_listed_in_order():
    """closers lists names (given or the function's) in running order."""
    lifecycle = Lifecycle()

    async def flush() -> None:
        pass

    lifecycle.on_shutdown(flush)
    lifecycle.on_shutdown(flush, name="second flush")
    assert lifecycle.closers == ["test_closer_names_are_listed_in_order.<locals>.flush",
                                 "second flush"]


def registration_snippets() -> list[str]:
    """The code that shows how a part registers its closer: in docs/deployment.md ("Graceful
    shutdown") and in the module's docstring."""
    readme = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    start = readme.index("registers where `make_app` builds it:")
    block = readme[readme.index("```python\n", start) + len("```python\n"):]
    docstring = textwrap.dedent(lifecycle_module.__doc__.split("::\n", 1)[1].split("\n\n")[0])
    return [block[:block.index("```")], docstring]


@pytest.mark.parametrize("where", ["docs", "docstring"])
async def test_registration_example_runs(where, tmp_path):
    """The documented example of registering a closer is real code: it runs as written and
    its closer runs at shutdown."""
    snippet = registration_snippets()[["docs", "docstring"].index(where)]
    names = dict(os=os, config=Config(data_dir=str(tmp_path)), lifecycle=Lifecycle(),
                 PollStore=PollStore, DB_FILENAME=DB_FILENAME)
    exec(snippet, names)
    assert await names["lifecycle"].shutdown(5) is True
    assert names["lifecycle"].closers == ["poll store"]
