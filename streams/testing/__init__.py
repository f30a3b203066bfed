"""Run a function in memory, for your own tests (no Kafka, no worker).

::

    from streams import testing

    def test_process_order():
        result = testing.run(process_order, Event(name="app/order.created", data={...}),
                             steps={"charge": {"ok": True}})      # mock a step by its id
        assert result.status == "completed"
        assert result.step("reserve-inventory").output == [...]

The runner drives the same execution core as the workers: it keeps memos in a
dict, applies effects in order, moves a :class:`~streams.clock.ManualClock`
to each retry time (so retries take no real time) and starts a new activation
until the run completes or fails. ``always_replay=True`` re-executes the
function from the top after every step, as a restart would, and raises
:class:`~streams.errors.NonDeterminismError` when a replay does not reach the
steps the previous activation reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ulid import ULID

from streams.app import Function, Handler
from streams.clock import Clock, ManualClock
from streams.core.effects import (
    Effect,
    ErrorInfo,
    EventsSent,
    RunCompleted,
    RunFailed,
    RunSuspended,
)
from streams.core.execution import RunDriver, RunInput
from streams.core.memo import Memo, apply_effect
from streams.core.retry import RetryPolicy
from streams.core.step_ids import hash_id
from streams.errors import NonDeterminismError, StreamsError
from streams.event import Event, accept
from streams.testing.engine import Engine, RunView

__all__ = ["Engine", "RunView", "TestResult", "run", "run_async"]


@dataclass
class TestResult:
    """How an in-memory run ended.

    ``attempts`` counts function-level attempts (1 when the handler never
    raised outside a step); ``activations`` counts executions from the top.
    """

    __test__ = False  # not a pytest test class

    status: Literal["completed", "failed"]
    result: Any
    error: ErrorInfo | None
    steps: list[Memo]
    events_sent: list[Event]
    attempts: int
    activations: int
    run_id: str
    effects: list[Effect] = field(default_factory=list)
    unreached: list[Memo] = field(default_factory=list)

    def step(self, step_id: str) -> Memo:
        """The memo of a step by its readable id (``"charge"``, ``"charge:1"``)."""
        for memo in self.steps:
            if memo.name == step_id:
                return memo
        known = ", ".join(repr(m.name) for m in self.steps) or "none"
        raise KeyError(f"no step {step_id!r} in this run (steps: {known})")


def run(
    function: Function | Handler,
    event: Event | Mapping[str, Any],
    *,
    clock: Clock | None = None,
    retry_scale: float = 0.0,
    steps: Mapping[str, Any] | None = None,
    always_replay: bool = False,
    run_id: str | None = None,
    events: Sequence[Event] | None = None,
    max_activations: int = 10_000,
) -> TestResult:
    """Run ``function`` for ``event`` to the end, in memory; see :func:`run_async`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("testing.run() cannot be called from async code; use run_async()")
    return asyncio.run(
        run_async(
            function,
            event,
            clock=clock,
            retry_scale=retry_scale,
            steps=steps,
            always_replay=always_replay,
            run_id=run_id,
            events=events,
            max_activations=max_activations,
        )
    )


