"""DESIGN.md "Replay" on the real broker: a consumer-group reset replays events as new
runs (dedup still holding within the replay), while a crash re-delivery starts none."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from agents.store import STATE
from streams import Client
from streams.event import Event
from streams.lifecycle.records import ENVELOPE as RUN_RECORDS
from streams.routing import run_id as derived_run_id
from streams.settings import Settings
from tests.worker_harness import (
    Watch,
    WorkerProc,
    end_offsets,
    finished,
    group_members,
    read_all,
    wait_caught_up,
    wait_distinct,
    wait_until,
)

pytestmark = pytest.mark.kafka

TARGET = "tests.apps.patterns:app"


@pytest.fixture
def app_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("rpl")


def start(
    procs: list[WorkerProc], settings: Settings, app_id: str, data_dir: Path, **env: str
) -> WorkerProc:
    proc = WorkerProc(
        settings, TARGET, app_id, data_dir, TEST_LEDGER=str(data_dir / "ledger"), **env
    )
    procs.append(proc)
    return proc.start()


def runs_by_event(events: list[Event]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in events:
        out.setdefault(e.data["event"]["internal_id"], set()).add(e.data["run_id"])
    return out


def marks(settings: Settings, app_id: str) -> dict[str, dict[str, int]]:
    """The latest replay mark per topic partition (``topic:partition``)."""
    out = {}
    for msg in read_all(settings, settings.topic(f"steplog-{app_id}-marks")):
        if msg.value():
            out[msg.key().decode()] = STATE.decode(msg.value())[1]
    return out


def settle(settings: Settings, app_id: str, fn_id: str) -> None:
    """Wait until the router and the function's agent have consumed everything sent so far."""
    group = f"steplog-{app_id}"
    wait_caught_up(settings, group, settings.topic("events"))
    wait_caught_up(settings, group, settings.topic(f"steplog-{app_id}-fn-{fn_id}"))
    time.sleep(0.3)  # the last system events reach the watcher


def test_a_consumer_group_reset_replays_events_as_new_runs(
    settings: Settings, app_id: str, tmp_path: Path, watch: Watch, workers: list[WorkerProc]
) -> None:
    w1 = start(workers, settings, app_id, tmp_path / "w1")
    fn = f"{app_id}-send-welcome-email"
    n = 6
    with Client(settings) as client:
        firsts = client.send(
            [
                {"name": "app/auth.sign-up", "id": f"signup-{i}", "data": {"email": f"{i}@x"}}
                for i in range(n)
            ]
        )
        [dup] = client.send({"name": "app/auth.sign-up", "id": "signup-0", "data": {"email": "d"}})
    watch.wait_for(finished(fn), count=n, timeout=30)
    settle(settings, app_id, "send-welcome-email")
    before = watch.matching(finished(fn))
    assert runs_by_event(before) == {i: {derived_run_id(i, fn)} for i in firsts}  # dup: no run

    # the router's committed offsets reach the marks topic (every second and on shutdown)
    events = settings.topic("events")
    ends = {f"{events}:{p}": end for p, end in end_offsets(settings, events).items() if end}
    w1.stop()
    assert {k: m["committed"] for k, m in marks(settings, app_id).items() if k in ends} == ends
    assert all(m["epoch"] == 0 for m in marks(settings, app_id).values())

    # reset the (stopped) workers' group on `events` to the beginning
    group = f"steplog-{app_id}"
    wait_until(lambda: not group_members(settings, group), 30, "the group to be empty")
    admin = AdminClient(settings.kafka_config())
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(events, int(k.rsplit(":", 1)[1]), 0) for k in ends]
    )
    admin.alter_consumer_group_offsets([request])[group].result(timeout=10)

    start(workers, settings, app_id, tmp_path / "w1")
    wait_distinct(watch, finished(fn), 2 * n, timeout=60)
    settle(settings, app_id, "send-welcome-email")
    replayed = [e for e in watch.matching(finished(fn)) if e.id not in {b.id for b in before}]
    # the same events ran again, as new runs with new ids (epoch 1) ...
    assert runs_by_event(replayed) == {i: {derived_run_id(i, fn, 1)} for i in firsts}
    assert not {e.data["run_id"] for e in replayed} & {e.data["run_id"] for e in before}
    # ... and the duplicate id suppressed the first time was suppressed again
    assert dup not in runs_by_event(replayed)
    assert len({e.id for e in replayed}) == n
    assert {m["epoch"] for k, m in marks(settings, app_id).items() if k in ends} == {1}


def test_a_crash_re_delivery_starts_no_second_runs(
    settings: Settings, app_id: str, tmp_path: Path, watch: Watch, workers: list[WorkerProc]
) -> None:
    # the first worker never commits on its own (a long commit interval), so the kill
    # below leaves every event uncommitted and the next worker reads them all again
    w1 = start(workers, settings, app_id, tmp_path / "w1", STEPLOG_COMMIT_INTERVAL_MS="600000")
    fn = f"{app_id}-send-welcome-email"
    n = 30
    with Client(settings) as client:
        ids = client.send(
            [{"name": "app/auth.sign-up", "data": {"email": f"{i}@x"}} for i in range(n)]
        )
    watch.wait_for(finished(fn), timeout=30)
    w1.kill()

    start(workers, settings, app_id, tmp_path / "w2")
    wait_distinct(watch, finished(fn), n, timeout=60)
    settle(settings, app_id, "send-welcome-email")
    done = watch.matching(finished(fn))
    # every event ran once, with the run id of its first delivery (epoch 0: not a replay)
    assert runs_by_event(done) == {i: {derived_run_id(i, fn)} for i in ids}
    assert len({e.id for e in done}) == n
    starts = [
        m
        for m in read_all(settings, settings.topic(f"steplog-{app_id}-fn-send-welcome-email"))
        if m.value() and RUN_RECORDS.decode(m.value())[0] == "start"
    ]
    # the crash did re-deliver events to the router (else this test proved nothing)
    assert len(starts) > n, f"{len(starts)} start records for {n} events: nothing re-delivered"
