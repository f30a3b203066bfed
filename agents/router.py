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
from collections.abc import Mapping
from typing import Any

from agents.marks import Marks
from agents.store import Changelog, Outbox, RocksRunStore
from agents.waits import WaitRegistry
from streams.app import Function
from streams.clock import now_ms
from streams.errors import StreamsError
from streams.expressions import name_matches
from streams.lifecycle import records
from streams.lifecycle.gate import GATE
from streams.routing import DedupEntry, DedupKeys, remembers, route
from streams.serde import EventCodec, dlq_headers, ensure_accepted
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger(__name__)

DEDUP = b"g"  # g<generation>|<event id> -> DedupEntry (streams.routing.DedupKeys)
#: Expired dedup entries deleted per record processed (bounded work per event).
EXPIRE_BATCH = 64
#: An event whose ts is further ahead than this starts its runs at its ts.
FUTURE_SLACK_MS = 1000


class Router:
    """The router agent and its dedup table (partitioned like ``events``)."""

    def __init__(
        self,
        faust: Any,
        settings: Settings,
        topics: Topics,
        *,
        codec: EventCodec,
        functions: list[Function],
        journals: Mapping[str, Any],
        system_topics: Mapping[str, Any],
        dlq: Any,
        table: Any,
        waits: WaitRegistry,
        marks: Marks,
    ) -> None:
        self.codec = codec
        self.functions = functions
        self.journals = journals
        self.waits = waits
        self.partitions = settings.partitions
        self.events_name = topics.events
        # A system topic is read only when some function triggers on its event (an
        # on_failure handler reads inngest/function.failed, not .finished).
        patterns = [p for fn in functions for p in fn.event_patterns]
        system = [
            topic.get_topic_name()
            for name, topic in system_topics.items()
            if any(name_matches(p, name) for p in patterns)
        ]
        self.cancellations = topics.cancellations
        names = [self.events_name, self.cancellations, *system]
        self.channel = faust.topic(
            *names, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
        )
        self.dlq = dlq
        self.table = table
        #: The dedup table's writes (an updated entry waits for the starts it records).
        self.outbox = Outbox(Changelog(table))
        self.marks = marks
        marks.topics = set(names)
        self.window_ms = int(settings.dedup_window.total_seconds() * 1000)
        self.dedup_keys = DedupKeys(self.window_ms)
        #: Per partition: when dedup keys may next be due for deletion.
        self.next_expiry: dict[int, int] = {}
        faust.agent(self.channel, name="steplog-router")(self._agent)

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
            finally:
                self.outbox.seal()

    def _state(self, partition: int) -> RocksRunStore:
        return RocksRunStore(partition, self.outbox)

    async def _route(self, record: Any) -> None:
        msg = record.message
        now = now_ms()
        if msg.topic == self.cancellations:
            await self._cancellation(record)
            return
        try:
            event = self.codec.decode(record.value, topic=msg.topic)
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
        event_key = event.key.encode()
        state = self._state(msg.partition)
        raw = self._remembered(state, event_key, now) if remembers(event) else None
        entry = DedupEntry.from_dict(raw) if raw else None
        decision = route(
            event, self.functions, entry, epoch=epoch, now_ms=now, window_ms=self.window_ms
        )
        if decision.starts:
            dumped = event.model_dump()
            # A future ts: its runs start then.
            not_before = event.ts if event.ts and event.ts > now + FUTURE_SLACK_MS else None
            for start in decision.starts:
                record = records.Start(start.run_id, dumped, start.idempotency, not_before)
                sent = await self.journals[start.function].send(
                    key=start.key.encode(), value=records.encode(record, now)
                )
                if decision.duplicate_of:
                    # The entry will say these functions ran for the id: not durable
                    # before their starts (a re-delivered duplicate would skip them).
                    # A new entry needs no wait: its own record, read again, is known
                    # as a re-delivery and sends its starts again. Not waiting keeps
                    # the entry in the producer request of the starts.
                    self.outbox.send(sent, f"start of {start.run_id}")
        if not decision.duplicate_of:
            await self.waits.match(event, int((msg.timestamp or now / 1000) * 1000))
        else:
            log.info(
                "event %s (id %r) duplicates %s: no new run",
                event.internal_id,
                event.id,
                decision.duplicate_of,
            )
        if decision.dedup is not None:
            key = self.dedup_keys.key(event_key, decision.dedup.first_seen_ms)
            state.put(key, "dedup", decision.dedup.to_dict())
        self._expire(state, now)

    def _remembered(self, state: RocksRunStore, event_key: bytes, now: int) -> Any | None:
        """The dedup entry of an event id that may still be inside its window."""
        for key in self.dedup_keys.lookups(event_key, now):
            raw = state.get(key)
            if raw is not None:
                return raw
        return None

    def _expire(self, state: RocksRunStore, now: int) -> None:
        """Delete a few dedup entries of generations past the window (in the iteration)."""
        partition = state.partition
        if self.next_expiry.get(partition, 0) > now:
            return
        below = self.dedup_keys.expired_below(now)
        expired: list[bytes] = []
        oldest_left = None
        for key in state.scan_keys(DEDUP):
            if key >= below or len(expired) == EXPIRE_BATCH:
                oldest_left = key
                break
            expired.append(key)
        for key in expired:
            state.delete(key)
        if len(expired) == EXPIRE_BATCH:
            self.next_expiry[partition] = now  # more to delete with the next record
        elif oldest_left is not None:
            self.next_expiry[partition] = self.dedup_keys.expires_at(oldest_left)
        else:  # none left: the first entry written from now on expires then
            self.next_expiry[partition] = self.dedup_keys.expires_at(self.dedup_keys.key(b"", now))

    async def _cancellation(self, record: Any) -> None:
        """A run cancellation request: every function's partitions check for the run."""
        try:
            request = json.loads(record.value)
            run_id = str(request["run_id"])
        except (ValueError, KeyError, TypeError) as exc:
            await self._dead_letter(record, f"not a cancellation request: {exc}")
            return
        cancel = records.Cancel(run_id, str(request.get("reason") or "cancel requested"))
        value = records.encode(cancel, now_ms())
        for slug, journal in self.journals.items():
            if slug == GATE:
                continue  # the gate holds no runs
            for partition in range(self.partitions):
                await journal.send(key=run_id.encode(), value=value, partition=partition)

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
