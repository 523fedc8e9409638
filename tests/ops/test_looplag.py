"""Loop lag: how late the loop runs callbacks, sampled and exported to /metrics."""

import asyncio
import re
import time

from tornado.httpclient import AsyncHTTPClient

from realtime.ops.looplag import WINDOW, LoopLag
from tests.process import start_server_process


class FakeClock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_worst_is_the_longest_delay_of_the_last_minute():
    """The worst delay is remembered for a minute, then gives way to the worst since."""
    clock = FakeClock()
    lag = LoopLag(clock=clock)
    lag.record(0.3, clock.now)
    clock.now += 10
    lag.record(0.01, clock.now)
    lag.record(0.05, clock.now)
    assert lag.worst() == 0.3

    clock.now += WINDOW - 5  # the 0.3 s delay is now 65 s old
    assert lag.worst() == 0.05


def test_every_sample_is_observed():
    """Each delay reaches the observer (the histogram), small ones too."""
    seen: list[float] = []
    lag = LoopLag(observe=seen.append, clock=FakeClock())
    for delay in (0.0, 0.002, 0.2):
        lag.record(delay, 1000.0)
    assert seen == [0.0, 0.002, 0.2] and lag.samples == 3


async def test_a_blocked_loop_shows_as_lag():
    """Holding the loop for 0.2 s makes a sample at least 0.15 s late (a sample is due at
    most 50 ms into the block)."""
    lag = LoopLag(interval=0.05)
    lag.start()
    try:
        while lag.samples < 1:
            await asyncio.sleep(0.01)
        time.sleep(0.2)  # the thing measured: a handler that blocks the loop
        before = lag.samples
        while lag.samples == before:
            await asyncio.sleep(0.01)
        assert lag.worst() >= 0.15
    finally:
        lag.stop()
    assert not lag.running


async def test_metrics_export_the_loop_lag(http_server_client, app):
    """/metrics carries the lag histogram and the worst delay of the last minute."""
    metrics = app.settings["metrics"]
    metrics.loop_lag.record(0.2, time.monotonic())
    body = (await http_server_client.fetch("/metrics")).body.decode()
    assert "# TYPE realtime_event_loop_lag_seconds histogram" in body
    assert 'realtime_event_loop_lag_seconds_bucket{le="0.25"} 1.0' in body
    assert "realtime_event_loop_lag_max_seconds 0.2" in body


async def test_a_served_process_samples_its_loop(spawn, python, tmp_path):
    """The server started by its command samples its loop from the start: /metrics counts
    samples without any client having connected."""
    _, port = await start_server_process(spawn, python, tmp_path)
    client = AsyncHTTPClient()
    deadline = time.monotonic() + 10
    count = 0.0
    while count == 0 and time.monotonic() < deadline:
        body = (await client.fetch(f"http://127.0.0.1:{port}/metrics")).body.decode()
        count = float(re.search(r"^realtime_event_loop_lag_seconds_count (\S+)$", body,
                                re.M).group(1))
        await asyncio.sleep(0.05)
    assert count > 0
