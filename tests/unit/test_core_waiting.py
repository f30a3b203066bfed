"""Steps completed from outside the run: sleep, sleep_until, wait_for_event, invoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams import Context, NonRetriableError, testing
from streams.core import ManualClock, RunDriver, RunInput, RunSuspended, StepWaiting
from streams.core.memo import apply_effect, completion
from streams.event import Event, accept

START = 1_700_000_000_000
EVENT = accept(Event(name="app/report.requested", data={"reportId": "r1"}), at_ms=START)


async def test_sleep_suspends_until_due_then_continues_once() -> None:
    seen: list[str] = []

    async def fn(ctx: Context) -> Any:
        await ctx.step.run("before", lambda: seen.append("before"))
        await ctx.step.sleep("nap", "90s")
        await ctx.step.run("after", lambda: seen.append("after"))
        return "done"

    clock = ManualClock(START)
    result = await testing.run_async(fn, EVENT, clock=clock)
    assert result.status == "completed" and result.result == "done"
    assert seen == ["before", "after"]
    assert result.activations == 2
    assert clock.now_ms() == START + 90_000
    nap = result.step("nap")
    assert (nap.op, nap.status, nap.output) == ("sleep", "completed", None)
    waiting = [e for e in result.effects if isinstance(e, StepWaiting)]
    assert [(w.op, w.due_ms) for w in waiting] == [("sleep", START + 90_000)]
    suspended = [e for e in result.effects if isinstance(e, RunSuspended)]
    assert [(s.reason, s.wake_at_ms) for s in suspended] == [("sleep", START + 90_000)]


async def test_sleep_until_accepts_datetimes_and_iso_strings_and_the_past() -> None:
    async def fn(ctx: Context) -> Any:
        await ctx.step.sleep_until("a", datetime.fromtimestamp(START / 1000 + 60, UTC))
        await ctx.step.sleep_until("b", "2000-01-01T00:00:00Z")  # past: no pause
        await ctx.step.sleep_until("c", datetime.fromtimestamp(START / 1000 + 120))  # naive=UTC?
        return None

    clock = ManualClock(START)
    result = await testing.run_async(fn, EVENT, clock=clock)
    assert result.status == "completed"
    assert [m.status for m in result.steps] == ["completed", "completed", "completed"]
    assert result.activations <= 3


async def test_sleeping_longer_than_366_days_fails_at_the_call() -> None:
    caught: list[str] = []

    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.sleep("forever", timedelta(days=400))
        except NonRetriableError as exc:
            caught.append(str(exc))
        await ctx.step.sleep("too-long", "367d")

    result = await testing.run_async(fn, EVENT)
    assert caught and "longer than the 366 days" in caught[0]
    assert result.status == "failed" and result.attempts == 1
    assert result.error is not None and "step.sleep('too-long')" in result.error.message


async def test_wait_for_event_times_out_with_none_and_registers_an_indexed_wait() -> None:
    async def fn(ctx: Context) -> Any:
        got = await ctx.step.wait_for_event(
            "wait-report",
            event="app/report.generated",
            timeout="30m",
            if_exp="async.data.reportId == event.data.reportId",
        )
        return got

    clock = ManualClock(START)
    result = await testing.run_async(fn, EVENT, clock=clock)
    assert result.status == "completed" and result.result is None
    assert clock.now_ms() == START + 30 * 60_000
    (waiting,) = [e for e in result.effects if isinstance(e, StepWaiting)]
    assert waiting.op == "wait" and waiting.due_ms == START + 30 * 60_000
    assert waiting.spec["event"] == "app/report.generated"
    assert waiting.spec["registered_ms"] == START
    assert waiting.spec["hint"] == ("data.reportId", '"r1"')


async def test_a_mocked_wait_returns_the_event() -> None:
    reply = Event(name="app/report.generated", data={"reportId": "r1", "url": "u"})

    async def fn(ctx: Context) -> Any:
        got = await ctx.step.wait_for_event("wait", event="app/report.generated", timeout="1h")
        assert got is not None
        return got.data["url"]

    result = await testing.run_async(fn, EVENT, steps={"wait": reply})
    assert result.status == "completed" and result.result == "u"


async def test_bad_wait_arguments_fail_with_the_step_named() -> None:
    async def fn(ctx: Context) -> Any:
        await ctx.step.wait_for_event("w", event="app/x", timeout="1h", if_exp="asink.data.x == 1")

    result = await testing.run_async(fn, EVENT)
    assert result.status == "failed" and result.attempts == 1
    assert result.error is not None
    assert "step.wait_for_event('w')" in result.error.message
    assert "unknown variable" in result.error.message


async def test_parallel_waits_register_together_in_one_activation() -> None:
    async def fn(ctx: Context) -> Any:
        got = await ctx.group.parallel(
            [
                lambda name=name: ctx.step.wait_for_event(  # type: ignore[misc]
                    f"wait-{name}", event=f"app/{name}.done", timeout="1h"
                )
                for name in ("billing", "shipping", "email")
            ]
        )
        return [e.name if e else None for e in got]

    clock = ManualClock(START)
    driver = RunDriver(fn, RunInput("run-1", "f", EVENT), clock=clock)
    effects = await driver.run_to_end()
    waiting = [e for e in effects if isinstance(e, StepWaiting)]
    assert [w.spec["event"] for w in waiting] == [
        "app/billing.done",
        "app/shipping.done",
        "app/email.done",
    ]
    assert isinstance(effects[-1], RunSuspended)

    # the edge completes two of them from outside; the next activation still waits
    memos: dict[str, Any] = {}
    for effect in effects:
        apply_effect(memos, effect)
    for w in waiting[:2]:
        out = Event(name=w.spec["event"], data={}).model_dump()
        apply_effect(memos, completion("run-1", memos[w.step_id], START + 5, output=out))
    second = await driver.next_activation(memos).run_to_end()
    assert [type(e).__name__ for e in second] == ["RunSuspended"]
    # the third arrives: all three come back, in order
    last = waiting[2]
    out = Event(name=last.spec["event"], data={"ok": True}).model_dump()
    apply_effect(memos, completion("run-1", memos[last.step_id], START + 9, output=out))
    third = await driver.next_activation(memos).run_to_end()
    assert third[-1].type == "run.completed"
    assert third[-1].result == [  # type: ignore[union-attr]
        "app/billing.done",
        "app/shipping.done",
        "app/email.done",
    ]


async def test_invoke_returns_the_result_or_raises_non_retriable() -> None:
    async def fn(ctx: Context) -> Any:
        total = await ctx.step.invoke("charge", function="shop-charge", data={"amount": 3})
        try:
            await ctx.step.invoke("refund", function="shop-refund", timeout="10s")
        except NonRetriableError as exc:
            return {"total": total, "refund": str(exc)}
        return None

    clock = ManualClock(START)
    result = await testing.run_async(fn, EVENT, clock=clock, steps={"charge": 3})
    assert result.status == "completed"
    assert result.result["total"] == 3
    assert "shop-refund did not finish within its timeout" in result.result["refund"]
    invoke = [e for e in result.effects if isinstance(e, StepWaiting)]
    assert [(w.op, w.spec) for w in invoke] == [("invoke", {"function": "shop-refund", "data": {}})]


async def test_a_failed_invoke_raises_non_retriable_in_the_caller() -> None:
    async def fn(ctx: Context) -> Any:
        return await ctx.step.invoke("charge", function="shop-charge")

    driver = RunDriver(fn, RunInput("run-2", "f", EVENT), clock=ManualClock(START))
    memos: dict[str, Any] = {}
    for effect in await driver.run_to_end():
        apply_effect(memos, effect)
    (memo,) = memos.values()
    from streams.core import ErrorInfo

    error = ErrorInfo("InvokedFunctionError", "invoked function shop-charge failed: boom")
    apply_effect(memos, completion("run-2", memo, START + 1, error=error))
    effects = await driver.next_activation(memos).run_to_end()
    assert effects[-1].type == "run.failed"
    assert effects[-1].error.name == "NonRetriableError"  # type: ignore[union-attr]
    assert effects[-1].retry_at_ms is None  # type: ignore[union-attr]
