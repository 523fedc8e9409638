"""The server raises the garbage collector's youngest-generation threshold at start."""

import gc
import re
from collections.abc import Iterator

import pytest

from realtime.ops.gctune import GEN0_THRESHOLD, tune_garbage_collector
from tests.process import start_server_process


@pytest.fixture
def thresholds() -> Iterator[None]:
    """This test process's collector thresholds, put back after the test."""
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_youngest_threshold_is_raised_and_the_others_kept(thresholds):
    """From CPython's defaults, only the youngest generation's threshold goes up."""
    gc.set_threshold(700, 10, 10)
    assert tune_garbage_collector() == (GEN0_THRESHOLD, 10, 10)


def test_a_higher_threshold_already_set_is_kept(thresholds):
    """A wrapper that set a higher threshold keeps it: the tuning never lowers it."""
    gc.set_threshold(GEN0_THRESHOLD * 2, 20, 30)
    assert tune_garbage_collector() == (GEN0_THRESHOLD * 2, 20, 30)


def test_a_collector_switched_off_stays_off(thresholds):
    """A threshold of 0 (collection switched off on purpose) is left alone."""
    gc.set_threshold(0, 10, 10)
    assert tune_garbage_collector() == (0, 10, 10)


async def test_the_server_logs_its_thresholds_at_start(spawn, python, tmp_path):
    """A started server logs the collector thresholds it runs with, the youngest raised."""
    await start_server_process(spawn, python, tmp_path)
    log = (tmp_path / "server.log").read_text()
    assert re.search(rf"event=gc_thresholds gen0={GEN0_THRESHOLD} gen1=\d+ gen2=\d+\b", log)
