"""The browser's cookies (the chat id, the voter id): ``Secure`` and ``__Host-`` over HTTPS.

A request that came over HTTPS (directly, or through a proxy trusted with ``--xheaders``)
gets its cookies as ``__Host-<name>`` with ``Secure`` and ``Path=/`` and no ``Domain``: the
browser then keeps it for this host alone and sends it only over HTTPS, so a sibling
subdomain or a plain-HTTP page cannot set one in its place (with two cookies of one name the
server cannot tell which is whose). Over plain HTTP a browser refuses both, so the cookie
keeps its plain name.

Reading takes the ``__Host-`` cookie first, then the plain name: a browser that got its
cookie before the prefix (or over plain HTTP) keeps its identity, and over HTTPS gets it
again under the new name (read both, write the new one).
"""

from typing import Any, Optional

import tornado.web

HOST_PREFIX = "__Host-"


def over_https(handler: tornado.web.RequestHandler) -> bool:
    """Whether the request came over HTTPS (the proxy's scheme with ``--xheaders``)."""
    return handler.request.protocol == "https"


def current_name(handler: tornado.web.RequestHandler, name: str) -> str:
    """The name the cookie ``name`` is written under for this request."""
    return HOST_PREFIX + name if over_https(handler) else name


def read_cookie(
    handler: tornado.web.RequestHandler, name: str, max_age_days: Optional[float] = None,
) -> tuple[Optional[str], bool]:
    """The cookie ``name``'s value (signed when ``max_age_days`` is given: None unless its
    signature holds) and whether it came under this request's current name.

    Only an HTTPS request reads the ``__Host-`` cookie, as only it can have one.
    """
    names = [HOST_PREFIX + name, name] if over_https(handler) else [name]
    for each in names:
        if max_age_days is None:
            value = handler.get_cookie(each)
        else:
            signed = handler.get_signed_cookie(each, max_age_days=max_age_days)
            value = signed.decode("ascii", "replace") if signed else None
        if value:
            return value, each == names[0]
    return None, False


def write_cookie(
    handler: tornado.web.RequestHandler, name: str, value: str, signed: bool = False,
    **attributes: Any,
) -> None:
    """Set the cookie ``name`` under its current name: ``Secure`` over HTTPS, ``Path=/``,
    HttpOnly and SameSite=Lax unless ``attributes`` say otherwise."""
    attributes = {"httponly": True, "samesite": "Lax", **attributes,
                  "secure": over_https(handler), "path": "/"}
    if signed:
        handler.set_signed_cookie(current_name(handler, name), value, **attributes)
    else:
        handler.set_cookie(current_name(handler, name), value, **attributes)
