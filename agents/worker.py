"""A steplog worker: one Faust app hosting the router and one agent per function.

``Worker(app, settings).faust`` is a ready Faust app; ``run_worker`` runs it in
this process (what ``steplog worker MODULE:APP`` does). Several workers of one
app share the partitions of its topics through the consumer group
``steplog-<app_id>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
from ulid import ULID

from agents.cron import CronRuntime, cron_functions
from agents.faust_app import (
    ROCKSDB_OPTIONS,
    complete_flush_before_commit,
    make_faust_app,
    seek_uncommitted_to_beginning,
)
from agents.functions import ActiveRun, FunctionRuntime
from agents.local_state import discard_stale_local_state
from agents.manifest import check_manifest
from agents.router import Router
from agents.waits import WaitRegistry
from agents.watchdog import LoopWatchdog
from streams.app import App, Function
from streams.core import RetryPolicy
from streams.event import Event, now_ms
from streams.kafka.admin import create_topics, ensure_topics
from streams.serde import EventCodec
from streams.serde.internal import RecordCodec, compact_json
from streams.settings import Settings

log = logging.getLogger(__name__)

HISTORY = RecordCodec("steplog.RunHistory")
SYSTEM_TOPICS = {
    "completed": ("inngest/function.finished",),
    "failed": ("inngest/function.finished", "inngest/function.failed"),
    "cancelled": ("inngest/function.cancelled",),
}
#: Step outputs are cut to this many characters in run history records.
HISTORY_OUTPUT_CHARS = 2000


def system_event_id(run_id: str, name: str) -> tuple[str, str]:
    """(id, internal_id) of a run's system event: derived from the run id, so stable."""
    try:
        millis = ULID.from_str(run_id).milliseconds
    except ValueError:
        millis = 0
    digest = hashlib.sha256(f"{run_id}|{name}".encode()).digest()
    internal = str(ULID.from_int((millis << 80) | int.from_bytes(digest[:10], "big")))
    return f"{run_id}-{name.rsplit('.', 1)[-1]}", internal


