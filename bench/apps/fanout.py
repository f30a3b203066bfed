"""Benchmark functions for flow control: one event fans out to many sends.

``bench/campaign`` with ``data={"emails": N, "target": NAME}`` sends N events named
NAME (``data={"n": i, "key": ...}``), a thousand per step. Each send function has one
step that awaits ``BENCH_STEP_S`` (0.05 s) and notes in the ledger (``BENCH_LEDGER``)
``<n> start|end <unix ms>``, so the load generator can measure the overlap:

- ``bench/email.free``: no limit;
- ``bench/email.limited``: ``Concurrency(limit=50)`` (key-less: one partition);
- ``bench/email.keyed``: ``Concurrency(limit=50, key="event.data.key")``;
- ``bench/row.single`` and ``bench/row.batched``: one step that counts the run's
  events (no wait), one run per event, and ``Batch(max_size=100, timeout="1s")``.

The app id comes from ``BENCH_APP_ID``. Run: ``steplog worker bench.apps.fanout:app``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from streams import App, Batch, Concurrency, Context, Event, TriggerEvent

app = App(os.environ.get("BENCH_APP_ID", "bench-flow"))
LEDGER = Path(os.environ.get("BENCH_LEDGER", "/tmp/steplog-bench-ledger.txt"))
STEP_S = float(os.environ.get("BENCH_STEP_S", "0.05"))
LIMIT = int(os.environ.get("BENCH_LIMIT", "50"))


async def send(n: int) -> int:
    with LEDGER.open("a") as f:
        f.write(f"{n} start {time.time_ns() // 1_000_000}\n")
    try:
        await asyncio.sleep(STEP_S)
    finally:
        with LEDGER.open("a") as f:
            f.write(f"{n} end {time.time_ns() // 1_000_000}\n")
    return n


@app.function(fn_id="campaign", trigger=TriggerEvent(event="bench/campaign"))
async def campaign(ctx: Context) -> int:
    total, target = int(ctx.event.data["emails"]), str(ctx.event.data["target"])
    keys = int(ctx.event.data.get("keys", total))
    for first in range(0, total, 1000):
        await ctx.step.send_event(
            f"emails-{first}",
            [
                Event(name=target, data={"n": n, "key": f"k{n % keys}"})
                for n in range(first, min(first + 1000, total))
            ],
        )
    return total


async def _email(ctx: Context) -> int:
    return int(await ctx.step.run("send", send, int(ctx.event.data["n"])))


for fn_id, limit in (
    ("email-free", None),
    ("email-limited", Concurrency(limit=LIMIT)),
    ("email-keyed", Concurrency(limit=LIMIT, key="event.data.key")),
):
    app.function(
        fn_id=fn_id,
        trigger=TriggerEvent(event=f"bench/{fn_id.replace('-', '.')}"),
        concurrency=limit,
    )(_email)


async def _rows(ctx: Context) -> int:
    rows = len(ctx.events)
    return int(await ctx.step.run("write", lambda: rows))


for fn_id, batch in (("row-single", None), ("row-batched", Batch(max_size=100, timeout="1s"))):
    app.function(
        fn_id=fn_id,
        trigger=TriggerEvent(event=f"bench/{fn_id.replace('-', '.')}"),
        batch_events=batch,
    )(_rows)
