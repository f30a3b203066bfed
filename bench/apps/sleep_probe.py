"""Runs that sleep until a given time and report when the step after the sleep started.

``bench/sleeper`` with ``data.due_ms``: ``step.sleep_until(due)``, then the step
``woke`` returns ``[due_ms, unix µs when its body started]``, which becomes the run's
result (read from ``inngest/function.finished`` by bench/sleeps.py). The step is
async, so it starts on the event loop without a thread-pool hop.

``sleep_until`` turns the due time into a datetime and back (float seconds), so the
timer may be set up to 1 ms before ``due_ms``; lateness is measured against ``due_ms``.

App id from ``BENCH_APP_ID``; bench/apps/introspect.py answers memory questions
when ``BENCH_PROBE_DIR`` is set. Run: ``steplog worker bench.apps.sleep_probe:app``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from bench.apps import introspect
from streams import App, Context, TriggerEvent

app = App(os.environ.get("BENCH_APP_ID", "sleeps"))
introspect.serve()


async def _woke(due_ms: int) -> list[int]:
    return [due_ms, time.time_ns() // 1000]


@app.function(fn_id="sleeper", trigger=TriggerEvent(event="bench/sleeper"))
async def sleeper(ctx: Context) -> list[int]:
    due_ms = int(ctx.event.data["due_ms"])
    await ctx.step.sleep_until("nap", datetime.fromtimestamp(due_ms / 1000, tz=UTC))
    return await ctx.step.run("woke", _woke, due_ms)
