"""Sending events to steplog: ``Client(settings).send(events) -> ids``.

The client validates every event first (nothing is written when one is
invalid), stamps ids, encodes each as an Avro record keyed by its ``id`` and
returns only after the broker acknowledged all of them (idempotent producer,
``acks=all``). The synchronous and the asyncio entry points share one producer,
and whoever waits serves its delivery reports: ``send`` polls the producer in the
calling thread; ``send_async`` has its event loop poll it every millisecond while
sends are waiting (:class:`_LoopPump`), so reports resolve the loop's futures on
the loop's own thread. A report served by another thread is handed over safely.

Encoding has a fast path and a reference path. The fast path
(:func:`streams.event.accept_fields` and :meth:`EventCodec.fields_writer`) takes
plain dicts and :class:`Event` objects straight to record values, with one JSON
serialization of ``data`` and no model per event. Whatever it does not take (an
invalid event, an unusual one) goes through the models (:func:`parse_event`,
:func:`accept`); when that raises, the whole request is validated again by the
models in their order, so the error is exactly the one the model path gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.clock import now_ms
from streams.errors import EventValidationError, KafkaUnavailableError
from streams.event import Event, accept, accept_fields, parse_event
from streams.ids import new_ulids
from streams.serde import EventCodec
from streams.settings import Settings

log = logging.getLogger(__name__)

EventLike = Event | Mapping[str, Any]
#: Inngest's per-request limit; larger lists are sent in several batches.
MAX_BATCH = 5_000
#: How often an event loop with sends in flight serves delivery reports (seconds).
_PUMP_INTERVAL = 0.001
#: The longest a synchronous send blocks in one poll of the producer (seconds).
_SYNC_POLL_SLICE = 0.01
#: librdkafka's producer queue limits (queue.buffering.max.messages / .kbytes, left at
#: their defaults by Settings.producer_config).
_QUEUE_MESSAGES = 100_000
_QUEUE_BYTES = 1_048_576 * 1024


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


class Encoded:
    """Accepted events as Kafka records: ids (to return), keys and values, in order."""

    __slots__ = ("ids", "keys", "values")

    def __init__(self, ids: list[str], keys: list[str], values: list[bytes]) -> None:
        self.ids = ids
        self.keys = keys
        self.values = values

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, size: int = MAX_BATCH) -> Iterable[Encoded]:
        if len(self.ids) <= size:
            yield self
            return
        for start in range(0, len(self.ids), size):
            stop = start + size
            yield Encoded(self.ids[start:stop], self.keys[start:stop], self.values[start:stop])


class _Batch:
    """Counts delivery reports for one produced chunk; calls ``notify`` when all arrived.

    Reports may be served by any thread that polls the producer; ``next()`` on an
    ``itertools.count`` is atomic, so exactly one report sees the last number.
    """

    __slots__ = ("_notify", "_seen", "error", "failed", "total")

    def __init__(self, total: int, notify: Callable[[], object]) -> None:
        self.total = total
        self._notify = notify
        self._seen = itertools.count(1)
        self.error: KafkaError | None = None
        #: Values of the records Kafka did not take (to name their ids).
        self.failed: list[bytes] = []

    def report(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            if self.error is None:
                self.error = err
            self.failed.append(msg.value())
        if next(self._seen) == self.total:
            self._notify()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class Client:
    """Sends events to the ``events`` topic. Thread-safe; reuse one per process."""

    def __init__(self, settings: Settings | None = None, *, topic: str = "events") -> None:
        self.settings = settings or Settings()
        self.topic = self.settings.topic(topic)
        self.codec = EventCodec(self.settings)
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        #: Event loops with writes in flight -> their delivery-report pump.
        self._pumps: dict[asyncio.AbstractEventLoop, _LoopPump] = {}

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
        return self._producer

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (serving its delivery reports), then drop the producer."""
        if self._producer is not None:
            self._producer.flush(timeout)
        self._producer = None  # librdkafka's threads end with the object

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- validating and encoding ---------------------------------------------------
    def encode(
        self,
        events: EventLike | Iterable[EventLike] | list[Any],
        *,
        internal_ids: list[str] | None = None,
        index_parse_errors: bool | None = None,
    ) -> Encoded:
        """Validate and accept every event and encode it as a record; nothing is written.

        Raises :class:`EventValidationError` (the first invalid event, as
        :meth:`prepare` says it). ``internal_ids`` gives the ids to assign (one per
        event); ``index_parse_errors`` is for the HTTP API, whose items are raw JSON
        values: field errors name the event's index when it is True (a JSON array),
        and never when False. By default (None) they do when there are several events.
        """
        items: list[Any] = [events] if isinstance(events, Event | Mapping) else list(events)
        count = len(items)
        at = now_ms()
        iids = internal_ids if internal_ids is not None else new_ulids(at, count)
        max_bytes = self.settings.max_event_bytes
        keys: list[str] = []
        values: list[bytes] = []
        try:
            write = self.codec.fields_writer(self.topic)
            for i, item in enumerate(items):
                iid = iids[i]
                fields = accept_fields(item, at, max_bytes)
                if fields is None:
                    event = self._accept_one(item, i, count, at, iid, index_parse_errors)
                    keys.append(event.key)
                    values.append(self.codec.encode(event, topic=self.topic))
                else:
                    keys.append(fields[3] or iid)
                    values.append(write(iid, fields))
        except (EventValidationError, TypeError, ValueError):
            # The models decide which error the request gets (and in which order
            # events are checked); raises it. If they accept everything after all,
            # their events are what is written.
            accepted = self._reference(items, iids, index_parse_errors)
            return self.encode_accepted(accepted)
        return Encoded(list(iids[:count]), keys, values)

    def _accept_one(
        self, item: Any, i: int, count: int, at: int, iid: str, index: bool | None
    ) -> Event:
        """One event through the models (raises on anything invalid)."""
        if isinstance(item, Event):
            event = item
        elif index is None:
            event = parse_event(dict(item), index=i if count > 1 else None)
        else:
            event = parse_event(item, index=i if index else None)
        accepted = accept(event, at_ms=at, internal_id=iid, max_bytes=self.settings.max_event_bytes)
        self.codec.validate(accepted)
        return accepted

    def _reference(self, items: list[Any], iids: list[str], index: bool | None) -> list[Event]:
        if index is None:
            return self.prepare(items, internal_ids=iids)
        events = [parse_event(item, index=i if index else None) for i, item in enumerate(items)]
        return self.prepare(events, internal_ids=iids)

    def encode_accepted(self, accepted: list[Event]) -> Encoded:
        """Records for events that are already accepted (see :meth:`prepare`)."""
        return Encoded(
            [e.internal_id or "" for e in accepted],
            [e.key for e in accepted],
            [self.codec.encode(e, topic=self.topic) for e in accepted],
        )

    def prepare(
        self, events: EventLike | Iterable[EventLike], *, internal_ids: list[str] | None = None
    ) -> list[Event]:
        """Validate and accept every event (ids, ts) without writing anything.

        The model path: :meth:`encode` is the same, faster, and returns records.
        """
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

    # -- writing -------------------------------------------------------------------
    def _produce(self, records: Encoded, notify: Callable[[], object]) -> _Batch:
        """Queue the records; ``notify`` is called once Kafka reported on every one."""
        batch = _Batch(len(records), notify)
        if not records.ids:
            notify()
            return batch
        producer = self.producer
        topic = self.topic
        report = batch.report
        count = len(records.ids)
        if count == 1 or not self._room_for(count, records.values):
            # produce() is the cheaper call for one record; and one at a time, waiting
            # while librdkafka's queue is full, keeps the records in order.
            for key, value in zip(records.keys, records.values, strict=True):
                self._produce_one(value, key, report)
            return batch
        # One call for the chunk (librdkafka's produce_batch, keys partitioned as by
        # produce). It only runs when the queue has room for all of it: a record that
        # could not be queued would otherwise be retried after later ones.
        messages: list[dict[str, Any]] = [
            {"key": k, "value": v} for k, v in zip(records.keys, records.values, strict=True)
        ]
        if producer.produce_batch(topic, messages, on_delivery=report) != count:
            for message in messages:
                error = message.get("_error")
                if error is None:
                    continue
                if error.code() != KafkaError._QUEUE_FULL:
                    raise KafkaException(error)
                self._produce_one(message["value"], message["key"], report)
        return batch

    def _room_for(self, count: int, values: list[bytes]) -> bool:
        """Whether librdkafka's queue surely takes ``count`` more records at once."""
        if len(self.producer) + count > _QUEUE_MESSAGES // 2:
            return False
        return sum(map(len, values)) <= _QUEUE_BYTES // 4

    def _produce_one(self, value: bytes, key: str, report: Callable[..., None]) -> None:
        producer = self.producer
        while True:
            try:
                producer.produce(self.topic, value, key, on_delivery=report)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                producer.poll(0.01)

    def _check(self, batch: _Batch, records: Encoded) -> list[str]:
        """The ids of ``records`` once all were acknowledged, else KafkaUnavailableError."""
        if not batch.failed:
            return records.ids
        # A report carries a copy of the record's value; values are unique (each holds
        # its internal id), so they name the events Kafka refused.
        refused = set(batch.failed)
        acked = [i for i, v in zip(records.ids, records.values, strict=True) if v not in refused]
        reason = batch.error.str() if batch.error is not None else "no reason given"
        raise KafkaUnavailableError(
            f"Kafka acknowledged {len(acked)} of {len(records)} events; "
            f"the rest were not written — retry them ({reason})",
            acked_ids=acked,
        )

    def send(
        self, events: EventLike | Iterable[EventLike], *, timeout: float | None = None
    ) -> list[str]:
        """Send events; returns their ids once the broker acknowledged every one."""
        return self.send_encoded(self.encode(events), timeout=timeout)

    def send_encoded(self, records: Encoded, *, timeout: float | None = None) -> list[str]:
        """Write records made by :meth:`encode`; returns their ids once all were acknowledged."""
        ids: list[str] = []
        timeout = timeout or self._default_timeout
        for chunk in records.chunks(MAX_BATCH):
            done = threading.Event()
            batch = self._produce(chunk, done.set)
            # This thread serves delivery reports while it waits (they may also be
            # served by another sender; then the short slices notice it).
            deadline = time.monotonic() + timeout
            producer = self.producer
            while not done.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise KafkaUnavailableError(
                        f"Kafka did not acknowledge within {timeout:.0f}s "
                        f"({self.settings.resolved_bootstrap()}); is the broker up?",
                        acked_ids=ids,
                    )
                producer.poll(min(remaining, _SYNC_POLL_SLICE))
            ids.extend(self._check(batch, chunk))
        return ids

    async def send_async(
        self, events: EventLike | Iterable[EventLike], *, timeout: float | None = None
    ) -> list[str]:
        """Like :meth:`send`, without blocking the event loop."""
        return await self.send_encoded_async(self.encode(events), timeout=timeout)

    async def send_accepted_async(
        self, accepted: list[Event], *, timeout: float | None = None
    ) -> list[str]:
        """Write already-accepted events (see :meth:`prepare`) without blocking the loop."""
        return await self.send_encoded_async(self.encode_accepted(accepted), timeout=timeout)

    async def send_encoded_async(
        self, records: Encoded, *, timeout: float | None = None
    ) -> list[str]:
        """Write records made by :meth:`encode` without blocking the loop."""
        ids: list[str] = []
        timeout = timeout or self._default_timeout
        loop = asyncio.get_running_loop()
        for chunk in records.chunks(MAX_BATCH):
            future: asyncio.Future[None] = loop.create_future()
            batch = self._produce(chunk, partial(_notify_loop, loop, threading.get_ident(), future))
            pump = self._pumps.get(loop)
            if pump is None:
                pump = self._pumps[loop] = _LoopPump(self, loop)
            pump.acquire()
            timer = loop.call_later(timeout, _expire, future)
            try:
                await future
            except TimeoutError:
                raise KafkaUnavailableError(
                    f"Kafka did not acknowledge within {timeout:.0f}s; is the broker up?",
                    acked_ids=ids,
                ) from None
            finally:
                timer.cancel()
                pump.release()
            ids.extend(self._check(batch, chunk))
        return ids


