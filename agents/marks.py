"""Telling a replay (consumer-group reset) from a crash re-delivery.

Both make the router read offsets it has read before. A crash re-delivers only
what was processed but not yet committed; a reset moves the committed offset
*below* one this app had committed. So the router publishes, per partition it
reads, the last offset Faust committed (never more than what is committed) to a
small compacted topic, ``steplog-<app>-marks``. When a partition is assigned,
a committed offset below its mark means someone reset the group: the partition's
epoch goes up, and :func:`streams.routing.run_id` gives the replayed events new
run ids. A crash leaves the committed offset at or above the mark: same epoch,
same run ids, no duplicate runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from agents.delivery import Cursors
from agents.manifest import watermarks
from agents.store import STATE
from streams.settings import Settings

log = logging.getLogger(__name__)


def committed_offsets(app: Any) -> Any:
    """The offsets Faust last committed per partition (as it knows them in memory)."""
    return app.consumer._committed_offset


def _tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class Marks:
    """The replay marks of the partitions the router reads (``topics``, set by the router).

    ``cursors`` give the broker's committed offsets as each assignment found them.
    """

    def __init__(self, settings: Settings, name: str, faust: Any, cursors: Cursors) -> None:
        self.settings = settings
        self.name = name
        self.faust = faust
        self.cursors = cursors
        self.topics: set[str] = set()
        self.marks: dict[str, dict[str, int]] = {}
        self.epochs: dict[str, int] = {}
        self.unchecked: set[Any] = set()
        self.assigned: set[Any] = set()
        self.published: dict[str, int] = {}
        self.loaded: asyncio.Future[None] | None = None

    def on_assigned(self, assigned: set[Any]) -> None:
        mine = {tp for tp in assigned if tp.topic in self.topics}
        self.assigned |= mine
        self.unchecked |= mine
        self.loaded = asyncio.ensure_future(asyncio.to_thread(self._load))

    def on_revoked(self, revoked: set[Any]) -> None:
        self.assigned -= revoked
        self.unchecked -= revoked
        for tp in revoked:
            self.epochs.pop(_tp_key(tp.topic, tp.partition), None)

    def _load(self) -> None:
        """Read the marks topic to its end (it is small: one record per partition)."""
        settings = self.settings
        consumer = Consumer(
            settings.kafka_config(
                **{"group.id": f"steplog-marks-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
            )
        )
        try:
            tp = TopicPartition(self.name, 0)
            low, high = watermarks(consumer, tp)
            if high <= low:
                return
            consumer.assign([TopicPartition(self.name, 0, low)])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                value = msg.value()
                if value:
                    _, body, _ = STATE.decode(value)
                    self.marks[(msg.key() or b"").decode()] = body
                if (msg.offset() or 0) >= high - 1:
                    break
        finally:
            consumer.close()

    async def epoch(self, tp: Any) -> int:
        """The partition's replay epoch (checked once after each assignment)."""
        key = _tp_key(tp.topic, tp.partition)
        if tp in self.unchecked:
            if self.loaded is not None:
                await self.loaded
            self.unchecked.discard(tp)
            # The broker's committed offset as this assignment's seek read it (not
            # Faust's memory of its own commits, empty for a partition it just got).
            committed = self.cursors.committed.get(tp)
            mark = self.marks.get(key)
            epoch = int(mark["epoch"]) if mark else 0
            if mark and mark["committed"] and (committed is None or committed < mark["committed"]):
                epoch += 1
                log.warning(
                    "%s: committed offset %s is below %s, which this app committed before: "
                    "the consumer group was reset, replaying as new runs (epoch %s)",
                    key,
                    committed,
                    mark["committed"],
                    epoch,
                )
                await self._send(key, committed or 0, epoch)
            self.epochs[key] = epoch
        return self.epochs.get(key, 0)

    async def publish(self) -> None:
        """Record the committed offsets of assigned partitions that moved since last time."""
        committed = committed_offsets(self.faust)
        for tp in list(self.assigned):
            key = _tp_key(tp.topic, tp.partition)
            offset = committed.get(tp)
            if not offset or key not in self.epochs or self.published.get(key) == offset:
                continue
            await self._send(key, offset, self.epochs[key])

    async def _send(self, key: str, committed: int, epoch: int) -> None:
        body = {"committed": committed, "epoch": epoch}
        self.marks[key] = body
        self.published[key] = committed
        producer = self.faust.producer
        await producer.send(
            self.name,
            key.encode(),
            STATE.encode("mark", body),
            partition=0,
            timestamp=None,
            headers=None,
        )