class Worker:
    """Builds the Faust app of one steplog App and holds what its agents share."""

    def __init__(self, app: App, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings or app.settings
        self.faust: faust.App = make_faust_app(app.app_id, self.settings)
        complete_flush_before_commit(self.faust)
        seek_uncommitted_to_beginning(self.faust)
        self.codec = EventCodec(self.settings)
        self.topic_config = {"max.message.bytes": str(self.settings.max_record_bytes + 65536)}
        self.rocksdb_options = dict(ROCKSDB_OPTIONS)
        self.inline_budget = self.settings.inline_budget_ms / 1000
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="steplog-step")
        self.slots = asyncio.Semaphore(self.settings.max_active_runs)
        self.events_topic = self._raw_topic(self.settings.topic("events"))
        self.system_topics = {
            name: self._raw_topic(self.settings.topic(name.replace("/", ".")))
            for names in SYSTEM_TOPICS.values()
            for name in names
        }
        self.history_topic = self._raw_topic(
            self.settings.topic(f"steplog-{app.app_id}-runs"), compacting=True
        )
        self.waits = WaitRegistry(self)
        self.runtimes = {fn.slug: FunctionRuntime(self, fn) for fn in app.functions.values()}
        for fn in app.functions.values():
            if fn.concurrency:
                log.warning(
                    "%s: concurrency keys route runs, but limits are not enforced "
                    "by this version of steplog",
                    fn.slug,
                )
        self.router = Router(self)
        self.cron = CronRuntime(self) if cron_functions(app.functions.values()) else None
        self.faust.on_partitions_assigned.connect(self._on_assigned)
        self.faust.on_partitions_revoked.connect(self._on_revoked)
        self.faust.task(self._timer_loop)
        if self.settings.loop_block_warn_ms > 0:
            self.faust.task(LoopWatchdog(self.settings.loop_block_warn_ms / 1000).run)
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
                settings.topic(changelog),
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
        plain, compacted = [], []
        for runtime in self.runtimes.values():
            plain.append(runtime.topic.get_topic_name())
            compacted.append(runtime.table.changelog_topic.get_topic_name())
        compacted.append(self.router.table.changelog_topic.get_topic_name())
        if self.cron is not None:
            plain.append(self.cron.topic_name)
            compacted.append(self.cron.table.changelog_topic.get_topic_name())
        compacted.append(self.history_topic.get_topic_name())
        compacted.append(self.waits.topic_name)
        create_topics(self.settings, plain)
        create_topics(self.settings, compacted, config={"cleanup.policy": "compact"})

    def retry_policy(self, fn: Function) -> RetryPolicy:
        policy = fn.retry_policy
        scale = self.settings.retry_backoff_scale
        if scale == 1.0:
            return policy
        return RetryPolicy(retries=policy.retries, table=policy.table, scale=scale)

    # --- rebalances and timers -----------------------------------------------------

    async def _on_assigned(self, _sender: Any, /, *args: Any, **_: Any) -> None:
        assigned: set[Any] = args[0] if args else _["assigned"]
        by_topic: dict[str, set[int]] = {}
        for tp in assigned:
            by_topic.setdefault(tp.topic, set()).add(tp.partition)
        for runtime in self.runtimes.values():
            parts = by_topic.get(runtime.topic.get_topic_name())
            if parts:
                await runtime.send_resume(parts)
        self.router.on_assigned(assigned)
        if self.cron is not None:
            await self.cron.on_assigned(by_topic.get(self.cron.topic_name, set()))

    async def _on_revoked(self, _sender: Any, /, *args: Any, **_: Any) -> None:
        revoked: set[Any] = args[0] if args else _["revoked"]
        by_topic: dict[str, set[int]] = {}
        for tp in revoked:
            by_topic.setdefault(tp.topic, set()).add(tp.partition)
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
        window = 60_000
        tick = self.settings.timer_tick_ms / 1000
        marks_every = max(int(1.0 / tick), 1)
        n = 0
        while True:
            await asyncio.sleep(tick)
            now = now_ms()
            for runtime in self.runtimes.values():
                try:
                    await runtime.fire_due(now, window)
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

    # --- what runs emit ------------------------------------------------------------

    async def send_event(self, event: Event) -> None:
        """Write an event a step sent (ids already derived from run + step)."""
        await self.events_topic.send(key=event.key.encode(), value=self.codec.encode(event))

    async def system_events(
        self,
        function_id: str,
        run: ActiveRun,
        status: str,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Hand the run's system events to the producer (not deferred to a commit)."""
        trigger = run.state["event"]
        data = {
            "function_id": function_id,
            "run_id": run.run_id,
            "event": trigger,
            "events": [trigger],
            "error": error,
            "result": result,
            "_inngest": {"status": status},
        }
        for name in SYSTEM_TOPICS[status]:
            event_id, internal_id = system_event_id(run.run_id, name)
            event = Event(
                name=name,
                data=data,
                id=event_id,
                internal_id=internal_id,
                ts=run.state.get("ended_ms") or now_ms(),
            )
            # force: never deferred to the agent's commit, even if
            # stream_publish_on_commit is turned on
            await self.system_topics[name].send(
                key=run.run_id.encode(), value=self.codec.encode(event), force=True
            )

    def history(
        self,
        run: ActiveRun,
        function_id: str,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Publish the run's latest state to the compacted run-history topic."""
        steps = []
        for memo in run.memos.values():
            item = memo.to_dict()
            out = compact_json(item.pop("output"))
            item["output"] = (
                out if len(out) <= HISTORY_OUTPUT_CHARS else (out[:HISTORY_OUTPUT_CHARS] + "…")
            )
            steps.append(item)
        body = {
            "event": run.state.get("event"),
            "attempt": run.state.get("attempt", 0),
            "started_ms": run.state.get("started_ms"),
            "ended_ms": run.state.get("ended_ms"),
            "steps": steps,
            "result": result,
            "error": error,
        }
        record = {
            "run_id": run.run_id,
            "function_id": function_id,
            "status": run.state["status"],
            "updated_ms": now_ms(),
            "body": self._history_body(run.run_id, body),
        }
        self.history_topic.send_soon(key=run.run_id.encode(), value=HISTORY.encode(record))

    def _history_body(self, run_id: str, body: dict[str, Any]) -> str:
        """The history body as JSON; without step details and result if too large for Kafka."""
        text = compact_json(body, default=str)
        budget = self.settings.max_record_bytes
        if len(text) * 4 <= budget or len(text.encode()) <= budget:
            return text
        log.warning(
            "run %s: its history is %d bytes, more than a record may hold: recording it "
            "without step outputs, step errors and the result",
            run_id,
            len(text.encode()),
        )
        steps = [
            {k: v for k, v in step.items() if k not in ("output", "error", "extra")}
            for step in body["steps"]
        ]
        trimmed = {**body, "steps": steps, "trimmed": True}
        if trimmed.get("result") is not None:
            trimmed["result"] = "(too large for the run history)"
        return compact_json(trimmed, default=str)


def prepare(app: App, settings: Settings) -> Worker:
    """Create steplog's topics, check the app's manifest, and build the worker."""
    ensure_topics(settings)
    check_manifest(app, settings)
    worker = Worker(app, settings)
    worker.create_topics()
    return worker


#: Present in a worker's data dir while it runs; left behind by a crash (SIGKILL).
RUNNING_MARKER = "steplog-worker.running"


def discard_local_state_after_crash(worker: Worker) -> Path:
    """Drop the local RocksDB tables if the last worker on this data dir did not stop cleanly.

    Faust writes a table key to RocksDB at once but to its changelog later (buffered),
    and commits offsets on an interval: after a SIGKILL the local databases may hold
    writes that never reached Kafka, from records that will be read again. Reprocessing
    them against that state loses work (e.g. a run marked finished locally whose
    system event and final state never left the process). The changelogs are the
    durable truth, so after a crash the tables are restored from them.
    """
    datadir = Path(worker.faust.conf.datadir)
    marker = datadir / RUNNING_MARKER
    if marker.exists() and not _alive(marker):
        tabledir = Path(worker.faust.conf.tabledir)
        log.warning(
            "the last worker on %s did not shut down cleanly: restoring its tables from "
            "their Kafka changelogs instead of the local RocksDB files",
            datadir,
        )
        shutil.rmtree(tabledir, ignore_errors=True)
    datadir.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    return marker


def _alive(marker: Path) -> bool:
    """Whether the process that wrote ``marker`` still runs (then it is not a crash)."""
    try:
        pid = int(marker.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, OSError):
        return False
    return pid != os.getpid()


def run_worker(app: App, settings: Settings, *, loglevel: str = "warning") -> None:
    """Run a worker for ``app`` in this process until it is stopped."""
    worker = prepare(app, settings)
    marker = discard_local_state_after_crash(worker)
    discard_stale_local_state(worker)
    try:
        faust.Worker(worker.faust, loglevel=loglevel, quiet=True).execute_from_commandline()
    except SystemExit as exc:
        if exc.code in (0, None):  # a clean stop: the local tables match the changelogs
            marker.unlink(missing_ok=True)
        raise
