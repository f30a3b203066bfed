"""A steplog worker: one Faust app hosting the router and one agent per function.

``Worker(app, settings).faust`` is a ready Faust app; ``run_worker`` runs it in
this process (what ``steplog worker MODULE:APP`` does). Several workers of one
app share the partitions of its topics through the consumer group
``steplog-<app_id>``. The worker builds the topics, tables and agents and hands
each component the few collaborators it uses.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust

from agents import delivery
from agents.cron import CronRuntime, cron_functions
from agents.faust_app import (
    ROCKSDB_OPTIONS,
    complete_flush_before_commit,
    make_faust_app,
)
from agents.functions import FunctionRuntime
from agents.gate import GateRuntime
from agents.local_state import discard_stale_local_state
from agents.manifest import check_manifest
from agents.marks import Marks
from agents.router import Router
from agents.waits import WaitRegistry
from agents.watchdog import LoopWatchdog
from streams.app import App, Function
from streams.clock import now_ms
from streams.core import RetryPolicy
from streams.event import Event
from streams.kafka.admin import create_topics, ensure_topics
from streams.lifecycle import Limits
from streams.lifecycle.gate import GATE
from streams.serde import EventCodec
from streams.serde.internal import RecordCodec
from streams.settings import Settings
from streams.topics import SYSTEM_EVENTS, Topics

log = logging.getLogger(__name__)

HISTORY = RecordCodec("steplog.RunHistory")


class Emitter:
    """Writes what runs emit: events steps send, system events, run history."""

    def __init__(self, codec: EventCodec, events: Any, system: dict[str, Any], history: Any):
        self.codec = codec
        self.events = events
        self.system = system
        self.history_topic = history

    async def send_event(self, event: Event) -> asyncio.Future[Any]:
        """An event a step sent (its ids derived from run and step)."""
        fut: asyncio.Future[Any] = await self.events.send(
            key=event.key.encode(), value=self.codec.encode(event), force=True
        )
        return fut

    async def announce(self, event: Event) -> asyncio.Future[Any]:
        """A system event, to the topic of its name, keyed by the run id."""
        run_id = str(event.data["run_id"])
        fut: asyncio.Future[Any] = await self.system[event.name].send(
            key=run_id.encode(), value=self.codec.encode(event), force=True
        )
        return fut

    def history(self, record: dict[str, Any]) -> None:
        """The run's latest state, to the compacted run-history topic."""
        key = str(record["run_id"]).encode()
        self.history_topic.send_soon(key=key, value=HISTORY.encode(record))


