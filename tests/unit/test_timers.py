"""The in-memory window of a partition's durable timers (streams.lifecycle.timers)."""

from __future__ import annotations

from streams.lifecycle.timers import REFIRE_MS, PartitionTimers, due_of, timer_key


def test_timers_fire_in_due_order_once_the_window_is_loaded() -> None:
    timers = PartitionTimers()
    late, early = timer_key(2_000, "r1", "wake"), timer_key(1_000, "r2", "wake")
    timers.add(early)  # not loaded yet: the store holds it, the heap does not
    assert timers.pop_due(5_000) == []
    timers.load([late, early], until_ms=10_000)
    assert due_of(early) == 1_000
    assert timers.pop_due(1_500) == [early]
    assert timers.pop_due(2_500) == [late]
    timers.add(timer_key(3_000, "r3", "wake"))  # inside the loaded window: heaped at once
    assert timers.pop_due(3_000) == [timer_key(3_000, "r3", "wake")]


def test_a_timer_whose_wake_was_not_applied_fires_again() -> None:
    timers = PartitionTimers()
    key = timer_key(1_000, "r1", "wake")
    timers.load([key], until_ms=60_000)
    assert timers.pop_due(1_000) == [key]
    assert timers.pop_due(1_000 + REFIRE_MS - 1) == []  # its wake may still be on its way
    assert timers.pop_due(1_000 + REFIRE_MS) == [key]  # lost with a worker: again
    timers.applied(key)
    assert timers.pop_due(1_000 + 3 * REFIRE_MS) == []
