"""The pure execution core: run a function against its memoized steps.

Nothing here does I/O or imports Kafka, Faust, RocksDB or HTTP libraries. The
Faust agents (and :mod:`streams.testing`) drive it: they build a
:class:`RunDriver` for one activation of a run, hand it the memos they hold,
consume the :mod:`effects <streams.core.effects>` it emits in order, make them
durable, and start a new activation when a suspended run is due. See
``docs/execution.md``.
"""

from streams.clock import Clock, ManualClock, SystemClock
from streams.core.context import Context, Group, Step
from streams.core.effects import (
    Effect,
    ErrorInfo,
    EventsSent,
    RunCompleted,
    RunFailed,
    RunSuspended,
    StepCompleted,
    StepFailed,
    StepWaiting,
    TerminalEffect,
    effect_from_dict,
    effect_to_dict,
    is_terminal,
)
from streams.core.execution import RunDriver, RunInput
from streams.core.memo import Memo, apply_effect
from streams.core.retry import RetryPolicy
from streams.core.step_ids import StepId, StepIds

__all__ = [
    "Clock",
    "Context",
    "Effect",
    "ErrorInfo",
    "EventsSent",
    "Group",
    "ManualClock",
    "Memo",
    "RetryPolicy",
    "RunCompleted",
    "RunDriver",
    "RunFailed",
    "RunInput",
    "RunSuspended",
    "Step",
    "StepCompleted",
    "StepFailed",
    "StepId",
    "StepIds",
    "StepWaiting",
    "SystemClock",
    "TerminalEffect",
    "apply_effect",
    "effect_from_dict",
    "effect_to_dict",
    "is_terminal",
]
