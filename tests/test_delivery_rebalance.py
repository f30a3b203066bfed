"""Records fetched while a rebalance ends are processed (agents/delivery.py).

Faust empties its streams' queues whenever it resumes the flow, and its table recovery
resumes it one last time *after* seeking the stream partitions to their committed
offsets. A record fetched and handed over in between, and still in an agent's queue
then, was dropped while steplog's fetch loop counted it as delivered: nothing read it
again until the next rebalance (the soak's lost sleep run). The app of this test
stretches that moment to two seconds and has a backlog waiting: every record must
still come through.
"""

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

APP = Path(__file__).parent / "apps" / "slow_seek_app.py"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.kafka


def _start(env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, str(APP), "worker", "-l", "info", "--without-web"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_for(
    consumer: Consumer, keys: set[bytes], received: set[bytes], worker: Any, log_path: Path
) -> None:
    deadline = time.monotonic() + 60
    while not keys <= received and time.monotonic() < deadline:
        assert worker.poll() is None, f"the worker exited:\n{log_path.read_text()[-4000:]}"
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            received.add(msg.key() or b"")


@pytest.mark.timeout(180)
def test_records_fetched_as_a_rebalance_ends_are_processed(
    settings: Settings, kafka_broker: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    source = settings.topic(unique_name("source"))
    target = settings.topic(unique_name("target"))
    create_topics(settings, [source, target], partitions=1)
    producer = Producer(settings.producer_config())

    def produce(keys: set[bytes]) -> None:
        for key in sorted(keys):
            producer.produce(source, key=key, value=b"x")
        assert producer.flush(15) == 0

    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SLOWSEEK_BROKER": settings.resolved_bootstrap(),
        "SLOWSEEK_APP_ID": unique_name("slowseek"),
        "SLOWSEEK_SOURCE": source,
        "SLOWSEEK_TARGET": target,
        "SLOWSEEK_DATADIR": str(tmp_path / "faust-data"),
        "SLOWSEEK_PAUSE": "2.0",
    }
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": unique_name("check"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([target])
    received: set[bytes] = set()
    first = {f"a-{i:04d}".encode() for i in range(20)}
    backlog = {f"b-{i:04d}".encode() for i in range(600)}

    def run_until_forwarded(keys: set[bytes]) -> None:
        """Produce ``keys``, start a worker, wait until it forwarded them, stop it."""
        produce(keys)
        worker = _start(env, log_path, tmp_path)
        try:
            _wait_for(consumer, keys, received, worker, log_path)
        finally:
            stop(worker)

    try:
        # 1: the table gets a changelog, so the next start must recover it
        run_until_forwarded(first)
        assert first <= received, log_path.read_text()[-4000:]
        # 2: a backlog waits; the worker recovers its table (the flow resumed), then
        # seeks the source partition and pauses with the flow active
        run_until_forwarded(backlog)
    finally:
        consumer.close()
    log_text = log_path.read_text()
    assert "Restoring state from changelog topics" in log_text  # the recovery path was taken
    missing = sorted(backlog - received)
    assert not missing, (
        f"{len(missing)} of {len(backlog)} records never processed (first {missing[:3]}):\n"
        + "\n".join(ln for ln in log_text.splitlines() if "not committing" in ln)[-2000:]
    )
    assert "not committing past" not in log_text
