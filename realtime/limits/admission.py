"""Admitting a connection: the one set of rules every transport applies before and while a
client holds a connection, so no transport keeps a copy of its own that drifts.

``Admission`` holds the shared budgets (``make_app`` builds one for the whole process) and
decides, with no I/O:

* ``check_origin``: a page of another site is refused (``--allowed-origins``);
* ``admit``: a new connection is charged to its address's ``--handshake-rate-limit`` and
  takes one of its ``--max-connections-per-ip`` slots; it gets a ``Ticket``;
* ``charge_request``: one HTTP request charged like a frame (``--ip-rate-limit``).

A refusal raises ``Refused``: a ``Refusal`` carrying the metric's ``reason``, counted
(``realtime_refusals_total{transport,reason}``, and ``realtime_connections_refused_total``)
and logged (``event=refused``) before it is raised. Each transport only words it: an HTTP
status, a JSON error, an ``!`` line.

A ``Ticket`` is one admitted connection. ``open()`` counts it in the connection gauge and
logs ``event=connect``; ``release()`` gives back its slot and gauge and logs
``event=disconnect``, exactly once however often it is called, and ``open()`` after a
``release()`` does nothing and says so. That is the lifecycle rule: a transport takes its
ticket before its first await, calls ``release()`` wherever the client may leave (the
close callback, the end of the request), and opens only if ``open()`` says the client is
still there. ``charge()`` applies the per-connection and per-address frame rate limits with
their strikes.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from realtime.limits.origins import SAME_HOST, OriginPolicy
from realtime.limits.policy import UNLIMITED, IPConnections, RateLimit
from realtime.limits.ratelimit import KeyedLimiter, TokenBucket
from realtime.ops.logfmt import logfmt
from realtime.ops.metrics import ServerMetrics
from realtime.wire.messages import Refusal

events = logging.getLogger("realtime.events")  # one line per connect, disconnect, refusal

# The values of the refusals' ``transport`` label.
WEBSOCKET = "websocket"
SSE = "sse"
LONG_POLL = "long_poll"
LONG_POLL_SESSION = "long_poll_session"
TCP = "tcp"

# The values of their ``reason`` label, which the refusal log lines carry too.
ORIGIN = "origin"
HANDSHAKE_RATE = "handshake_rate"
IP_LIMIT = "ip_limit"

TOO_MANY_CONNECTIONS = "Too many connections from your address."
TOO_MANY_NEW = "Too many new connections from your address"
SLOT_RETRY_AFTER = 5.0  # seconds a client refused a slot is told to wait


class Refused(Refusal):
    """A connection refused by ``Admission``; ``reason`` is its metric label."""

    def __init__(self, reason: str, code: str, message: str,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(code, message, retry_after)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Client:
    """Who asks: the transport and route, the client's address and its ``Origin``."""

    transport: str  # the refusals' ``transport`` label
    endpoint: str  # the route's name in logs and metric labels
    ip: str
    origin: Optional[str] = None
    # Whether its connect, disconnect and refusal lines name the origin (the TCP lines
    # have none to name).
    has_origin: bool = True


@dataclass(frozen=True, slots=True)
class Over:
    """A frame refused by a rate limit: whose budget, when to send again, and whether the
    strikes are spent (the connection is to be closed, 1008)."""

    per_address: bool
    retry_after: float
    close: bool


@dataclass
class Admission:
    """The shared budgets and the rules; see the module docstring.

    Args:
        origins: which ``Origin`` headers may connect.
        ip_connections: the per-address connection cap, every transport together.
        handshake_rate: the budget of new connections per address.
        ip_rate: the budget of frames, lines and requests per address.
        rate_limit: each connection's frame rate and strikes.
        metrics: where refusals, gauges and refused frames are counted.
    """

    origins: OriginPolicy = SAME_HOST
    ip_connections: Optional[IPConnections] = None
    handshake_rate: Optional[KeyedLimiter] = None
    ip_rate: Optional[KeyedLimiter] = None
    rate_limit: RateLimit = UNLIMITED
    metrics: ServerMetrics = field(default_factory=ServerMetrics)

    def origin_allowed(self, client: Client, host: Optional[str]) -> bool:
        """Whether ``client``'s ``Origin`` may connect; a refusal is counted and logged."""
        if self.origins.allows(client.origin, host):
            return True
        self.refuse(client, ORIGIN)
        return False

    def check_origin(self, client: Client, host: Optional[str]) -> None:
        """Refuse a page of another site.

        Raises:
            Refused: ``bad_origin`` (reason ``origin``).
        """
        if not self.origin_allowed(client, host):
            raise Refused(ORIGIN, "bad_origin", "Pages of this origin may not use this server.")

    def admit(self, client: Client, new: bool = True) -> "Ticket":
        """A ticket for one connection of ``client``: charged to the handshake budget if
        ``new`` (a held long-poll of an existing session is not new), holding a slot.

        Raises:
            Refused: ``rate_limited`` (``handshake_rate``), ``too_many_connections``
                (``ip_limit``).
        """
        ip = client.ip
        if new and self.handshake_rate is not None and not self.handshake_rate.take(ip):
            self.refuse(client, HANDSHAKE_RATE)
            raise Refused(HANDSHAKE_RATE, "rate_limited", f"{TOO_MANY_NEW}; try again shortly.",
                          self.handshake_rate.retry_after(ip))
        if self.ip_connections is not None and not self.ip_connections.acquire(ip):
            self.refuse(client, IP_LIMIT)
            raise Refused(IP_LIMIT, "too_many_connections", TOO_MANY_CONNECTIONS,
                          SLOT_RETRY_AFTER)
        return Ticket(self, client, slot=self.ip_connections is not None)

    def refuse(self, client: Client, reason: str) -> None:
        """Count and log one refusal."""
        self.metrics.refused.labels(reason=reason).inc()
        self.metrics.refusals.labels(transport=client.transport, reason=reason).inc()
        fields: dict[str, Any] = dict(event="refused", reason=reason, endpoint=client.endpoint,
                                      ip=client.ip)
        if reason != HANDSHAKE_RATE and client.has_origin:
            fields["origin"] = client.origin
        events.warning(logfmt(**fields))

    def charge_request(self, client: Client) -> Optional[float]:
        """Charge one request to its address's frame budget: None if it may go on, else
        the seconds to wait (the refused request is counted as rate limited)."""
        rate = self.ip_rate
        if rate is None or rate.take(client.ip):
            return None
        self.metrics.rate_limited.labels(endpoint=client.endpoint).inc()
        return rate.retry_after(client.ip)


