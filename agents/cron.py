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

Time comes from the app's clock (``App(..., clock=...)``, the system clock by
default); tests pass one that runs 60 times faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from agents.store import Changelog, Outbox, RocksRunStore
from streams.app import Function
from streams.clock import Clock, now_ms
from streams.cron import next_due, next_tick, partition_of, plan_tick
from streams.lifecycle import records
from streams.options import TriggerCron

log = logging.getLogger(__name__)

DUE = b"c"  # c<slug>|<cron> -> {"due_ms": next tick}
#: A tick sent but not applied after this many (real) seconds is sent again.
RESEND_AFTER_S = 10.0


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

    def __init__(
        self,
        faust: Any,
        *,
        partitions: int,
        functions: list[Function],
        journals: Mapping[str, Any],
        topic: Any,
        table: Any,
        clock: Clock,
    ) -> None:
        self.partitions = partitions
        self.functions = {fn.slug: fn for fn in functions}
        self.journals = journals
        self.clock = clock
        self.topic = topic
        self.topic_name: str = topic.get_topic_name()
        self.table = table
        #: The table's writes, held back until the start records they follow are sent.
        self.outbox = Outbox(Changelog(table))
        #: partition -> (slug, cron) -> due ms, for the partitions this worker resumed.
        self.due: dict[int, dict[tuple[str, str], int]] = {}
        #: (slug, cron) -> (due ms, monotonic time) of ticks sent and not applied yet.
        self.sent: dict[tuple[str, str], tuple[int, float]] = {}
        faust.agent(topic, name="steplog-cron")(self._agent)

    # --- rebalances and the timer loop (outside the agent) ----------------------------

    async def on_assigned(self, partitions: set[int]) -> None:
        for p in partitions:
            await self.topic.send(
                key=b"", value=records.encode(records.Resume(), now_ms()), partition=p
            )

    def on_revoked(self, partitions: set[int]) -> None:
        for p in partitions:
            for key in self.due.pop(p, {}):
                self.sent.pop(key, None)

    async def fire_due(self) -> None:
        """Send a ``tick`` record for each due tick of the partitions this worker holds."""
        now = self.clock.now_ms()
        mono = time.monotonic()
        for p, entries in list(self.due.items()):
            for (slug, cron), due in list(entries.items()):
                if due > now:
                    continue
                sent = self.sent.get((slug, cron))
                if sent is not None and sent[0] == due and mono - sent[1] < RESEND_AFTER_S:
                    continue
                self.sent[(slug, cron)] = (due, mono)
                tick = records.Tick(slug, cron, due)
                await self.topic.send(
                    key=slug.encode(), value=records.encode(tick, now_ms()), partition=p
                )

    # --- the agent loop ---------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                record = records.decode(event.value)
                if isinstance(record, records.Tick):
                    await self._tick(record, msg.partition)
                elif isinstance(record, records.Resume):
                    self._resume(msg.partition)
                else:
                    log.warning(
                        "%s[%s]@%s: not a cron record: %r",
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        record,
                    )
            except Exception:
                log.exception("%s[%s]@%s: cron record failed", msg.topic, msg.partition, msg.offset)
            finally:
                self.outbox.seal()

    def _resume(self, partition: int) -> None:
        """Load (or initialise) the due ticks of the cron functions of ``partition``."""
        now = self.clock.now_ms()
        wanted = {
            _due_key(slug, cron): (slug, cron, trigger)
            for slug, fn in self.functions.items()
            if partition_of(slug, self.partitions) == partition
            for cron, trigger in _crons(fn).items()
        }
        state = RocksRunStore(partition, self.outbox)
        for key, _ in list(state.scan(DUE)):
            if key not in wanted:
                log.info("cron %s is no longer declared: forgetting it", key[1:].decode())
                state.delete(key)
        entries: dict[tuple[str, str], int] = {}
        for key, (slug, cron, trigger) in wanted.items():
            stored = state.get(key)
            if stored is None:
                due = next_tick(trigger, now)
                state.put(key, "cron", {"due_ms": due})
                log.info("%s: cron %r first due at %s", slug, cron, due)
            else:
                due = int(stored["due_ms"])
            entries[(slug, cron)] = due
        self.due[partition] = entries

    async def _tick(self, tick_record: records.Tick, partition: int) -> None:
        slug, cron, due = tick_record.function, tick_record.cron, tick_record.due_ms
        fn = self.functions.get(slug)
        trigger = _crons(fn).get(cron) if fn is not None else None
        key = _due_key(slug, cron)
        state = RocksRunStore(partition, self.outbox)
        stored = state.get(key)
        if fn is None or trigger is None or stored is None or int(stored["due_ms"]) != due:
            return  # fired twice, or no longer declared: the stored tick decides
        fired = self.clock.now_ms()
        tick = plan_tick(fn, trigger, due, fired)
        start = tick.start
        record = records.Start(start.run_id, tick.event.model_dump(), start.idempotency)
        sent = await self.journals[slug].send(
            key=start.key.encode(), value=records.encode(record, now_ms())
        )
        self.outbox.send(sent, f"start of {start.run_id}")
        upcoming = next_due(trigger, due, fired)
        state.put(key, "cron", {"due_ms": upcoming})
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
