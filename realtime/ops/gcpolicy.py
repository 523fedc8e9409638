"""How often the garbage collector runs: rarely enough that a storm of connections is not
paid for twice.

CPython collects its youngest generation every 700 net allocations and, every tenth of
those, the middle one; every tenth of those, the whole heap once it grew by a quarter. A
server holding thousands of connections holds millions of objects, and a reconnect storm
allocates hundreds per page: measured on a 4,000-page storm (``bench/compare.py --only
storm``), the collector took 0.9 s of the restarted server's 4.2 s of CPU, most of it in
full collections of the growing heap. Nearly all of those objects are connections that
live on, and what they leave behind is freed by reference counting when they close; the
collector is for the rare cycles.

``settle()`` runs once the server has started (imports done, history loaded): it moves
everything alive then out of the collector's sight for good (``gc.freeze``), and makes
collections less frequent (``THRESHOLDS``). ``shutdown()`` freezes again at the start of
the shutdown: what is alive then lives until the exit.
"""

import gc

# Net allocations between two collections of the youngest generation (CPython: 700), and
# collections of each generation between two of the next (CPython: 10, 10): garbage cycles
# wait a little longer, a few MB at most, for about twenty times fewer collections.
THRESHOLDS = (20_000, 10, 10)


def settle() -> None:
    """Once started: what is alive now is never scanned again; collections are rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


def shutting_down() -> None:
    """At the start of a shutdown: the connections and everything else alive now last until
    the exit, so the collections the closing allocations trigger need not scan them."""
    gc.freeze()
