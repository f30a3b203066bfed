"""The pinned Kafka version works with faust-streaming's kafka:// (aiokafka) driver:
a real Faust worker forwards records from one topic to another on the local broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from streams.kafka.admin import create_topics
from streams.settings import Settings
from tests.faust_script import stop

APP = Path(__file__).with_name("faust_roundtrip_app.py")


def _has_cramjam() -> bool:
    try:
        import cramjam  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.kafka
@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "compression",
    [
        "none",
        pytest.param(
            "lz4",
            marks=pytest.mark.skipif(
                not _has_cramjam(),
                reason="steplog's producers compress with lz4, which aiokafka (Faust's driver) "
                "reads only with `cramjam` installed: add it to the dependencies",
            ),
        ),
    ],
)
def test_faust_agent_forwards_records(
    settings: Settings,
    kafka_broker: Any,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    compression: str,
) -> None:
    bootstrap = settings.resolved_bootstrap()
    source = settings.topic(unique_name("source"))
    target = settings.topic(unique_name("target"))
    create_topics(settings, [source, target], partitions=1)

    producer = Producer(settings.producer_config(**{"compression.type": compression}))
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(5)}
    for key, value in sent.items():
        producer.produce(source, key=key, value=value, headers=[("traceparent", b"00-abc-01")])
    assert producer.flush(15) == 0

    log_path = tmp_path / "faust.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(APP.parent.parent),  # the app imports tests.faust_script
        "ROUNDTRIP_BROKER": bootstrap,
        "ROUNDTRIP_APP_ID": unique_name("roundtrip"),
        "ROUNDTRIP_SOURCE": source,
        "ROUNDTRIP_TARGET": target,
        "ROUNDTRIP_DATADIR": str(tmp_path / "faust-data"),
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(APP), "worker", "-l", "info", "--without-web"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": unique_name("check"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    received: dict[bytes, bytes] = {}
    headers: list[Any] = []
    try:
        consumer.subscribe([target])
        deadline = time.monotonic() + 90
        while len(received) < len(sent) and time.monotonic() < deadline:
            assert worker.poll() is None, f"the Faust worker exited:\n{log_path.read_text()}"
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            received[msg.key() or b""] = msg.value() or b""
            headers.append(msg.headers())
    finally:
        consumer.close()
        stop(worker)
    assert received == sent, (
        f"Faust forwarded {len(received)}/{len(sent)}:\n" + (log_path.read_text()[-4000:])
    )
    assert all(h and ("traceparent", b"00-abc-01") in h for h in headers)
