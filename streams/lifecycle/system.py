"""What a run says when it ends: its system events and its run-history record.

System events go to topics named after them (``inngest.function.finished`` ...),
with Inngest's payload. Their ids are derived from the run id and the event
name, so a run that is announced again after a crash (allowed, at least once)
carries the same ids and consumers can drop the repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from streams import topics
from streams.core.memo import Memo
from streams.event import Event
from streams.ids import derived_ulid, ulid_millis
from streams.lifecycle.state import RunStatus
from streams.serde.internal import compact_json

log = logging.getLogger(__name__)

NAMES: Mapping[RunStatus, tuple[str, ...]] = {
    RunStatus.COMPLETED: (topics.FINISHED,),
    RunStatus.FAILED: (topics.FINISHED, topics.FAILED),
    RunStatus.CANCELLED: (topics.CANCELLED,),
}
#: The error of a cancelled run (Inngest's message).
CANCELLED_ERROR = {"name": "FunctionCancelledError", "message": "function cancelled", "stack": None}
#: Step outputs are cut to this many characters in run history records.
HISTORY_OUTPUT_CHARS = 2000


def system_event_id(run_id: str, name: str) -> tuple[str, str]:
    """(id, internal_id) of a run's system event: derived from the run id, so stable."""
    return f"{run_id}-{name.rsplit('.', 1)[-1]}", derived_ulid(ulid_millis(run_id), run_id, name)


def system_events(
    *,
    function_id: str,
    run_id: str,
    status: RunStatus,
    trigger: dict[str, Any],
    ended_ms: int,
    events: list[dict[str, Any]] | None = None,
    result: Any = None,
    error: dict[str, Any] | None = None,
) -> list[Event]:
    """The events announcing that the run ended with ``status``."""
    data = {
        "function_id": function_id,
        "run_id": run_id,
        "event": trigger,
        "events": events or [trigger],
        "error": error,
        "result": result,
        "_inngest": {"status": status.value},
    }
    out = []
    for name in NAMES[status]:
        event_id, internal_id = system_event_id(run_id, name)
        out.append(Event(name=name, data=data, id=event_id, internal_id=internal_id, ts=ended_ms))
    return out


def history_record(
    *,
    run_id: str,
    function_id: str,
    status: RunStatus,
    event: dict[str, Any],
    attempt: int,
    started_ms: int | None,
    ended_ms: int | None,
    memos: Iterable[Memo],
    updated_ms: int,
    result: Any = None,
    error: dict[str, Any] | None = None,
    max_bytes: int | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``steplog.RunHistory`` record: the run as ``steplog runs`` shows it.

    A body over ``max_bytes`` (what a record may hold) leaves out the steps'
    outputs and errors and the result, and says so.
    """
    steps = []
    for memo in memos:
        item = memo.to_dict()
        out = compact_json(item.pop("output"))
        item["output"] = (
            out if len(out) <= HISTORY_OUTPUT_CHARS else (out[:HISTORY_OUTPUT_CHARS] + "…")
        )
        steps.append(item)
    body = {
        "event": event,
        "attempt": attempt,
        "started_ms": started_ms,
        "ended_ms": ended_ms,
        "steps": steps,
        "result": result,
        "error": error,
    }
    if events:  # a batch: every event it holds (``event`` is the first)
        body["events"] = events
    return {
        "run_id": run_id,
        "function_id": function_id,
        "status": status.value,
        "updated_ms": updated_ms,
        "body": _history_body(run_id, body, max_bytes),
    }


def _history_body(run_id: str, body: dict[str, Any], max_bytes: int | None) -> str:
    text = compact_json(body, default=str)
    if max_bytes is None or len(text) * 4 <= max_bytes or len(text.encode()) <= max_bytes:
        return text
    log.warning(
        "run %s: its history is %d bytes, more than a record may hold: recording it "
        "without step outputs, step errors and the result",
        run_id,
        len(text.encode()),
    )
    steps = [
        {k: v for k, v in step.items() if k not in ("output", "error", "extra")}
        for step in body["steps"]
    ]
    trimmed = {**body, "steps": steps, "trimmed": True}
    if trimmed.get("result") is not None:
        trimmed["result"] = "(too large for the run history)"
    return compact_json(trimmed, default=str)
