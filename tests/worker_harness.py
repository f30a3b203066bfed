"""Run real steplog workers (subprocesses) and watch their system events in tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.event import Event
from streams.serde import EventCodec
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def worker_env(settings: Settings, app_id: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STEPLOG_BOOTSTRAP_SERVERS": settings.resolved_bootstrap(),
        "STEPLOG_TOPIC_PREFIX": settings.topic_prefix,
        "STEPLOG_PARTITIONS": str(settings.partitions),
        "STEPLOG_RETRY_BACKOFF_SCALE": "0.01",
        "TEST_APP_ID": app_id,
        **extra,
    }


class WorkerProc:
    """``steplog worker TARGET`` in a subprocess with its own data dir and log file."""

    def __init__(
        self, settings: Settings, target: str, app_id: str, data_dir: Path, **env: str
    ) -> None:
        self.target = target
        self.data_dir = data_dir
        self.log = data_dir / "worker.log"
        self.env = worker_env(settings, app_id, STEPLOG_DATA_DIR=str(data_dir), **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> WorkerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", self.target, "-l", "info"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "Ready" in text:
                return
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, nothing flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Watch:
    """Collects decoded events from topics (system topics, events) in a thread."""

    def __init__(self, settings: Settings, *topics: str) -> None:
        self.settings = settings
        self.codec = EventCodec(settings)
        self.events: list[tuple[str, Event]] = []
        self.raw: list[Any] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"test-watch-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "topic.metadata.refresh.interval.ms": 500,
                }
            )
        )
        self.consumer.subscribe([settings.topic(t) for t in topics])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            with self._lock:
                self.raw.append(msg)
                with contextlib.suppress(Exception):  # undecodable ones stay in raw
                    self.events.append((msg.topic(), self.codec.decode(msg.value())))
        self.consumer.close()

    def matching(self, pred: Callable[[Event], bool]) -> list[Event]:
        with self._lock:
            return [e for _, e in self.events if pred(e)]

    def wait_for(
        self, pred: Callable[[Event], bool], count: int = 1, timeout: float = 60.0
    ) -> list[Event]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(pred)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"saw {len(self.matching(pred))} of {count} matching events in {timeout}s; "
            f"all: {[(e.name, e.data.get('function_id')) for _, e in self.events][-20:]}"
        )

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)


def finished(function_id: str, status: str = "completed") -> Callable[[Event], bool]:
    def pred(e: Event) -> bool:
        return (
            e.name == "inngest/function.finished"
            and e.data.get("function_id") == function_id
            and e.data.get("_inngest", {}).get("status") == status
        )

    return pred


SYSTEM = ("inngest.function.finished", "inngest.function.failed", "inngest.function.cancelled")


# --- helpers for crash, worker, replay and retention tests ----------------------------


def wait_until(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def ledger_lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


def partitions_of(settings: Settings, topic: str) -> list[int]:
    """Partition numbers of ``topic`` (full name)."""
    admin = AdminClient(settings.kafka_config())
    meta = admin.list_topics(topic, timeout=10)
    return sorted(meta.topics[topic].partitions)


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """High watermark per partition of ``topic`` (full name)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": f"test-wm-{uuid.uuid4().hex[:8]}"}))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions_of(settings, topic)
        }
    finally:
        consumer.close()


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset per partition of ``topic`` (-1: none)."""
    admin = AdminClient(settings.kafka_config())
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in partitions_of(settings, topic)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def wait_caught_up(settings: Settings, group: str, topic: str, timeout: float = 30.0) -> None:
    """Wait until ``group`` has committed every record of ``topic`` (full name)."""
    ends = end_offsets(settings, topic)

    def caught_up() -> bool:
        done = committed_offsets(settings, group, topic)
        return all(done.get(p, -1) >= end for p, end in ends.items() if end > 0)

    wait_until(caught_up, timeout, f"group {group} to commit all of {topic} ({ends})")


def group_members(settings: Settings, group: str) -> list[Any]:
    """Members of a consumer group (with their assignments); [] if it has none."""
    admin = AdminClient(settings.kafka_config())
    try:
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:
        return []
    return list(desc.members)


def wait_group_stable(
    settings: Settings, group: str, members: int, topic: str, timeout: float = 60.0
) -> None:
    """Wait until ``group`` has ``members`` members that all hold partitions of ``topic``."""

    def stable() -> bool:
        found = group_members(settings, group)
        if len(found) != members:
            return False
        holding = [
            m
            for m in found
            if m.assignment and any(tp.topic == topic for tp in m.assignment.topic_partitions)
        ]
        return len(holding) == members

    wait_until(stable, timeout, f"{members} members of {group} sharing {topic}")


def read_all(settings: Settings, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of ``topic`` (full name) up to its current end, in partition order."""
    ends = end_offsets(settings, topic)
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"test-readall-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
    )
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        position = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(position[p] < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {position} of {ends} records of {topic}")
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            position[msg.partition()] = msg.offset() + 1
            if msg.offset() < ends[msg.partition()]:
                out.append(msg)
    finally:
        consumer.close()
    return sorted(out, key=lambda m: (m.partition(), m.offset()))


def wait_distinct(
    watch: Watch, pred: Callable[[Event], bool], count: int, timeout: float = 60.0
) -> list[Event]:
    """Wait until ``count`` events with distinct ids match (duplicates of one id count once)."""
    wait_until(
        lambda: len({e.id for e in watch.matching(pred)}) >= count,
        timeout,
        f"{count} distinct matching events (saw {len({e.id for e in watch.matching(pred)})})",
    )
    return watch.matching(pred)