class Ticket:
    """One admitted connection: its slot, its place in the gauge, its frame budget."""

    # One per open connection of every transport: slots keep it a small fixed record.
    __slots__ = ("admission", "client", "_slot", "_bucket", "_strikes", "opened_at",
                 "_announced", "released")

    def __init__(self, admission: Admission, client: Client, slot: bool) -> None:
        self.admission = admission
        self.client = client
        self._slot = slot  # holds one of the address's slots until released
        # The connection's frame budget, made at its first frame: a bucket made then is
        # as full as one made now, and a connection that never sends needs none. False
        # once made without a limit, so the rate limit is asked once, not at every frame.
        self._bucket: Union[TokenBucket, None, Literal[False]] = None
        self._strikes = 0  # frames refused in a row by a rate limit
        self.opened_at: Optional[float] = None  # monotonic time of open(), None before
        self._announced = False  # open() logged a connect, so release() logs a disconnect
        self.released = False

    def open(self, announce: bool = True) -> bool:
        """Count the connection as open (the gauge; with ``announce``, the opened counter
        and the connect line); False, counting nothing, if it was released already (the
        client left while the transport was getting ready)."""
        if self.released or self.opened_at is not None:
            return not self.released
        metrics, client = self.admission.metrics, self.client
        self.opened_at = time.monotonic()
        metrics.connections.labels(endpoint=client.endpoint).inc()
        if announce:
            self._announced = True
            metrics.connections_total.labels(endpoint=client.endpoint).inc()
            fields: dict[str, Any] = dict(event="connect", endpoint=client.endpoint, ip=client.ip)
            if client.has_origin:
                fields["origin"] = client.origin
            events.info(logfmt(**fields))
        return True

    def release(self, **disconnect: Any) -> None:
        """Give back the slot and, if opened, the gauge, logging the disconnect with the
        ``disconnect`` fields (before its duration); only the first call does anything."""
        if self.released:
            return
        self.released = True
        admission, client = self.admission, self.client
        if self._slot and admission.ip_connections is not None:
            self._slot = False
            admission.ip_connections.release(client.ip)
        if self.opened_at is None:
            return
        admission.metrics.connections.labels(endpoint=client.endpoint).dec()
        if self._announced:
            events.info(logfmt(event="disconnect", endpoint=client.endpoint, ip=client.ip,
                               **disconnect, duration_s=time.monotonic() - self.opened_at))

    def charge(self) -> Optional[Over]:
        """Charge one incoming frame (or line) to this connection's budget, then to its
        address's: None if it is allowed, else what refused it (counted as rate limited;
        logged when the strikes are spent)."""
        admission, client = self.admission, self.client
        bucket, rate = self._bucket, admission.ip_rate
        if bucket is None:
            bucket = self._bucket = admission.rate_limit.bucket() or False  # False: no limit
        over: Optional[Over] = None
        if bucket is not False and not bucket.take():
            over = Over(False, bucket.retry_after(), False)
        elif rate is not None and not rate.take(client.ip):
            over = Over(True, rate.retry_after(client.ip), False)
        if over is None:
            self._strikes = 0
            return None
        admission.metrics.rate_limited.labels(endpoint=client.endpoint).inc()
        self._strikes += 1
        if self._strikes > admission.rate_limit.strikes:
            events.warning(logfmt(event="rate_limit_close", endpoint=client.endpoint,
                                  ip=client.ip))
            return Over(over.per_address, over.retry_after, True)
        return over
