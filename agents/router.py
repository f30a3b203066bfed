"""The router: reads ``events`` and the system topics, starts the runs they trigger.

Per record: decode it (anything undecodable or invalid goes to ``events.dlq``
unchanged, with headers naming the error and its origin), look up what is
remembered of its ``id`` (a RocksDB table, partitioned like ``events``), ask
:func:`streams.routing.route` which runs to start, and send a ``start`` record
to each function's journal. Re-delivered records repeat the same run ids, which
the function agents drop; see :mod:`streams.routing` for dedup and replays.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from agents.functions import RUN_RECORDS
from agents.marks import Marks
from agents.store import TableState
from streams.errors import StreamsError
from streams.event import now_ms
from streams.expressions import name_matches
from streams.routing import DedupEntry, remembers, route
from streams.serde import dlq_headers, ensure_accepted

if TYPE_CHECKING:
    from agents.worker import Worker

log = logging.getLogger(__name__)

DEDUP = b"d"  # d<event id> -> DedupEntry
EXPIRY = b"x"  # x<due ms>|<event id> -> when the dedup entry above expires
#: Expired dedup entries deleted per record processed (bounded work per event).
EXPIRE_BATCH = 64
#: An event whose ts is further ahead than this starts its runs at its ts.
FUTURE_SLACK_MS = 1000


class Router:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        settings = worker.settings
        app = worker.faust
        self.events_name = settings.topic("events")
        # A system topic is read only when some function triggers on its event (an
        # on_failure handler reads inngest/function.failed, not .finished).
        patterns = [p for fn in worker.app.functions.values() for p in fn.event_patterns]
        system = [
            topic.get_topic_name()
            for name, topic in worker.system_topics.items()
            if any(name_matches(p, name) for p in patterns)
        ]
        self.cancellations = settings.topic("steplog.cancellations")
        names = [self.events_name, self.cancellations, *system]
        self.channel = app.topic(
            *names, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
        )
        self.dlq = worker._raw_topic(settings.topic("events.dlq"))
        base = f"steplog-{worker.app.app_id}-router"
        self.table = worker.state_table("router-dedup", f"{base}-dedup-changelog")
        self.state = TableState(self.table)
        self.marks = Marks(worker, set(names))
        self.window_ms = int(settings.dedup_window.total_seconds() * 1000)
        self.next_expiry: dict[int, int | None] = {}
        self.functions = list(worker.app.functions.values())
        app.agent(self.channel, name="steplog-router")(self._agent)

    def on_assigned(self, assigned: set[Any]) -> None:
        self.marks.on_assigned(assigned)
        for tp in assigned:
            self.next_expiry.pop(tp.partition, None)

    async def on_revoked(self, revoked: set[Any]) -> None:
        await self.marks.publish()
        self.marks.on_revoked(revoked)

    async def publish_marks(self) -> None:
        await self.marks.publish()

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                await self._route(event)
            except Exception:
                msg = event.message
                log.exception("%s[%s]@%s: routing failed", msg.topic, msg.partition, msg.offset)

    async def _route(self, record: Any) -> None:
        msg = record.message
        now = now_ms()
        if msg.topic == self.cancellations:
            await self._cancellation(record)
            return
        try:
            event = self.worker.codec.decode(record.value, topic=msg.topic)
            event = ensure_accepted(
                event,
                key=msg.key,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                timestamp_ms=int((msg.timestamp or now / 1000) * 1000),
                allow_reserved=msg.topic != self.events_name,
            )
        except StreamsError as exc:
            await self._dead_letter(record, str(exc))
            return
        epoch = await self.marks.epoch(msg.tp)
        dkey = DEDUP + event.key.encode()
        raw = self.state.get(dkey) if remembers(event) else None
        entry = DedupEntry.from_dict(raw) if raw else None
        decision = route(
            event, self.functions, entry, epoch=epoch, now_ms=now, window_ms=self.window_ms
        )
        if decision.starts:
            body: dict[str, Any] = {"event": event.model_dump()}
            if event.ts and event.ts > now + FUTURE_SLACK_MS:
                body["not_before"] = event.ts  # a future ts: its runs start then
            for start in decision.starts:
                runtime = self.worker.runtimes[start.function]
                body["idempotency"] = start.idempotency
                await runtime.topic.send(
                    key=start.key.encode(),
                    value=RUN_RECORDS.encode("start", body, run_id=start.run_id, at_ms=now),
                )
        if not decision.duplicate_of:
            await self.worker.waits.match(event, int((msg.timestamp or now / 1000) * 1000))
        else:
            log.info(
                "event %s (id %r) duplicates %s: no new run",
                event.internal_id,
                event.id,
                decision.duplicate_of,
            )
        if decision.dedup is not None:
            new_entry = entry is None or entry.internal_id != decision.dedup.internal_id
            self.state.put(dkey, "dedup", decision.dedup.to_dict())
            if new_entry:
                due = decision.dedup.first_seen_ms + self.window_ms
                self.state.put(EXPIRY + b"%013d|" % due + event.key.encode(), "dedup", {})
                if self.next_expiry.get(msg.partition) is None:
                    self.next_expiry[msg.partition] = due
        self._expire(msg.partition, now)

    def _expire(self, partition: int, now: int) -> None:
        """Delete a few dedup entries whose window is over (inside the iteration)."""
        if partition not in self.next_expiry:
            self.next_expiry[partition] = 0  # unknown: look once
        due = self.next_expiry[partition]
        if due is None or due > now:
            return
        upto = EXPIRY + b"%013d" % (now + 1)
        expired: list[bytes] = []
        next_due = None
        for key, _ in self.state.scan(partition, EXPIRY):
            if key >= upto or len(expired) >= EXPIRE_BATCH:
                next_due = int(key[1:14])
                break
            expired.append(key)
        for key in expired:
            self.state.delete(key)
            event_id = key.split(b"|", 1)[1]
            raw = self.state.get(DEDUP + event_id)
            if raw is not None and raw["first_seen_ms"] + self.window_ms <= now:
                self.state.delete(DEDUP + event_id)
        self.next_expiry[partition] = next_due

    async def _cancellation(self, record: Any) -> None:
        """A run cancellation request: every function's partitions check for the run."""
        try:
            request = json.loads(record.value)
            run_id = str(request["run_id"])
        except (ValueError, KeyError, TypeError) as exc:
            await self._dead_letter(record, f"not a cancellation request: {exc}")
            return
        value = RUN_RECORDS.encode(
            "cancel",
            {"reason": request.get("reason") or "cancel requested"},
            run_id=run_id,
            at_ms=now_ms(),
        )
        for runtime in self.worker.runtimes.values():
            for partition in range(self.worker.settings.partitions):
                await runtime.topic.send(key=run_id.encode(), value=value, partition=partition)

    async def _dead_letter(self, record: Any, error: str) -> None:
        msg = record.message
        log.warning(
            "%s[%s]@%s -> dead-letter topic: %s", msg.topic, msg.partition, msg.offset, error
        )
        await self.dlq.send(
            key=msg.key,
            value=record.value,
            headers=dlq_headers(error, msg.topic, msg.partition, msg.offset),
        )
