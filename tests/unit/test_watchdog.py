"""The event loop watchdog names the step that blocks the loop, and for how long.

These tests block the loop for real (a fraction of a second): that is what the
watchdog is for. The real-broker side (a 9 s block with a 6 s session timeout, the
worker keeps its partitions) is in tests/test_misbehaving_code.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.watchdog import LoopWatchdog
from streams.core import Context, ManualClock, RunCompleted, RunDriver, RunInput
from streams.event import Event, accept

RUN_ID = "01JBZ5V0000000000000000000"
EVENT = accept(Event(name="app/x", data={}), at_ms=1_700_000_000_000)


@contextlib.asynccontextmanager
async def watching() -> AsyncIterator[LoopWatchdog]:
    """A watchdog on the running loop (a fixture's loop may not be the test's)."""
    dog = LoopWatchdog(0.2, interval=0.02)
    task = asyncio.ensure_future(dog.run())
    await asyncio.sleep(0.05)
    yield dog
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agents.watchdog" and r.levelno == logging.WARNING
    ]


async def test_a_blocking_async_step_is_named_with_its_run_and_function(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hog() -> str:
        time.sleep(0.6)  # the mistake under test
        return "done"

    async def fn(ctx: Context) -> Any:
        return await ctx.step.run("hog", hog)

    driver = RunDriver(fn, RunInput(RUN_ID, "shop-blocker", EVENT), clock=ManualClock())
    async with watching():
        effects = await driver.run_to_end()
        await asyncio.sleep(0.1)  # the beat after the block reports its length
    assert isinstance(effects[-1], RunCompleted)
    lines = warnings(caplog)
    assert len(lines) == 2, lines
    during, after = lines
    who = f"step 'hog' of run {RUN_ID} (function shop-blocker)"
    assert "has been blocked for" in during and who in during
    assert "test_watchdog.py" in during and "in hog" in during  # where it blocks
    assert after.startswith("the event loop was blocked for ") and who in after
    blocked = float(after.removeprefix("the event loop was blocked for ").split("s", 1)[0])
    assert 0.5 <= blocked <= 2.0
    assert "make the body a plain def" in after


async def test_a_block_outside_steps_names_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fn(ctx: Context) -> Any:
        time.sleep(0.4)
        return None

    driver = RunDriver(fn, RunInput(RUN_ID, "shop-blocker", EVENT), clock=ManualClock())
    async with watching():
        await driver.run_to_end()
        await asyncio.sleep(0.1)
    lines = warnings(caplog)
    assert lines and f"code outside any step of run {RUN_ID} (function shop-blocker)" in lines[0]


async def test_short_pauses_and_blocks_outside_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with watching():
        time.sleep(0.05)  # below the threshold: nothing
        await asyncio.sleep(0.1)
        assert warnings(caplog) == []
        time.sleep(0.4)
        await asyncio.sleep(0.1)
    lines = warnings(caplog)
    assert len(lines) == 2 and "code outside any run" in lines[0]
