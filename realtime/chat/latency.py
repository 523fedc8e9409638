"""Added latency for the ``/models`` page's rooms: which values, which rooms.

On localhost every transport answers within a millisecond, so long-polling looks as fast as
a WebSocket. The ``/models`` page may ask the server to hold each delivery to its
subscriber a little (``?latency=100``), as a slow network would, so the round trips that
polling pays for every message show. Only for the page's own rooms (``models`` and
``models-*``): the real chat never waits on purpose, and the values are a short fixed list,
so nobody can park connections for long.
"""

from typing import Optional

from realtime.wire.messages import ClientError

LATENCIES_MS = (0, 100, 300)  # the values the /models page offers
MODELS_ROOM = "models"  # the page's rooms: this name, or this name and "-" and more


def is_models_room(room: str) -> bool:
    """Whether ``room`` is one of the ``/models`` page's rooms."""
    return room == MODELS_ROOM or room.startswith(MODELS_ROOM + "-")


def parse_latency(raw: Optional[str], room: str) -> float:
    """The seconds to hold each delivery in ``room`` for a ``?latency=`` of ``raw`` (in
    milliseconds, exactly one of ``LATENCIES_MS``); 0 when absent.

    Raises:
        ClientError: ``bad_latency`` for any other value; ``latency_not_allowed`` for a
            non-zero latency in a room that is not a ``/models`` room.
    """
    if raw is None:
        return 0.0
    allowed = ", ".join(map(str, LATENCIES_MS))
    if raw not in {str(each) for each in LATENCIES_MS}:
        raise ClientError("bad_latency", f'"latency" is one of {allowed} (milliseconds).')
    milliseconds = int(raw)
    if milliseconds and not is_models_room(room):
        raise ClientError("latency_not_allowed", (
            f'Added latency is only for the /models rooms ("{MODELS_ROOM}" and '
            f'"{MODELS_ROOM}-..."), not for "{room}".'))
    return milliseconds / 1000
