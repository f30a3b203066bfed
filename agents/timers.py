"""Durable timers: RocksDB-indexed by due time, fired through the run journal.

A timer is a table key ``t<due ms, 13 digits>|<run id>|<kind>`` (so RocksDB keeps
them sorted by due time) whose value names the run and its routing key. Only the
timers due within the next ``window`` live in an in-memory heap per partition;
the rest stay in RocksDB and are loaded as the window slides, so a worker holding
millions of timers (sleeping runs, retention expiries) keeps a small heap.

Firing a timer sends a ``wake`` record to the function's topic (a write from
outside the agent loop must come back through the topic, FAUST.md); the agent
deletes the key when it applies the wake, inside its stream iteration. A timer
fired but not yet deleted when a worker dies fires again after recovery: wakes
are idempotent (a wake whose key is gone is ignored).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

PREFIX = b"t"


def timer_key(due_ms: int, run_id: str, kind: str) -> bytes:
    return b"t%013d|%s|%s" % (max(due_ms, 0), run_id.encode(), kind.encode())


def due_of(key: bytes) -> int:
    return int(key[1:14])


@dataclass
class PartitionTimers:
    """The near-future timers of one partition, plus how far RocksDB was read."""

    heap: list[tuple[int, bytes]] = field(default_factory=list)
    loaded_until_ms: int = -1
    fired: set[bytes] = field(default_factory=set)
    ready: bool = False
    #: When the partition is next swept for runs past their retention.
    next_sweep_ms: int = 0

    def add(self, key: bytes) -> None:
        due = due_of(key)
        if due <= self.loaded_until_ms:
            heapq.heappush(self.heap, (due, key))

    def discard(self, key: bytes) -> None:
        self.fired.discard(key)

    def pop_due(self, now_ms: int) -> list[bytes]:
        out = []
        while self.heap and self.heap[0][0] <= now_ms:
            _, key = heapq.heappop(self.heap)
            if key not in self.fired:
                self.fired.add(key)
                out.append(key)
        return out

    def load(self, keys: list[bytes], until_ms: int) -> None:
        """Add timers read from RocksDB with due < ``until_ms``; mark the window loaded."""
        for key in keys:
            due = due_of(key)
            if due > self.loaded_until_ms:
                heapq.heappush(self.heap, (due, key))
        self.loaded_until_ms = until_ms
