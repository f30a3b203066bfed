"""A function that waits on a durable timer until a given time and reports its lateness.

Its one step raises RetryAfterError until ``event.data.due_ms``; the retry is a
durable timer, and the attempt that runs after it returns how late it woke up.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from streams import App, Context, RetryAfterError, TriggerEvent

app = App(os.environ.get("BENCH_APP_ID", "timers"))


@app.function(fn_id="probe", trigger=TriggerEvent(event="bench/timer"), retries=20)
async def probe(ctx: Context) -> int:
    due = int(ctx.event.data["due_ms"])

    def wake() -> int:
        now = time.time_ns() // 1_000_000
        if now < due:
            raise RetryAfterError("not yet", timedelta(milliseconds=due - now))
        return now - due

    return await ctx.step.run("wake", wake)
