"""streams.Client against the real broker: acks, batching, async, ids and keys."""

from __future__ import annotations

import asyncio

import pytest

from streams import Client, Event
from streams.errors import EventValidationError
from streams.kafka.admin import ensure_topics
from streams.serde import EventCodec
from streams.settings import Settings
from tests.kafka_helpers import read_topic, record_count

pytestmark = pytest.mark.kafka


def test_send_returns_ids_after_every_event_is_acknowledged(settings: Settings) -> None:
    ensure_topics(settings)
    events = [{"name": "app/bulk", "data": {"i": i}} for i in range(5_200)]  # two batches
    with Client(settings) as client:
        ids = client.send(events)
    assert len(ids) == len(set(ids)) == 5_200
    assert record_count(settings, settings.topic("events")) == 5_200


def test_send_async_and_keys(settings: Settings) -> None:
    ensure_topics(settings)

    async def go() -> list[str]:
        with Client(settings) as client:
            return await client.send_async(
                [Event(name="app/a", id="order-9", data={"x": 1}), Event(name="app/b")]
            )

    ids = asyncio.run(go())
    records = read_topic(settings, settings.topic("events"), 2)
    codec = EventCodec(settings)
    decoded = {codec.decode(m.value()).name: (m.key(), codec.decode(m.value())) for m in records}
    key_a, a = decoded["app/a"]
    key_b, b = decoded["app/b"]
    assert key_a == b"order-9" and a.id == "order-9" and a.internal_id == ids[0]
    assert key_b == ids[1].encode() and b.id == ids[1]


def test_one_invalid_event_writes_nothing(settings: Settings) -> None:
    ensure_topics(settings)
    with Client(settings) as client, pytest.raises(EventValidationError, match="event 1: name"):
        client.send([{"name": "ok"}, {"name": ""}])
    assert record_count(settings, settings.topic("events")) == 0


def test_concurrent_async_and_sync_sends_share_one_producer(settings: Settings) -> None:
    """Reports are served by whoever polls: the loop's pump or a sync sender's thread."""
    ensure_topics(settings)
    client = Client(settings)

    async def go() -> list[list[str]]:
        loop = asyncio.get_running_loop()
        in_thread = loop.run_in_executor(
            None, client.send, [{"name": "app/sync", "data": {"i": i}} for i in range(300)]
        )
        singles = [client.send_async({"name": "app/async", "data": {"i": i}}) for i in range(50)]
        return [*await asyncio.gather(*singles), await in_thread]

    try:
        for _ in range(2):  # a second event loop: the first one's pump is gone
            results = asyncio.run(go())
            assert sum(len(r) for r in results) == 350
            assert not client._pumps
    finally:
        client.close()
    assert record_count(settings, settings.topic("events")) == 700
