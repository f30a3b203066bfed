"""A watchdog for the worker's event loop: says when something blocks it, and what.

Every run of a worker shares one event loop, so an ``async`` step body that blocks it
(``time.sleep``, blocking I/O, a long computation without an ``await``) stops every
other run of the worker until it returns. Nothing can preempt it; this makes it
visible. A task on the loop beats every ``interval``; a thread checks the beat, and when
it is older than ``warn_after`` it logs which user code the loop is running (the step,
run and function, from :mod:`streams.core.running`) and where (the innermost frame of
the loop's thread). When the loop runs again, a second line says how long it was
blocked.

Group membership does not suffer: Faust's Kafka consumer runs in a thread with a loop
of its own, so heartbeats go on during the block and the worker keeps its partitions
(up to ``broker_max_poll_interval``, 1000 s, after which aiokafka leaves the group and
joins again once the loop runs).
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import threading
import time
import traceback

from streams.core import running

log = logging.getLogger(__name__)

ADVICE = (
    "an async step body must not block: await instead (asyncio.sleep, an async client), "
    "or make the body a plain def, which runs in a thread"
)


class LoopWatchdog:
    """Logs blocks of the running event loop longer than ``warn_after`` seconds."""

    def __init__(self, warn_after: float = 1.0, *, interval: float = 0.1) -> None:
        self.warn_after = warn_after
        self.interval = interval
        self._beat = time.monotonic()
        self._culprit: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    async def run(self) -> None:
        """Beat until cancelled, with the watching thread started (run it as a task)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._stop.clear()
        thread = threading.Thread(target=self._watch, name="steplog-loop-watchdog", daemon=True)
        thread.start()
        try:
            while True:
                before = time.monotonic()
                await asyncio.sleep(self.interval)
                self._beat = now = time.monotonic()
                with self._lock:
                    culprit, self._culprit = self._culprit, None
                if culprit is not None:
                    log.warning(
                        "the event loop was blocked for %.1fs by %s; every other run of "
                        "this worker waited meanwhile: %s",
                        now - before - self.interval,
                        culprit,
                        ADVICE,
                    )
        finally:
            self._stop.set()

    def _watch(self) -> None:
        reported = -1.0  # the beat whose block was reported
        while not self._stop.wait(self.interval):
            beat = self._beat
            blocked = time.monotonic() - beat
            if blocked < self.warn_after or beat == reported:
                continue
            reported = beat
            culprit = self.culprit()
            with self._lock:
                self._culprit = culprit
            log.warning(
                "the event loop has been blocked for %.1fs so far by %s: %s",
                blocked,
                culprit,
                ADVICE,
            )

    def culprit(self) -> str:
        """What the loop is running now: the user code (if any) and the line it is at."""
        task = None
        if self._loop is not None:
            try:
                task = asyncio.current_task(self._loop)
            except RuntimeError:
                task = None
        code = running.running_in(task)
        frame = sys._current_frames().get(self._loop_thread)
        where = (
            f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            if frame is not None
            else "an unknown place"
        )
        if code is None:
            return f"code outside any run (at {where})"
        return f"{code.describe()} (at {where})"


def dump_tasks(reason: str) -> None:
    """Log the stack of every asyncio task of the running loop and of every thread.

    Called when a partition stays stuck (see ``FunctionRuntime.fire_due``), so the log
    shows what the worker was doing: the sign of a stall, with its evidence.
    """
    lines = [f"what this worker is doing ({reason}):"]
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        lines.append(f"--- task {task.get_name()}\n{out.getvalue().rstrip()}")
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame, limit=12)).rstrip()
        lines.append(f"--- thread {names.get(ident, ident)}\n{stack}")
    log.warning("\n".join(lines))