class _LoopPump:
    """Serves delivery reports on an event loop while sends on it are waiting.

    Every ``_PUMP_INTERVAL`` seconds, while any ``send_*_async`` on this loop waits,
    it polls the producer without blocking: reports (and so the futures they
    resolve) are handled on the loop's own thread, with no thread hand-off, no GIL
    contention with a delivery thread and no wake-up of the loop per report. Used
    only from its loop's thread.
    """

    __slots__ = ("_handle", "_waiting", "client", "loop")

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self._waiting = 0
        self._handle: asyncio.TimerHandle | None = None

    def acquire(self) -> None:
        self._waiting += 1
        if self._handle is None:
            self._handle = self.loop.call_later(_PUMP_INTERVAL, self._tick)

    def release(self) -> None:
        self._waiting -= 1
        if self._waiting == 0:  # nothing to wait for: stop, and forget this loop
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self.client._pumps.pop(self.loop, None)

    def _tick(self) -> None:
        producer = self.client._producer
        if producer is not None:
            producer.poll(0)
        self._handle = (
            self.loop.call_later(_PUMP_INTERVAL, self._tick) if self._waiting > 0 else None
        )


def _notify_loop(
    loop: asyncio.AbstractEventLoop, thread: int, future: asyncio.Future[None]
) -> None:
    """Resolve ``future``: directly on its loop's thread, else through the loop."""
    if threading.get_ident() == thread:
        _resolve(future)
        return
    # A closed loop raises RuntimeError: nobody waits for this batch any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_resolve, future)
