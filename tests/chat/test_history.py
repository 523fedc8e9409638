"""Bounded history without a server: count and byte bounds per history, one shared budget."""

from dataclasses import dataclass

from realtime.chat.history import Budget, History


@dataclass(eq=False)
class Item:
    """An entry of a given size; ``name`` tells items apart in assertions."""

    name: str
    size: int
    held: bool = False


def names(history):
    return [item.name for item in history]


def test_history_keeps_at_most_its_count():
    """Past max_count the oldest entries go."""
    history = History(max_count=3, max_bytes=1000)
    for n in range(5):
        history.append(Item(str(n), 1))
    assert names(history) == ["2", "3", "4"]


def test_history_keeps_at_most_its_bytes():
    """Past max_bytes the oldest entries go, and the byte count says what is held."""
    history = History(max_count=100, max_bytes=250)
    for n in range(5):
        history.append(Item(str(n), 100))
    assert names(history) == ["3", "4"] and history.bytes == 200


def test_entry_larger_than_the_bound_is_not_held():
    """An entry larger than max_bytes on its own is refused, and reported as dropped."""
    dropped = []
    history = History(max_count=10, max_bytes=100, on_drop=dropped.append)
    history.append(Item("small", 10))
    big = Item("big", 101)
    history.append(big)
    assert names(history) == ["small"] and dropped == [big] and not big.held


def test_budget_drops_the_oldest_entry_of_any_history():
    """Over the shared budget, the entry stored first goes, whichever history holds it."""
    budget = Budget(max_bytes=300, entry_overhead=0)
    quiet = History(max_count=100, max_bytes=1000, budget=budget)
    busy = History(max_count=100, max_bytes=1000, budget=budget)
    quiet.append(Item("q0", 100))
    busy.append(Item("b0", 100))
    quiet.append(Item("q1", 100))
    busy.append(Item("b1", 100))
    assert names(quiet) == ["q1"] and names(busy) == ["b0", "b1"] and budget.bytes == 300


def test_budget_counts_only_what_is_held():
    """Entries a history drops by its own bounds give their bytes back to the budget."""
    budget = Budget(max_bytes=10_000, entry_overhead=10)
    history = History(max_count=2, max_bytes=10_000, budget=budget)
    for n in range(10):
        history.append(Item(str(n), 100))
    assert budget.bytes == 2 * (100 + 10)


def test_budget_queue_stays_bounded_when_histories_drop_their_own():
    """Entries dropped by their own history do not pile up in the budget's queue."""
    budget = Budget(max_bytes=10**9)
    history = History(max_count=5, max_bytes=10**9, budget=budget)
    for n in range(10_000):
        history.append(Item(str(n), 1))
    assert budget.queued <= 2 * 5 + 64 + 1


def test_clear_gives_every_byte_back():
    """Clearing a history frees its bytes in the budget."""
    budget = Budget(max_bytes=10_000)
    history = History(max_count=10, max_bytes=1000, budget=budget)
    for n in range(3):
        history.append(Item(str(n), 100))
    history.clear()
    assert len(history) == 0 and budget.bytes == 0
