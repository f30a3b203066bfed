"""Cron triggers: one small agent per app that turns due ticks into run starts.

The app's cron functions are spread over the partitions of the topic
``steplog-<app>-cron`` by a stable hash of their slug
(:func:`streams.cron.partition_of`); the worker holding a partition owns those
schedules. Its RocksDB table (changelog ``steplog-<app>-cron-changelog``) keeps,
per function and cron expression, the next tick due: ``c<slug>|<cron>``.

* When a partition is assigned, the worker sends a ``resume`` record to it. The
  agent reads it after every earlier record of the partition, loads the due
  ticks of the cron functions hashed there (a function seen for the first time
  waits for its next tick; expressions no longer declared are dropped) and hands
  them to the timer loop.
* The worker's timer loop calls :meth:`CronRuntime.fire_due`, which sends a
  ``tick`` record for each due tick (a write from outside the agent loop must
  come back through a topic, FAUST.md).
* The agent applies a ``tick`` only if the table still holds that due time: it
  writes a ``start`` record straight into the function's journal, keyed as the
  router keys runs, and stores the first tick after both the fired tick and now.
  Ticks missed while every worker was down therefore fire once, not once each.

A tick handled twice (a crash between the start and the table write, two
workers during a rebalance) starts one run: the run id is derived from the tick
and the function agent ignores a ``start`` whose run exists.

Time comes from :data:`clock` (the system clock). Tests replace it with
:func:`use_clock`, e.g. with a clock that runs 60 times faster.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from agents.functions import RUN_RECORDS
from agents.store import TableState
from streams.app import Function
from streams.core.clock import Clock, SystemClock
from streams.cron import next_due, next_tick, partition_of, plan_tick
from streams.event import now_ms
from streams.options import TriggerCron

if TYPE_CHECKING:
    from agents.worker import Worker

log = logging.getLogger(__name__)

#: The wall clock cron schedules follow. Replace it with :func:`use_clock` (tests).
clock: Clock = SystemClock()

DUE = b"c"  # c<slug>|<cron> -> {"due_ms": next tick}
#: A tick sent but not applied after this many (real) seconds is sent again.
RESEND_AFTER_S = 10.0


def use_clock(new: Clock) -> None:
    """Make cron schedules follow ``new`` (e.g. a faster clock in tests)."""
    global clock
    clock = new


def cron_functions(functions: Any) -> list[Function]:
    """The functions with at least one cron trigger."""
    return [fn for fn in functions if any(isinstance(t, TriggerCron) for t in fn.triggers)]


def _crons(fn: Function) -> dict[str, TriggerCron]:
    """The function's cron triggers by expression (a repeated expression counts once)."""
    return {t.cron: t for t in fn.triggers if isinstance(t, TriggerCron)}


def _due_key(slug: str, cron: str) -> bytes:
    return DUE + f"{slug}|{cron}".encode()


