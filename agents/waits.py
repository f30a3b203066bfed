"""Pending waits of an app: registered in a compacted topic, matched by the router.

``step.wait_for_event`` steps and ``Cancel`` rules register a
:class:`~streams.waits.Wait` in ``steplog-<app>-waits`` (compacted, keyed by
``<run id>|<step id>``; a tombstone removes it when the wait completes, times
out or its run ends). Every worker of the app follows that topic from the
beginning in a thread and keeps all pending waits in an in-memory
:class:`~streams.waits.WaitIndex`. Events are spread over the workers by their
``id``, so each router matches the events of its own partitions against the
whole index, and sends a ``resolve`` (or ``cancel``) record to the waiting run's
journal; several waits matching one event each get it.

The request-reply race - the reply reaches a router before the registration of
the wait for it reaches that worker's index - is closed by
:class:`~streams.waits.RecentEvents`: each router remembers the events it routed
in the last minutes, and a registration arriving late is checked against them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.clock import now_ms
from streams.event import Event
from streams.lifecycle import records
from streams.settings import Settings
from streams.waits import RecentEvents, Wait, WaitIndex, matches_wait

log = logging.getLogger(__name__)

#: How long (and how many) routed events are remembered for registrations that
#: arrive late; the race they cover lasts milliseconds to seconds.
RECENT_WINDOW_MS = 60 * 1000
RECENT_MAX_EVENTS = 20_000


class WaitRegistry:
    """This worker's view of the app's pending waits, and the matching of events."""

    def __init__(self, settings: Settings, topic: Any, journals: Mapping[str, Any]) -> None:
        self.settings = settings
        self.topic = topic
        self.topic_name: str = topic.get_topic_name()
        self.journals = journals
        self.index = WaitIndex()
        self.recent = RecentEvents(RECENT_WINDOW_MS, RECENT_MAX_EVENTS)
        self.loaded: asyncio.Future[None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    # --- registrations (called by function agents) ------------------------------------

    async def register(self, wait: Wait) -> asyncio.Future[Any]:
        value = json.dumps(wait.to_dict(), separators=(",", ":")).encode()
        sent: asyncio.Future[Any] = await self.topic.send(
            key=wait.key.encode(), value=value, force=True
        )
        return sent

    async def unregister(self, key: str) -> asyncio.Future[Any]:
        sent: asyncio.Future[Any] = await self.topic.send(key=key.encode(), value=None, force=True)
        return sent

    # --- following the topic ------------------------------------------------------------

    def start(self) -> None:
        """Start following the waits topic (call on the worker's event loop)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.loaded = self._loop.create_future()
        self._thread = threading.Thread(target=self._follow, name="steplog-waits", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        settings = self.settings
        consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"steplog-waits-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 50,
                }
            )
        )
        try:
            parts = self._partitions(consumer)
            consumer.assign([TopicPartition(self.topic_name, p, OFFSET_BEGINNING) for p in parts])
            ends = {}
            for p in parts:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic_name, p), timeout=10
                )
                if high > low:
                    ends[p] = high
            batch: list[tuple[str, Wait | None]] = []
            caught_up = False
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.05):
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("waits topic: %s", error)
                        continue
                    batch.append(self._decode(msg))
                    part = msg.partition() or 0
                    if ends.get(part, 0) <= (msg.offset() or 0) + 1:
                        ends.pop(part, None)
                if batch or (not ends and not caught_up):
                    caught_up = not ends
                    items, batch = batch, []
                    self._post(items, initial=not caught_up)
        except Exception:
            log.exception("following the waits topic failed; waits will not match on this worker")
            self._post([], initial=False)  # never leave the router waiting for the load
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[int]:
        deadline = time.monotonic() + 30
        while True:
            meta = consumer.list_topics(self.topic_name, timeout=10).topics.get(self.topic_name)
            if meta is not None and meta.partitions and meta.error is None:
                return sorted(meta.partitions)
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {self.topic_name} not found")
            time.sleep(0.2)

    @staticmethod
    def _decode(msg: Any) -> tuple[str, Wait | None]:
        key = (msg.key() or b"").decode()
        value = msg.value()
        if not value:
            return key, None
        return key, Wait.from_dict(json.loads(value))

    def _post(self, items: list[tuple[str, Wait | None]], *, initial: bool) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._apply, items, initial)

    def _apply(self, items: list[tuple[str, Wait | None]], initial: bool) -> None:
        for key, wait in items:
            if wait is None:
                self.index.remove(key)
                continue
            self.index.add(wait)
            if not initial:
                self._check_recent(wait)
        if not initial and self.loaded is not None and not self.loaded.done():
            self.loaded.set_result(None)
            log.info("waits: %d pending wait(s) loaded", len(self.index))
        now = now_ms()
        self.index.expire(now)
        self.recent.trim(now)

    def _check_recent(self, wait: Wait) -> None:
        """A registration that arrived after events it may wait for (the reply race)."""
        for at, event in self.recent.since(wait.event, wait.registered_ms):
            if matches_wait(wait, event, at):
                self.index.remove(wait.key)
                task = asyncio.ensure_future(self._resolve(wait, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return

    # --- matching (called by the router for every event it routes) ------------------

    async def match(self, event: Event, at_ms: int) -> None:
        """Complete the waits ``event`` matches; remember it for late registrations.

        ``at_ms`` is when the event entered Kafka (its record timestamp).
        """
        if self.loaded is not None and not self.loaded.done():
            await self.loaded
        self.recent.add(event, now_ms(), at_ms)
        for wait in self.index.matches(event, at_ms):
            self.index.remove(wait.key)
            await self._resolve(wait, event)

    async def _resolve(self, wait: Wait, event: Event) -> None:
        journal = self.journals.get(wait.function)
        if journal is None:
            log.warning("wait %s: function %s is not in this app", wait.key, wait.function)
            return
        record: records.Record
        if wait.kind == "cancel":
            record = records.Cancel(wait.run_id, f"event {event.name} ({event.internal_id})")
        else:
            record = records.Resolve(wait.run_id, wait.step_id, output=event.model_dump())
        await journal.send(key=wait.run_key.encode(), value=records.encode(record, now_ms()))
