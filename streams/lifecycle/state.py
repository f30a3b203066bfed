"""What a function partition stores about its runs: typed values and their keys.

One key space per function partition (a RocksDB database backed by a changelog
partition in the workers; a dict in tests). Keys are bytes with a one-letter
prefix per kind, so related keys sort together and prefix scans find them:

=========================  ==================================================
``r<run id>``              :class:`RunState`
``a<run id>``              active marker: the run was executing when last
                           persisted; resume it after a restart or rebalance
``m<run id>|<step id>``    a :class:`~streams.core.memo.Memo`
``t<due ms>|<run>|<kind>`` a timer (:mod:`streams.lifecycle.timers`)
``i<hash of value>``       the run holding an idempotency key
``q<slots>|<score>|...``   a run waiting for a concurrency slot
                           (:mod:`streams.lifecycle.limits`)
``l<hash of value>``       a rate limit's next free start (GCRA) for a key
``o<hash of value>``       the run holding a singleton key
``h<hash of value>``       a throttle's next free start (GCRA) for a key
``w<hash>|<score>|...``    a run waiting for its throttle
``d<hash of value>``       the run a debounce holds for a key (its last event)
``b<hash of value>``       a key's open batch: its run id, size, first event time
``e<hash>|<seq>``          an event of an open batch, in arrival order
=========================  ==================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.event import Event
from streams.lifecycle.records import Invoker

RUN = b"r"
ACTIVE = b"a"
MEMO = b"m"
TIMER = b"t"
IDEMPOTENCY = b"i"
RATE = b"l"
SINGLETON = b"o"
THROTTLE = b"h"
THROTTLED = b"w"
DEBOUNCE = b"d"
BATCH = b"b"
BATCHED = b"e"


def run_key(run_id: str) -> bytes:
    return RUN + run_id.encode()


def active_key(run_id: str) -> bytes:
    return ACTIVE + run_id.encode()


def memo_prefix(run_id: str) -> bytes:
    return MEMO + run_id.encode() + b"|"


def memo_key(run_id: str, step_id: str) -> bytes:
    return memo_prefix(run_id) + step_id.encode()


def idempotency_key(value: str) -> bytes:
    return IDEMPOTENCY + _digest(value)


def rate_key(value: str) -> bytes:
    return RATE + _digest(value)


def singleton_key(value: str) -> bytes:
    return SINGLETON + _digest(value)


def throttle_key(value: str) -> bytes:
    return THROTTLE + _digest(value)


def throttled_prefix(value: str) -> bytes:
    """The prefix of a key's throttle queue (entries sort by score, then offset)."""
    return THROTTLED + _digest(value) + b"|"


def throttled_key(value: str, score: int, offset: int, run_id: str) -> bytes:
    return throttled_prefix(value) + b"%016d|%012d|%s" % (max(score, 0), offset, run_id.encode())


def debounce_key(value: str) -> bytes:
    return DEBOUNCE + _digest(value)


def batch_key(value: str) -> bytes:
    return BATCH + _digest(value)


def batched_prefix(value: str) -> bytes:
    """The prefix of the events of a key's open batch (they sort by arrival)."""
    return BATCHED + _digest(value) + b"|"


def batched_key(value: str, seq: int) -> bytes:
    return batched_prefix(value) + b"%06d" % seq


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).hexdigest()[:32].encode()


class RunStatus(StrEnum):
    #: Created for an event with a future ``ts``; starts at its timer.
    SCHEDULED = "scheduled"
    #: Waiting for a concurrency slot (to start, or to go on after a sleep or wait).
    QUEUED = "queued"
    #: Executing steps (in this worker's memory, or to be resumed from memos).
    RUNNING = "running"
    SLEEPING = "sleeping"
    #: Waiting for an event or an invoked run.
    WAITING = "waiting"
    #: Its function failed an attempt; the next starts at its timer.
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Started no run: over its rate limit, or its singleton key was held (``skip``).
    SKIPPED = "skipped"
    #: Its event joined a batch: the batch's run (the run id of its first event)
    #: has it in ``ctx.events``. Stored only, so that a repeated start is a no-op.
    BATCHED = "batched"

    @property
    def terminal(self) -> bool:
        return self in (
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.SKIPPED,
            RunStatus.BATCHED,
        )


#: What a run suspends as, by the reason of its ``RunSuspended``.
SUSPENDED_AS = {"retry": RunStatus.RETRYING, "sleep": RunStatus.SLEEPING}


@dataclass(slots=True)
class RunState:
    """A run as stored under ``r<run id>``.

    ``persisted`` says whether it was ever written: a run that starts and ends
    within one burst of inline work is stored once, when it ends. A finished run
    keeps only what the retention sweep and a later duplicate need (the rest of
    its fields are dropped by :meth:`to_dict`).
    """

    function_id: str
    key: str
    status: RunStatus
    started_ms: int
    attempt: int = 0
    event: dict[str, Any] = field(default_factory=dict)
    #: A batch's events, ``event`` first (empty: the run has one event, ``event``).
    events: list[dict[str, Any]] = field(default_factory=list)
    invoker: Invoker | None = None
    ended_ms: int | None = None
    persisted: bool = False
    #: Its concurrency slot keys, one per limit, and its place in their queues (the
    #: event's ts minus its priority, ms): fixed when it starts.
    slots: tuple[str, ...] = ()
    score: int = 0
    #: The queue key it waits under while QUEUED.
    queued: str | None = None
    #: Its key value under the function's env-scoped limit (fixed when it starts),
    #: whether it holds a slot of it now, and whether it waits for the gate's grant.
    env: str | None = None
    env_held: bool = False
    env_wait: bool = False

    def batch(self) -> tuple[Event, ...]:
        """The batch's events (``ctx.events``); empty for a run of one event."""
        return tuple(Event.model_validate(e) for e in self.events)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status.value,
            "function_id": self.function_id,
            "key": self.key,
            "started_ms": self.started_ms,
            "attempt": self.attempt,
        }
        if self.status.terminal:
            out["ended_ms"] = self.ended_ms
            return out
        out["event"] = self.event
        if self.events:
            out["events"] = self.events
        out["persisted"] = True
        if self.invoker is not None:
            out["invoker"] = self.invoker.to_dict()
        if self.slots:
            out["slots"] = list(self.slots)
            out["score"] = self.score
        if self.queued is not None:
            out["queued"] = self.queued
        if self.env is not None:
            out["env"] = self.env
            out["env_held"] = self.env_held
            out["env_wait"] = self.env_wait
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunState:
        invoker = raw.get("invoker")
        ended = raw.get("ended_ms")
        return cls(
            function_id=str(raw["function_id"]),
            key=str(raw["key"]),
            status=RunStatus(raw["status"]),
            started_ms=int(raw.get("started_ms") or 0),
            attempt=int(raw.get("attempt") or 0),
            event=dict(raw.get("event") or {}),
            events=list(raw.get("events") or ()),
            invoker=Invoker.from_dict(invoker) if invoker else None,
            ended_ms=int(ended) if ended is not None else None,
            persisted=True,
            slots=tuple(str(k) for k in raw.get("slots") or ()),
            score=int(raw.get("score") or 0),
            queued=raw.get("queued"),
            env=raw.get("env"),
            env_held=bool(raw.get("env_held")),
            env_wait=bool(raw.get("env_wait")),
        )
