"""The run journal's records: one class per kind, and their wire form.

A function's journal topic (``steplog-<app>-fn-<fn_id>``) carries everything that
moves its runs, keyed by the run's routing key so a run's records share a
partition. On the wire each is an Avro ``steplog.RunRecord``: ``kind``, ``run_id``,
``at_ms`` and the kind's fields as a JSON ``body``. :func:`encode` and
:func:`decode` are the only code that knows that form. The cron topic carries
:class:`Tick` and :class:`Resume` in the same envelope, the gate topic of env-scoped
limits :class:`SlotAsk` and :class:`SlotFree` (its answers, :class:`SlotGrant`, go
to the runs' journals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.core.effects import Effect, ErrorInfo, effect_from_dict, effect_to_dict
from streams.errors import DecodeError
from streams.serde.internal import JsonBodyCodec

ENVELOPE = JsonBodyCodec("steplog.RunRecord")
#: What a :class:`~streams.lifecycle.machine.Journal` command names the app's gate
#: topic by (:mod:`streams.lifecycle.gate`; no function slug has a "~").
GATE = "~gate"


@dataclass(frozen=True, slots=True)
class Invoker:
    """The ``step.invoke`` a run was started by: where its result goes."""

    function: str
    run_id: str
    step_id: str
    key: str

    def to_dict(self) -> dict[str, str]:
        return {
            "function": self.function,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Invoker:
        return cls(str(raw["function"]), str(raw["run_id"]), str(raw["step_id"]), str(raw["key"]))


@dataclass(frozen=True, slots=True)
class Start:
    """Start a run for ``event`` (from the router, a cron tick or an invoke).

    ``not_before``: an event with a future ``ts`` starts then. ``idempotency``: the
    value of the function's idempotency expression (one run per value per window).
    """

    run_id: str
    event: dict[str, Any]
    idempotency: str | None = None
    not_before: int | None = None
    invoker: Invoker | None = None


@dataclass(frozen=True, slots=True)
class EffectRecord:
    """An effect of a run that went on outside the agent loop (a slow step)."""

    run_id: str
    effect: Effect


@dataclass(frozen=True, slots=True)
class Wake:
    """A timer of the run is due (``timer`` is its state key, as text)."""

    run_id: str
    timer: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """A waiting step completes from outside: a wait's event, an invoked run's end."""

    run_id: str
    step_id: str
    output: Any = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the run (a Cancel rule matched, ``steplog runs cancel``, the API)."""

    run_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Sent to each partition a worker is assigned: load its timers, resume its runs.

    ``token`` names the assignment: after a crash the journal is read again from
    the committed offset, and a resume marker of an earlier assignment found there
    must not resume runs before the records after it are applied.
    """

    token: str = ""


@dataclass(frozen=True, slots=True)
class Sweep:
    """Forget finished runs past their retention, starting at run id ``start``."""

    start: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """A cron schedule is due (on the app's cron topic)."""

    function: str
    cron: str
    due_ms: int


@dataclass(frozen=True, slots=True)
class SlotAsk:
    """A run asks the app's gate (``steplog-<app>-gate``, keyed by ``value``) for a slot
    of an env-scoped concurrency limit: at most ``limit`` runs of any function of the
    app with this key ``value`` execute at once. ``function``, ``key`` and
    ``partition`` say where the grant goes; ``score`` orders the gate's queue."""

    run_id: str
    value: str
    limit: int
    function: str
    key: str
    partition: int
    score: int = 0


@dataclass(frozen=True, slots=True)
class SlotFree:
    """The run stopped executing (or ended, or no longer waits): its slot of ``value``
    is free, or its place in the gate's queue is given up."""

    run_id: str
    value: str


@dataclass(frozen=True, slots=True)
class SlotGrant:
    """The gate gave the run a slot of ``value`` (in the run's own journal)."""

    run_id: str
    value: str


Record = (
    Start
    | EffectRecord
    | Wake
    | Resolve
    | Cancel
    | Resume
    | Sweep
    | Tick
    | SlotAsk
    | SlotFree
    | SlotGrant
)


def run_id_of(record: Record) -> str:
    return getattr(record, "run_id", "")


def encode(record: Record, at_ms: int) -> bytes:
    kind, body = _body(record)
    return ENVELOPE.encode(kind, body, run_id=run_id_of(record), at_ms=at_ms)


def _body(record: Record) -> tuple[str, dict[str, Any]]:
    if isinstance(record, Start):
        body: dict[str, Any] = {"event": record.event, "idempotency": record.idempotency}
        if record.not_before is not None:
            body["not_before"] = record.not_before
        if record.invoker is not None:
            body["invoker"] = record.invoker.to_dict()
        return "start", body
    if isinstance(record, EffectRecord):
        return "effect", effect_to_dict(record.effect)
    if isinstance(record, Wake):
        return "wake", {"timer": record.timer}
    if isinstance(record, Resolve):
        body = {"step_id": record.step_id}
        if record.error is not None:
            body["error"] = record.error.to_dict()
        else:
            body["output"] = record.output
        return "resolve", body
    if isinstance(record, Cancel):
        return "cancel", {"reason": record.reason}
    if isinstance(record, Resume):
        return "resume", {"token": record.token} if record.token else {}
    if isinstance(record, Sweep):
        return "sweep", {} if record.start is None else {"from": record.start}
    if isinstance(record, SlotAsk):
        return "slot-ask", {
            "value": record.value,
            "limit": record.limit,
            "function": record.function,
            "key": record.key,
            "partition": record.partition,
            "score": record.score,
        }
    if isinstance(record, SlotFree):
        return "slot-free", {"value": record.value}
    if isinstance(record, SlotGrant):
        return "slot-grant", {"value": record.value}
    return "tick", {"function": record.function, "cron": record.cron, "due_ms": record.due_ms}


def decode(value: bytes) -> Record:
    """The record in ``value``; :class:`DecodeError` if it is not one."""
    try:
        kind, body, envelope = ENVELOPE.decode(value)
        run_id = str(envelope["run_id"])
        return _record(kind, run_id, body)
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"not a run journal record: {exc!r}") from exc


