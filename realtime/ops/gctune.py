"""The garbage collector's thresholds, set for a process holding many connections.

Every open connection is about 117 heap blocks, many of them objects the cyclic garbage
collector tracks (Tornado's handler, stream, protocol, futures and ours:
``bench/memory_profile.py``), and they live as long as the connection. With CPython's
default thresholds (700, 10, 10) a storm of new connections triggers a young collection
every few connections and, each time the heap has grown by a quarter, a full collection
that walks every tracked object: opening 19,800 connections the server spent 25 s of its
30 s of CPU in the collector (16 full collections, 20 s, the longest 3.1 s with the event
loop stopped; ``bench/held_steps.py`` with ``gc.callbacks`` timing each collection, wall
time on the loaded 2-core VM).

Raising the youngest generation's threshold tenfold makes the older generations' turns
come ten times fewer allocations apart as well: the same opening then made 2 full
collections (1.9 to 2.9 s in all) and spent 7.6 s in the collector instead of 25. The
price is bounded: at most ``GEN0_THRESHOLD`` young objects (a few hundred KB) wait for a
collection instead of 700, and cyclic garbage that reached the oldest generation waits
for about 700,000 net allocations instead of 70,000 (CPython still runs a full collection
only once the survivors pending grow past a quarter of the heap).
"""

import gc

# Net allocations of tracked objects between two young collections (CPython's default:
# 700); the older generations keep their own thresholds, counted in young collections.
GEN0_THRESHOLD = 7000


def tune_garbage_collector(gen0: int = GEN0_THRESHOLD) -> tuple[int, int, int]:
    """Raise the youngest generation's threshold to ``gen0``; return the thresholds now.

    A higher threshold already set (``gc.set_threshold`` in a wrapper script) is kept, and so
    is ``0``, the collector switched off on purpose."""
    young, middle, old = gc.get_threshold()
    if 0 < young < gen0:
        gc.set_threshold(gen0, middle, old)
    return gc.get_threshold()
