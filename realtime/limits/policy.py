"""Per-connection message rate policy, the per-client-IP connection cap, and the defaults
of the budgets shared by several connections.

``RateLimit`` is the policy every socket applies to incoming frames (one ``TokenBucket`` per
connection, plus how many refused frames in a row end the connection). ``IPConnections``
counts open sockets per client address so one address cannot take every file descriptor.
Both are plain objects with no I/O; ``make_app`` builds one of each and hands them to every
socket route, with two ``KeyedLimiter`` budgets: one per client address (every frame of all
its sockets) and one per chat room (what its public messages cost to deliver).
"""

from dataclasses import dataclass, field
from typing import Optional

from realtime.limits.ratelimit import Clock, TokenBucket

DEFAULT_RATE = 20.0  # messages per second, sustained
DEFAULT_BURST = 100  # messages at once after a pause
DEFAULT_STRIKES = 20  # refused frames in a row before the connection is closed (1008)
DEFAULT_MAX_CONNECTIONS_PER_IP = 100
# New sockets per address: a person opens a handful; a page reconnects with backoff; an
# office behind one NAT reconnects all at once after a server restart (the burst).
DEFAULT_HANDSHAKE_RATE = 10.0
DEFAULT_HANDSHAKE_BURST = 100
# One address, all its sockets together. The per-connection limit alone lets one address
# send 100 x 20 = 2,000 frames/s, each of which may fan out to a whole room: that took the
# server to 100% CPU. 50/s is two and a half connections at full speed, or 50 people behind
# one NAT each sending a message a second, with room for the pongs of 100 sockets (one per
# --ping-interval each); the burst lets two sockets spend their whole burst at once.
DEFAULT_IP_RATE = 50.0  # frames per second per client address, sustained
DEFAULT_IP_BURST = 200
# One chat room, everyone in it together, weighed in deliveries: a public message to N
# listeners costs N, since its cost to the server is its fan-out (~30-40 us per delivery,
# bench/fanout.py: one process delivers ~30,000 a second on a full core). 2,000/s keeps a
# flooded room under a tenth of that core, so a bystander's latency stays near idle
# (bench/fairness.py), yet a room of 100 may carry 20 messages a second, more than people
# read, and a room of 1,000 two; the burst is twice that.
# Plain HTTP requests (pages, the API, QR codes) per address: a page view is one request
# (its static files are not counted), a script polling the API a few a second; a flood of
# cheap requests still costs ~0.3 ms of CPU each, which 20/s keeps under a hundredth of
# the core per address. The burst covers an office behind one NAT opening the demos at once.
DEFAULT_HTTP_RATE = 20.0
DEFAULT_HTTP_BURST = 100
DEFAULT_ROOM_RATE = 2000.0  # deliveries per second per chat room, sustained
DEFAULT_ROOM_BURST = 4000


@dataclass(frozen=True)
class RateLimit:
    """How fast one connection may send frames.

    Args:
        rate: frames per second, sustained; 0 turns rate limiting off.
        burst: frames accepted at once after a pause.
        strikes: frames refused in a row (each answered with ``rate_limited``) after which
            the connection is closed with 1008; an accepted frame resets the count.
        clock: the buckets' clock; tests freeze it to get exact counts.
    """

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    strikes: int = DEFAULT_STRIKES
    clock: Optional[Clock] = field(default=None, compare=False)

    @property
    def enabled(self) -> bool:
        """False when ``rate`` is 0: every frame is accepted."""
        return self.rate > 0

    def bucket(self) -> Optional[TokenBucket]:
        """A fresh, full bucket for one new connection, or None if limiting is off."""
        if not self.enabled:
            return None
        if self.clock is None:
            return TokenBucket(self.rate, self.burst)
        return TokenBucket(self.rate, self.burst, clock=self.clock)


UNLIMITED = RateLimit(rate=0)


class IPConnections:
    """Open connections per client IP, refusing more than ``limit`` (0: no limit).

    ``acquire`` at the handshake, ``release`` exactly once when that connection is over.
    """

    def __init__(self, limit: int = DEFAULT_MAX_CONNECTIONS_PER_IP) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}  # ip -> open connections (absent when 0)

    def acquire(self, ip: str) -> bool:
        """Count one more connection from ``ip``; False (nothing counted) if it is at the limit."""
        count = self._open.get(ip, 0)
        if self.limit and count >= self.limit:
            return False
        self._open[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        """Count one connection from ``ip`` less."""
        count = self._open.get(ip, 0) - 1
        if count > 0:
            self._open[ip] = count
        else:
            self._open.pop(ip, None)

    def count(self, ip: str) -> int:
        """Open connections from ``ip``."""
        return self._open.get(ip, 0)
