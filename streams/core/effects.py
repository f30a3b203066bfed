"""The commands the core emits; the edge (a Faust agent, the test runner) applies them.

An activation emits step effects (:class:`StepCompleted`, :class:`StepFailed`,
:class:`EventsSent`) as they happen, then exactly one terminal effect:
:class:`RunCompleted`, :class:`RunFailed` or :class:`RunSuspended`. The edge
must apply them in order and make each durable before it acknowledges anything
that depends on it (an ``EventsSent`` before the ``StepCompleted`` of the same
step, so a crash in between re-sends the same ids instead of losing events).

All records are plain dataclasses; :func:`effect_to_dict` /
:func:`effect_from_dict` give JSON-able forms for edges that forward effects
through Kafka.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from streams.errors import StepError
from streams.event import Event

#: An error's message and stack are cut to this many characters (the start of the
#: message, the end of the stack, where the raise is), so that a huge exception text
#: cannot make a journal record, memo or system event too large for Kafka.
MAX_ERROR_MESSAGE_CHARS = 16 * 1024
MAX_ERROR_STACK_CHARS = 64 * 1024
MAX_ERROR_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as data, in Inngest's shape: ``{name, message, stack}``."""

    name: str
    message: str
    stack: str | None = None

    def __post_init__(self) -> None:
        if len(self.name) > MAX_ERROR_NAME_CHARS:
            object.__setattr__(self, "name", self.name[:MAX_ERROR_NAME_CHARS])
        if len(self.message) > MAX_ERROR_MESSAGE_CHARS:
            cut = len(self.message) - MAX_ERROR_MESSAGE_CHARS
            text = f"{self.message[:MAX_ERROR_MESSAGE_CHARS]}… ({cut} more characters cut)"
            object.__setattr__(self, "message", text)
        if self.stack is not None and len(self.stack) > MAX_ERROR_STACK_CHARS:
            cut = len(self.stack) - MAX_ERROR_STACK_CHARS
            text = f"({cut} characters cut) …{self.stack[-MAX_ERROR_STACK_CHARS:]}"
            object.__setattr__(self, "stack", text)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, StepError):
            return cls(exc.name, exc.message, exc.stack)
        stack = "".join(traceback.format_exception(exc)).rstrip() or None
        return cls(type(exc).__name__, str(exc), stack)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "message": self.message, "stack": self.stack}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ErrorInfo:
        return cls(str(raw["name"]), str(raw["message"]), raw.get("stack"))


@dataclass(frozen=True, slots=True)
class StepCompleted:
    """A step returned ``output``; memoize it. ``output_json`` is its encoded form."""

    type: ClassVar[str] = "step.completed"
    run_id: str
    step_id: str
    name: str
    output: Any
    started_ms: int
    ended_ms: int
    attempt: int
    op: str = "run"
    output_json: str = field(default="null", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StepFailed:
    """An attempt of a step failed.

    ``retry_at_ms`` set: the step will be retried then (memoize the attempt
    count; a :class:`RunSuspended` follows). ``None``: the failure is final,
    memoize the error; user code got (and on replay gets) a ``StepError``.
    """

    type: ClassVar[str] = "step.failed"
    run_id: str
    step_id: str
    name: str
    error: ErrorInfo
    attempt: int
    retry_at_ms: int | None
    started_ms: int = 0
    ended_ms: int = 0
    op: str = "run"

    @property
    def final(self) -> bool:
        return self.retry_at_ms is None


@dataclass(frozen=True, slots=True)
class StepWaiting:
    """A step that completes later, outside the run: a sleep, a wait, an invoke.

    Memoize it as ``waiting``; the run suspends (a :class:`RunSuspended` follows).
    ``due_ms`` is when it completes on its own: a sleep's wake-up, a wait's or an
    invoke's timeout. ``spec`` says what the edge must set up: for ``op="wait"``
    a wait registration (event name, ``if_exp``, the index hint); for
    ``op="invoke"`` the function to start and its data. Until ``due_ms`` only the
    edge completes the step (an event matched, the invoked run ended); from then
    on the next activation completes it itself (``None``; an invoke fails).
    """

    type: ClassVar[str] = "step.waiting"
    run_id: str
    step_id: str
    name: str
    op: str
    started_ms: int
    due_ms: int
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventsSent:
    """``step.send_event`` produced these accepted events (ids already derived)."""

    type: ClassVar[str] = "events.sent"
    run_id: str
    step_id: str
    name: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class RunCompleted:
    """The handler returned ``result`` (JSON-serializable; ``result_json`` encoded)."""

    type: ClassVar[str] = "run.completed"
    run_id: str
    result: Any
    result_json: str = field(default="null", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class RunFailed:
    """The handler raised outside steps (or broke a limit).

    ``retry_at_ms`` set: start attempt ``attempt + 1`` then (a new activation
    with the memos so far). ``None``: the run failed for good.
    """

    type: ClassVar[str] = "run.failed"
    run_id: str
    error: ErrorInfo
    attempt: int
    retry_at_ms: int | None

    @property
    def final(self) -> bool:
        return self.retry_at_ms is None


@dataclass(frozen=True, slots=True)
class RunSuspended:
    """The activation stopped; start a new one (from the top) at ``wake_at_ms``.

    ``reason`` says why: ``"retry"`` (a step's backoff), ``"replay"`` (the
    always-replay test mode; wake at once, ``wake_at_ms`` None), or the ``op``
    of a :class:`StepWaiting` (``"sleep"``, ``"wait"``, ``"invoke"``): then
    ``wake_at_ms`` is the earliest ``due_ms`` of the run's waiting steps, and
    the edge may wake the run earlier when it completes one of them.
    """

    type: ClassVar[str] = "run.suspended"
    run_id: str
    reason: str
    wake_at_ms: int | None
    step_id: str | None = None
    name: str | None = None


StepEffect = StepCompleted | StepFailed | StepWaiting | EventsSent
TerminalEffect = RunCompleted | RunFailed | RunSuspended
Effect = StepEffect | TerminalEffect


def is_terminal(effect: Effect) -> bool:
    return isinstance(effect, RunCompleted | RunFailed | RunSuspended)


#: Encoded forms that the dict leaves out: the value beside them says the same, and
#: carrying both would double the size of a 4 MiB output's journal record.
_ENCODED = {"output_json": "output", "result_json": "result"}


def effect_to_dict(effect: Effect) -> dict[str, Any]:
    """A JSON-able dict of ``effect``, tagged with its ``type``."""
    out: dict[str, Any] = {"type": effect.type}
    for f in fields(effect):
        name = f.name
        if name in _ENCODED:
            continue
        value = getattr(effect, name)
        if isinstance(value, ErrorInfo):
            value = value.to_dict()
        elif name == "events":
            value = [e.model_dump() for e in value]
        out[name] = value
    return out


_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        StepCompleted,
        StepFailed,
        StepWaiting,
        EventsSent,
        RunCompleted,
        RunFailed,
        RunSuspended,
    )
}


def effect_from_dict(raw: dict[str, Any]) -> Effect:
    """The inverse of :func:`effect_to_dict`."""
    values = {k: v for k, v in raw.items() if k != "type"}
    for encoded, plain in _ENCODED.items():
        if plain in values and encoded not in values:
            values[encoded] = json.dumps(
                values[plain], ensure_ascii=False, allow_nan=False, separators=(",", ":")
            )
    if "error" in values:
        values["error"] = ErrorInfo.from_dict(values["error"])
    if "events" in values:
        values["events"] = tuple(Event.model_validate(e) for e in values["events"])
    effect: Effect = _TYPES[raw["type"]](**values)
    return effect
