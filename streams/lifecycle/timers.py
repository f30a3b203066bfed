"""Durable timers: state keys ordered by due time, fired through the run journal.

A timer is a key ``t<due ms, 13 digits>|<run id>|<kind>`` (so the store keeps
them sorted by due time) whose value names the run, its routing key and what the
timer does (:class:`TimerKind`). Only the timers due within the next ``window``
live in an in-memory heap per partition; the rest stay in the store and are
loaded as the window slides, so a partition holding millions of timers (sleeping
runs) keeps a small heap.

Firing a timer sends a ``wake`` record to the function's journal; the lifecycle
deletes the key when it applies the wake. A timer fired but not applied fires
again: after :data:`REFIRE_MS` (its wake record may have been lost with a worker
that died before sending it), and after a restart or rebalance (the key is still
in the store). Wakes are idempotent: a wake whose key is gone is ignored.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import StrEnum

PREFIX = b"t"
#: A fired timer whose wake was not applied within this long fires again.
REFIRE_MS = 10_000


class TimerKind(StrEnum):
    #: Activate the run: a retry backoff, a sleep, a wait's or invoke's timeout, a
    #: future-dated start.
    WAKE = "wake"
    #: ``Timeouts(finish=...)``: cancel the run.
    TIMEOUT = "timeout"
    #: The idempotency key's window is over: forget it.
    IDEMPOTENCY = "idempotency"
    #: A throttle lets the head of a key's queue start.
    THROTTLE = "throttle"
    #: A debounce's wait is over: its run starts (with the last event).
    DEBOUNCE = "debounce"
    #: A batch's timeout is over: its run starts with the events it has.
    BATCH = "batch"


def timer_key(due_ms: int, run_id: str, kind: str) -> bytes:
    return b"t%013d|%s|%s" % (max(due_ms, 0), run_id.encode(), kind.encode())


def due_of(key: bytes) -> int:
    return int(key[1:14])


def due_prefix(due_ms: int) -> bytes:
    """The smallest key of a timer due at ``due_ms`` (for range scans)."""
    return PREFIX + b"%013d" % max(due_ms, 0)


@dataclass
class PartitionTimers:
    """The near-future timers of one partition, plus how far the store was read."""

    heap: list[tuple[int, bytes]] = field(default_factory=list)
    loaded_until_ms: int = -1
    #: Timers fired and not applied yet -> when they were fired.
    fired: dict[bytes, int] = field(default_factory=dict)
    #: When the partition is next swept for runs past their retention.
    next_sweep_ms: int = 0

    def add(self, key: bytes) -> None:
        due = due_of(key)
        if due <= self.loaded_until_ms:
            heapq.heappush(self.heap, (due, key))

    def applied(self, key: bytes) -> None:
        self.fired.pop(key, None)

    def pop_due(self, now_ms: int) -> list[bytes]:
        """Timers to fire now: newly due ones, and fired ones whose wake never came."""
        out = []
        while self.heap and self.heap[0][0] <= now_ms:
            _, key = heapq.heappop(self.heap)
            if key not in self.fired:
                self.fired[key] = now_ms
                out.append(key)
        if self.fired:
            for key, at in self.fired.items():
                if now_ms - at >= REFIRE_MS:
                    self.fired[key] = now_ms
                    out.append(key)
        return out

    def needs_loading(self, now_ms: int, window_ms: int) -> bool:
        return self.loaded_until_ms < now_ms + window_ms // 2

    def load(self, keys: list[bytes], until_ms: int) -> None:
        """Add timers read from the store with due < ``until_ms``; mark the window loaded."""
        for key in keys:
            due = due_of(key)
            if due > self.loaded_until_ms:
                heapq.heappush(self.heap, (due, key))
        self.loaded_until_ms = until_ms