class CronRuntime:
    """The cron agent, its table, and the due ticks of the partitions it holds."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        settings = worker.settings
        app = worker.faust
        self.partitions = settings.partitions
        self.functions = {fn.slug: fn for fn in cron_functions(worker.app.functions.values())}
        base = f"steplog-{worker.app.app_id}-cron"
        self.topic = worker._raw_topic(settings.topic(base))
        self.topic_name: str = self.topic.get_topic_name()
        self.table = worker.state_table("steplog.cron", f"{base}-changelog")
        self.state = TableState(self.table)
        #: partition -> (slug, cron) -> due ms, for the partitions this worker resumed.
        self.due: dict[int, dict[tuple[str, str], int]] = {}
        #: (slug, cron) -> (due ms, monotonic time) of ticks sent and not applied yet.
        self.sent: dict[tuple[str, str], tuple[int, float]] = {}
        app.agent(self.topic, name="steplog-cron")(self._agent)

    # --- rebalances and the timer loop (outside the agent) ----------------------------

    async def on_assigned(self, partitions: set[int]) -> None:
        for p in partitions:
            await self.topic.send(
                key=b"",
                value=RUN_RECORDS.encode("resume", {}, run_id="", at_ms=now_ms()),
                partition=p,
            )

    def on_revoked(self, partitions: set[int]) -> None:
        for p in partitions:
            for key in self.due.pop(p, {}):
                self.sent.pop(key, None)

    async def fire_due(self) -> None:
        """Send a ``tick`` record for each due tick of the partitions this worker holds."""
        now = clock.now_ms()
        mono = time.monotonic()
        for p, entries in list(self.due.items()):
            for (slug, cron), due in list(entries.items()):
                if due > now:
                    continue
                sent = self.sent.get((slug, cron))
                if sent is not None and sent[0] == due and mono - sent[1] < RESEND_AFTER_S:
                    continue
                self.sent[(slug, cron)] = (due, mono)
                body = {"function": slug, "cron": cron, "due_ms": due}
                await self.topic.send(
                    key=slug.encode(),
                    value=RUN_RECORDS.encode("tick", body, run_id="", at_ms=now_ms()),
                    partition=p,
                )

    # --- the agent loop ---------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                kind, body, _ = RUN_RECORDS.decode(event.value)
                if kind == "tick":
                    await self._tick(body, msg.partition)
                elif kind == "resume":
                    self._resume(msg.partition)
                else:
                    log.warning(
                        "%s[%s]@%s: unknown cron record %r",
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        kind,
                    )
            except Exception:
                log.exception("%s[%s]@%s: cron record failed", msg.topic, msg.partition, msg.offset)

    def _resume(self, partition: int) -> None:
        """Load (or initialise) the due ticks of the cron functions of ``partition``."""
        now = clock.now_ms()
        wanted = {
            _due_key(slug, cron): (slug, cron, trigger)
            for slug, fn in self.functions.items()
            if partition_of(slug, self.partitions) == partition
            for cron, trigger in _crons(fn).items()
        }
        for key, _ in list(self.state.scan(partition, DUE)):
            if key not in wanted:
                log.info("cron %s is no longer declared: forgetting it", key[1:].decode())
                self.state.delete(key)
        entries: dict[tuple[str, str], int] = {}
        for key, (slug, cron, trigger) in wanted.items():
            stored = self.state.get(key)
            if stored is None:
                due = next_tick(trigger, now)
                self.state.put(key, "cron", {"due_ms": due})
                log.info("%s: cron %r first due at %s", slug, cron, due)
            else:
                due = int(stored["due_ms"])
            entries[(slug, cron)] = due
        self.due[partition] = entries

    async def _tick(self, body: Any, partition: int) -> None:
        slug, cron, due = body["function"], body["cron"], int(body["due_ms"])
        fn = self.functions.get(slug)
        trigger = _crons(fn).get(cron) if fn is not None else None
        key = _due_key(slug, cron)
        stored = self.state.get(key)
        if fn is None or trigger is None or stored is None or int(stored["due_ms"]) != due:
            return  # fired twice, or no longer declared: the stored tick decides
        fired = clock.now_ms()
        tick = plan_tick(fn, trigger, due, fired)
        start = tick.start
        runtime = self.worker.runtimes[slug]
        await runtime.topic.send(
            key=start.key.encode(),
            value=RUN_RECORDS.encode(
                "start",
                {"event": tick.event.model_dump(), "idempotency": start.idempotency},
                run_id=start.run_id,
                at_ms=now_ms(),
            ),
        )
        upcoming = next_due(trigger, due, fired)
        self.state.put(key, "cron", {"due_ms": upcoming})
        if partition in self.due:
            self.due[partition][(slug, cron)] = upcoming
        self.sent.pop((slug, cron), None)
        log.info(
            "%s: cron %r tick %s started run %s (late by %s ms); next at %s",
            slug,
            cron,
            due,
            start.run_id,
            fired - due,
            upcoming,
        )
