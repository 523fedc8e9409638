"""Commands packed by hiredis: cheaper to send than redis-py's own packing.

redis-py's asyncio connections pack every command in Python (``pack_command``: a join per
argument), whatever parser they read with; a batched chat message costs ten arguments
or so, and packing them was a fifth of the appending process's CPU. ``PackedConnection``
packs with ``hiredis.pack_command`` (one C call per command) when ``hiredis`` is installed
(requirements/server.txt), as redis-py's synchronous connections already do; without it,
it is redis-py's ``Connection`` unchanged. What goes on the wire is the same RESP either
way.

Pass it as ``connection_class`` to ``ConnectionPool.from_url`` of a ``redis://`` URL
(``unix://`` and ``rediss://`` URLs choose their own class and keep redis-py's packing).
"""

from typing import Any, List

from redis.asyncio.connection import Connection
from redis.exceptions import DataError

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is in requirements/server.txt
    hiredis = None


class PackedConnection(Connection):
    """A ``redis.asyncio`` connection whose commands ``hiredis`` packs (if installed)."""

    def pack_command(self, *args: Any) -> List[bytes]:
        if hiredis is None:  # pragma: no cover
            return super().pack_command(*args)
        # As redis-py's: a command name with a space in it ("CONFIG GET") is several words.
        first = args[0]
        if isinstance(first, str):
            if " " in first:
                args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as error:  # a value neither bytes, str, int nor float
            raise DataError(str(error)) from error
