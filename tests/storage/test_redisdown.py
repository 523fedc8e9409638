"""Outage and probe (realtime/storage/redisdown.py) without a Redis: one warning per outage, a line
when it ends, PINGs with backoff until one answers."""

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.storage.redisdown import Outage, probe

log = logging.getLogger("tests.redisdown")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def outage(clock: Clock) -> Outage:
    """An Outage for polls on a made-up Redis, on ``clock``."""
    return Outage(log, "redis://127.0.0.1:1/0", "polls", "votes are refused", "polls are back",
                  clock=clock)


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The messages this test's Outage logged at ``level``."""
    return [r.getMessage() for r in caplog.records if r.name == log.name and r.levelno == level]


def test_a_new_outage_is_healthy():
    """Before any failure, Redis counts as up."""
    assert outage(Clock()).healthy()


def test_failures_in_one_outage_log_one_warning(caplog):
    """Many failures in a row are one outage: one warning naming the error and what it means."""
    down = outage(Clock())
    with caplog.at_level(logging.INFO, logger=log.name):
        started = [down.failed(RedisConnectionError("refused")) for _ in range(5)]
    assert started == [True, False, False, False, False]
    assert not down.healthy()
    assert lines(caplog, logging.WARNING) == [
        "Redis at redis://127.0.0.1:1/0 unavailable for polls (refused): votes are refused"]


def test_an_error_without_a_message_is_named_by_its_type(caplog):
    """A timeout (no message) shows as its type, never as an empty pair of parentheses."""
    with caplog.at_level(logging.INFO, logger=log.name):
        outage(Clock()).failed(asyncio.TimeoutError())
    assert "(TimeoutError)" in lines(caplog, logging.WARNING)[0]


def test_an_answer_ends_the_outage_with_how_long_it_lasted(caplog):
    """The first answer after a failure logs one line with the outage's length and makes it
    healthy; answers while healthy log nothing."""
    clock = Clock()
    down = outage(clock)
    with caplog.at_level(logging.INFO, logger=log.name):
        assert down.answered() is None
        down.failed(OSError("reset"))
        clock.now += 2.5
        assert down.answered() == 2.5
        assert down.answered() is None
    assert down.healthy()
    assert lines(caplog, logging.INFO) == [
        "Redis at redis://127.0.0.1:1/0 answers again after 2.5 s: polls are back"]


def test_the_next_outage_warns_again(caplog):
    """Once an outage has ended, the next failure starts a new one with its own warning."""
    down = outage(Clock())
    with caplog.at_level(logging.INFO, logger=log.name):
        down.failed(OSError("one"))
        down.answered()
        assert down.failed(OSError("two")) is True
    assert len(lines(caplog, logging.WARNING)) == 2


async def test_probe_pings_with_doubling_waits_up_to_the_longest_until_it_answers():
    """The probe waits, pings, and doubles its wait after each failure (capped) until a ping
    answers; then it returns."""
    waits: list[float] = []
    pings = 0

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def ping() -> bool:
        nonlocal pings
        pings += 1
        if pings < 6:
            raise RedisConnectionError("refused")
        return True

    await asyncio.wait_for(probe(ping, timeout=1.0, first=0.1, longest=0.8, sleep=sleep), 5)
    assert pings == 6
    assert waits == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]


async def test_probe_counts_a_ping_that_does_not_answer_in_time_as_a_failure():
    """A ping slower than the timeout is another try, not a hang."""
    pings = 0

    async def ping() -> None:
        nonlocal pings
        pings += 1
        if pings == 1:
            await asyncio.sleep(10)

    await asyncio.wait_for(probe(ping, timeout=0.05, first=0.0), 5)
    assert pings == 2


async def test_probe_raises_what_is_not_a_redis_failure():
    """A bug in the ping is raised, not retried forever."""
    async def ping() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await asyncio.wait_for(probe(ping, timeout=1.0, first=0.0), 5)
