"""Memos: what a run remembers of each step, keyed by the hashed step id.

A memo is one of four states: ``completed`` (the output to return on replay),
``failed`` (final error: replay raises ``StepError``), ``retrying`` (attempts
failed so far and when the next one is due), or ``waiting`` (a sleep, a wait
for an event or an invoke under way: ``extra`` holds ``due_ms`` and the spec).
The edge stores them (a RocksDB table per function, keyed by run id + step id)
and hands them to the next activation; :func:`apply_effect` is the one place
that turns effects into memos, shared by every edge so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.core.effects import Effect, ErrorInfo, StepCompleted, StepFailed, StepWaiting

MemoStatus = Literal["completed", "failed", "retrying", "waiting"]


@dataclass(slots=True)
class Memo:
    """One step of one run, as remembered between activations.

    ``attempts`` counts the attempts made so far (including the one that
    produced this memo); ``started_ms``/``ended_ms`` time the latest attempt.
    """

    step_id: str
    name: str
    status: MemoStatus
    output: Any = None
    error: ErrorInfo | None = None
    attempts: int = 1
    started_ms: int = 0
    ended_ms: int = 0
    retry_at_ms: int | None = None
    op: str = "run"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the edge encodes it as JSON or Avro)."""
        return {
            "step_id": self.step_id,
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "error": self.error.to_dict() if self.error else None,
            "attempts": self.attempts,
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "retry_at_ms": self.retry_at_ms,
            "op": self.op,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Memo:
        error = raw.get("error")
        return cls(
            step_id=raw["step_id"],
            name=raw["name"],
            status=raw["status"],
            output=raw.get("output"),
            error=ErrorInfo.from_dict(error) if error else None,
            attempts=int(raw.get("attempts", 1)),
            started_ms=int(raw.get("started_ms", 0)),
            ended_ms=int(raw.get("ended_ms", 0)),
            retry_at_ms=raw.get("retry_at_ms"),
            op=raw.get("op", "run"),
            extra=dict(raw.get("extra") or {}),
        )


def memo_from_effect(effect: Effect) -> Memo | None:
    """The memo a step effect leaves, or None for effects that leave none."""
    if isinstance(effect, StepCompleted):
        return Memo(
            step_id=effect.step_id,
            name=effect.name,
            status="completed",
            output=effect.output,
            attempts=effect.attempt + 1,
            started_ms=effect.started_ms,
            ended_ms=effect.ended_ms,
            op=effect.op,
        )
    if isinstance(effect, StepFailed):
        return Memo(
            step_id=effect.step_id,
            name=effect.name,
            status="failed" if effect.final else "retrying",
            error=effect.error,
            attempts=effect.attempt + 1,
            started_ms=effect.started_ms,
            ended_ms=effect.ended_ms,
            retry_at_ms=effect.retry_at_ms,
            op=effect.op,
        )
    if isinstance(effect, StepWaiting):
        return Memo(
            step_id=effect.step_id,
            name=effect.name,
            status="waiting",
            attempts=0,
            started_ms=effect.started_ms,
            op=effect.op,
            extra={"due_ms": effect.due_ms, "spec": effect.spec},
        )
    return None


def due_ms(memo: Memo) -> int | None:
    """When a ``waiting`` memo completes on its own (None for other memos)."""
    if memo.status != "waiting":
        return None
    return int(memo.extra["due_ms"])


def completion(
    run_id: str,
    memo: Memo,
    now_ms: int,
    *,
    output: Any = None,
    error: ErrorInfo | None = None,
) -> StepCompleted | StepFailed:
    """The effect that completes a ``waiting`` memo from outside the run.

    What the edge applies when a wait's event arrives (``output`` = the event)
    or an invoked run ends (its result, or ``error``: a final failure).
    """
    if error is not None:
        return StepFailed(
            run_id, memo.step_id, memo.name, error, 0, None, memo.started_ms, now_ms, memo.op
        )
    return StepCompleted(
        run_id, memo.step_id, memo.name, output, memo.started_ms, now_ms, 0, memo.op
    )


def apply_effect(memos: MutableMapping[str, Memo], effect: Effect) -> Memo | None:
    """Record ``effect`` in ``memos`` (keyed by hashed step id); return the new memo."""
    memo = memo_from_effect(effect)
    if memo is not None:
        memos[memo.step_id] = memo
    return memo
