"""ctx.group.parallel: branches run concurrently, results come back in order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from streams import testing
from streams.core import Context, ManualClock, RunDriver, RunInput, RunSuspended, StepCompleted
from streams.errors import StepError
from streams.event import Event, accept

EVENT = accept(Event(name="app/x"), at_ms=1_700_000_000_000)


async def test_parallel_async_steps_run_concurrently_and_keep_order() -> None:
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def a() -> str:
        a_started.set()
        await asyncio.wait_for(b_started.wait(), 5)  # would deadlock if run one after the other
        return "A"

    async def b() -> str:
        b_started.set()
        await asyncio.wait_for(a_started.wait(), 5)
        return "B"

    async def fn(ctx: Context) -> Any:
        return list(
            await ctx.group.parallel((lambda: ctx.step.run("a", a), lambda: ctx.step.run("b", b)))
        )

    result = await testing.run_async(fn, EVENT)
    assert result.result == ["A", "B"]
    assert [m.name for m in result.steps] == ["a", "b"]


async def test_parallel_sync_steps_run_in_threads_concurrently() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def work(i: int) -> int:
        barrier.wait()
        return i

    async def fn(ctx: Context) -> Any:
        calls = [lambda i=i: ctx.step.run(f"w{i}", work, i) for i in range(3)]
        return list(await ctx.group.parallel(calls))

    assert (await testing.run_async(fn, EVENT)).result == [0, 1, 2]


async def test_parallel_branch_retry_does_not_rerun_completed_branches() -> None:
    calls = {"ok": 0, "flaky": 0}

    async def ok() -> str:
        calls["ok"] += 1
        return "ok"

    async def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError("first try fails")
        return "recovered"

    async def fn(ctx: Context) -> Any:
        return list(
            await ctx.group.parallel(
                (lambda: ctx.step.run("ok", ok), lambda: ctx.step.run("flaky", flaky))
            )
        )

    result = await testing.run_async(fn, EVENT)
    assert result.result == ["ok", "recovered"]
    assert calls == {"ok": 1, "flaky": 2}


async def test_parallel_branches_with_several_steps_and_errors() -> None:
    async def failing() -> None:
        raise ValueError("nope")

    async def fn(ctx: Context) -> Any:
        async def branch(name: str) -> str:
            first = await ctx.step.run(f"{name}-1", lambda: name)
            second = await ctx.step.run(f"{name}-2", lambda: first + "!")
            return second

        results = await ctx.group.parallel((lambda: branch("x"), lambda: branch("y")))
        try:
            await ctx.group.parallel((lambda: ctx.step.run("bad", failing),))
        except StepError as err:
            return [*results, err.message]
        return None

    result = await testing.run_async(fn, EVENT)
    assert result.result == ["x!", "y!", "nope"]
    assert {m.name for m in result.steps} == {"x-1", "x-2", "y-1", "y-2", "bad"}
    assert result.step("bad").status == "failed"


async def test_parallel_step_ids_are_assigned_in_branch_order() -> None:
    async def fn(ctx: Context) -> Any:
        calls = [lambda i=i: ctx.step.run("same", lambda: i) for i in range(3)]
        return list(await ctx.group.parallel(calls))

    result = await testing.run_async(fn, EVENT, always_replay=True)
    assert result.result == [0, 1, 2]
    assert {m.name: m.output for m in result.steps} == {"same": 0, "same:1": 1, "same:2": 2}


async def test_parallel_of_nothing() -> None:
    async def fn(ctx: Context) -> Any:
        return list(await ctx.group.parallel(()))

    assert (await testing.run_async(fn, EVENT)).result == []


async def test_plain_asyncio_gather_waits_for_steps_in_flight_before_suspending() -> None:
    async def slow() -> str:
        await asyncio.sleep(0.01)
        return "slow"

    async def failing() -> str:
        raise ValueError("retry me")

    async def fn(ctx: Context) -> Any:
        return await asyncio.gather(ctx.step.run("slow", slow), ctx.step.run("fail", failing))

    driver = RunDriver(fn, RunInput("r", "f", EVENT), clock=ManualClock())
    effects = await driver.run_to_end()
    assert [type(e).__name__ for e in effects] == ["StepFailed", "StepCompleted", "RunSuspended"]
    assert isinstance(effects[1], StepCompleted) and effects[1].output == "slow"
    assert isinstance(effects[2], RunSuspended) and effects[2].name == "fail"
