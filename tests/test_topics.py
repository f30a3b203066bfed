"""Topic creation: idempotent, prefixed, sized for 4 MiB step outputs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from streams.cli.kafka import topics_app
from streams.errors import ConfigError, KafkaUnavailableError
from streams.kafka.admin import (
    CORE_TOPICS,
    RECORD_OVERHEAD_BYTES,
    create_topics,
    delete_topics,
    ensure_topics,
    topic_config,
    wait_for_broker,
)
from streams.settings import Settings


def _cli() -> typer.Typer:
    """``steplog topics`` as mounted by streams.cli (a one-command Typer collapses)."""
    root = typer.Typer()
    root.add_typer(topics_app, name="topics")
    return root


def _describe(settings: Settings, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": settings.resolved_bootstrap()})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=15)
    return {name: entry.value for name, entry in configs.items()}


def _partitions(settings: Settings, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": settings.resolved_bootstrap()})
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def test_core_topics_are_the_fixed_names() -> None:
    assert CORE_TOPICS == (
        "events",
        "events.dlq",
        "inngest.function.finished",
        "inngest.function.failed",
        "inngest.function.cancelled",
        "steplog.cancellations",
    )


def test_topic_config_sizes_for_the_largest_record() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1", max_record_bytes=8 * 1024 * 1024)
    assert topic_config(settings) == {"max.message.bytes": str(8 * 1024 * 1024 + 65536)}
    compact = topic_config(settings, {"cleanup.policy": "compact"})
    assert compact["cleanup.policy"] == "compact"
    assert compact["max.message.bytes"] == str(8 * 1024 * 1024 + 65536)


def test_unreachable_broker_is_a_clear_error() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    began = time.monotonic()
    with pytest.raises(KafkaUnavailableError, match=r"Kafka at 127\.0\.0\.1:1 did not answer"):
        ensure_topics(settings, timeout=1.5)
    assert time.monotonic() - began < 10


@pytest.mark.kafka
def test_ensure_topics_is_idempotent_and_prefixed(settings: Settings) -> None:
    first = ensure_topics(settings)
    expected = tuple(f"{settings.topic_prefix}{name}" for name in CORE_TOPICS)
    assert first.created == expected
    assert first.existing == ()

    second = ensure_topics(settings)
    assert second.created == ()
    assert second.existing == expected
    assert second.names == expected

    admin = AdminClient({"bootstrap.servers": settings.resolved_bootstrap()})
    listed = set(admin.list_topics(timeout=10).topics)
    assert set(expected) <= listed
    for topic in expected:
        assert topic.startswith(settings.topic_prefix)
        config = _describe(settings, topic)
        assert config["max.message.bytes"] == str(settings.max_record_bytes + RECORD_OVERHEAD_BYTES)
        assert _partitions(settings, topic) == settings.partitions


@pytest.mark.kafka
def test_create_topics_generic_with_compaction(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = settings.topic(unique_name("changelog"))
    result = create_topics(settings, [name], partitions=3, config={"cleanup.policy": "compact"})
    assert result.created == (name,)
    config = _describe(settings, name)
    assert config["cleanup.policy"] == "compact"
    assert config["max.message.bytes"] == str(settings.max_record_bytes + RECORD_OVERHEAD_BYTES)
    assert _partitions(settings, name) == 3
    assert create_topics(settings, [name, name]).existing == (name,)
    delete_topics(settings, [name])
    delete_topics(settings, [name])  # gone already: fine


@pytest.mark.kafka
def test_bad_replication_factor_is_a_config_error(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    with pytest.raises(ConfigError, match="INVALID_REPLICATION_FACTOR"):
        create_topics(settings, [unique_name("rf")], replication_factor=3)


@pytest.mark.kafka
def test_a_5_mib_record_fits(settings: Settings) -> None:
    ensure_topics(settings, ["events"], partitions=1)
    topic = settings.topic("events")
    payload = os.urandom(5 * 1024 * 1024)
    producer = Producer(settings.producer_config())
    errors: list[object] = []
    producer.produce(
        topic, key=b"big", value=payload, on_delivery=lambda err, _msg: errors.append(err)
    )
    assert producer.flush(30) == 0
    assert errors == [None]

    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"g-{os.urandom(4).hex()}",
                "auto.offset.reset": "earliest",
                "fetch.message.max.bytes": settings.max_record_bytes + RECORD_OVERHEAD_BYTES,
            }
        )
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 20
        got = None
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got = msg.value()
    finally:
        consumer.close()
    assert got == payload


@pytest.mark.kafka
def test_cli_topics_create(
    settings: Settings, kafka_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLOG_BOOTSTRAP_SERVERS", settings.resolved_bootstrap())
    monkeypatch.setenv("STEPLOG_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("STEPLOG_PARTITIONS", "1")
    runner = CliRunner()
    first = runner.invoke(_cli(), ["topics", "create"])
    assert first.exit_code == 0, first.output
    for name in CORE_TOPICS:
        assert f"created  {settings.topic(name)}" in first.output
    second = runner.invoke(_cli(), ["topics", "create"])
    assert second.exit_code == 0, second.output
    assert "created" not in second.output
    for name in CORE_TOPICS:
        assert f"present  {settings.topic(name)}" in second.output
    assert _partitions(settings, settings.topic("events")) == 1


@pytest.mark.kafka
def test_cli_topics_create_finds_the_recorded_broker(
    kafka_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kafka_broker.data_dir is None:
        pytest.skip("an external broker (STEPLOG_TEST_BOOTSTRAP) has no recorded data dir")
    monkeypatch.delenv("STEPLOG_BOOTSTRAP_SERVERS", raising=False)
    prefix = f"r{os.urandom(4).hex()}."
    monkeypatch.setenv("STEPLOG_TOPIC_PREFIX", prefix)
    result = CliRunner().invoke(
        _cli(), ["topics", "create", "--data-dir", str(kafka_broker.data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert f"using the local broker at {kafka_broker.bootstrap}" in result.output
    assert f"created  {prefix}events" in result.output
    wait_for_broker(Settings(bootstrap_servers=kafka_broker.bootstrap), timeout=5)


def test_cli_topics_create_without_a_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STEPLOG_BOOTSTRAP_SERVERS", raising=False)
    result = CliRunner().invoke(_cli(), ["topics", "create", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: no Kafka broker configured")
    assert len(result.output.strip().splitlines()) == 1
