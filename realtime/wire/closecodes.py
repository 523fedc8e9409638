"""WebSocket close codes (RFC 6455, section 7.4.1) under the names the code uses, and the
close a WebSocket sends for each reason the hub closes a connection."""

from enum import IntEnum
from typing import Optional

from realtime.pubsub.delivery import CloseReason


class CloseCode(IntEnum):
    """The close codes this server sends."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down
    PROTOCOL_ERROR = 1002  # the client broke RFC 6455 (an invalid close frame)
    UNSUPPORTED_DATA = 1003  # a frame of a kind the endpoint does not take
    INVALID_DATA = 1007  # text that is not UTF-8 (a close frame's reason)
    POLICY_VIOLATION = 1008  # slow consumer, rate-limit flooding: the client broke a rule
    MESSAGE_TOO_BIG = 1009  # a message over --max-message-size (sent by Tornado)
    INTERNAL_ERROR = 1011  # a bug on our side; the traceback is in the server log
    SERVICE_RESTART = 1012  # messages were missed (Redis interrupted): reconnect with since
    TRY_AGAIN_LATER = 1013
    # Never sent on the wire: what a close without a close frame is called (in our logs).
    ABNORMAL = 1006


# The code and text a WebSocket closes with for each reason the hub gives; the texts are
# what clients and docs/protocol.md have always seen.
CLOSE_FOR_REASON: dict[CloseReason, tuple[CloseCode, str]] = {
    CloseReason.SLOW: (CloseCode.POLICY_VIOLATION, "slow consumer: messages were not read"),
    CloseReason.SHUTDOWN: (CloseCode.GOING_AWAY, "server shutting down"),
    CloseReason.ERROR: (CloseCode.INTERNAL_ERROR, "internal server error"),
    CloseReason.GAP: (CloseCode.SERVICE_RESTART, "messages missed: reconnect with since"),
}


def _valid_close_code(code: int) -> bool:
    """Whether a client may send ``code`` in a close frame: the codes RFC 6455 defines for
    the wire and IANA registered since (1000-1003, 1007-1014), and the ranges for libraries
    and applications (3000-4999). 1004-1006 and 1015 are reserved or never sent; the rest of
    0-2999 is unassigned, 5000 and above undefined."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_frame_problem(payload: bytes) -> Optional[tuple[CloseCode, str]]:
    """What is wrong with a client's close frame, as the close to answer it with, or None for
    a valid one (empty, or a valid code and a UTF-8 reason).

    Pure, so the rules are tested without a socket; ``tornado_internals.CountingProtocol``
    applies them, because Tornado echoes any code back (Autobahn 7.3.1, 7.5.1, 7.9.x, 7.13.x).
    """
    if not payload:
        return None
    if len(payload) == 1:
        return CloseCode.PROTOCOL_ERROR, "close frame payload of 1 byte"
    code = int.from_bytes(payload[:2], "big")
    if not _valid_close_code(code):
        return CloseCode.PROTOCOL_ERROR, f"invalid close code {code}"
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return CloseCode.INVALID_DATA, "close reason is not UTF-8"
    return None