def _record(kind: str, run_id: str, body: dict[str, Any]) -> Record:
    if kind == "start":
        not_before = body.get("not_before")
        invoker = body.get("invoker")
        return Start(
            run_id,
            dict(body["event"]),
            body.get("idempotency"),
            int(not_before) if not_before else None,
            Invoker.from_dict(invoker) if invoker else None,
        )
    if kind == "effect":
        return EffectRecord(run_id, effect_from_dict(body))
    if kind == "wake":
        return Wake(run_id, str(body["timer"]))
    if kind == "resolve":
        error = body.get("error")
        return Resolve(
            run_id,
            str(body["step_id"]),
            body.get("output"),
            ErrorInfo.from_dict(error) if error else None,
        )
    if kind == "cancel":
        return Cancel(run_id, str(body.get("reason") or "cancelled"))
    if kind == "resume":
        return Resume(str(body.get("token") or ""))
    if kind == "sweep":
        start = body.get("from")
        return Sweep(str(start) if start else None)
    if kind == "tick":
        return Tick(str(body["function"]), str(body["cron"]), int(body["due_ms"]))
    if kind == "slot-ask":
        return SlotAsk(
            run_id,
            str(body["value"]),
            int(body["limit"]),
            str(body["function"]),
            str(body["key"]),
            int(body["partition"]),
            int(body.get("score") or 0),
        )
    if kind == "slot-free":
        return SlotFree(run_id, str(body["value"]))
    if kind == "slot-grant":
        return SlotGrant(run_id, str(body["value"]))
    raise DecodeError(f"unknown run journal record kind {kind!r}")
