"""The collector policy of a started server (realtime.ops.gcpolicy)."""

import gc

import pytest

from realtime.ops import gcpolicy


@pytest.fixture
def collector():
    """The process's collector state, put back after the test."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_puts_what_start_up_built_out_of_the_collectors_sight(collector):
    """After settle() what was alive is frozen (never scanned) and collections are rarer."""
    built_at_start_up = [[] for _ in range(100)]
    gcpolicy.settle()
    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert gc.get_threshold() == gcpolicy.THRESHOLDS
    assert gcpolicy.THRESHOLDS[0] > 700  # CPython's default, which the storm paid for


def test_shutting_down_freezes_the_connections_alive(collector):
    """At shutdown what is alive (the connections being closed) is frozen too."""
    connections = [{"socket": n} for n in range(100)]
    gcpolicy.shutting_down()
    assert gc.get_freeze_count() >= len(connections)
