"""Steps and memoization: one behaviour per test, driven through the pure core."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from streams import testing
from streams.core import (
    Context,
    ManualClock,
    Memo,
    RetryPolicy,
    RunCompleted,
    RunDriver,
    RunFailed,
    RunInput,
    StepCompleted,
    apply_effect,
)
from streams.core.effects import Effect
from streams.core.step_ids import hash_id
from streams.event import Event, accept

RUN_ID = "01JBZ5V0000000000000000000"
EVENT = accept(Event(name="app/order.created", data={"n": 2}), at_ms=1_700_000_000_000)


def identity(value: Any) -> Any:
    return value


async def activate(
    handler: Any, memos: dict[str, Memo] | None = None, **kwargs: Any
) -> tuple[RunDriver, list[Effect]]:
    kwargs.setdefault("clock", ManualClock())
    kwargs.setdefault("retry", RetryPolicy(scale=0))
    driver = RunDriver(handler, RunInput(RUN_ID, "shop-f", EVENT), memos, **kwargs)
    return driver, await driver.run_to_end()


async def test_two_steps() -> None:
    async def fn(ctx: Context) -> Any:
        a = await ctx.step.run("a", lambda: 1)
        b = await ctx.step.run("b", lambda: a + ctx.event.data["n"])
        return {"b": b}

    result = await testing.run_async(fn, EVENT)
    assert result.status == "completed"
    assert result.result == {"b": 3}
    assert [(m.name, m.status, m.output) for m in result.steps] == [
        ("a", "completed", 1),
        ("b", "completed", 3),
    ]
    assert result.activations == 1  # the normal path never replays


async def test_memo_hit_does_not_run_the_body() -> None:
    calls = {"a": 0, "b": 0}

    async def step_a() -> str:
        calls["a"] += 1
        return "A"

    async def step_b() -> str:
        calls["b"] += 1
        return "B"

    async def fn(ctx: Context) -> Any:
        return [await ctx.step.run("a", step_a), await ctx.step.run("b", step_b)]

    memos = {hash_id("a"): Memo(hash_id("a"), "a", "completed", output="from memo")}
    _, effects = await activate(fn, memos)
    assert calls == {"a": 0, "b": 1}
    assert [type(e) for e in effects] == [StepCompleted, RunCompleted]
    assert effects[-1] == RunCompleted(RUN_ID, ["from memo", "B"])


async def test_repeated_step_ids_get_suffixes() -> None:
    async def fn(ctx: Context) -> Any:
        return [await ctx.step.run("x", identity, i) for i in range(3)]

    result = await testing.run_async(fn, EVENT)
    assert [m.name for m in result.steps] == ["x", "x:1", "x:2"]
    assert [m.step_id for m in result.steps] == [hash_id("x"), hash_id("x:1"), hash_id("x:2")]
    assert result.result == [0, 1, 2]


async def test_sync_step_runs_in_a_thread_async_step_on_the_loop() -> None:
    loop_thread = threading.get_ident()

    def blocking() -> int:
        return threading.get_ident()

    async def non_blocking() -> int:
        return threading.get_ident()

    async def fn(ctx: Context) -> Any:
        return [await ctx.step.run("sync", blocking), await ctx.step.run("async", non_blocking)]

    result = await testing.run_async(fn, EVENT)
    sync_thread, async_thread = result.result
    assert sync_thread != loop_thread
    assert async_thread == loop_thread


async def test_step_arguments_are_passed() -> None:
    def add(a: int, b: int, *, c: int) -> int:
        return a + b + c

    async def fn(ctx: Context) -> Any:
        return await ctx.step.run("add", add, 1, 2, c=3)

    assert (await testing.run_async(fn, EVENT)).result == 6


async def test_outputs_are_json_round_tripped_even_on_first_execution() -> None:
    async def fn(ctx: Context) -> Any:
        out = await ctx.step.run("t", lambda: {"t": (1, 2), 3: "x"})
        return out == {"t": [1, 2], "3": "x"}

    assert (await testing.run_async(fn, EVENT)).result is True


async def test_optimistic_continuation_does_not_wait_for_the_consumer() -> None:
    async def fn(ctx: Context) -> Any:
        for i in range(20):
            await ctx.step.run(f"s{i}", asyncio.sleep, 0)
        return "done"

    driver = RunDriver(fn, RunInput(RUN_ID, "shop-f", EVENT), clock=ManualClock())
    driver.start()
    for _ in range(200):  # nobody consumes effects meanwhile
        if driver.done:
            break
        await asyncio.sleep(0)
    assert driver.done
    effects = driver.drain()
    assert len(effects) == 21 and effects[-1] == RunCompleted(RUN_ID, "done")
    assert await driver.next_effect() is None


async def test_effects_can_be_read_with_a_timeout() -> None:
    gate = asyncio.Event()

    async def fn(ctx: Context) -> Any:
        await ctx.step.run("wait", gate.wait)
        return 1

    driver = RunDriver(fn, RunInput(RUN_ID, "shop-f", EVENT), clock=ManualClock())
    driver.start()
    with pytest.raises(TimeoutError):
        await driver.next_effect(timeout=0.01)
    gate.set()
    assert isinstance(await driver.next_effect(timeout=1), StepCompleted)
    assert isinstance(await driver.next_effect(timeout=1), RunCompleted)


async def test_unserializable_output_fails_the_run_naming_step_and_type() -> None:
    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.run("make-set", lambda: {1, 2})
        except Exception:  # the failure cannot be swallowed
            return "swallowed"
        return "unreachable"

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.attempts == 1  # not retried
    assert result.error is not None
    assert result.error.name == "SerializationError"
    assert "step 'make-set'" in result.error.message
    assert "set" in result.error.message


async def test_unserializable_function_result_fails_the_run() -> None:
    async def fn(ctx: Context) -> Any:
        return object()

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.error is not None and "the function" in result.error.message


async def test_output_over_4_mib_fails_the_run_naming_the_limit() -> None:
    async def fn(ctx: Context) -> Any:
        ok = await ctx.step.run("small", lambda: "x" * (4 * 1024 * 1024 - 2))  # quotes included
        await ctx.step.run("big", lambda: "x" * (4 * 1024 * 1024))
        return len(ok)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.name == "LimitExceededError"
    assert "step 'big'" in result.error.message and "4 MiB" in result.error.message
    assert result.step("small").status == "completed"


async def test_more_than_1000_steps_fails_the_run() -> None:
    async def fn(ctx: Context) -> Any:
        for i in range(1001):
            await ctx.step.run("s", identity, i)
        return "unreachable"

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.error is not None
    assert "limit of 1000 steps per run" in result.error.message
    assert "'s:1000'" in result.error.message
    assert len(result.steps) == 1000


async def test_steps_cannot_nest() -> None:
    async def fn(ctx: Context) -> Any:
        async def outer() -> Any:
            return await ctx.step.run("inner", lambda: 1)

        return await ctx.step.run("outer", outer)

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed"
    assert result.error is not None
    assert "step 'inner' was called inside the body of step 'outer'" in result.error.message


async def test_logger_is_quiet_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    async def fn(ctx: Context) -> Any:
        ctx.logger.info("before a")
        await ctx.step.run("a", lambda: 1)
        ctx.logger.info("after a")
        return None

    memos = {hash_id("a"): Memo(hash_id("a"), "a", "completed", output=1)}
    with caplog.at_level(logging.INFO, logger="streams.functions"):
        await activate(fn, memos)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("streams.functions")]
    assert messages == [f"run {RUN_ID}: after a"]


async def test_cancel_ends_the_stream_without_a_terminal_effect() -> None:
    async def fn(ctx: Context) -> Any:
        await ctx.step.run("forever", asyncio.sleep, 3600)

    driver = RunDriver(fn, RunInput(RUN_ID, "shop-f", EVENT), clock=ManualClock())
    driver.start()
    await asyncio.sleep(0)
    driver.cancel()
    assert [e async for e in driver.effects()] == []
    assert driver.terminal is None


async def test_apply_effect_builds_memos_the_next_activation_uses() -> None:
    calls = 0

    async def fn(ctx: Context) -> Any:
        nonlocal calls
        calls += 1
        return await ctx.step.run("a", lambda: "out")

    memos: dict[str, Memo] = {}
    _, effects = await activate(fn, memos)
    for effect in effects:
        apply_effect(memos, effect)
    _, again = await activate(fn, memos)
    assert again == [RunCompleted(RUN_ID, "out")]
    assert isinstance(effects[-1], RunCompleted) and not isinstance(effects[-1], RunFailed)
