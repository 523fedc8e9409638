"""The admission object without sockets: origin, handshake budget, slots, gauges, rate
limits with strikes, refusals counted and logged, and a ticket given back exactly once."""

import logging
from typing import Optional

import pytest

from realtime.limits.admission import (
    HANDSHAKE_RATE, IP_LIMIT, ORIGIN, SSE, TCP, WEBSOCKET, Admission, Client, Refused,
)
from realtime.limits.origins import OriginPolicy
from realtime.limits.policy import IPConnections, RateLimit
from realtime.limits.ratelimit import KeyedLimiter
from realtime.ops.metrics import ServerMetrics

IP = "127.0.0.7"
ALICE = Client(WEBSOCKET, "ws_echo", IP, "http://127.0.0.1:8888")


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admission(cap: int = 2, handshakes: Optional[int] = None, rate: Optional[RateLimit] = None,
              ip_burst: Optional[int] = None) -> Admission:
    """An admission with a cap of ``cap`` and the budgets asked for, on a frozen clock."""
    clock = FakeClock()
    return Admission(
        origins=OriginPolicy(["https://app.example"]),
        ip_connections=IPConnections(cap),
        handshake_rate=KeyedLimiter(1, handshakes, clock) if handshakes else None,
        ip_rate=KeyedLimiter(1, ip_burst, clock) if ip_burst else None,
        rate_limit=rate or RateLimit(rate=0),
        metrics=ServerMetrics(),
    )


def sample(admission: Admission, name: str, **labels: str) -> float:
    """One sample of the admission's metrics, 0 when it was never set."""
    value = admission.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def gauge(admission: Admission, endpoint: str = "ws_echo") -> float:
    return sample(admission, "realtime_connections", endpoint=endpoint)


def refusals(admission: Admission, transport: str, reason: str) -> float:
    return sample(admission, "realtime_refusals_total", transport=transport, reason=reason)


def test_a_ticket_holds_a_slot_until_released():
    """Admitting takes one of the address's slots; releasing gives it back."""
    gate = admission()
    ticket = gate.admit(ALICE)
    assert gate.ip_connections is not None and gate.ip_connections.count(IP) == 1
    ticket.release()
    assert gate.ip_connections.count(IP) == 0


def test_release_gives_back_slot_and_gauge_exactly_once():
    """Releasing an opened ticket twice counts it out of the slot and the gauge once."""
    gate = admission()
    other = gate.admit(ALICE)
    ticket = gate.admit(ALICE)
    assert ticket.open()
    assert gauge(gate) == 1
    ticket.release()
    ticket.release()
    assert gate.ip_connections is not None and gate.ip_connections.count(IP) == 1
    assert gauge(gate) == 0
    other.release()


def test_open_after_release_counts_nothing():
    """A ticket released before it opened (the client left meanwhile) never opens."""
    gate = admission()
    ticket = gate.admit(ALICE)
    ticket.release()
    assert ticket.open() is False
    assert gauge(gate) == 0
    assert sample(gate, "realtime_connections_opened_total", endpoint="ws_echo") == 0


def test_open_without_announcing_moves_only_the_gauge(caplog):
    """A held request is in the gauge, not in the opened counter nor the connect log."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    gate = admission()
    ticket = gate.admit(Client(SSE, "poll_chat", IP))
    assert ticket.open(announce=False)
    assert gauge(gate, "poll_chat") == 1
    assert sample(gate, "realtime_connections_opened_total", endpoint="poll_chat") == 0
    ticket.release()
    assert gauge(gate, "poll_chat") == 0
    assert caplog.records == []


def test_connect_and_disconnect_are_logged_once(caplog):
    """An opened ticket logs one connect line and, on release, one disconnect line."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    gate = admission()
    ticket = gate.admit(ALICE)
    ticket.open()
    ticket.release(code=1000, by="client")
    ticket.release(code=1006, by="network")
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "event=connect endpoint=ws_echo ip=127.0.0.7 origin=http://127.0.0.1:8888"
    assert lines[1].startswith("event=disconnect endpoint=ws_echo ip=127.0.0.7 code=1000 "
                               "by=client duration_s=")
    assert len(lines) == 2


