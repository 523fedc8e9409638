"""The token bucket and the keyed limiter, on a fake clock."""

import pytest

from realtime.limits.ratelimit import KeyedLimiter, TokenBucket, retry_after_header


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refuses():
    """A fresh bucket allows exactly burst actions at once."""
    bucket = TokenBucket(rate=1, burst=3, clock=FakeClock())
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_its_rate():
    """After 1/rate seconds one more action is allowed, and only one."""
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=1, clock=clock)
    assert bucket.take()
    clock.now += 0.5
    assert bucket.take()
    assert not bucket.take()


def test_bucket_never_holds_more_than_burst():
    """A long idle time refills the bucket to burst, not beyond."""
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    clock.now += 3600
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_refused_take_costs_nothing():
    """Refused takes do not push the next token further away."""
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take()
    for _ in range(100):
        assert not bucket.take()
    clock.now += 1.0
    assert bucket.take()


def test_retry_after_says_when_the_next_token_comes():
    """retry_after is 0 with a token, then the time to the next one."""
    clock = FakeClock()
    bucket = TokenBucket(rate=0.5, burst=1, clock=clock)
    assert bucket.retry_after() == 0
    bucket.take()
    assert bucket.retry_after() == pytest.approx(2.0)
    clock.now += 1.5
    assert bucket.retry_after() == pytest.approx(0.5)


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (1, 0)])
def test_bucket_refuses_nonsense_arguments(rate, burst):
    """A rate of zero or less, or a burst under one, is a ValueError."""
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_keys_have_separate_buckets():
    """One key running out does not limit another."""
    limiter = KeyedLimiter(rate=1, burst=1, clock=FakeClock())
    assert limiter.take("a")
    assert not limiter.take("a")
    assert limiter.take("b")
    assert limiter.retry_after("a") > 0 and limiter.retry_after("c") == 0


def test_idle_keys_are_forgotten():
    """A key whose bucket would be full again is dropped on the next use of any key."""
    clock = FakeClock()
    limiter = KeyedLimiter(rate=1, burst=2, clock=clock)
    limiter.take("a")
    limiter.take("b")
    clock.now += 2
    limiter.take("c")
    assert len(limiter) == 1


def test_key_count_is_capped():
    """Past max_keys the least recently used key is forgotten."""
    limiter = KeyedLimiter(rate=1, burst=1, clock=FakeClock(), max_keys=100)
    for n in range(1000):
        limiter.take(n)
    assert len(limiter) == 100
    assert not limiter.take(999)


@pytest.mark.parametrize("seconds, header", [(0, "1"), (0.2, "1"), (1.0, "1"), (59.01, "60")])
def test_retry_after_header_rounds_up(seconds, header):
    """Retry-After is whole seconds, rounded up, never 0."""
    assert retry_after_header(seconds) == header


def test_an_action_may_cost_several_tokens():
    """take(cost) spends cost tokens, and a refused take(cost) spends none."""
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=10, clock=clock)
    assert bucket.take(7)
    assert not bucket.take(4)
    assert bucket.retry_after(4) == pytest.approx(0.1)
    assert bucket.take(3)
    assert not bucket.take()


def test_a_cost_above_the_burst_is_charged_as_the_burst():
    """An action dearer than the whole bucket still happens, once the bucket is full."""
    clock = FakeClock()
    limiter = KeyedLimiter(rate=10, burst=10, clock=clock)
    assert limiter.take("room", cost=500)
    assert not limiter.take("room", cost=500)
    assert limiter.retry_after("room", cost=500) == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.take("room", cost=500)
