"""User code that misbehaves (issue 8 §6), driven through the pure core.

One behaviour per test: what the run does, and that the error or log line names the
function, the run and the step. The worker-level side of each case (the process keeps
serving other runs) is in tests/test_misbehaving_code.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from typing import Any

import pytest

from streams import testing
from streams.core import (
    Context,
    ManualClock,
    RetryPolicy,
    RunCompleted,
    RunDriver,
    RunFailed,
    RunInput,
    StepCompleted,
    StepFailed,
    effect_from_dict,
    effect_to_dict,
)
from streams.core.effects import MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_STACK_CHARS, ErrorInfo
from streams.errors import StepError, StepMisuseError
from streams.event import Event, accept
from streams.serde.internal import JsonBodyCodec

RUN_ID = "01JBZ5V0000000000000000000"
EVENT = accept(Event(name="app/x", data={}), at_ms=1_700_000_000_000)
MIB = 1024 * 1024
RUN_RECORDS = JsonBodyCodec("steplog.RunRecord")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def driver_for(fn: Any, **kwargs: Any) -> RunDriver:
    kwargs.setdefault("clock", ManualClock())
    kwargs.setdefault("retry", RetryPolicy(scale=0))
    return RunDriver(fn, RunInput(RUN_ID, "shop-fn", EVENT), **kwargs)


# --- 2. an output that is not JSON-serializable ---------------------------------------


async def test_unserializable_output_fails_for_good_with_a_log_line_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    def make() -> Any:
        nonlocal calls
        calls += 1
        return {"when": object()}

    async def fn(ctx: Context) -> Any:
        return await ctx.step.run("make", make)

    driver = driver_for(fn)
    effects = await driver.run_to_end()
    terminal = effects[-1]
    assert isinstance(terminal, RunFailed) and terminal.final
    assert terminal.error.name == "SerializationError"
    assert "step 'make' returned a value of type dict" in terminal.error.message
    assert "Object of type object is not JSON serializable" in terminal.error.message
    assert calls == 1
    assert not any(isinstance(e, StepCompleted) for e in effects)
    assert any(
        f"function shop-fn, run {RUN_ID} fails for good" in m and "step 'make'" in m
        for m in messages(caplog)
    )


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (float("nan"), "Out of range float values"),
        ("lone \ud800 surrogate", "surrogates not allowed"),
        ({(1, 2): "tuple key"}, "keys must be"),
    ],
)
async def test_outputs_json_cannot_carry_name_the_step(value: Any, detail: str) -> None:
    async def fn(ctx: Context) -> Any:
        await ctx.step.run("odd", lambda: value)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed" and result.attempts == 1
    assert result.error is not None and result.error.name == "SerializationError"
    assert "step 'odd'" in result.error.message and detail in result.error.message


async def test_an_output_nested_too_deeply_is_a_serialization_error() -> None:
    deep: list[Any] = []
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]

    async def fn(ctx: Context) -> Any:
        await ctx.step.run("deep", lambda: deep)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed" and result.attempts == 1
    assert result.error is not None
    assert "step 'deep'" in result.error.message and "nested too deeply" in result.error.message


# --- 3. an output over 4 MiB ------------------------------------------------------------


async def test_an_output_over_4_mib_fails_for_good_naming_step_and_size(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    def big() -> str:
        nonlocal calls
        calls += 1
        return "é" * (2 * MIB)  # 4 MiB of UTF-8, plus the quotes

    async def fn(ctx: Context) -> Any:
        with contextlib.suppress(BaseException):  # not even this keeps the run going
            await ctx.step.run("big", big)
        return "unreachable"

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed" and result.attempts == 1 and result.activations == 1
    assert calls == 1  # not retried
    assert result.error is not None and result.error.name == "LimitExceededError"
    assert f"step 'big' returned {4 * MIB + 2} bytes of JSON" in result.error.message
    assert "4 MiB" in result.error.message
    assert not any(isinstance(e, StepCompleted) for e in result.effects)
    assert any(f"run {result.run_id}" in m and "step 'big'" in m for m in messages(caplog))


async def test_the_journal_record_of_a_4_mib_output_is_not_larger_than_the_output() -> None:
    # Escaped non-ASCII text (\u00e9) and the output carried twice (value and text) once
    # made such a record 24 MiB: too large for Kafka, so the run could never finish.
    async def fn(ctx: Context) -> Any:
        return len(await ctx.step.run("accents", lambda: "é" * (2 * MIB - 2)))

    effects = await driver_for(fn).run_to_end()
    completed = effects[0]
    assert isinstance(completed, StepCompleted)
    assert len(completed.output_json.encode()) == 4 * MIB - 2
    record = RUN_RECORDS.encode("effect", effect_to_dict(completed), run_id=RUN_ID, at_ms=0)
    assert len(record) < 4 * MIB + 1024
    _, body, _ = RUN_RECORDS.decode(record)
    again = effect_from_dict(body)
    assert again == completed and again.output_json == completed.output_json  # type: ignore[union-attr]
    assert isinstance(effects[-1], RunCompleted)


async def test_a_huge_error_message_is_cut_so_its_records_stay_small() -> None:
    def fail() -> None:
        raise ValueError("x" * (20 * MIB))

    async def fn(ctx: Context) -> Any:
        await ctx.step.run("noisy", fail)

    result = await testing.run_async(fn, EVENT)
    failed = [e for e in result.effects if isinstance(e, StepFailed)]
    assert failed and all(len(e.error.message) < MAX_ERROR_MESSAGE_CHARS + 64 for e in failed)
    assert "more characters cut" in failed[0].error.message
    stack = failed[0].error.stack or ""
    assert len(stack) < MAX_ERROR_STACK_CHARS + 64 and "characters cut" in stack
    record = RUN_RECORDS.encode("effect", effect_to_dict(failed[0]), run_id=RUN_ID, at_ms=0)
    assert len(record) < 100 * 1024
    assert ErrorInfo("E", "short").message == "short"


async def test_send_event_refuses_events_that_would_not_fit_in_a_record() -> None:
    async def one_big(ctx: Context) -> Any:
        await ctx.step.send_event("big", Event(name="app/big", data={"x": "y" * MIB}))

    async def many(ctx: Context) -> Any:
        events = [Event(name="app/e", data={"x": "y" * (400 * 1024)}) for _ in range(12)]
        await ctx.step.send_event("many", events)

    result = await testing.run_async(one_big, EVENT)
    assert result.status == "failed" and result.error is not None
    assert "step.send_event('big'): event 0 is invalid" in result.error.message
    assert "the limit is 524288 bytes" in result.error.message
    result = await testing.run_async(many, EVENT)
    assert result.status == "failed" and result.error is not None
    assert "step.send_event('many'): events 0..10" in result.error.message
    assert "at most 4 MiB" in result.error.message
    assert result.events_sent == []


async def test_invoke_refuses_data_larger_than_an_event() -> None:
    async def fn(ctx: Context) -> Any:
        await ctx.step.invoke("call", function="app-other", data={"x": "y" * MIB})

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed" and result.attempts == 1 and result.error is not None
    assert "step.invoke('call'): data is" in result.error.message


# --- 4. SystemExit, KeyboardInterrupt, GeneratorExit -------------------------------------

EXITS = [SystemExit(3), KeyboardInterrupt(), GeneratorExit()]


@pytest.mark.parametrize("exc", EXITS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_step_raising_an_exit_fails_like_an_exception_and_is_retried(
    exc: BaseException, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def sync_body() -> None:
        nonlocal calls
        calls += 1
        raise exc

    async def async_body() -> None:
        sync_body()

    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.run("quit", sync_body if kind == "sync" else async_body)
        except StepError as error:
            return {"caught": error.name, "message": error.message}
        return "unreachable"

    result = await testing.run_async(fn, EVENT)
    assert result.status == "completed"  # StepError is an ordinary, catchable error
    assert calls == 5  # 4 retries, as for any error
    name = type(exc).__name__
    assert result.result["caught"] == "UserCodeExitError"
    assert f"step 'quit' raised {name}" in result.result["message"]
    assert "not as a request to stop the worker" in result.result["message"]
    failed = [e for e in result.effects if isinstance(e, StepFailed)]
    assert [e.final for e in failed] == [False] * 4 + [True]
    assert name in (failed[-1].error.stack or "")  # the original is the cause
    assert any(
        f"function fn, run {result.run_id}: step 'quit' failed for good" in m
        for m in messages(caplog)
    )


async def test_the_message_carries_the_exit_code() -> None:
    def body() -> None:
        raise SystemExit("bye")

    async def fn(ctx: Context) -> Any:
        await ctx.step.run("quit", body)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.error is not None and "SystemExit(bye)" in result.error.message


@pytest.mark.parametrize("exc", EXITS, ids=lambda e: type(e).__name__)
async def test_the_function_raising_an_exit_fails_the_attempt(exc: BaseException) -> None:
    attempts = 0

    async def fn(ctx: Context) -> Any:
        nonlocal attempts
        attempts += 1
        raise exc

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert attempts == 5  # function-level retries, as for an exception
    assert result.error is not None and result.error.name == "UserCodeExitError"
    assert f"the function (outside any step) raised {type(exc).__name__}" in result.error.message


async def test_a_parallel_branch_raising_system_exit_fails_the_attempt() -> None:
    async def quit_branch() -> None:
        raise SystemExit(1)

    async def fn(ctx: Context) -> Any:
        await ctx.group.parallel((quit_branch, lambda: ctx.step.run("ok", lambda: 1)))

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed" and result.error is not None
    assert "a group.parallel branch (outside any step) raised SystemExit(1)" in (
        result.error.message
    )


# --- 5. a step inside another step -------------------------------------------------------

NESTED = "step 'inner' was called inside the body of step 'outer': steps cannot nest"


async def test_a_step_inside_an_async_step_fails_the_run_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner_ran = False

    def inner() -> None:
        nonlocal inner_ran
        inner_ran = True

    async def fn(ctx: Context) -> Any:
        async def outer() -> Any:
            try:
                return await ctx.step.run("inner", inner)
            except Exception:  # cannot be swallowed
                return "swallowed"

        return await ctx.step.run("outer", outer)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed" and result.attempts == 1
    assert result.error is not None and result.error.name == "StepMisuseError"
    assert NESTED in result.error.message
    assert not inner_ran and result.steps == []
    assert any(f"run {result.run_id}" in m and NESTED in m for m in messages(caplog))


async def test_a_step_inside_a_sync_step_is_seen_from_its_thread() -> None:
    loop_holder: list[asyncio.AbstractEventLoop] = []

    def outer_returning_the_coroutine(ctx: Context) -> Any:
        return ctx.step.run("inner", lambda: 1)

    def outer_on_the_loop(ctx: Context) -> Any:
        future = asyncio.run_coroutine_threadsafe(ctx.step.run("inner", lambda: 1), loop_holder[0])
        return future.result(5)

    def outer_with_its_own_loop(ctx: Context) -> Any:
        return asyncio.run(ctx.step.run("inner", lambda: 1))

    for outer in (outer_returning_the_coroutine, outer_on_the_loop, outer_with_its_own_loop):

        async def fn(ctx: Context, outer: Any = outer) -> Any:
            loop_holder[:] = [asyncio.get_running_loop()]
            return await ctx.step.run("outer", outer, ctx)

        result = await testing.run_async(fn, EVENT)
        assert result.status == "failed", outer.__name__
        assert result.error is not None and NESTED in result.error.message, outer.__name__


# --- 6. a step awaited after the function returned ---------------------------------------

LATE = "step.run('late') was called after the function returned"


async def test_a_task_calling_a_step_after_the_function_returned_gets_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    go = asyncio.Event()
    ran = False
    spawned: list[asyncio.Task[Any]] = []

    def late_body() -> None:
        nonlocal ran
        ran = True

    async def fn(ctx: Context) -> Any:
        async def later() -> Any:
            await go.wait()
            return await ctx.step.run("late", late_body)

        spawned.append(asyncio.create_task(later()))
        return await ctx.step.run("first", lambda: "done")

    driver = driver_for(fn)
    effects = await driver.run_to_end()
    assert isinstance(effects[-1], RunCompleted) and effects[-1].result == "done"
    go.set()
    with pytest.raises(StepMisuseError, match=re.escape(LATE)):
        await spawned[0]
    assert not ran
    assert driver.drain() == [] and await driver.next_effect() is None
    assert [e.name for e in effects if isinstance(e, StepCompleted)] == ["first"]
    assert any(
        f"function shop-fn, run {RUN_ID}: {LATE}" in m and "did not run" in m
        for m in messages(caplog)
    )


async def test_a_step_coroutine_awaited_after_the_function_returned_does_nothing() -> None:
    kept: list[Any] = []

    async def fn(ctx: Context) -> Any:
        kept.append(ctx.step.run("late", lambda: 1))  # created, not awaited
        kept.append(ctx.step.sleep("nap", "1s"))
        kept.append(ctx.group.parallel(()))
        return "returned"

    driver = driver_for(fn)
    effects = await driver.run_to_end()
    assert isinstance(effects[-1], RunCompleted)
    with pytest.raises(StepMisuseError, match=re.escape(LATE)):
        await kept[0]
    with pytest.raises(StepMisuseError, match=r"step.sleep\('nap'\) was called after"):
        await kept[1]
    with pytest.raises(StepMisuseError, match=r"group.parallel\(...\) was called after"):
        await kept[2]
    assert await driver.next_effect() is None


async def test_a_step_started_by_a_task_that_outlives_a_failed_function_is_refused() -> None:
    go = asyncio.Event()
    spawned: list[asyncio.Task[Any]] = []

    async def fn(ctx: Context) -> Any:
        async def later() -> Any:
            await go.wait()
            return await ctx.step.run("late", lambda: 1)

        spawned.append(asyncio.create_task(later()))
        raise ValueError("the function fails")

    driver = driver_for(fn, retry=RetryPolicy(retries=0))
    effects = await driver.run_to_end()
    assert isinstance(effects[-1], RunFailed)
    go.set()
    with pytest.raises(StepMisuseError, match=re.escape(LATE)):
        await spawned[0]
    assert await driver.next_effect() is None


async def test_steps_in_flight_when_the_function_returns_still_finish_first() -> None:
    async def slow() -> str:
        await asyncio.sleep(0.01)
        return "slow"

    tasks: list[asyncio.Future[Any]] = []

    async def fn(ctx: Context) -> Any:
        tasks.append(asyncio.ensure_future(ctx.step.run("in-flight", slow)))
        await asyncio.sleep(0)  # its body has started
        return "returned"

    effects = await driver_for(fn).run_to_end()
    assert [type(e).__name__ for e in effects] == ["StepCompleted", "RunCompleted"]
