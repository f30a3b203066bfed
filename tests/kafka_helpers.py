"""Small real-Kafka helpers for integration tests (plain confluent-kafka clients)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams.settings import Settings


def read_topic(
    settings: Settings, topic: str, count: int, *, timeout: float = 20.0
) -> list[Message]:
    """Read ``count`` records from the start of ``topic`` (full name), or fail."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            out.append(msg)
    finally:
        consumer.close()
    assert len(out) >= count, f"read {len(out)} of {count} records from {topic}"
    return out


def record_count(settings: Settings, topic: str) -> int:
    """How many records ``topic`` holds (sum of high watermarks - low watermarks)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": f"test-wm-{uuid.uuid4().hex[:8]}"}))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        total = 0
        for p in meta.topics[topic].partitions:
            for attempt in range(50):  # a new topic's leader may not be known yet
                try:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    break
                except KafkaException:
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
            total += high - low
        return total
    finally:
        consumer.close()