class Worker:
    """Builds the Faust app of one steplog App and wires its agents."""

    def __init__(self, app: App, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings = settings or app.settings
        self.topics = Topics(settings.topic_prefix, app.app_id)
        self.faust: faust.App = make_faust_app(app.app_id, settings)
        self.cursors = delivery.install(self.faust)
        self.codec = EventCodec(settings)
        self.topic_config = {"max.message.bytes": str(settings.max_record_bytes + 65536)}
        self.rocksdb_options = dict(ROCKSDB_OPTIONS)
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="steplog-step")
        self.slots = asyncio.Semaphore(settings.max_active_runs)
        system = {name: self._raw_topic(self.topics.system(name)) for name in SYSTEM_EVENTS}
        self.emitter = Emitter(
            self.codec,
            self._raw_topic(self.topics.events),
            system,
            self._raw_topic(self.topics.runs, compacting=True),
        )
        functions = app.functions
        #: Every function's journal, by slug (the router, cron, waits and invokes write them).
        self.journals = {
            fn.slug: self._raw_topic(self.topics.journal(fn.fn_id)) for fn in functions.values()
        }
        self.waits = WaitRegistry(
            settings, self._raw_topic(self.topics.waits, compacting=True), self.journals
        )
        limits = Limits(
            retention_ms=int(settings.run_retention.total_seconds() * 1000),
            dedup_window_ms=int(settings.dedup_window.total_seconds() * 1000),
            sweep_batch=settings.sweep_batch,
            max_record_bytes=settings.max_record_bytes,
        )
        self.runtimes = {
            fn.slug: FunctionRuntime(
                fn,
                faust=self.faust,
                topic=self.journals[fn.slug],
                table=self.state_table(
                    f"{fn.fn_id}-state",
                    self.topics.state_changelog(fn.fn_id),
                    config=self.topic_config,
                ),
                emitter=self.emitter,
                waits=self.waits,
                journals=self.journals,
                functions=functions,
                slots=self.slots,
                executor=self.executor,
                retry=self.retry_policy(fn),
                limits=limits,
                inline_budget_s=settings.inline_budget_ms / 1000,
                inline_adaptive=settings.inline_adaptive,
            )
            for fn in functions.values()
        }
        for fn in functions.values():
            if fn.one_partition:
                log.info(
                    "%s: concurrency limits %s count runs of different keys together: "
                    "all its runs go to one partition of its journal, one worker runs them",
                    fn.slug,
                    "/".join(map(str, fn.slot_limits)),
                )
        self.router = Router(
            self.faust,
            settings,
            self.topics,
            codec=self.codec,
            functions=list(functions.values()),
            journals=self.journals,
            system_topics=system,
            dlq=self._raw_topic(self.topics.dlq),
            table=self.state_table("router-dedup", self.topics.router_dedup_changelog),
            waits=self.waits,
            marks=Marks(settings, self.topics.marks, self.faust, self.cursors),
        )
        crons = cron_functions(functions.values())
        self.cron = (
            CronRuntime(
                self.faust,
                partitions=settings.partitions,
                functions=crons,
                journals=self.journals,
                topic=self._raw_topic(self.topics.cron),
                table=self.state_table("steplog.cron", self.topics.cron_changelog),
                clock=app.clock,
            )
            if crons
            else None
        )
        self.gate: GateRuntime | None = None
        if any(fn.env_limit is not None for fn in functions.values()):
            # The gate's topic goes among the journals: runs write asks and frees to it
            # as they write any journal record, keyed by the limit's key value.
            self.journals[GATE] = self._raw_topic(self.topics.gate)
            self.gate = GateRuntime(
                self.faust,
                topic=self.journals[GATE],
                table=self.state_table("steplog.gate", self.topics.gate_changelog),
                journals=self.journals,
            )
        outboxes = [runtime.outbox for runtime in self.runtimes.values()]
        outboxes.append(self.router.outbox)
        if self.cron is not None:
            outboxes.append(self.cron.outbox)
        if self.gate is not None:
            outboxes.append(self.gate.outbox)
        complete_flush_before_commit(self.faust, before=outboxes)
        self.faust.on_partitions_assigned.connect(self._on_assigned)
        self.faust.on_partitions_revoked.connect(self._on_revoked)
        self.faust.task(self._timer_loop)
        if settings.loop_block_warn_ms > 0:
            self.faust.task(LoopWatchdog(settings.loop_block_warn_ms / 1000).run)
        self.faust.on_before_shutdown.connect(self._on_shutdown)

    def _raw_topic(self, name: str, *, compacting: bool = False) -> Any:
        return self.faust.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.partitions,
            compacting=compacting or None,
            config=self.topic_config,
        )

    def state_table(
        self, name: str, changelog: str, *, config: dict[str, str] | None = None
    ) -> Any:
        """A Faust table of raw bytes on RocksDB, backed by the compacted ``changelog`` topic."""
        settings = self.settings
        return self.faust.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            changelog_topic=self.faust.topic(
                changelog,
                key_serializer="raw",
                value_serializer="raw",
                partitions=settings.partitions,
                compacting=True,
                config=config,
            ),
            options=self.rocksdb_options,
        )

    def create_topics(self) -> None:
        """Create the app's internal topics (journals, changelogs, history) if missing."""
        plain = [topic.get_topic_name() for topic in self.journals.values()]
        compacted = [r.table.changelog_topic.get_topic_name() for r in self.runtimes.values()]
        compacted.append(self.router.table.changelog_topic.get_topic_name())
        if self.cron is not None:
            plain.append(self.cron.topic_name)
            compacted.append(self.cron.table.changelog_topic.get_topic_name())
        if self.gate is not None:  # its topic is among the journals
            compacted.append(self.gate.table.changelog_topic.get_topic_name())
        compacted += [self.topics.runs, self.topics.waits]
        create_topics(self.settings, plain)
        create_topics(self.settings, compacted, config={"cleanup.policy": "compact"})
        create_topics(
            self.settings, [self.topics.marks], partitions=1, config={"cleanup.policy": "compact"}
        )

    def retry_policy(self, fn: Function) -> RetryPolicy:
        policy = fn.retry_policy
        scale = self.settings.retry_backoff_scale
        if scale == 1.0:
            return policy
        return RetryPolicy(retries=policy.retries, table=policy.table, scale=scale)

    # --- rebalances and timers -----------------------------------------------------

    async def _on_assigned(self, _sender: Any, /, *args: Any, **_: Any) -> None:
        assigned: set[Any] = args[0] if args else _["assigned"]
        by_topic = _by_topic(assigned)
        for runtime in self.runtimes.values():
            parts = by_topic.get(runtime.topic.get_topic_name())
            if parts:
                await runtime.send_resume(parts)
        self.router.on_assigned(assigned)
        if self.cron is not None:
            await self.cron.on_assigned(by_topic.get(self.cron.topic_name, set()))

    async def _on_revoked(self, _sender: Any, /, *args: Any, **_: Any) -> None:
        revoked: set[Any] = args[0] if args else _["revoked"]
        by_topic = _by_topic(revoked)
        for runtime in self.runtimes.values():
            parts = by_topic.get(runtime.topic.get_topic_name())
            if parts:
                runtime.revoke(parts)
        await self.router.on_revoked(revoked)
        if self.cron is not None:
            self.cron.on_revoked(by_topic.get(self.cron.topic_name, set()))

    async def _on_shutdown(self, _sender: Any, /, *_args: Any, **_: Any) -> None:
        self.waits.stop()
        await self.router.publish_marks()
        for runtime in self.runtimes.values():
            await runtime.stop()

    async def _timer_loop(self) -> None:
        self.waits.start()
        tick = self.settings.timer_tick_ms / 1000
        marks_every = max(int(1.0 / tick), 1)
        n = 0
        while True:
            await asyncio.sleep(tick)
            now = now_ms()
            for runtime in self.runtimes.values():
                try:
                    await runtime.fire_due(now)
                except Exception:
                    log.exception("timers of %s failed", runtime.slug)
            if self.cron is not None:
                try:
                    await self.cron.fire_due()
                except Exception:
                    log.exception("cron ticks failed")
            n += 1
            if n % marks_every == 0:
                await self.router.publish_marks()


