"""WebSocket close codes (RFC 6455, section 7.4.1) under the names the code uses, and the
close a WebSocket sends for each reason the hub closes a connection."""

from enum import IntEnum

from realtime.pubsub.delivery import CloseReason


class CloseCode(IntEnum):
    """The close codes this server sends."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down
    UNSUPPORTED_DATA = 1003  # a frame of a kind the endpoint does not take
    POLICY_VIOLATION = 1008  # slow consumer, rate-limit flooding: the client broke a rule
    MESSAGE_TOO_BIG = 1009  # a message over --max-message-size (sent by Tornado)
    INTERNAL_ERROR = 1011  # a bug on our side; the traceback is in the server log
    TRY_AGAIN_LATER = 1013
    # Never sent on the wire: what a close without a close frame is called (in our logs).
    ABNORMAL = 1006


# The code and text a WebSocket closes with for each reason the hub gives; the texts are
# what clients and the README have always seen.
CLOSE_FOR_REASON: dict[CloseReason, tuple[CloseCode, str]] = {
    CloseReason.SLOW: (CloseCode.POLICY_VIOLATION, "slow consumer: messages were not read"),
    CloseReason.SHUTDOWN: (CloseCode.GOING_AWAY, "server shutting down"),
    CloseReason.ERROR: (CloseCode.INTERNAL_ERROR, "internal server error"),
}
