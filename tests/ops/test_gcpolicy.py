"""The collector policy of a started server (realtime.ops.gcpolicy)."""

import asyncio
import gc
import re

import pytest

from realtime.ops import gcpolicy
from tests.process import start_server_process


@pytest.fixture
def collector():
    """The process's collector state, put back after the test."""
    thresholds = gc.get_threshold()
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()


def test_settle_puts_what_start_up_built_out_of_the_collectors_sight(collector):
    """After settle() what was alive is frozen (never scanned) and collections are rarer."""
    gc.set_threshold(700, 10, 10)
    built_at_start_up = [[] for _ in range(100)]
    assert gcpolicy.settle() == gcpolicy.THRESHOLDS
    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert gcpolicy.THRESHOLDS[0] > 700  # CPython's default, which the storm paid for


def test_a_higher_threshold_already_set_is_kept(collector):
    """A wrapper that set a higher threshold keeps it: settle() never lowers it."""
    higher = (gcpolicy.THRESHOLDS[0] * 2, 20, 30)
    gc.set_threshold(*higher)
    assert gcpolicy.settle() == higher


def test_a_collector_switched_off_stays_off(collector):
    """A threshold of 0 (collection switched off on purpose) is left alone."""
    gc.set_threshold(0, 10, 10)
    assert gcpolicy.settle() == (0, 10, 10)


def test_shutting_down_freezes_the_connections_alive_and_stops_collecting(collector):
    """At shutdown what is alive (the connections being closed) is frozen, and no
    collection runs in the seconds before the exit."""
    connections = [{"socket": n} for n in range(100)]
    gcpolicy.shutting_down()
    assert gc.get_freeze_count() >= len(connections)
    assert not gc.isenabled()


async def test_the_server_logs_its_thresholds_at_start(spawn, python, tmp_path):
    """A started server logs the collector thresholds it runs with, the youngest raised."""
    _, port = await start_server_process(spawn, python, tmp_path)
    # An answer comes only once the app is built and started, after the thresholds are set.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()
    log = (tmp_path / "server.log").read_text()
    young = gcpolicy.THRESHOLDS[0]
    assert re.search(rf"event=gc_thresholds gen0={young} gen1=\d+ gen2=\d+\b", log)
