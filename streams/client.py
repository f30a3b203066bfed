"""Sending events to steplog: ``Client(settings).send(events) -> ids``.

The client validates every event first (nothing is written when one is
invalid), stamps ids, encodes each as an Avro record keyed by its ``id`` and
returns only after the broker acknowledged all of them (idempotent producer,
``acks=all``). A background thread serves delivery reports, so the synchronous
and the asyncio entry points share one producer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams.errors import EventValidationError, KafkaUnavailableError
from streams.event import Event, accept, now_ms, parse_event
from streams.serde import EventCodec
from streams.settings import Settings

log = logging.getLogger(__name__)

EventLike = Event | Mapping[str, Any]
#: Inngest's per-request limit; larger lists are sent in several batches.
MAX_BATCH = 5_000


def to_events(events: EventLike | Iterable[EventLike]) -> list[Event]:
    """Normalize one event, a dict, or a list of either into validated Events."""
    if isinstance(events, Event | Mapping):
        items: list[Any] = [events]
    else:
        items = list(events)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Event):
            out.append(item)
        else:
            out.append(parse_event(dict(item), index=i if len(items) > 1 else None))
    return out


class _Batch:
    """Counts delivery reports for one send; completes a Future when all arrived."""

    __slots__ = ("acked", "error", "future", "lock", "pending")

    def __init__(self, count: int) -> None:
        self.pending = count
        self.acked: list[str] = []
        self.error: KafkaError | None = None
        self.future: Future[list[str]] = Future()
        self.lock = threading.Lock()

    def report(self, event_id: str, err: KafkaError | None, _msg: object = None) -> None:
        with self.lock:
            if err is None:
                self.acked.append(event_id)
            elif self.error is None:
                self.error = err
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.future.set_result(self.acked)


class Client:
    """Sends events to the ``events`` topic. Thread-safe; reuse one per process."""

    def __init__(self, settings: Settings | None = None, *, topic: str = "events") -> None:
        self.settings = settings or Settings()
        self.topic = self.settings.topic(topic)
        self.codec = EventCodec(self.settings)
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()

    @property
    def _default_timeout(self) -> float:
        return self.settings.produce_timeout_ms / 1000 + 5

    # -- producer lifecycle ------------------------------------------------------
    @property
    def producer(self) -> Producer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = Producer(self.settings.producer_config())
                    self._poller = threading.Thread(
                        target=self._poll_loop, name="steplog-client-poll", daemon=True
                    )
                    self._poller.start()
        return self._producer

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            producer = self._producer
            if producer is not None:
                producer.poll(0.05)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop the delivery thread."""
        if self._producer is not None:
            self._producer.flush(timeout)
        self._closed.set()
        if self._poller is not None:
            self._poller.join(timeout)
        self._producer = None  # librdkafka's threads end with the object

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- sending -------------------------------------------------------------------
    def prepare(
        self, events: EventLike | Iterable[EventLike], *, internal_ids: list[str] | None = None
    ) -> list[Event]:
        """Validate and accept every event (ids, ts) without writing anything."""
        parsed = to_events(events)
        at = now_ms()
        accepted = []
        for i, event in enumerate(parsed):
            try:
                accepted.append(
                    accept(
                        event,
                        at_ms=at,
                        internal_id=internal_ids[i] if internal_ids else None,
                        max_bytes=self.settings.max_event_bytes,
                    )
                )
            except EventValidationError as exc:
                if len(parsed) > 1:
                    raise EventValidationError(f"event {i}: {exc}") from None
                raise
            self.codec.validate(accepted[-1])
        return accepted

    def produce(self, accepted: list[Event]) -> Future[list[str]]:
        """Write accepted events; the Future completes when all are acknowledged."""
        batch = _Batch(len(accepted))
        if not accepted:
            batch.future.set_result([])
            return batch.future
        producer = self.producer
        for event in accepted:
            value = self.codec.encode(event, topic=self.topic)
            report = partial(batch.report, event.internal_id or "")
            while True:
                try:
                    producer.produce(
                        self.topic,
                        value,
                        key=event.key.encode(),
                        on_delivery=report,
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
        return batch.future

    @staticmethod
    def _result(acked_list: list[str], accepted: list[Event]) -> list[str]:
        acked = set(acked_list)
        if len(acked) != len(accepted):
            ids = [e.internal_id or "" for e in accepted if e.internal_id in acked]
            raise KafkaUnavailableError(
                f"Kafka acknowledged {len(acked)} of {len(accepted)} events; "
                "the rest were not written — retry them",
                acked_ids=ids,
            )
        return [e.internal_id or "" for e in accepted]

    def send(
        self, events: EventLike | Iterable[EventLike], *, timeout: float | None = None
    ) -> list[str]:
        """Send events; returns their ids once the broker acknowledged every one."""
        ids: list[str] = []
        accepted = self.prepare(events)
        timeout = timeout or self._default_timeout
        for start in range(0, len(accepted), MAX_BATCH):
            chunk = accepted[start : start + MAX_BATCH]
            future = self.produce(chunk)
            try:
                future.result(timeout)
            except TimeoutError:
                raise KafkaUnavailableError(
                    f"Kafka did not acknowledge within {timeout:.0f}s "
                    f"({self.settings.resolved_bootstrap()}); is the broker up?",
                    acked_ids=ids,
                ) from None
            ids.extend(self._result(future.result(), chunk))
        return ids

    async def send_async(
        self, events: EventLike | Iterable[EventLike], *, timeout: float | None = None
    ) -> list[str]:
        """Like :meth:`send`, without blocking the event loop."""
        accepted = self.prepare(events)
        return await self.send_accepted_async(accepted, timeout=timeout)

    async def send_accepted_async(
        self, accepted: list[Event], *, timeout: float | None = None
    ) -> list[str]:
        """Write already-accepted events (see :meth:`prepare`) without blocking the loop."""
        ids: list[str] = []
        timeout = timeout or self._default_timeout
        for start in range(0, len(accepted), MAX_BATCH):
            chunk = accepted[start : start + MAX_BATCH]
            future = asyncio.wrap_future(self.produce(chunk))
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                raise KafkaUnavailableError(
                    f"Kafka did not acknowledge within {timeout:.0f}s; is the broker up?",
                    acked_ids=ids,
                ) from None
            ids.extend(self._result(future.result(), chunk))
        return ids
