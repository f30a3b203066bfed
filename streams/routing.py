"""Which runs an event starts: the router's decisions, free of Kafka and Faust.

The router reads ``events`` (keyed by event ``id``, so duplicates meet on one
partition) and decides, per event, which functions start a run. Three facts
make that safe to repeat:

* Run ids are derived, not drawn: ``run_id(internal_id, function, epoch)`` is a
  ULID whose time is the event's acceptance time and whose randomness is a hash.
  A record that Kafka re-delivers after a crash yields the same run ids, and the
  function agent ignores a start whose run already exists.
* A duplicate (same ``id``, another ``internal_id``) within the dedup window
  starts no run of a function that already ran for that id.
* The epoch counts replays of a partition: a consumer-group reset below the
  offsets the router had committed bumps it, so replayed events get new run ids
  while dedup within the replay still holds (entries of older epochs are void).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.event import Event
from streams.ids import derived_ulid, ulid_millis


class Routable(Protocol):
    """What the router needs of a function (streams.app.Function provides it)."""

    @property
    def slug(self) -> str: ...

    def matches(self, event: Event) -> bool: ...

    def run_key(self, event: Event) -> str | None: ...

    def idempotency_key(self, event: Event) -> str | None: ...


def run_id(internal_id: str, function: str, epoch: int = 0) -> str:
    """The deterministic run id of ``function``'s run for one accepted event."""
    return derived_ulid(ulid_millis(internal_id), internal_id, function, str(epoch))


@dataclass
class DedupEntry:
    """What the router remembers of one event ``id`` (kept for the dedup window)."""

    internal_id: str
    epoch: int
    first_seen_ms: int
    functions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "internal_id": self.internal_id,
            "epoch": self.epoch,
            "first_seen_ms": self.first_seen_ms,
            "functions": self.functions,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DedupEntry:
        return cls(
            internal_id=raw["internal_id"],
            epoch=int(raw["epoch"]),
            first_seen_ms=int(raw["first_seen_ms"]),
            functions=list(raw.get("functions", [])),
        )


#: A dedup window spans this many generations of dedup keys (see :class:`DedupKeys`).
GENERATIONS = 2


@dataclass(frozen=True)
class DedupKeys:
    """Where dedup entries live: ``g<generation>|<event id>``, generations of a window / 2.

    An entry is stored under the generation of its ``first_seen_ms``, so no expiry
    index is needed: an entry still inside the window lies in one of the last three
    generations (looked up newest first), and every key of an older generation is past
    its window and can go, a generation at a time. An entry is thus deleted between one
    and one and a half windows after it was first seen, and costs one changelog record
    (plus its tombstone) instead of an entry and an expiry key.
    """

    window_ms: int

    @property
    def generation_ms(self) -> int:
        return max(self.window_ms // GENERATIONS, 1)

    def generation(self, at_ms: int) -> int:
        return at_ms // self.generation_ms

    def key(self, event_key: bytes, first_seen_ms: int) -> bytes:
        return b"g%012d|" % self.generation(first_seen_ms) + event_key

    def lookups(self, event_key: bytes, now_ms: int) -> list[bytes]:
        """The keys an entry still inside its window may have, newest first."""
        now = self.generation(now_ms)
        return [b"g%012d|" % g + event_key for g in range(now, now - GENERATIONS - 1, -1)]

    def expired_below(self, now_ms: int) -> bytes:
        """Keys below this one belong to generations wholly past the window."""
        return b"g%012d" % (self.generation(now_ms) - GENERATIONS)

    def expires_at(self, key: bytes) -> int:
        """When every entry of ``key``'s generation is past the window."""
        return (int(key[1:13]) + GENERATIONS + 1) * self.generation_ms


@dataclass(frozen=True)
class Start:
    """Start ``function``'s run ``run_id``; ``key`` picks its partition.

    ``idempotency`` is the value of the function's idempotency expression: the
    function agent starts at most one run per value per dedup window. Without a
    concurrency key such starts are keyed by that value, so they meet on one
    partition.
    """

    function: str
    run_id: str
    key: str
    idempotency: str | None = None


@dataclass(frozen=True)
class Decision:
    starts: list[Start]
    #: The entry to store under the event's id, or None when nothing changed.
    dedup: DedupEntry | None
    duplicate_of: str | None = None


def remembers(event: Event) -> bool:
    """Whether the router keeps a dedup entry for ``event``'s ``id``.

    Only ids a sender gave are deduplicated (as in Inngest). An event sent without
    one took its ``internal_id`` as ``id``: no other event carries it, and a crash
    re-delivery of the same record is caught by the derived run ids. Not remembering
    it saves the table lookups and two changelog records (the entry, then its
    deletion) per event.
    """
    return event.id != event.internal_id


def route(
    event: Event,
    functions: Iterable[Routable],
    entry: DedupEntry | None,
    *,
    epoch: int,
    now_ms: int,
    window_ms: int,
) -> Decision:
    """Decide the runs ``event`` starts, given what is remembered of its ``id``."""
    internal_id = event.internal_id or event.key
    live = (
        entry
        if entry and entry.epoch == epoch and now_ms - entry.first_seen_ms < window_ms
        else None
    )
    redelivery = live is not None and live.internal_id == internal_id
    already = set(live.functions) if live and not redelivery else set()

    starts: list[Start] = []
    for fn in functions:
        if fn.slug in already or not fn.matches(event):
            continue
        rid = run_id(internal_id, fn.slug, epoch)
        idem = fn.idempotency_key(event)
        key = fn.run_key(event) or (f"idempotency:{idem}" if idem is not None else rid)
        starts.append(Start(fn.slug, rid, key, idem))

    if not starts and live is None:
        # Nothing ran for this id: nothing to remember (a later duplicate may still
        # start a function that has not run for it, which is the rule anyway).
        return Decision([], None)
    if redelivery:
        # Same record again (crash re-delivery): same run ids; the agents drop repeats.
        return Decision(starts, None)
    if live is None:
        if not remembers(event):
            return Decision(starts, None)
        new = DedupEntry(internal_id, epoch, now_ms, [s.function for s in starts])
        return Decision(starts, new)
    # A duplicate id: only functions that have not run for it yet start.
    if not starts:
        return Decision([], None, duplicate_of=live.internal_id)
    live.functions.extend(s.function for s in starts)
    return Decision(starts, live, duplicate_of=live.internal_id)
