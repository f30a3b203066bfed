"""Workers of one app must host the same functions; check that at start.

The set of function ids lives in a compacted topic, ``steplog-<app>-manifest``.
A worker whose set differs from the recorded one is refused while other workers
of the app are running (they would split partitions of topics the others do not
read); with none running, the new set is a deploy and is recorded.
"""

from __future__ import annotations

import json
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.app import App
from streams.errors import ConfigError
from streams.kafka.admin import create_topics
from streams.settings import Settings
from streams.topics import Topics, consumer_group


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> tuple[int, int]:
    """``get_watermark_offsets``, retried while a topic just created is not known yet.

    Right after ``create_topics`` (or when another worker created the topic a moment
    ago) the broker may still answer "unknown partition"; that is not an error.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return low, high
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            unknown = code in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART)
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _read_latest(settings: Settings, topic: str) -> list[str] | None:
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"steplog-manifest-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
    )
    try:
        low, high = watermarks(consumer, TopicPartition(topic, 0))
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, 0, high - 1)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error() and msg.value():
                return list(json.loads(msg.value() or b"{}")["functions"])
        return None
    finally:
        consumer.close()


def _active_members(settings: Settings, group: str) -> int:
    admin = AdminClient(settings.kafka_config())
    try:
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException:
        return 0
    return len(desc.members)


def check_manifest(app: App, settings: Settings) -> None:
    topic = Topics(settings.topic_prefix, app.app_id).manifest
    create_topics(settings, [topic], partitions=1, config={"cleanup.policy": "compact"})
    ours = sorted(app.functions)
    recorded = _read_latest(settings, topic)
    if recorded == ours:
        return
    if recorded is not None and _active_members(settings, consumer_group(app.app_id)) > 0:
        raise ConfigError(
            f"workers of app {app.app_id!r} already running host functions {recorded}; this "
            f"worker hosts {ours}. Run the same code on every worker: stop the running ones "
            "to deploy a different set of functions."
        )
    producer = Producer(settings.producer_config())
    producer.produce(topic, json.dumps({"functions": ours}).encode(), key=app.app_id.encode())
    producer.flush(10)
