"""Functions whose user code misbehaves, for tests/test_misbehaving_code.py.

Each function does one wrong thing; ``well-behaved`` is the run that must still finish
on the same worker. The app id comes from TEST_APP_ID (one consumer group per test);
step bodies append to TEST_LEDGER so tests can count executions.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from streams import App, Context, TriggerEvent

app = App(os.environ.get("TEST_APP_ID", "misbehave"))
LEDGER = Path(os.environ.get("TEST_LEDGER", "/tmp/steplog-misbehave-ledger.txt"))
#: How long ``block-loop``'s async step body blocks the event loop.
BLOCK_SECONDS = float(os.environ.get("TEST_BLOCK_SECONDS", "15"))
MIB = 1024 * 1024


def record(line: str) -> None:
    with LEDGER.open("a") as f:
        f.write(line + "\n")


@app.function(fn_id="well-behaved", trigger=TriggerEvent(event="test/ok"))
async def well_behaved(ctx: Context) -> int:
    async def tick() -> int:
        await asyncio.sleep(0.01)
        return 1

    first = await ctx.step.run("one", tick)
    second = await ctx.step.run("two", tick)
    return first + second + int(ctx.event.data.get("n", 0))


# --- 1. an async step body that blocks the event loop --------------------------------
@app.function(fn_id="block-loop", trigger=TriggerEvent(event="test/block"), retries=0)
async def block_loop(ctx: Context) -> str:
    async def blocking() -> str:
        record(f"{ctx.run_id} block-start")
        time.sleep(BLOCK_SECONDS)  # the mistake: a blocking call in an async body
        record(f"{ctx.run_id} block-end")
        return "blocked"

    await ctx.step.run("before", lambda: "ok")
    out = await ctx.step.run("hog", blocking)
    await ctx.step.run("after", lambda: record(f"{ctx.run_id} after"))
    return out


# --- 2. an output that is not JSON-serializable --------------------------------------
@app.function(fn_id="unserializable", trigger=TriggerEvent(event="test/unserializable"))
async def unserializable(ctx: Context) -> str:
    def make() -> object:
        record(f"{ctx.run_id} make")
        return {"at": object()}

    await ctx.step.run("make", make)
    return "unreachable"


# --- 3. outputs at and over the 4 MiB limit ------------------------------------------
@app.function(fn_id="oversized", trigger=TriggerEvent(event="test/oversized"))
async def oversized(ctx: Context) -> int:
    def big() -> str:
        record(f"{ctx.run_id} big")
        # non-ASCII text of 2 bytes a character: the size is counted in UTF-8
        return "é" * (ctx.event.data["chars"])

    async def pause() -> None:
        await asyncio.sleep(0.05)  # the run is detached: its outputs go through the journal

    await ctx.step.run("pause", pause)
    out = await ctx.step.run("big", big)
    return len(out)


# --- 4. SystemExit, KeyboardInterrupt, GeneratorExit in step bodies -------------------
EXITS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
}


@app.function(fn_id="exits", trigger=TriggerEvent(event="test/exit"), retries=1)
async def exits(ctx: Context) -> str:
    kind = EXITS[ctx.event.data["kind"]]

    def sync_body() -> None:
        record(f"{ctx.run_id} exit")
        raise kind(3) if kind is SystemExit else kind()

    async def async_body() -> None:
        sync_body()

    await ctx.step.run("quit", sync_body if ctx.event.data["sync"] else async_body)
    return "unreachable"


# --- 5. a step called inside another step --------------------------------------------
@app.function(fn_id="nested", trigger=TriggerEvent(event="test/nested"))
async def nested(ctx: Context) -> str:
    async def outer() -> str:
        record(f"{ctx.run_id} outer")
        return await ctx.step.run("inner", lambda: record(f"{ctx.run_id} inner"))

    def sync_outer() -> str:
        record(f"{ctx.run_id} outer")
        return asyncio.run(ctx.step.run("inner", lambda: record(f"{ctx.run_id} inner")))

    return await ctx.step.run("outer", outer if not ctx.event.data.get("sync") else sync_outer)


# --- 6. a step called after the function returned ------------------------------------
_late_tasks: set[asyncio.Task[None]] = set()


@app.function(fn_id="late-step", trigger=TriggerEvent(event="test/late"))
async def late_step(ctx: Context) -> str:
    async def later() -> None:
        await asyncio.sleep(0.3)  # the function has returned by now
        await ctx.step.run("late", lambda: record(f"{ctx.run_id} late"))

    task = asyncio.create_task(later())
    _late_tasks.add(task)
    task.add_done_callback(_late_tasks.discard)
    await ctx.step.run("slow", asyncio.sleep, 0.05)  # detached: effects go through the journal
    return "returned"
