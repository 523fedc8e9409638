"""What the hub and its subscribers tell each other, without Tornado.

A subscriber's ``write_envelope`` answers what became of one frame (``WRITTEN``, ``CLOSED``,
``STALLED``); the hub answers a stalled or failing subscriber, and every one at shutdown,
with a ``CloseReason``. The hub knows nothing of wire forms, so each transport turns a
reason into its own close: a WebSocket into a close code and text
(``realtime.wire.closecodes.CLOSE_FOR_REASON``), an event stream into the end of its response, a
raw TCP connection into a closed socket (after a last line, for some reasons).
"""

from enum import Enum

# What writing one frame to a subscriber came to. Plain ints, WRITTEN false: the hub tests
# them once per frame per subscriber.
WRITTEN = 0  # the frame is sent or queued behind earlier frames, in order
CLOSED = 1  # the connection is closed or closing: nothing was written
STALLED = 2  # the connection held more than the bound: nothing was written


class CloseReason(Enum):
    """Why the hub closes a subscriber."""

    SLOW = "slow"  # it stopped reading: what it holds passed --max-pending-bytes
    SHUTDOWN = "shutdown"  # the server is going away
    ERROR = "error"  # writing to it raised: a bug on our side, logged with its traceback
    GAP = "gap"  # it missed messages from other processes that cannot be given to it now
