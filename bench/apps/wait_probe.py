"""Runs that wait for a reply event, for bench/waits.py.

``bench/waiter`` with ``data.y``: ``step.wait_for_event("reply", event="bench/reply",
if_exp="async.data.x == event.data.y", timeout=data.timeout or "2h")`` (the indexed
equality form), then the step ``woke`` returns ``[y, reply's data.sent_us, unix µs
when its body started]`` (``None`` after a timeout). ``bench/other`` starts nothing
and nobody waits for it: the router's cost for an event without waits.

App id from ``BENCH_APP_ID``; bench/apps/introspect.py answers memory questions
when ``BENCH_PROBE_DIR`` is set. Run: ``steplog worker bench.apps.wait_probe:app``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.apps import introspect
from streams import App, Context, TriggerEvent

app = App(os.environ.get("BENCH_APP_ID", "waits"))
introspect.serve()

IF_EXP = "async.data.x == event.data.y"


async def _woke(y: Any, sent_us: Any) -> list[Any]:
    return [y, sent_us, time.time_ns() // 1000]


@app.function(fn_id="waiter", trigger=TriggerEvent(event="bench/waiter"))
async def waiter(ctx: Context) -> list[Any] | None:
    reply = await ctx.step.wait_for_event(
        "reply",
        event="bench/reply",
        if_exp=IF_EXP,
        timeout=ctx.event.data.get("timeout", "2h"),
    )
    if reply is None:
        return None
    return await ctx.step.run("woke", _woke, ctx.event.data["y"], reply.data.get("sent_us"))