def test_a_client_without_origin_logs_no_origin_field(caplog):
    """A TCP client's connect and disconnect lines have no origin field at all."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    gate = admission()
    ticket = gate.admit(Client(TCP, "tcp_chat", IP, has_origin=False))
    ticket.open()
    ticket.release(by="client", reason=None)
    connect, disconnect = [record.getMessage() for record in caplog.records]
    assert connect == "event=connect endpoint=tcp_chat ip=127.0.0.7"
    assert disconnect.startswith(
        "event=disconnect endpoint=tcp_chat ip=127.0.0.7 by=client reason=- duration_s=")


def test_over_the_cap_is_refused_counted_and_logged(caplog):
    """Past the cap a client is refused (ip_limit), nothing is taken, the refusal counted
    by transport and reason and logged."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    gate = admission(cap=1)
    gate.admit(ALICE)
    with pytest.raises(Refused) as refused:
        gate.admit(ALICE)
    assert (refused.value.code, refused.value.reason) == ("too_many_connections", IP_LIMIT)
    assert refused.value.message == "Too many connections from your address."
    assert gate.ip_connections is not None and gate.ip_connections.count(IP) == 1
    assert refusals(gate, WEBSOCKET, IP_LIMIT) == 1
    assert sample(gate, "realtime_connections_refused_total", reason=IP_LIMIT) == 1
    [line] = [record.getMessage() for record in caplog.records]
    assert line == ("event=refused reason=ip_limit endpoint=ws_echo ip=127.0.0.7 "
                    "origin=http://127.0.0.1:8888")


def test_the_handshake_budget_refuses_before_a_slot_is_taken():
    """Over the new-connection budget the refusal says when to retry and takes no slot."""
    gate = admission(handshakes=1)
    gate.admit(ALICE)
    with pytest.raises(Refused) as refused:
        gate.admit(ALICE)
    assert (refused.value.code, refused.value.reason) == ("rate_limited", HANDSHAKE_RATE)
    assert refused.value.retry_after == pytest.approx(1.0)
    assert gate.ip_connections is not None and gate.ip_connections.count(IP) == 1
    assert refusals(gate, WEBSOCKET, HANDSHAKE_RATE) == 1


def test_a_connection_that_is_not_new_is_not_charged_to_the_handshake_budget():
    """A held long-poll of an existing session takes a slot, not a handshake."""
    gate = admission(handshakes=1)
    gate.admit(ALICE)
    gate.admit(ALICE, new=False)
    assert gate.ip_connections is not None and gate.ip_connections.count(IP) == 2


def test_a_foreign_origin_is_refused_counted_and_logged(caplog):
    """A page of another site is refused (bad_origin), counted under its transport."""
    caplog.set_level(logging.INFO, logger="realtime.events")
    gate = admission()
    evil = Client(SSE, "sse_chat", IP, "https://evil.example")
    with pytest.raises(Refused) as refused:
        gate.check_origin(evil, "127.0.0.1:8888")
    assert (refused.value.code, refused.value.reason) == ("bad_origin", ORIGIN)
    assert refusals(gate, SSE, ORIGIN) == 1
    assert "origin=https://evil.example" in caplog.records[0].getMessage()


def test_same_host_and_allowlisted_origins_pass():
    """Same host and the allowlist pass without a refusal counted."""
    gate = admission()
    assert gate.origin_allowed(ALICE, "127.0.0.1:8888")
    assert gate.origin_allowed(Client(SSE, "sse_chat", IP, "https://app.example"), "x")
    assert refusals(gate, WEBSOCKET, ORIGIN) == 0


def test_frames_past_the_burst_are_refused_then_the_strikes_close():
    """Past the burst every frame is refused; past the strikes the verdict is to close."""
    gate = admission(rate=RateLimit(rate=1, burst=2, strikes=2, clock=FakeClock()))
    ticket = gate.admit(ALICE)
    assert ticket.charge() is None and ticket.charge() is None
    verdicts = [ticket.charge() for _ in range(3)]
    assert [over is not None and over.close for over in verdicts] == [False, False, True]
    assert all(over is not None and not over.per_address for over in verdicts)
    assert sample(gate, "realtime_rate_limited_total", endpoint="ws_echo") == 3


def test_the_address_budget_is_shared_by_its_connections():
    """Two tickets of one address spend one per-address budget."""
    gate = admission(ip_burst=3)
    first, second = gate.admit(ALICE), gate.admit(ALICE)
    assert [first.charge(), second.charge(), first.charge()] == [None, None, None]
    over = second.charge()
    assert over is not None and over.per_address and over.retry_after == pytest.approx(1.0)


def test_an_allowed_frame_resets_the_strikes():
    """Strikes count refusals in a row: an accepted frame starts them again."""
    clock = FakeClock()
    gate = admission(rate=RateLimit(rate=1, burst=1, strikes=1, clock=clock))
    ticket = gate.admit(ALICE)
    assert ticket.charge() is None
    over = ticket.charge()
    assert over is not None and not over.close
    clock.now += 1
    assert ticket.charge() is None
    over = ticket.charge()
    assert over is not None and not over.close


def test_a_request_over_the_address_budget_gets_its_wait():
    """charge_request answers None while the address has tokens, then the wait."""
    gate = admission(ip_burst=1)
    client = Client(SSE, "poll_chat", IP)
    assert gate.charge_request(client) is None
    assert gate.charge_request(client) == pytest.approx(1.0)
    assert sample(gate, "realtime_rate_limited_total", endpoint="poll_chat") == 1
