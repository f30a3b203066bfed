"""The functions of the fault soak (bench/soak.py): a steady mix of the run shapes.

Every event the soak sends carries ``data.soak`` (the event's own id), and so does
every event or invoke payload a function derives from it, so each finished run can
be traced back to the event the load generator sent.

- ``soak/steps``  -> ``steps``: three steps (each awaits ``data.ms`` ms, 0 = inline).
- ``soak/sleep``  -> ``sleeper``: a step, ``step.sleep`` of ``data.seconds``, a step.
- ``soak/request`` -> ``requester``: sends ``soak/ask`` and waits for the ``soak/reply``
  whose ``data.req`` equals its own (``responder`` answers ``soak/ask``).
- ``soak/invoke`` -> ``caller``: a step, ``step.invoke`` of ``callee``, a step.
- ``soak/flaky``  -> ``flaky``: the middle step fails on its first attempt and is
  retried after a backoff (``STEPLOG_RETRY_BACKOFF_SCALE`` makes it short).

Each step body appends one line to the ledger ``SOAK_LEDGER`` with one ``write`` on
an ``O_APPEND`` descriptor (atomic for lines this short, across processes):
``<run id> <function> <step> <pid> <unix ms> <soak id>``. The flaky step's first
attempt is decided by creating ``<ledger>.d/<run id>`` exclusively: whoever creates
it fails. App id from ``BENCH_APP_ID``. Run: ``steplog worker bench.apps.soak:app``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from streams import App, Context, Event, NonRetriableError, TriggerEvent

app = App(os.environ.get("BENCH_APP_ID", "soak"))
LEDGER = Path(os.environ.get("SOAK_LEDGER", "/tmp/steplog-soak-ledger.txt"))
#: How long a requester waits for its reply and a caller for its callee.
REPLY_TIMEOUT = os.environ.get("SOAK_REPLY_TIMEOUT", "40s")


def record(ctx: Context, fn: str, step: str) -> str:
    line = f"{ctx.run_id} {fn} {step} {os.getpid()} {time.time_ns() // 1_000_000} "
    line += f"{ctx.event.data.get('soak', '-')}\n"
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return step


async def body(ctx: Context, fn: str, step: str, ms: float = 0) -> str:
    record(ctx, fn, step)
    if ms:
        await asyncio.sleep(ms / 1000)
    return step


def derived(ctx: Context, **data: Any) -> dict[str, Any]:
    return {"soak": ctx.event.data.get("soak"), **data}


@app.function(fn_id="steps", trigger=TriggerEvent(event="soak/steps"))
async def steps(ctx: Context) -> int:
    ms = float(ctx.event.data.get("ms", 0))
    for name in ("one", "two", "three"):
        await ctx.step.run(name, body, ctx, "steps", name, ms)
    return 3


@app.function(fn_id="sleeper", trigger=TriggerEvent(event="soak/sleep"))
async def sleeper(ctx: Context) -> float:
    seconds = float(ctx.event.data.get("seconds", 1))
    await ctx.step.run("before", body, ctx, "sleeper", "before")
    await ctx.step.sleep("nap", seconds)
    await ctx.step.run("after", body, ctx, "sleeper", "after")
    return seconds


@app.function(fn_id="requester", trigger=TriggerEvent(event="soak/request"))
async def requester(ctx: Context) -> dict[str, Any]:
    req = ctx.event.data["req"]
    await ctx.step.send_event("ask", Event(name="soak/ask", data=derived(ctx, req=req)))
    reply = await ctx.step.wait_for_event(
        "reply",
        event="soak/reply",
        timeout=REPLY_TIMEOUT,
        if_exp="async.data.req == event.data.req",
    )
    await ctx.step.run("got", body, ctx, "requester", "got")
    return {"replied": reply is not None}


@app.function(fn_id="responder", trigger=TriggerEvent(event="soak/ask"))
async def responder(ctx: Context) -> str:
    await ctx.step.run("compute", body, ctx, "responder", "compute")
    reply = Event(name="soak/reply", data=derived(ctx, req=ctx.event.data["req"]))
    await ctx.step.send_event("answer", reply)
    return "answered"


@app.function(fn_id="callee", trigger=TriggerEvent(event="soak/never-sent"))
async def callee(ctx: Context) -> int:
    await ctx.step.run("work", body, ctx, "callee", "work")
    return int(ctx.event.data.get("x", 0)) + 1


@app.function(fn_id="caller", trigger=TriggerEvent(event="soak/invoke"))
async def caller(ctx: Context) -> dict[str, Any]:
    x = int(ctx.event.data.get("x", 0))
    await ctx.step.run("prepare", body, ctx, "caller", "prepare")
    try:
        got = await ctx.step.invoke(
            "call", function=callee, data=derived(ctx, x=x), timeout=REPLY_TIMEOUT
        )
    except NonRetriableError as exc:
        return {"invoked": False, "error": str(exc)}
    await ctx.step.run("after", body, ctx, "caller", "after")
    return {"invoked": got == x + 1}


def _fail_first(ctx: Context) -> str:
    record(ctx, "flaky", "flaky")
    marks = LEDGER.with_name(LEDGER.name + ".d")
    marks.mkdir(exist_ok=True)
    try:
        os.close(os.open(marks / ctx.run_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return "flaky"
    raise RuntimeError("the first attempt fails on purpose")


@app.function(fn_id="flaky", trigger=TriggerEvent(event="soak/flaky"), retries=3)
async def flaky(ctx: Context) -> str:
    await ctx.step.run("first", body, ctx, "flaky", "first")
    await ctx.step.run("flaky", _fail_first, ctx)
    await ctx.step.run("last", body, ctx, "flaky", "last")
    return "recovered"
