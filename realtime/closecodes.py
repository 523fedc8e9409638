"""WebSocket close codes (RFC 6455, section 7.4.1) under the names the code uses."""

from enum import IntEnum


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
