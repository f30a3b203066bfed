"""Runs that share a partition (one concurrency key), for the retention sweep's test.

The test runs it with ``STEPLOG_SWEEP_BATCH=1``: each sweep record looks at one run
state only, so deleting a few finished runs takes the path where a sweep continues
in another record.
"""

from __future__ import annotations

import os

from streams import App, Concurrency, Context, TriggerEvent

app = App(os.environ.get("TEST_APP_ID", "sweep"))


@app.function(
    fn_id="keyed",
    trigger=TriggerEvent(event="test/keyed"),
    concurrency=[Concurrency(limit=0, key="event.data.k")],
)
async def keyed(ctx: Context) -> int:
    return int(await ctx.step.run("one", lambda: ctx.event.data["n"]))
