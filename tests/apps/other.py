"""An app with the same id as tests.apps.patterns (TEST_APP_ID) but other functions.

A worker of it must be refused while a worker of the patterns app runs.
"""

from __future__ import annotations

import os

from streams import App, Context, TriggerEvent

app = App(os.environ.get("TEST_APP_ID", "patterns"))


@app.function(fn_id="something-else", trigger=TriggerEvent(event="other/thing"))
async def something_else(ctx: Context) -> str:
    return await ctx.step.run("do", lambda: "done")
