"""How often the garbage collector runs: rarely enough that a server holding thousands of
connections, or a storm of them reconnecting, does not pay for them twice.

Every open connection is about 117 heap blocks, many of them objects the cyclic collector
tracks (Tornado's handler, stream, protocol, futures and ours: ``bench/memory_profile.py``),
and they live as long as the connection. CPython collects its youngest generation every
700 net allocations, the middle one every tenth of those, and the whole heap every tenth of
those once it grew by a quarter. Measured with CPython's defaults: opening 19,800
connections the server spent 25 s of its 30 s of CPU in the collector (16 full
collections, the longest 3.1 s with the event loop stopped; ``bench/held_steps.py`` timing
each collection through ``gc.callbacks``), and on a 4,000-page reconnect storm
(``bench/compare.py --only storm``) the collector took 0.9 s of the restarted server's
4.2 s of CPU. Nearly all of those objects are connections that live on, and what they
leave behind is freed by reference counting when they close; the collector is for the
rare cycles.

``settle()`` runs once the server has started (imports done, history loaded): it moves
everything alive then out of the collector's sight for good (``gc.freeze``) and makes
collections rarer (``THRESHOLDS``): the 19,800 connections then cost 2 full collections
and 7.6 s in the collector, the storm 0.33 s instead of 0.91. The price is bounded: at
most ``THRESHOLDS[0]`` young objects (a few MB) wait for a collection instead of 700.
``shutting_down()`` stops collecting for the seconds left before the exit: what is alive
then lives until the exit, and a full collection (over 2 s at 19,800 connections) would
only eat the budget of the closing handshakes and the closers.
"""

import gc

# Net allocations between two collections of the youngest generation (CPython: 700), and
# collections of each generation between two of the next (CPython: 10, 10).
THRESHOLDS = (20_000, 10, 10)


def settle(thresholds: tuple[int, int, int] = THRESHOLDS) -> tuple[int, int, int]:
    """Once started: what is alive now is never scanned again, and collections are rarer;
    return the thresholds now. A higher youngest threshold already set (``gc.set_threshold``
    in a wrapper script) is kept, and so is ``0``, the collector switched off on purpose."""
    gc.collect()
    gc.freeze()
    young = gc.get_threshold()[0]
    if 0 < young < thresholds[0]:
        gc.set_threshold(*thresholds)
    return gc.get_threshold()


def shutting_down() -> None:
    """At the start of a shutdown: the connections and everything else alive now last until
    the exit, so no collection need scan them again."""
    gc.freeze()
    gc.disable()
