"""Which web pages may open a WebSocket to us (protection against cross-site hijacking).

Browsers send cookies with a WebSocket handshake to any site and do not apply the same-origin
policy to it, so a page on ``evil.example`` could open a socket to us with the user's
cookies. The only defence is the ``Origin`` header, which browsers always send and scripts
cannot forge. The policy:

* no ``Origin`` header: a non-browser client (curl, a bot, a test), which carries no user's
  cookies by accident; allowed;
* the origin's ``host[:port]`` equals the request's ``Host`` header: a page served by this
  very host; allowed (this is also what Tornado checks before it asks us);
* otherwise only origins in the exact-match allowlist (``scheme://host[:port]``).

``X-Forwarded-Host`` is never consulted, with ``--xheaders`` or not: the proxy must pass the
public host name in ``Host`` itself (``proxy_set_header Host $host``), and a header that any
client can add must not widen who may connect.
"""

from typing import Iterable, Optional
from urllib.parse import urlsplit


def normalize(origin: str) -> str:
    """Lowercase scheme and host and drop a trailing slash; ports stay as written."""
    return origin.strip().rstrip("/").lower()


class OriginPolicy:
    """The allowlist plus the same-host rule; see the module docstring.

    Args:
        allowed: origins such as ``https://example.com`` or ``http://127.0.0.1:8888``.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(normalize(origin) for origin in allowed if origin.strip())

    def allows(self, origin: Optional[str], host: Optional[str]) -> bool:
        """Tell whether a handshake with this ``Origin`` and ``Host`` header may proceed."""
        if origin is None:
            return True
        origin = normalize(origin)
        if host and urlsplit(origin).netloc == host.strip().lower():
            return True
        return origin in self.allowed


SAME_HOST = OriginPolicy()