async def run_async(
    function: Function | Handler,
    event: Event | Mapping[str, Any],
    *,
    clock: Clock | None = None,
    retry_scale: float = 0.0,
    steps: Mapping[str, Any] | None = None,
    always_replay: bool = False,
    run_id: str | None = None,
    events: Sequence[Event] | None = None,
    max_activations: int = 10_000,
) -> TestResult:
    """Run ``function`` for ``event`` to the end, in memory.

    ``steps`` mocks steps by readable id: the value is the step's output (the
    body never runs), or an exception instance to make the step fail for good.
    Mock a ``wait_for_event`` with the :class:`Event` it should receive and an
    ``invoke`` with the result; an unmocked wait times out (``None``) and an
    unmocked invoke fails with its timeout. Sleeps move the manual clock.
    ``retry_scale`` multiplies the backoff delays (0: retries are due at once;
    the clock is manual either way, so tests never really wait).
    """
    clock = clock or ManualClock()
    handler = function.handler if isinstance(function, Function) else function
    slug = function.slug if isinstance(function, Function) else getattr(handler, "__name__", "fn")
    retries = function.retries if isinstance(function, Function) else 4
    accepted = _accepted(event, clock)
    run_input = RunInput(
        run_id=run_id or str(ULID.from_timestamp(clock.now_ms() / 1000)),
        function_id=slug,
        event=accepted,
        events=tuple(events or ()),
    )
    memos = _mocks(steps or {})
    mocked = set(memos)
    driver = RunDriver(
        handler,
        run_input,
        memos,
        clock=clock,
        retry=RetryPolicy(retries=retries, scale=retry_scale),
        stop_after_step=always_replay,
    )
    log: list[Effect] = []
    sent: list[Event] = []
    for activation in range(1, max_activations + 1):
        known = set(memos)
        for effect in await driver.run_to_end():
            log.append(effect)
            apply_effect(memos, effect)
            if isinstance(effect, EventsSent):
                sent.extend(effect.events)
        terminal = driver.terminal
        if isinstance(terminal, RunSuspended):
            if always_replay:
                _check_replay(driver, known - mocked, memos)
            await _advance(clock, terminal.wake_at_ms)
            driver = driver.next_activation(memos)
            continue
        if isinstance(terminal, RunFailed) and terminal.retry_at_ms is not None:
            await _advance(clock, terminal.retry_at_ms)
            driver = driver.next_activation(memos, attempt=terminal.attempt + 1)
            continue
        unreached = [m for m in driver.unreached if m.step_id not in mocked]
        if always_replay and unreached:
            raise NonDeterminismError(
                "the last execution did not reach step(s) "
                f"{', '.join(repr(m.name) for m in unreached)} that earlier executions ran: "
                "step ids and their order must not depend on time, randomness or I/O "
                "outside steps"
            )
        return _result(terminal, memos, sent, driver, activation, log, unreached)
    raise StreamsError(
        f"run {run_input.run_id} did not finish within {max_activations} activations"
        + (" (always_replay: are step ids deterministic?)" if always_replay else "")
    )


def _accepted(event: Event | Mapping[str, Any], clock: Clock) -> Event:
    ev = event if isinstance(event, Event) else Event.model_validate(dict(event))
    if ev.internal_id is None:
        ev = accept(ev, at_ms=clock.now_ms(), allow_reserved=True)
    return ev


def _mocks(steps: Mapping[str, Any]) -> dict[str, Memo]:
    memos: dict[str, Memo] = {}
    for name, value in steps.items():
        key = hash_id(name)
        if isinstance(value, BaseException):
            error = ErrorInfo.from_exception(value)
            memos[key] = Memo(key, name, "failed", error=error, extra={"mocked": True})
        else:
            if isinstance(value, Event):  # a mocked wait_for_event
                value = value.model_dump()
            memos[key] = Memo(key, name, "completed", output=value, extra={"mocked": True})
    return memos


def _check_replay(driver: RunDriver, expected: set[str], memos: Mapping[str, Memo]) -> None:
    missing = expected - driver.reached
    if missing:
        names = ", ".join(repr(memos[k].name) for k in missing if k in memos)
        raise NonDeterminismError(
            f"replaying from the top did not reach step(s) {names} that the previous "
            "execution ran: step ids and their order must not depend on time, randomness "
            "or I/O outside steps"
        )


async def _advance(clock: Clock, to_ms: int | None) -> None:
    if to_ms is None:
        return
    if isinstance(clock, ManualClock):
        clock.set(to_ms)
        return
    delay_ms = to_ms - clock.now_ms()
    if delay_ms > 0:
        await clock.sleep(delay_ms / 1000)


def _result(
    terminal: Any,
    memos: dict[str, Memo],
    sent: list[Event],
    driver: RunDriver,
    activations: int,
    log: list[Effect],
    unreached: list[Memo],
) -> TestResult:
    common: dict[str, Any] = {
        "steps": list(memos.values()),
        "events_sent": sent,
        "attempts": driver.run.attempt + 1,
        "activations": activations,
        "run_id": driver.run.run_id,
        "effects": log,
        "unreached": unreached,
    }
    if isinstance(terminal, RunCompleted):
        return TestResult(status="completed", result=terminal.result, error=None, **common)
    assert isinstance(terminal, RunFailed)
    return TestResult(status="failed", result=None, error=terminal.error, **common)
