"""Functions for the end-to-end tests: the messaging patterns of the seeds.

The app id comes from TEST_APP_ID so every test has its own consumer group.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from streams import App, Cancel, Context, Event, NonRetriableError, StepError, TriggerEvent

app = App(os.environ.get("TEST_APP_ID", "patterns"))
#: Step bodies append a line here, so tests can count executions across processes.
LEDGER = Path(os.environ.get("TEST_LEDGER", "/tmp/steplog-ledger.txt"))


def record(line: str) -> None:
    with LEDGER.open("a") as f:
        f.write(line + "\n")


# --- Command: one function does one thing, durably --------------------------------
@app.function(fn_id="send-welcome-email", trigger=TriggerEvent(event="app/auth.sign-up"))
async def send_welcome_email(ctx: Context) -> dict[str, str]:
    sent = await ctx.step.run("send", lambda: {"to": ctx.event.data["email"]})
    return {"sent": sent["to"]}


# --- Event (fan-out): independent handlers of one fact ------------------------------
@app.function(fn_id="welcome", trigger=TriggerEvent(event="app/user.signed-up"))
async def welcome(ctx: Context) -> str:
    return await ctx.step.run("email", lambda: "welcomed " + ctx.event.data["userId"])


@app.function(fn_id="record-signup", trigger=TriggerEvent(event="app/user.*"))
async def record_signup(ctx: Context) -> str:
    return await ctx.step.run("analytics", lambda: "recorded " + ctx.event.data["userId"])


@app.function(fn_id="fragile", trigger=TriggerEvent(event="app/user.signed-up"), retries=0)
async def fragile(ctx: Context) -> None:
    await ctx.step.run("boom", _boom)


def _boom() -> None:
    raise NonRetriableError("the CRM is down for good")


# --- Choreography: each step of a flow reacts to the previous one's event -----------
@app.function(fn_id="order-placed", trigger=TriggerEvent(event="shop/order.placed"))
async def order_placed(ctx: Context) -> None:
    await ctx.step.send_event(
        "reserve", Event(name="shop/inventory.reserve", data=dict(ctx.event.data))
    )


@app.function(fn_id="inventory", trigger=TriggerEvent(event="shop/inventory.reserve"))
async def inventory(ctx: Context) -> None:
    await ctx.step.run("reserve", lambda: record(f"reserve {ctx.event.data['orderId']}"))
    await ctx.step.send_event(
        "reserved", Event(name="shop/inventory.reserved", data=dict(ctx.event.data))
    )


@app.function(fn_id="ship", trigger=TriggerEvent(event="shop/inventory.reserved"))
async def ship(ctx: Context) -> str:
    return await ctx.step.run("ship", lambda: f"shipped {ctx.event.data['orderId']}")


# --- Retries: fail twice, then succeed (backoff via durable timers) -------------------
@app.function(fn_id="flaky", trigger=TriggerEvent(event="test/flaky"), retries=3)
async def flaky(ctx: Context) -> str:
    async def attempt() -> str:
        marker = LEDGER.with_suffix(f".flaky.{ctx.run_id}")
        n = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(n + 1))
        if n < 2:
            raise RuntimeError(f"attempt {n} failed")
        return f"ok after {n + 1} attempts"

    return await ctx.step.run("call", attempt)


@app.function(fn_id="gives-up", trigger=TriggerEvent(event="test/gives-up"), retries=1)
async def gives_up(ctx: Context) -> str:
    try:
        await ctx.step.run("always-fails", _always_fails)
    except StepError as exc:
        message = exc.message
        return await ctx.step.run("compensate", lambda: f"compensated: {message}")
    return "unreachable"


def _always_fails() -> None:
    raise RuntimeError("nope")


# --- Long multi-step run (crash tests) and a slow step (head-of-line tests) ---------
@app.function(fn_id="multi-step", trigger=TriggerEvent(event="test/multi"))
async def multi_step(ctx: Context) -> int:
    total = 0
    for i in range(int(ctx.event.data.get("steps", 5))):

        async def body(i: int = i) -> int:
            record(f"{ctx.run_id} step-{i}")
            await asyncio.sleep(float(ctx.event.data.get("step_seconds", 0.3)))
            return i

        total += await ctx.step.run(f"step-{i}", body)
    return total


@app.function(fn_id="slow-step", trigger=TriggerEvent(event="test/slow"))
async def slow_step(ctx: Context) -> str:
    async def slow() -> str:
        await asyncio.sleep(float(ctx.event.data.get("seconds", 0.2)))
        return "slept"

    return await ctx.step.run("slow", slow)


@app.function(
    fn_id="idempotent", trigger=TriggerEvent(event="test/idem"), idempotency="event.data.userId"
)
async def idempotent(ctx: Context) -> str:
    return await ctx.step.run("once", lambda: "charged " + ctx.event.data["userId"])


# --- on_failure handler ---------------------------------------------------------------
async def on_fail(ctx: Context) -> str:
    return "handled " + str(ctx.event.data["error"]["message"])


@app.function(
    fn_id="fails", trigger=TriggerEvent(event="test/fails"), retries=0, on_failure=on_fail
)
async def fails(ctx: Context) -> None:
    raise NonRetriableError("broken on purpose")


@app.function(
    fn_id="cancellable",
    trigger=TriggerEvent(event="test/cancellable"),
    cancel=[Cancel(event="test/cancel-it", if_exp="async.data.n == event.data.n")],
)
async def cancellable(ctx: Context) -> str:
    await ctx.step.run("begin", lambda: record(f"{ctx.run_id} begin"))
    await ctx.step.sleep("long", "1h")
    return "not cancelled"


# --- Crash safety, workers and retention tests ----------------------------------------
@app.function(fn_id="flaky-once", trigger=TriggerEvent(event="test/flaky-once"), retries=2)
async def flaky_once(ctx: Context) -> str:
    """Its step fails on the first attempt only; every attempt is a ledger line."""

    async def attempt() -> str:
        marker = LEDGER.with_suffix(f".flaky-once.{ctx.run_id}")
        n = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(n + 1))
        record(f"{ctx.run_id} attempt-{n} {time.time_ns() // 1_000_000}")
        if n < 1:
            raise RuntimeError(f"attempt {n} failed")
        return f"ok after {n + 1} attempts"

    return await ctx.step.run("call", attempt)


@app.function(fn_id="tracked-steps", trigger=TriggerEvent(event="test/tracked"))
async def tracked_steps(ctx: Context) -> int:
    """Like multi-step, but each ledger line also names the worker process."""
    total = 0
    for i in range(int(ctx.event.data.get("steps", 4))):

        async def body(i: int = i) -> int:
            record(f"{ctx.run_id} step-{i} pid-{os.getpid()}")
            await asyncio.sleep(float(ctx.event.data.get("step_seconds", 0.3)))
            return i

        total += await ctx.step.run(f"step-{i}", body)
    return total


# --- Large step outputs travel through the journal; parallel steps ------------------
@app.function(fn_id="big-output", trigger=TriggerEvent(event="test/big"))
async def big_output(ctx: Context) -> int:
    async def big() -> str:
        await asyncio.sleep(0.05)  # long enough to detach: the output goes via the journal
        return "x" * (3 * 1024 * 1024)

    blob = await ctx.step.run("big", big)
    return await ctx.step.run("measure", lambda: len(blob))


@app.function(fn_id="fan-in", trigger=TriggerEvent(event="test/parallel"))
async def fan_in(ctx: Context) -> list[int]:
    async def part(n: int) -> int:
        await asyncio.sleep(0.05)
        return n * n

    results = await ctx.group.parallel(
        tuple((lambda n=n: ctx.step.run(f"part-{n}", part, n)) for n in range(4))
    )
    return list(results)
