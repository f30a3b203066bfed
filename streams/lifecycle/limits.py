"""Concurrency limits on one function partition: who holds a slot, who waits next.

A function's concurrency constraints (``Concurrency(limit, key)``, at most two)
count the runs *executing steps*: a run that sleeps, waits for an event or an
invoke, or waits out a retry's backoff holds no slot. Each run has a *slot key*
per constraint - the value of the constraint's CEL ``key`` for its event, or
``""`` for a key-less constraint (or a key that cannot be evaluated) - fixed when
it starts and kept in its state.

Every run a constraint counts together lies on one journal partition
(``Function.run_key`` routes them so), so one :class:`Gate` per partition counts
them all, in memory, from the partition's live runs. Runs that may not start yet
wait in a durable queue (``q`` keys of the partition's state, see
:func:`queue_key`) mirrored here: one FIFO per tuple of slot keys, ordered by
*score* - the event's ``ts`` in ms, minus its priority - then by journal offset.

:class:`Gcra` is the arithmetic of rate limits and throttles.

This module decides, and stores nothing; :class:`~streams.lifecycle.machine.PartitionLifecycle`
writes what it decides.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

QUEUE = b"q"

Slots = tuple[str, ...]


@dataclass(frozen=True, order=True, slots=True)
class Queued:
    """A run waiting for a slot: ``score`` (ms), then ``offset``, order the queue."""

    score: int
    offset: int
    run_id: str
    slots: Slots = field(compare=False)

    @property
    def key(self) -> bytes:
        return queue_key(self.slots, self.score, self.offset, self.run_id)


def queue_key(slots: Slots, score: int, offset: int, run_id: str) -> bytes:
    """``q<hash of the slot keys>|<score>|<offset>|<run id>``: a queue's entries sort
    by score then offset, and one prefix scan reads every queue of the partition."""
    digest = hashlib.sha256("\x1f".join(slots).encode()).hexdigest()[:16]
    return b"%s%s|%016d|%012d|%s" % (QUEUE, digest.encode(), max(score, 0), offset, run_id.encode())


@dataclass(frozen=True, slots=True)
class Gcra:
    """The generic cell rate algorithm of rate limits and throttles, for one key: a
    start moves the key's next free start (``tat``, ms) on by ``interval``, and may not
    put it more than ``bound`` ahead of now (``bound = period``: ``limit`` starts at
    once; ``bound = interval``: evenly spread)."""

    interval: float
    bound: float

    def take(self, stored: dict[str, Any] | None, run_id: str, now: int) -> dict[str, Any] | None:
        """The key's entry after ``run_id`` starts now, or None if it may not. The entry
        names the last run that took a place: a crash can lose the writes after it (the
        run's state) but no later run's, so it is the only run read again, and keeps
        its place."""
        if stored is not None and stored.get("run_id") == run_id:
            return stored
        tat = max(float(stored["tat"]) if stored is not None else 0.0, float(now))
        if tat + self.interval - now > self.bound:
            return None
        return {"tat": tat + self.interval, "run_id": run_id}

    def due(self, stored: dict[str, Any] | None, now: int) -> int:
        """When the next start may be taken (at least ``now + 1``: it may not now)."""
        tat = float(stored["tat"]) if stored is not None else float(now)
        return max(now + 1, math.ceil(tat + self.interval - self.bound))


class Gate:
    """The slots held and the runs queued on one partition, for ``limits`` (one limit
    per constraint, in the order of the slot keys). ``keyless``: a constraint has no
    key, so its slot is shared by every queue of the partition."""

    def __init__(self, limits: Sequence[int], *, keyless: bool = False) -> None:
        self.limits = tuple(limits)
        self.keyless = keyless
        #: (constraint index, slot key) -> runs of this partition holding a slot.
        self.holding: Counter[tuple[int, str]] = Counter()
        self.queues: dict[Slots, list[Queued]] = {}
        #: Run ids queued (a cancelled run leaves its heap entry behind, skipped later).
        self.queued: set[str] = set()
        self.loaded = False

    # --- slots ------------------------------------------------------------------------

    def has_room(self, slots: Slots) -> bool:
        return all(
            self.holding[(i, key)] < limit
            for i, (key, limit) in enumerate(zip(slots, self.limits, strict=True))
        )

    def hold(self, slots: Slots) -> None:
        for i, key in enumerate(slots):
            self.holding[(i, key)] += 1

    def free(self, slots: Slots) -> None:
        for i, key in enumerate(slots):
            held = self.holding[(i, key)] - 1
            if held > 0:
                self.holding[(i, key)] = held
            else:
                del self.holding[(i, key)]

    def clear(self) -> None:
        """The partition's runs left memory (a revoke): nothing is held here any more."""
        self.holding.clear()

    # --- the queue ----------------------------------------------------------------------

    def load(self, entries: Iterable[Queued]) -> None:
        """The queue as stored (read once, before the first decision)."""
        for entry in entries:
            self.push(entry)
        self.loaded = True

    def push(self, entry: Queued) -> None:
        if entry.run_id in self.queued:
            return
        heapq.heappush(self.queues.setdefault(entry.slots, []), entry)
        self.queued.add(entry.run_id)

    def discard(self, run_id: str) -> None:
        """``run_id`` left the queue another way (cancelled, timed out)."""
        self.queued.discard(run_id)

    def waiting(self, slots: Slots) -> bool:
        """Whether a run with these slot keys is queued (a newcomer goes behind it)."""
        return bool(self._trimmed(slots))

    def next(self, freed: Slots | None = None) -> Queued | None:
        """The queued run to start now, taken off the queue, or None.

        ``freed``: the slot keys of the run that just let go. When every constraint
        has one key, only runs with those slot keys can have gained room; otherwise
        (a key-less constraint, two keyed ones whose second key other queues share,
        or after a resume) every queue is looked at, and the head with the lowest
        score goes first.
        """
        if freed is not None and not self.keyless and len(self.limits) == 1:
            candidates: Iterable[Slots] = (freed,)
        else:
            candidates = list(self.queues)
        best: Queued | None = None
        for slots in candidates:
            queue = self._trimmed(slots)
            if queue and self.has_room(slots) and (best is None or queue[0] < best):
                best = queue[0]
        if best is None:
            return None
        heapq.heappop(self.queues[best.slots])
        self.queued.discard(best.run_id)
        if not self.queues[best.slots]:
            del self.queues[best.slots]
        return best

    def _trimmed(self, slots: Slots) -> list[Queued]:
        queue = self.queues.get(slots)
        if queue is None:
            return []
        while queue and queue[0].run_id not in self.queued:
            heapq.heappop(queue)  # cancelled while queued
        if not queue:
            del self.queues[slots]
        return queue
