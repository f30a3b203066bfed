"""Benchmark functions: no-op steps, selected by event name.

``bench/steps.N`` (N in 0, 1, 3, 10, 100) runs a function of N no-op async steps;
each step returns its input + 1, so a run triggered with ``data={"x": i}`` returns
``i + N`` (the peers' workload checks ``i + 3``). ``bench/keyed.3`` and
``bench/keyless.3`` are ``bench/steps.3`` under a concurrency limit of 50 (keyed
per run; key-less). ``bench/sleep`` runs one step that
awaits ``data.seconds`` (default 0.2 s) and returns ``x + 1``. ``bench/timed.N``
is ``bench/steps.N`` whose steps also note when their body started and ended
(``time.time_ns()``): it returns ``{"x": i + N, "spans": [[start, end], ...]}``, so
the load generator can see time to first step and the gap between steps by index.

The app id comes from ``BENCH_APP_ID`` so every benchmark sitting has its own
consumer group and tables. Run: ``steplog worker bench.apps.noop:app``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from streams import App, Concurrency, Context, TriggerEvent

app = App(os.environ.get("BENCH_APP_ID", "bench"))

STEP_COUNTS = (0, 1, 3, 10, 100)


async def _inc(x: int) -> int:
    return x + 1


def _steps_function(n: int) -> Any:
    async def handler(ctx: Context) -> int:
        x = int(ctx.event.data.get("x", 0))
        for i in range(n):
            x = await ctx.step.run(f"s{i}", _inc, x)
        return x

    handler.__name__ = f"steps_{n}"
    return app.function(fn_id=f"steps-{n}", trigger=TriggerEvent(event=f"bench/steps.{n}"))(handler)


STEPS = {n: _steps_function(n) for n in STEP_COUNTS}


async def _three_steps(ctx: Context) -> int:
    x = int(ctx.event.data.get("x", 0))
    for i in range(3):
        x = await ctx.step.run(f"s{i}", _inc, x)
    return x


#: ``bench/steps.3`` under a concurrency limit of 50: keyed by the run's ``x`` (one
#: key per run, never contended), or key-less (every run on one partition).
KEYED = app.function(
    fn_id="keyed-3",
    trigger=TriggerEvent(event="bench/keyed.3"),
    concurrency=Concurrency(limit=50, key="event.data.x"),
)(_three_steps)
KEYLESS = app.function(
    fn_id="keyless-3",
    trigger=TriggerEvent(event="bench/keyless.3"),
    concurrency=Concurrency(limit=50),
)(_three_steps)


async def _timed_inc(x: int) -> list[int]:
    started = time.time_ns()
    return [x + 1, started, time.time_ns()]


def _timed_function(n: int) -> Any:
    async def handler(ctx: Context) -> dict[str, Any]:
        x = int(ctx.event.data.get("x", 0))
        spans = []
        for i in range(n):
            x, started, ended = await ctx.step.run(f"s{i}", _timed_inc, x)
            spans.append([started, ended])
        return {"x": x, "spans": spans}

    handler.__name__ = f"timed_{n}"
    return app.function(fn_id=f"timed-{n}", trigger=TriggerEvent(event=f"bench/timed.{n}"))(handler)


TIMED = {n: _timed_function(n) for n in STEP_COUNTS if n}


@app.function(fn_id="sleep", trigger=TriggerEvent(event="bench/sleep"))
async def sleep_step(ctx: Context) -> int:
    seconds = float(ctx.event.data.get("seconds", 0.2))

    async def slow(x: int) -> int:
        await asyncio.sleep(seconds)
        return x + 1

    return int(await ctx.step.run("sleep", slow, int(ctx.event.data.get("x", 0))))
