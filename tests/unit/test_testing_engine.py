"""streams.testing.Engine: a whole app in memory - sleeps, waits, invoke, cancellation,
timeouts, retries, fan-out - driven by the same lifecycle as the workers."""

from __future__ import annotations

from typing import Any

import pytest

from streams import App, Cancel, Context, Event, Timeouts, TriggerEvent
from streams.testing import Engine


def shop() -> App:
    app = App("shop")

    @app.function(
        fn_id="checkout",
        trigger=TriggerEvent(event="shop/order.created"),
        cancel=[Cancel(event="shop/order.cancelled", if_exp="async.data.id == event.data.id")],
    )
    async def checkout(ctx: Context) -> dict[str, Any]:
        order = ctx.event.data["id"]
        await ctx.step.run("reserve", lambda: f"reserved {order}")
        paid = await ctx.step.wait_for_event(
            "payment",
            event="shop/payment.received",
            timeout="30m",
            if_exp="async.data.id == event.data.id",
        )
        if paid is None:
            return {"order": order, "status": "expired"}
        await ctx.step.sleep("cool-off", "5m")
        receipt = await ctx.step.invoke("receipt", function=receipt_fn, data={"id": order})
        await ctx.step.send_event("shipped", Event(name="shop/order.shipped", data={"id": order}))
        return {"order": order, "status": "shipped", "receipt": receipt}

    @app.function(fn_id="receipt", trigger=TriggerEvent(event="shop/receipt.requested"))
    async def receipt_fn(ctx: Context) -> str:
        return str(await ctx.step.run("render", lambda: f"receipt-{ctx.event.data['id']}"))

    @app.function(fn_id="notify", trigger=TriggerEvent(event="shop/order.shipped"))
    async def notify(ctx: Context) -> str:
        return str(await ctx.step.run("email", lambda: f"mail for {ctx.event.data['id']}"))

    return app


def test_a_run_waits_for_the_event_the_test_sends_then_sleeps_invokes_and_fans_out() -> None:
    engine = Engine(shop())
    engine.send({"name": "shop/order.created", "data": {"id": 1}})
    assert engine.run("checkout").status == "waiting"
    engine.send({"name": "shop/payment.received", "data": {"id": 2}})  # another order's
    assert engine.run("checkout").status == "waiting"
    engine.send({"name": "shop/payment.received", "data": {"id": 1}})
    assert engine.run("checkout").status == "sleeping"
    engine.advance("4m")
    assert engine.run("checkout").status == "sleeping"
    engine.advance("1m")
    run = engine.run("checkout")
    assert run.status == "completed"
    assert run.result == {"order": 1, "status": "shipped", "receipt": "receipt-1"}
    assert run.step("reserve")["output"] == "reserved 1"
    assert engine.run("receipt").result == "receipt-1"
    assert engine.run("notify").result == "mail for 1"
    names = [e.name for e in engine.events]
    assert names.count("inngest/function.finished") == 3
    assert "shop/order.shipped" in names


def test_an_unanswered_wait_times_out_when_the_clock_passes_it() -> None:
    engine = Engine(shop())
    engine.send({"name": "shop/order.created", "data": {"id": 7}})
    engine.settle()  # jumps the clock to the wait's timeout
    assert engine.run("checkout").result == {"order": 7, "status": "expired"}


def test_a_cancel_rule_and_the_cancel_api_end_runs_between_steps() -> None:
    engine = Engine(shop())
    engine.send({"name": "shop/order.created", "data": {"id": 1}})
    engine.send({"name": "shop/order.created", "data": {"id": 2}})
    engine.send({"name": "shop/order.cancelled", "data": {"id": 1}})
    runs = {r.event["data"]["id"]: r for r in engine.runs("checkout")}
    assert runs[1].status == "cancelled"
    assert runs[1].error is not None and runs[1].error["message"] == "function cancelled"
    assert runs[2].status == "waiting"
    engine.cancel(runs[2].run_id)
    assert {r.status for r in engine.runs("checkout")} == {"cancelled"}
    cancelled = [e for e in engine.events if e.name == "inngest/function.cancelled"]
    assert len(cancelled) == 2


def test_timeouts_cancel_a_run_that_starts_or_finishes_too_late() -> None:
    app = App("t")

    @app.function(
        fn_id="slow",
        trigger=TriggerEvent(event="t/go"),
        timeouts=Timeouts(start="1m", finish="10m"),
    )
    async def slow(ctx: Context) -> str:
        await ctx.step.sleep("long", "1h")
        return "done"

    engine = Engine(app)
    engine.send({"name": "t/go", "data": {"n": 1}})
    engine.settle()
    assert engine.run("slow").status == "cancelled"  # finish timeout after 10 min

    late = Engine(app)
    late.send({"name": "t/go", "data": {"n": 2}}, process=False)  # no worker runs...
    late.advance("2m")  # ...for two minutes: the run could not start in time
    assert late.run("slow").status == "cancelled"
    assert late.run("slow").steps == []


def test_retries_back_off_on_the_clock_and_idempotency_keeps_one_run_per_key() -> None:
    app = App("t")
    attempts: list[int] = []

    @app.function(
        fn_id="charge",
        trigger=TriggerEvent(event="t/charge"),
        idempotency="event.data.user",
        retries=3,
    )
    async def charge(ctx: Context) -> str:
        def call() -> str:
            attempts.append(1)
            if len(attempts) < 3:
                raise RuntimeError("gateway timeout")
            return "charged"

        return str(await ctx.step.run("call", call))

    engine = Engine(app, retry_scale=1.0)
    engine.send({"name": "t/charge", "data": {"user": "u1"}})
    engine.send({"name": "t/charge", "data": {"user": "u1"}})  # same key: no second run
    assert engine.run("charge").status == "retrying" and len(attempts) == 1
    engine.settle()
    run = engine.run("charge")
    assert run.status == "completed" and run.result == "charged"
    assert run.step("call")["attempts"] == 3
    assert len(attempts) == 3


def test_an_event_with_a_future_ts_starts_its_run_then() -> None:
    app = App("t")

    @app.function(fn_id="later", trigger=TriggerEvent(event="t/later"))
    async def later(ctx: Context) -> int:
        return int(await ctx.step.run("now", lambda: 1))

    engine = Engine(app)
    ts = engine.clock.now_ms() + 3_600_000
    engine.send({"name": "t/later", "ts": ts})
    assert engine.run("later").status == "scheduled"
    engine.settle()
    assert engine.run("later").status == "completed"
    assert engine.clock.now_ms() >= ts


def test_an_on_failure_handler_hears_of_a_failed_run() -> None:
    app = App("t")

    async def alert(ctx: Context) -> str:
        return str(ctx.event.data["error"]["message"])

    @app.function(fn_id="fragile", trigger=TriggerEvent(event="t/x"), retries=0, on_failure=alert)
    async def fragile(ctx: Context) -> None:
        raise ValueError("broken")

    engine = Engine(app)
    engine.send({"name": "t/x"})
    assert engine.run("fragile").status == "failed"
    assert engine.run("fragile-failure").result == "broken"


async def test_engine_async_api_and_its_sync_calls_refused_in_async_code() -> None:
    engine = Engine(shop())
    with pytest.raises(RuntimeError, match="_async"):
        engine.send({"name": "shop/order.created", "data": {"id": 1}})
    await engine.send_async({"name": "shop/order.created", "data": {"id": 1}})
    await engine.settle_async()
    assert engine.run("checkout").result == {"order": 1, "status": "expired"}
