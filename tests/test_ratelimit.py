"""Token buckets and the per-connection rate policy, on a clock the tests move by hand."""

import pytest

from realtime.limits import UNLIMITED, IPConnections, RateLimit
from realtime.ratelimit import TokenBucket


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_full_bucket_allows_a_burst_then_refuses():
    """A new bucket gives exactly `burst` tokens at once, then refuses."""
    bucket = TokenBucket(rate=1, burst=5, clock=FakeClock())
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]


def test_tokens_come_back_at_the_rate():
    """After 1/rate seconds one more token is there, and only one."""
    clock = FakeClock()
    bucket = TokenBucket(rate=4, burst=2, clock=clock)
    assert bucket.take() and bucket.take() and not bucket.take()
    clock.now += 0.25
    assert bucket.take()
    assert not bucket.take()


def test_bucket_never_holds_more_than_burst():
    """A long pause refills the bucket to `burst`, not beyond."""
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    clock.now += 1000
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_retry_after_says_when_the_next_token_comes():
    """retry_after is 0 with a token there, else the time until the next one."""
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=1, clock=clock)
    assert bucket.retry_after() == 0.0
    assert bucket.take()
    assert bucket.retry_after() == pytest.approx(0.5)
    clock.now += 0.2
    assert bucket.retry_after() == pytest.approx(0.3)


def test_refused_take_costs_nothing():
    """Refused takes do not push the next token further away."""
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take()
    for _ in range(100):
        assert not bucket.take()
    clock.now += 1.0
    assert bucket.take()


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (1, 0)])
def test_nonsense_parameters_are_refused(rate, burst):
    """A bucket needs a positive rate and room for one token."""
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)


def test_rate_limit_zero_means_no_bucket():
    """A rate of 0 turns limiting off: connections get no bucket."""
    assert UNLIMITED.bucket() is None
    assert RateLimit(rate=0).enabled is False


def test_rate_limit_gives_each_connection_its_own_full_bucket():
    """Two connections do not share tokens."""
    policy = RateLimit(rate=1, burst=1, clock=FakeClock())
    first, second = policy.bucket(), policy.bucket()
    assert first is not None and second is not None
    assert first.take() and not first.take()
    assert second.take()


def test_ip_connections_refuse_past_the_limit():
    """The limit+1-th connection from one address is refused; other addresses are not."""
    slots = IPConnections(limit=2)
    assert slots.acquire("10.0.0.1") and slots.acquire("10.0.0.1")
    assert not slots.acquire("10.0.0.1")
    assert slots.acquire("10.0.0.2")
    assert slots.count("10.0.0.1") == 2


def test_ip_connections_free_a_slot_on_release():
    """Releasing one connection lets the next one in, and a count of 0 leaves no entry."""
    slots = IPConnections(limit=1)
    assert slots.acquire("10.0.0.1")
    slots.release("10.0.0.1")
    assert slots.count("10.0.0.1") == 0 and slots._open == {}
    assert slots.acquire("10.0.0.1")


def test_ip_connections_zero_limit_means_unlimited():
    """A limit of 0 never refuses."""
    slots = IPConnections(limit=0)
    assert all(slots.acquire("10.0.0.1") for _ in range(1000))
