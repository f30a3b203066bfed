"""Functions for the time-and-coordination tests: sleeps, waits, invoke, cancel, timeouts.

Second-scale durations stand in for the minutes and days of real use. Step bodies
append ``<run id> <what> <unix ms> <pid>`` to the ledger so tests can count executions
and check timing across processes. The app id comes from TEST_APP_ID.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from streams import (
    App,
    Cancel,
    Context,
    Event,
    NonRetriableError,
    StepError,
    Timeouts,
    TriggerEvent,
)

app = App(os.environ.get("TEST_APP_ID", "coordination"))
LEDGER = Path(os.environ.get("TEST_LEDGER", "/tmp/steplog-ledger.txt"))


def record(ctx: Context, what: str) -> str:
    with LEDGER.open("a") as f:
        f.write(f"{ctx.run_id} {what} {time.time_ns() // 1_000_000} {os.getpid()}\n")
    return what


# --- Sleeping ---------------------------------------------------------------------------
@app.function(fn_id="nap", trigger=TriggerEvent(event="test/nap"))
async def nap(ctx: Context) -> dict[str, Any]:
    await ctx.step.run("before", record, ctx, "before")
    await ctx.step.sleep("nap", float(ctx.event.data.get("seconds", 1)))
    await ctx.step.run("after", record, ctx, "after")
    return {"slept": ctx.event.data.get("seconds", 1)}


@app.function(fn_id="nap-until", trigger=TriggerEvent(event="test/nap-until"))
async def nap_until(ctx: Context) -> str:
    await ctx.step.sleep_until("until", ctx.event.data["until"])
    return await ctx.step.run("woke", record, ctx, "woke")


@app.function(fn_id="stamp", trigger=TriggerEvent(event="test/stamp"))
async def stamp(ctx: Context) -> str:
    """Records when its run started (future-ts events start at their ts)."""
    return await ctx.step.run("stamp", record, ctx, "stamp")


# --- Rate limiting with sleep (seed pattern) --------------------------------------------
@app.function(fn_id="rate-limited-api", trigger=TriggerEvent(event="app/api.external-call"))
async def rate_limited(ctx: Context) -> list[str]:
    calls = []
    for i in range(int(ctx.event.data.get("calls", 3))):
        await ctx.step.sleep(f"rate-limit-{i}", "1s")  # 1 call per second
        calls.append(await ctx.step.run(f"call-api-{i}", record, ctx, f"call-{i}"))
    return calls


# --- Request-Reply (seed pattern) ---------------------------------------------------------
@app.function(fn_id="process-report", trigger=TriggerEvent(event="app/report.requested"))
async def process_report(ctx: Context) -> dict[str, Any]:
    report_id = ctx.event.data["reportId"]
    await ctx.step.send_event(
        "start-generation", Event(name="app/report.generate", data={"reportId": report_id})
    )
    result = await ctx.step.wait_for_event(
        "wait-for-result",
        event="app/report.generated",
        timeout=ctx.event.data.get("timeout", "30m"),
        if_exp="async.data.reportId == event.data.reportId",
    )
    if result is None:
        return {"status": "timeout", "reportId": report_id}
    await ctx.step.run("save-result", record, ctx, f"saved {result.data['url']}")
    return {"status": "done", "url": result.data["url"]}


@app.function(fn_id="generate-report", trigger=TriggerEvent(event="app/report.generate"))
async def generate_report(ctx: Context) -> None:
    report_id = ctx.event.data["reportId"]
    if report_id.startswith(("never", "manual")):
        return  # nobody answers (the waiting run times out), or the test does
    await ctx.step.send_event(
        "done",
        Event(
            name="app/report.generated",
            data={"reportId": report_id, "url": f"https://reports/{report_id}"},
        ),
    )


# --- Fan-in: wait for all three services (seed pattern) ----------------------------------
@app.function(fn_id="orchestrate-onboarding", trigger=TriggerEvent(event="user/signup.completed"))
async def orchestrate_onboarding(ctx: Context) -> dict[str, Any]:
    def wait(step_id: str, name: str) -> Any:
        return lambda: ctx.step.wait_for_event(
            step_id, event=name, timeout="60s", if_exp="event.data.userId == async.data.userId"
        )

    email, sub, crm = await ctx.group.parallel(
        [
            wait("email-sent", "email/welcome.sent"),
            wait("subscription-created", "subscription/trial.created"),
            wait("crm-synced", "crm/contact.added"),
        ]
    )
    done = await ctx.step.run("complete-onboarding", record, ctx, "onboarded")
    return {
        "email": email and email.data["by"],
        "subscription": sub and sub.data["by"],
        "crm": crm and crm.data["by"],
        "done": done,
    }


# --- invoke -------------------------------------------------------------------------------
@app.function(fn_id="charge", trigger=TriggerEvent(event="test/never-sent"), retries=0)
async def charge(ctx: Context) -> dict[str, Any]:
    assert ctx.event.name == "inngest/function.invoked"
    amount = ctx.event.data["amount"]
    if amount < 0:
        raise NonRetriableError(f"cannot charge {amount}")
    return {"charged": await ctx.step.run("charge", lambda: amount)}


@app.function(fn_id="checkout", trigger=TriggerEvent(event="test/checkout"))
async def checkout(ctx: Context) -> dict[str, Any]:
    try:
        paid = await ctx.step.invoke(
            "pay", function=charge, data={"amount": ctx.event.data["amount"]}, timeout="30s"
        )
    except NonRetriableError as exc:
        return {"error": str(exc)}
    return {"paid": paid}


@app.function(fn_id="call-ghost", trigger=TriggerEvent(event="test/ghost"))
async def call_ghost(ctx: Context) -> str:
    try:
        await ctx.step.invoke("ghost", function="no-such-function", data={})
    except NonRetriableError as exc:
        return str(exc)
    return "unexpected"


# --- Saga: compensation steps after a failure (seed pattern) ----------------------------
@app.function(fn_id="book-trip", trigger=TriggerEvent(event="app/trip.booked"), retries=0)
async def book_trip(ctx: Context) -> dict[str, Any]:
    done: list[str] = []
    try:
        done.append(await ctx.step.run("reserve-hotel", record, ctx, "hotel"))
        await ctx.step.sleep("hold", "1s")
        done.append(await ctx.step.run("charge-card", _declined))
    except StepError as exc:
        for what in reversed(done):
            await ctx.step.run(f"undo-{what}", record, ctx, f"undo {what}")
        return {"status": "rolled back", "error": exc.message}
    return {"status": "booked"}


def _declined() -> str:
    raise NonRetriableError("card declined")


# --- Cancellation and timeouts -------------------------------------------------------------
@app.function(
    fn_id="cancellable",
    trigger=TriggerEvent(event="app/order.created"),
    cancel=[Cancel(event="app/order.cancelled", if_exp="async.data.orderId == event.data.orderId")],
)
async def cancellable(ctx: Context) -> str:
    await ctx.step.run("first", record, ctx, "first")
    await ctx.step.sleep("hold", ctx.event.data.get("hold", "20s"))
    return await ctx.step.run("second", record, ctx, "second")


@app.function(
    fn_id="slow-finish", trigger=TriggerEvent(event="test/slow"), timeouts=Timeouts(finish="2s")
)
async def slow_finish(ctx: Context) -> str:
    await ctx.step.run("first", record, ctx, "first")
    await ctx.step.sleep("too-long", "30s")
    return await ctx.step.run("second", record, ctx, "second")


@app.function(
    fn_id="prompt-start", trigger=TriggerEvent(event="test/prompt"), timeouts=Timeouts(start="3s")
)
async def prompt_start(ctx: Context) -> str:
    return await ctx.step.run("ran", record, ctx, "ran")
