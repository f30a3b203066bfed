"""Functions for the flow-control tests: concurrency limits, throttles, rate limits,
singletons, debounce, batches, priority.

Each step appends ``<run id> start|end <label> <unix ms> <pid>`` to the ledger when
it begins and when it lets go (in a ``finally``: a step cancelled by a shutdown lets
go too), so the tests can measure, from outside, how many ran at once. The app id
comes from TEST_APP_ID; the "notify" and singleton steps hold until the file
TEST_GATE exists (and the "jobs" steps).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from streams import (
    App,
    Batch,
    Concurrency,
    Context,
    Debounce,
    Event,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    TriggerEvent,
)

app = App(os.environ.get("TEST_APP_ID", "flow"))
LEDGER = Path(os.environ.get("TEST_LEDGER", "/tmp/steplog-ledger.txt"))
GATE = Path(os.environ.get("TEST_GATE", "/tmp/steplog-gate"))
STEP_S = float(os.environ.get("TEST_STEP_S", "0.05"))


def mark(ctx: Context, what: str, label: str) -> None:
    with LEDGER.open("a") as f:
        f.write(f"{ctx.run_id} {what} {label} {time.time_ns() // 1_000_000} {os.getpid()}\n")


async def held(ctx: Context, label: str, until_gate: bool) -> str:
    """A step body that occupies its slot: until the gate opens, then ``STEP_S``."""
    mark(ctx, "start", label)
    try:
        while until_gate and not GATE.exists():
            await asyncio.sleep(0.02)
        await asyncio.sleep(STEP_S)
    finally:
        mark(ctx, "end", label)
    return label


# --- "Max 3 notifications per user at once" (seed) ----------------------------------
@app.function(
    fn_id="notify",
    trigger=TriggerEvent(event="app/notification.send"),
    concurrency=Concurrency(limit=3, key="event.data.user"),
)
async def notify(ctx: Context) -> str:
    label = f"{ctx.event.data['user']}:{ctx.event.data['seq']}"
    return await ctx.step.run("deliver", held, ctx, label, True)


# --- Pitfall #2: one event fans out to many sends against an API that takes 50 -------
@app.function(fn_id="campaign", trigger=TriggerEvent(event="app/campaign.started"))
async def campaign(ctx: Context) -> int:
    total = int(ctx.event.data["emails"])
    for first in range(0, total, 1000):
        await ctx.step.send_event(
            f"emails-{first}",
            [
                Event(name="app/email.send", data={"n": n})
                for n in range(first, min(first + 1000, total))
            ],
        )
    return total


@app.function(
    fn_id="email-send",
    trigger=TriggerEvent(event="app/email.send"),
    concurrency=Concurrency(limit=50),
)
async def email_send(ctx: Context) -> int:
    await ctx.step.run("send", held, ctx, str(ctx.event.data["n"]), False)
    return int(ctx.event.data["n"])


# --- A rate limit: a digest at most 5 times an hour per user; the rest is skipped -----
@app.function(
    fn_id="digest",
    trigger=TriggerEvent(event="app/digest.requested"),
    rate_limit=RateLimit(limit=5, period="1h", key="event.data.user"),
)
async def digest(ctx: Context) -> str:
    label = f"{ctx.event.data['user']}:{ctx.event.data['seq']}"
    return await ctx.step.run("send", held, ctx, label, False)


# --- Singletons: one sync per account at a time; a newer one is skipped or wins ----------
async def _sync(ctx: Context) -> str:
    return await ctx.step.run("sync", held, ctx, str(ctx.event.data["seq"]), True)


for fn_id, mode in (("sync", "skip"), ("resync", "cancel")):
    app.function(
        fn_id=fn_id,
        trigger=TriggerEvent(event=f"app/account.{fn_id}"),
        singleton=Singleton(key="event.data.account", mode=mode),
    )(_sync)


# --- A throttle: two report starts per 4 s per user, spread (no burst) ---------------
@app.function(
    fn_id="paced",
    trigger=TriggerEvent(event="app/report.paced"),
    throttle=Throttle(limit=2, period="4s", key="event.data.user"),
)
async def paced(ctx: Context) -> str:
    label = f"{ctx.event.data['user']}:{ctx.event.data['seq']}"
    return await ctx.step.run("report", held, ctx, label, False)


# --- Debounce: reindex a user's profile 2 s after their last edit, with that edit -------
@app.function(
    fn_id="reindex",
    trigger=TriggerEvent(event="app/profile.edited"),
    debounce=Debounce(period="2s", key="event.data.user"),
)
async def reindex(ctx: Context) -> str:
    label = f"{ctx.event.data['user']}:{ctx.event.data['seq']}"
    return await ctx.step.run("reindex", held, ctx, label, False)


# --- "Batch instead of fan-out" (seed): rows written 100 at a time -------------------------
async def _write_rows(ctx: Context) -> list[int]:
    rows = [int(e.data["n"]) for e in ctx.events]
    mark(ctx, "start", f"{len(rows)}")
    mark(ctx, "end", f"{len(rows)}")
    return rows


app.function(
    fn_id="rows",
    trigger=TriggerEvent(event="app/row.added"),
    batch_events=Batch(max_size=100, timeout="5s"),
)(_write_rows)
app.function(
    fn_id="rows-by-user",
    trigger=TriggerEvent(event="app/row.added"),
    batch_events=Batch(max_size=100, timeout="5s", key="event.data.user"),
)(_write_rows)


# --- An env-scoped limit: two functions share two slots of one API ("llm") -------------
async def _llm(ctx: Context) -> str:
    return await ctx.step.run("call", held, ctx, f"{ctx.function_id}:{ctx.event.data['n']}", False)


for fn_id in ("summarize", "translate"):
    app.function(
        fn_id=fn_id,
        trigger=TriggerEvent(event=f"app/{fn_id}.requested"),
        concurrency=Concurrency(limit=2, key='"llm"', scope="env"),
    )(_llm)


# --- Priority: one job at a time; a VIP's job goes ahead of jobs queued up to 600 s before --
@app.function(
    fn_id="jobs",
    trigger=TriggerEvent(event="app/job.queued"),
    concurrency=Concurrency(limit=1),
    priority=Priority(run="has(event.data.vip) ? 600 : 0"),
)
async def jobs(ctx: Context) -> str:
    return await ctx.step.run("work", held, ctx, str(ctx.event.data["seq"]), True)


# --- Two limits at once: 2 exports per user, 3 in all ----------------------------------------
@app.function(
    fn_id="export",
    trigger=TriggerEvent(event="app/export.requested"),
    concurrency=[Concurrency(limit=2, key="event.data.user"), Concurrency(limit=3)],
)
async def export(ctx: Context) -> str:
    label = f"{ctx.event.data['user']}:{ctx.event.data['seq']}"
    return await ctx.step.run("export", held, ctx, label, False)
