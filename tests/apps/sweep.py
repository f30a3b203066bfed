"""Runs that share a partition (one concurrency key), for the retention sweep's test.

Importing this module makes each sweep record look at one run state only
(``agents.functions.SWEEP_BATCH``), so deleting a few finished runs takes the path
where a sweep continues in another record.
"""

from __future__ import annotations

import os

import agents.functions
from streams import App, Concurrency, Context, TriggerEvent

agents.functions.SWEEP_BATCH = 1

app = App(os.environ.get("TEST_APP_ID", "sweep"))


@app.function(
    fn_id="keyed",
    trigger=TriggerEvent(event="test/keyed"),
    concurrency=[Concurrency(limit=0, key="event.data.k")],
)
async def keyed(ctx: Context) -> int:
    return int(await ctx.step.run("one", lambda: ctx.event.data["n"]))
