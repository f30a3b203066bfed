"""The embedded local broker: start, status, idempotence, stop/restart, clear errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from typer.testing import CliRunner

from streams.cli.kafka import app as kafka_cli
from streams.errors import LocalKafkaError
from streams.kafka import local
from streams.kafka.admin import create_topics
from streams.settings import Settings


@pytest.fixture
def listening_socket() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{os.urandom(4).hex()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            values.append(msg.value() or b"")
    finally:
        consumer.close()
    return values


# --- without Java/Kafka ------------------------------------------------------------------


def test_cluster_id_looks_like_kafkas() -> None:
    ids = {local.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("nonsense", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert local.java_major_version(output) == major


def test_missing_java_binary_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError) as caught:
        local.start(tmp_path, java=str(tmp_path / "no-such-java"))
    message = str(caught.value)
    assert "Java 17+ is needed" in message
    assert "openjdk-17-jre-headless" in message
    assert "STEPLOG_BOOTSTRAP_SERVERS" in message
    assert "\n" not in message
    assert not (tmp_path / "kafka" / "broker.json").exists()


def test_no_java_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(LocalKafkaError, match=r"Java 17\+ is needed.*no `java` on PATH"):
        local.start(tmp_path / "data")


def test_old_java_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    fake.chmod(0o755)
    with pytest.raises(LocalKafkaError, match=r"Java 17\+ is needed .*is Java 8"):
        local.find_java(str(fake))


def test_missing_maven_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match=r"Maven is needed once.*apt-get install maven"):
        local.fetch_jars(tmp_path / "cache", mvn=str(tmp_path / "no-such-mvn"))


def test_port_in_use_is_refused(tmp_path: Path, listening_socket: int) -> None:
    with pytest.raises(LocalKafkaError, match=f"port {listening_socket} .* already in use"):
        local.start(tmp_path, port=listening_socket)


def test_stop_without_broker_is_a_no_op(tmp_path: Path) -> None:
    assert local.status(tmp_path) is None
    assert local.stop(tmp_path) is False


def test_stop_never_signals_a_foreign_pid(tmp_path: Path) -> None:
    """A recorded pid that is not this data dir's kafka.Kafka JVM is left alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = tmp_path / "kafka" / "broker.json"
        record.parent.mkdir(parents=True)
        record.write_text(
            json.dumps(
                {"bootstrap": "127.0.0.1:1", "pid": other.pid, "controller_port": 2, "port": 1}
            )
        )
        info = local.status(tmp_path)
        assert info is not None and not info.running
        assert local.stop(tmp_path) is False
        assert other.poll() is None
        assert json.loads(record.read_text())["pid"] is None
    finally:
        other.kill()
        other.wait()


def test_cli_errors_are_one_red_line_and_exit_1(tmp_path: Path, listening_socket: int) -> None:
    result = CliRunner().invoke(
        kafka_cli, ["start", "--data-dir", str(tmp_path), "--port", str(listening_socket)]
    )
    assert result.exit_code == 1
    output = result.output.strip()
    assert output.startswith("error:")
    assert "already in use" in output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1


def test_cli_status_when_never_started(tmp_path: Path) -> None:
    result = CliRunner().invoke(kafka_cli, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "not running" in result.output


# --- against a real broker -------------------------------------------------------------


@pytest.mark.kafka
def test_start_status_stop_restart_keeps_data(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    data_dir = tmp_path / "broker"
    began = time.monotonic()
    info = local.start(data_dir)
    try:
        started_in = time.monotonic() - began
        assert info.running and not info.already_running
        assert info.version == local.KAFKA_VERSION
        assert re.fullmatch(r"127\.0\.0\.1:\d+", info.bootstrap)
        print(f"broker started in {started_in:.1f}s")

        record = json.loads((data_dir / "kafka" / "broker.json").read_text())
        assert record["bootstrap"] == info.bootstrap
        assert record["pid"] == info.pid
        assert record["version"] == local.KAFKA_VERSION
        assert record["controller_port"] == info.controller_port
        # Settings finds the recorded broker when no bootstrap servers are configured.
        assert Settings(data_dir=data_dir, bootstrap_servers=None).resolved_bootstrap() == (
            info.bootstrap
        )

        status = local.status(data_dir)
        assert status is not None and status.running and status.pid == info.pid

        again = local.start(data_dir)
        assert again.already_running and again.pid == info.pid
        assert again.bootstrap == info.bootstrap

        settings = Settings(bootstrap_servers=info.bootstrap, partitions=1, data_dir=data_dir)
        topic = unique_name("keep")
        assert create_topics(settings, [topic]).created == (topic,)
        producer = Producer(settings.producer_config())
        for i in range(3):
            producer.produce(topic, key=b"k", value=f"record-{i}".encode())
        assert producer.flush(15) == 0

        result = CliRunner().invoke(kafka_cli, ["status", "--data-dir", str(data_dir)])
        assert result.exit_code == 0 and info.bootstrap in result.output
    finally:
        assert local.stop(data_dir)

    stopped = local.status(data_dir)
    assert stopped is not None and not stopped.running and stopped.pid is None
    assert not local.port_in_use(info.port)
    assert json.loads((data_dir / "kafka" / "broker.json").read_text())["pid"] is None
    assert local.stop(data_dir) is False

    restarted = local.start(data_dir)
    try:
        assert restarted.bootstrap == info.bootstrap  # same ports when free
        assert restarted.cluster_id == info.cluster_id
        assert restarted.pid != info.pid
        values = _consume_all(restarted.bootstrap, topic, expected=3)
        assert values == [b"record-0", b"record-1", b"record-2"]
    finally:
        assert local.stop(data_dir)


@pytest.mark.kafka
def test_restart_on_a_taken_port_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    info = local.start(data_dir)
    local.stop(data_dir)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", info.port))
        squatter.listen()
        with pytest.raises(LocalKafkaError, match=f"port {info.port}, recorded for the local"):
            local.start(data_dir)
    status = local.status(data_dir)
    assert status is not None and not status.running


@pytest.mark.kafka
def test_session_broker_answers(kafka_broker: object, settings: Settings) -> None:
    from streams.kafka.admin import wait_for_broker

    metadata = wait_for_broker(settings, timeout=10)
    assert metadata.brokers
