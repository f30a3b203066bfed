"""A worker's data dir holding tables built from another broker (issue 8 §6, last part).

A worker runs against one broker and stops cleanly; a second, new broker is started
and a worker with the same data dir runs against it. Its local RocksDB tables
remember changelog offsets the new broker's (empty) changelogs never had: Faust's
recovery would stop the worker with ``ConsistencyError: persisted offset ... (N >
-1)``. The worker must instead log one line, rebuild the tables from Kafka and run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agents.local_state import persisted_offsets, stale_partitions
from streams import Client
from streams.kafka import local
from streams.settings import Settings
from tests.worker_harness import SYSTEM, Watch, WorkerProc, finished, wait_group_stable

pytestmark = pytest.mark.kafka

TARGET = "tests.apps.misbehave:app"
LINE = "is ahead of what the Kafka changelogs hold"


def changelog_of(settings: Settings, app_id: str, table: str) -> str:
    if table == "router-dedup":
        return settings.topic(f"steplog-{app_id}-router-dedup-changelog")
    return settings.topic(f"steplog-{app_id}-fn-{table}-changelog")


def run_ok(settings: Settings, app_id: str, watch: Watch, ns: list[int]) -> None:
    with Client(settings) as client:
        client.send([{"name": "test/ok", "data": {"n": n}} for n in ns])
    results = {
        e.data["result"]
        for e in watch.wait_for(finished(f"{app_id}-well-behaved"), len(ns), timeout=60)
    }
    assert results == {2 + n for n in ns}


def test_a_worker_on_a_new_broker_rebuilds_tables_left_by_an_earlier_one(
    settings: Settings,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    ledger: Path,
    workers: list[WorkerProc],
) -> None:
    app_id = unique_name("stale")
    data_dir = tmp_path / "w"
    worker_dir = data_dir / "worker" / f"{settings.topic_prefix}{app_id}"
    journal = f"steplog-{app_id}-fn-well-behaved"

    first = WorkerProc(settings, TARGET, app_id, data_dir, TEST_LEDGER=str(ledger))
    workers.append(first.start())
    wait_group_stable(settings, f"steplog-{app_id}", 1, settings.topic(journal))
    watch = Watch(settings, *SYSTEM)
    try:
        run_ok(settings, app_id, watch, [0, 1, 2, 3])
    finally:
        watch.close()
    first.stop()
    tabledir = worker_dir / "v1" / "tables"
    left = persisted_offsets(tabledir)
    assert any(offset >= 0 for offset in left.values()), left
    changelogs = {table: changelog_of(settings, app_id, table) for table, _ in left}
    # against the broker they came from, the tables are not stale: a restart keeps them
    assert stale_partitions(settings, tabledir, changelogs) == []
    first.log.rename(data_dir / "first-worker.log")

    other_broker = tmp_path / "broker-2"
    info = local.start(other_broker, timeout=90)
    try:
        settings_2 = settings.model_copy(update={"bootstrap_servers": info.bootstrap})
        # the new broker has no such changelogs: every database is ahead of them
        assert len(stale_partitions(settings_2, tabledir, changelogs)) == len(left)
        second = WorkerProc(settings_2, TARGET, app_id, data_dir, TEST_LEDGER=str(ledger))
        workers.append(second.start())  # it used to exit here with a ConsistencyError
        wait_group_stable(settings_2, f"steplog-{app_id}", 1, settings_2.topic(journal))
        watch_2 = Watch(settings_2, *SYSTEM)
        try:
            run_ok(settings_2, app_id, watch_2, [10, 11])
        finally:
            watch_2.close()
        log = second.log.read_text()
        assert log.count(LINE) == 1, second.tail()
        (line,) = [ln for ln in log.splitlines() if LINE in ln]
        assert str(worker_dir / "v1" / "tables") in line
        assert "rebuilding them from the changelogs" in line
        assert "ConsistencyError" not in log
        second.stop()
    finally:
        local.stop(other_broker)
