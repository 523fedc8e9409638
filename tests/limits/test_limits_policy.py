"""The per-connection rate policy and the per-IP connection cap, without sockets."""

from realtime.limits.policy import UNLIMITED, IPConnections, RateLimit


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


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