def _by_topic(tps: set[Any]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for tp in tps:
        out.setdefault(tp.topic, set()).add(tp.partition)
    return out


def prepare(app: App, settings: Settings) -> Worker:
    """Create steplog's topics, check the app's manifest, and build the worker."""
    ensure_topics(settings)
    check_manifest(app, settings)
    worker = Worker(app, settings)
    worker.create_topics()
    return worker


def run_worker(app: App, settings: Settings, *, loglevel: str = "warning") -> None:
    """Run a worker for ``app`` in this process until it is stopped."""
    worker = prepare(app, settings)
    # No check for a crash: every table's local databases hold only writes their
    # changelog acknowledged (agents.store.Changelog), so they are kept after a SIGKILL
    # too, and Faust's recovery reads the changelog records after their offsets.
    discard_stale_local_state(worker)
    FaustWorker(worker.faust, loglevel=loglevel, quiet=True).execute_from_commandline()


class FaustWorker(faust.Worker):
    """Faust's worker, without its last second of shutdown.

    Once the app has stopped (group left, producer flushed), mode runs one more task
    that sleeps a full second before closing the loop, so a SIGTERMed worker exited
    a second later than it needed to; a tenth of a second still lets the callbacks
    scheduled while stopping run.
    """

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(0.1)

    def _repr_name(self) -> str:
        return "Worker"  # its log lines keep Faust's label, "[^Worker]: Ready"
