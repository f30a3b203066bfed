"""Retries and errors: per-step backoff, StepError, NonRetriable, RetryAfter, function retries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from streams import testing
from streams.app import App
from streams.core import (
    Context,
    ManualClock,
    RetryPolicy,
    RunDriver,
    RunFailed,
    RunInput,
    RunSuspended,
    StepFailed,
)
from streams.core.retry import DEFAULT_DELAYS, retry_after_ms
from streams.errors import NonRetriableError, RetryAfterError, StepError
from streams.event import Event, accept
from streams.options import TriggerEvent

RUN_ID = "01JBZ5V0000000000000000000"
EVENT = accept(Event(name="app/x"), at_ms=1_700_000_000_000)
NOW = 1_700_000_000_000


def flaky(failures: int, error: Exception | None = None) -> Any:
    """A step body that fails ``failures`` times, then returns how many calls it took."""
    calls = {"n": 0}

    async def body() -> int:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error or ValueError(f"boom {calls['n']}")
        return calls["n"]

    return body


async def test_retry_then_success() -> None:
    body = flaky(2)

    async def fn(ctx: Context) -> Any:
        return await ctx.step.run("call-api", body)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "completed"
    assert result.result == 3
    assert result.activations == 3  # each retry resumes from the top after its backoff
    assert result.step("call-api").attempts == 3
    failed = [e for e in result.effects if isinstance(e, StepFailed)]
    assert [e.attempt for e in failed] == [0, 1]
    assert all(e.retry_at_ms is not None for e in failed)


async def test_a_failing_attempt_suspends_with_the_backoff_time() -> None:
    async def fn(ctx: Context) -> Any:
        return await ctx.step.run("s", flaky(1))

    clock = ManualClock(NOW)
    driver = RunDriver(fn, RunInput(RUN_ID, "shop-f", EVENT), clock=clock, retry=RetryPolicy())
    effects = await driver.run_to_end()
    failed, suspended = effects
    assert isinstance(failed, StepFailed) and isinstance(suspended, RunSuspended)
    assert suspended.reason == "retry" and suspended.name == "s"
    assert 13_500 <= suspended.wake_at_ms - NOW <= 16_500  # type: ignore[operator]  # 15 s +/- 10 %
    assert failed.retry_at_ms == suspended.wake_at_ms


async def test_exhausted_retries_raise_step_error_that_user_code_can_catch() -> None:
    body = flaky(100)

    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.run("doomed", body)
        except StepError as err:
            return {"caught": err.message, "name": err.name}
        return None

    result = await testing.run_async(fn, EVENT)
    assert result.status == "completed"
    assert result.result == {"caught": "boom 5", "name": "ValueError"}  # retries=4: 5 attempts
    memo = result.step("doomed")
    assert memo.status == "failed" and memo.attempts == 5


async def test_uncaught_step_error_fails_the_run_without_function_retries() -> None:
    body = flaky(100)

    async def fn(ctx: Context) -> Any:
        await ctx.step.run("doomed", body)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.attempts == 1
    assert result.error is not None and result.error.message == "boom 5"


async def test_non_retriable_error_fails_the_step_at_once() -> None:
    body = flaky(100, NonRetriableError("card declined"))

    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.run("charge", body)
        except StepError as err:
            return err.name
        return None

    result = await testing.run_async(fn, EVENT)
    assert result.result == "NonRetriableError"
    assert result.step("charge").attempts == 1


async def test_retry_after_error_sets_the_retry_time_clamped() -> None:
    async def fn(ctx: Context) -> Any:
        return await ctx.step.run("rate-limited", flaky(1, RetryAfterError("slow down", "2h")))

    driver = RunDriver(fn, RunInput(RUN_ID, "f", EVENT), clock=ManualClock(NOW))
    _, suspended = await driver.run_to_end()
    assert isinstance(suspended, RunSuspended)
    assert suspended.wake_at_ms == NOW + 2 * 3600 * 1000


@pytest.mark.parametrize(
    ("retry_after", "expected_ms"),
    [
        (0, 1000),
        (0.2, 1000),
        (timedelta(days=3), 24 * 3600 * 1000),
        ("90s", 90_000),
        (30, 30_000),
        ("2023-11-14T22:13:30Z", 10_000),  # absolute: NOW is 22:13:20Z
        (-5, 1000),
    ],
)
def test_retry_after_clamping(retry_after: Any, expected_ms: int) -> None:
    assert retry_after_ms(retry_after, NOW) == expected_ms


async def test_function_level_error_retries_the_attempt() -> None:
    attempts: list[int] = []
    body = flaky(0)

    async def fn(ctx: Context) -> Any:
        await ctx.step.run("once", body)
        attempts.append(ctx.attempt)
        if ctx.attempt < 2:
            raise RuntimeError("outside any step")
        return "ok"

    result = await testing.run_async(fn, EVENT)
    assert result.status == "completed"
    assert attempts == [0, 1, 2]
    assert result.attempts == 3
    assert result.step("once").output == 1  # the step did not run again
    failures = [e for e in result.effects if isinstance(e, RunFailed)]
    assert [f.attempt for f in failures] == [0, 1] and all(not f.final for f in failures)


async def test_function_level_retries_exhausted() -> None:
    async def fn(ctx: Context) -> Any:
        raise RuntimeError(f"attempt {ctx.attempt}")

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.attempts == 5
    assert result.error is not None and result.error.message == "attempt 4"


async def test_function_level_non_retriable() -> None:
    async def fn(ctx: Context) -> Any:
        raise NonRetriableError("bad input")

    result = await testing.run_async(fn, EVENT)
    assert (result.status, result.attempts) == ("failed", 1)


async def test_suspension_cannot_be_swallowed_by_except_exception() -> None:
    body = flaky(1)

    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.run("s", body)
        except Exception:
            return "swallowed"
        return "retried"

    result = await testing.run_async(fn, EVENT)
    assert result.result == "retried"


async def test_suspension_wins_even_over_code_that_catches_base_exception() -> None:
    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.run("s", flaky(1))
        except BaseException:
            return "swallowed"
        return "retried"

    driver = RunDriver(fn, RunInput(RUN_ID, "f", EVENT), clock=ManualClock(NOW))
    effects = await driver.run_to_end()
    assert isinstance(effects[-1], RunSuspended)


def test_backoff_table_jitter_is_deterministic_and_capped() -> None:
    policy = RetryPolicy()
    delays = [policy.delay_ms(i, "run:step") for i in range(12)]
    assert delays == [policy.delay_ms(i, "run:step") for i in range(12)]
    for i, delay in enumerate(delays):
        base = DEFAULT_DELAYS[min(i, len(DEFAULT_DELAYS) - 1)] * 1000
        assert base * 0.9 <= delay <= min(base * 1.1, 7_200_000)
    assert delays[0] != policy.delay_ms(0, "other-run:step")
    assert RetryPolicy(scale=0).delay_ms(3, "x") == 0
    assert RetryPolicy(retries=2).retry_at_ms(NOW, 2, "x") is None


async def test_the_functions_retries_option_is_used() -> None:
    app = App("shop")
    body = flaky(100)

    @app.function(fn_id="once", trigger=TriggerEvent(event="app/x"), retries=1)
    async def fn(ctx: Context) -> Any:
        await ctx.step.run("s", body)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.step("s").attempts == 2
