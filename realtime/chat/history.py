"""Message history held in memory, bounded in bytes as well as in count.

A ``History`` is one room's recent messages, oldest first: past its count or its byte bound
it drops its oldest. A ``Budget`` bounds the bytes of every history of the process
together: once they pass it, it drops the oldest message of all (the one stored first,
whichever room holds it), so a busy room cannot push memory past the bound and a quiet room
keeps its messages until they are the oldest anywhere. A message's size is what the caller
measured (chat: its frame encoded as JSON, ``len(encode(frame))``), so a message of
4,000 control characters, escaped to 24 KB, counts as 24 KB. The budget, which bounds
memory, adds a fixed ``entry_overhead`` to each: a short chat message takes about 110
bytes as JSON but some 580 bytes of Python objects (measured with tracemalloc, CPython 3.11).
It also counts an entry's ``memory`` where that is more than its size: CPython keeps a text
with one emoji in 4 bytes a character, and a UTF-8 copy once it was encoded, so 4,000 ASCII
letters and an emoji are 4 KB as JSON but 20 KB in memory (``bench/history_rss.py``
measures the whole process).

The budget keeps one queue of entries in the order they were stored. An entry its own
history dropped first stays queued, marked no longer ``held``, until it reaches the front or
the queue is compacted (when such entries outnumber the held ones), so storing and dropping
are O(1) amortised: no step looks at every room.
"""

from collections import deque
from typing import Callable, Generic, Iterator, Optional, Protocol, TypeVar


class Entry(Protocol):
    """What a history holds: anything with a size in bytes and a ``held`` flag."""

    size: int  # bytes it stands for
    held: bool  # True while a history holds it
    # Optional: ``memory``, bytes its objects take when more than ``size`` (entry_cost).


E = TypeVar("E", bound=Entry)

# Queued entries that are no longer held, beyond twice the held ones, before a compaction.
_COMPACT_SLACK = 64


# What one entry costs the budget besides its size: the objects holding it.
DEFAULT_ENTRY_OVERHEAD = 512


def entry_cost(entry: Entry, overhead: int) -> int:
    """What ``entry`` counts for in a ``Budget``: its size, or its ``memory`` if it has one
    that is larger, plus ``overhead``."""
    return max(entry.size, getattr(entry, "memory", 0)) + overhead


class Budget:
    """Bytes held by every history sharing this budget; drops the oldest past ``max_bytes``.

    Each entry counts as ``entry_cost``: its size (or memory) plus ``entry_overhead``.
    """

    def __init__(self, max_bytes: int, entry_overhead: int = DEFAULT_ENTRY_OVERHEAD) -> None:
        self.max_bytes = max_bytes
        self.entry_overhead = entry_overhead
        self.bytes = 0  # bytes the entries held now count for
        self._held = 0  # entries held now
        self._queue: deque[tuple["History", Entry]] = deque()  # oldest first

    @property
    def queued(self) -> int:
        """Entries in the queue, dropped ones included (at most about twice the held ones)."""
        return len(self._queue)

    def add(self, history: "History", entry: Entry) -> None:
        """Count an entry ``history`` just stored; drop the oldest entries while over."""
        self._queue.append((history, entry))
        self.bytes += entry_cost(entry, self.entry_overhead)
        self._held += 1
        while self.bytes > self.max_bytes and self._queue:
            owner, oldest = self._queue.popleft()
            if oldest.held:
                # A history drops from its front only, so its first held entry queued here
                # is its oldest.
                assert owner.oldest() is oldest
                owner.drop_oldest()  # comes back through released()

    def released(self, entry: Entry) -> None:
        """A history no longer holds ``entry``: its bytes are free."""
        self.bytes -= entry_cost(entry, self.entry_overhead)
        self._held -= 1
        if len(self._queue) > 2 * self._held + _COMPACT_SLACK:
            self._queue = deque(item for item in self._queue if item[1].held)


class History(Generic[E]):
    """One room's entries, oldest first, at most ``max_count`` of them and ``max_bytes``.

    Args:
        budget: the process-wide byte bound this history shares, if any.
        on_drop: called with every entry dropped (or refused for its size), once the
            history no longer holds it.
    """

    def __init__(
        self,
        max_count: int,
        max_bytes: int,
        budget: Optional[Budget] = None,
        on_drop: Optional[Callable[[E], None]] = None,
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0  # bytes of the entries held
        self._budget = budget
        self._on_drop = on_drop
        self._entries: deque[E] = deque()

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries)

    def __reversed__(self) -> Iterator[E]:
        return reversed(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def oldest(self) -> Optional[E]:
        """The oldest entry held, or None."""
        return self._entries[0] if self._entries else None

    def newest(self) -> Optional[E]:
        """The newest entry held, or None."""
        return self._entries[-1] if self._entries else None

    def append(self, entry: E) -> None:
        """Hold ``entry`` as the newest, dropping the oldest past either bound. An entry
        larger than ``max_bytes`` on its own is not held at all."""
        if entry.size > self.max_bytes or self.max_count < 1:
            entry.held = False
            if self._on_drop is not None:
                self._on_drop(entry)
            return
        entry.held = True
        self._entries.append(entry)
        self.bytes += entry.size
        if self._budget is not None:
            self._budget.add(self, entry)  # may drop from this history too, even ``entry``
        while len(self._entries) > self.max_count or self.bytes > self.max_bytes:
            self._drop()

    def drop_oldest(self) -> None:
        """Drop the oldest entry (the budget's way to free bytes)."""
        self._drop()

    def clear(self) -> None:
        """Drop every entry, giving their bytes back to the budget."""
        while self._entries:
            self._drop()

    def _drop(self) -> None:
        entry = self._entries.popleft()
        entry.held = False
        self.bytes -= entry.size
        if self._budget is not None:
            self._budget.released(entry)
        if self._on_drop is not None:
            self._on_drop(entry)
