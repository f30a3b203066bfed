"""Cron functions for tests/test_cron.py, on a clock that runs faster than real time.

``TEST_CRON_SPEED`` (e.g. 60: a minute per second) and ``TEST_CRON_ANCHOR_MS`` (a
real time, the same for every worker of a test) give the app a :class:`ScaledClock`,
so ``* * * * *`` ticks every second and every worker process, including restarted
ones, agrees on the virtual time.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from streams import App, Context, Event, TriggerCron, TriggerEvent

APP_ID = os.environ.get("TEST_APP_ID", "cron")
LEDGER = Path(os.environ.get("TEST_LEDGER", "/tmp/steplog-cron-ledger.txt"))
#: The "database" of the batch pattern: one file per notification, pending/ then sent/.
DB = Path(os.environ.get("TEST_CRON_DB", "/tmp/steplog-cron-db"))


class ScaledClock:
    """Virtual time: ``anchor + (real - anchor) * speed`` (ms since the epoch)."""

    def __init__(self, anchor_ms: int, speed: float) -> None:
        self.anchor_ms = anchor_ms
        self.speed = speed

    def now_ms(self) -> int:
        real = time.time_ns() // 1_000_000
        return self.anchor_ms + int((real - self.anchor_ms) * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)


CLOCK = (
    ScaledClock(int(os.environ["TEST_CRON_ANCHOR_MS"]), float(os.environ["TEST_CRON_SPEED"]))
    if os.environ.get("TEST_CRON_SPEED")
    else None
)


def record(line: str) -> None:
    with LEDGER.open("a") as f:
        f.write(line + "\n")


# --- Minutely schedules ---------------------------------------------------------------
app = App(APP_ID, clock=CLOCK)


@app.function(fn_id="every-minute", trigger=TriggerCron(cron="* * * * *"))
async def every_minute(ctx: Context) -> dict[str, str]:
    scheduled = ctx.event.data["scheduledAt"]
    await ctx.step.run("work", lambda: record(f"tick {scheduled} pid-{os.getpid()}"))
    return {"scheduledAt": scheduled}


@app.function(
    fn_id="mixed",
    trigger=[TriggerCron(cron="*/5 * * * *"), TriggerEvent(event="test/cron.now")],
)
async def mixed(ctx: Context) -> dict[str, str]:
    return {"name": ctx.event.name}


# --- Hourly batch (seed pattern "Batch Processing") -----------------------------------
batch_app = App(APP_ID, clock=CLOCK)


def fetch_pending() -> list[str]:
    pending = DB / "pending"
    return sorted(p.name for p in pending.iterdir()) if pending.exists() else []


def mark_sent(ids: list[str]) -> int:
    (DB / "sent").mkdir(parents=True, exist_ok=True)
    for notification in ids:
        src = DB / "pending" / notification
        if src.exists():
            src.rename(DB / "sent" / notification)
    return len(ids)


@batch_app.function(fn_id="batch-notifications", trigger=TriggerCron(cron="0 * * * *"))
async def batch_notifications(ctx: Context) -> dict[str, object]:
    pending = await ctx.step.run("fetch-pending", fetch_pending)
    if not pending:
        return {"sent": 0, "scheduledAt": ctx.event.data["scheduledAt"]}
    await ctx.step.send_event(
        "send-batch",
        [Event(name="app/notification.send", data={"id": n}) for n in pending],
    )
    sent = await ctx.step.run("mark-sent", mark_sent, pending)
    return {"sent": sent, "scheduledAt": ctx.event.data["scheduledAt"]}


@batch_app.function(fn_id="send-notification", trigger=TriggerEvent(event="app/notification.send"))
async def send_notification(ctx: Context) -> str:
    notification = ctx.event.data["id"]
    await ctx.step.run("send", lambda: record(f"sent {notification}"))
    return str(notification)
