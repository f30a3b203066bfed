"""Retention on the real broker: finished runs' state is deleted (tombstones in the
changelog), and event-id dedup / idempotency keys stop deduplicating after their window."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams import Client
from streams.settings import Settings
from tests.worker_harness import Watch, WorkerProc, finished, read_all, wait_until

pytestmark = pytest.mark.kafka

RETENTION_S = 2
WINDOW_S = 4


@pytest.fixture
def app_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("ret")


def patterns_worker(settings: Settings, app_id: str, tmp_path: Path, **env: str) -> WorkerProc:
    """A started worker of tests.apps.patterns with the short dedup window."""
    return WorkerProc(
        settings,
        "tests.apps.patterns:app",
        app_id,
        tmp_path / "w1",
        TEST_LEDGER=str(tmp_path / "ledger.txt"),
        STEPLOG_DEDUP_WINDOW=f"PT{WINDOW_S}S",
        **env,
    ).start()


@pytest.fixture
def worker(settings: Settings, app_id: str, tmp_path: Path) -> Iterator[WorkerProc]:
    proc = patterns_worker(settings, app_id, tmp_path, STEPLOG_RUN_RETENTION=f"PT{RETENTION_S}S")
    yield proc
    proc.kill()


def changelog(settings: Settings, app_id: str, fn_id: str) -> list[tuple[bytes, bytes | None, int]]:
    """(key, value, timestamp ms) of every record of a function's state changelog."""
    topic = settings.topic(f"steplog-{app_id}-fn-{fn_id}-state-changelog")
    return [(m.key(), m.value(), m.timestamp()[1]) for m in read_all(settings, topic)]


def tombstoned(records: list[tuple[bytes, bytes | None, int]], run_id: str) -> dict[bytes, int]:
    """Keys of ``run_id`` whose latest record is a tombstone, with its timestamp."""
    latest: dict[bytes, tuple[bytes | None, int]] = {}
    for key, value, ts in records:
        if run_id.encode() in key:
            latest[key] = (value, ts)
    return {key: ts for key, (value, ts) in latest.items() if value is None}


def test_finished_runs_are_deleted_after_retention_and_dedup_keys_expire(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    """One worker for both (a worker start costs seconds): retention runs meanwhile."""
    welcome, idem = f"{app_id}-send-welcome-email", f"{app_id}-idempotent"
    with Client(settings) as client:
        # a multi-step run is detached from the agent loop: memos, an active marker and
        # its run state reach the changelog; a one-step run finishes inline
        client.send({"name": "test/multi", "data": {"steps": 2, "step_seconds": 0.2}})
        client.send(
            [
                {"name": "app/auth.sign-up", "id": "dup-1", "data": {"email": "a@x"}},
                {"name": "test/idem", "data": {"userId": "u1"}},
            ]
        )
        # within the dedup window: neither starts a run
        client.send(
            [
                {"name": "app/auth.sign-up", "id": "dup-1", "data": {"email": "b@x"}},
                {"name": "test/idem", "data": {"userId": "u1"}},
            ]
        )
        [multi] = watch.wait_for(finished(f"{app_id}-multi-step"), timeout=30)
        [first] = watch.wait_for(finished(welcome), timeout=30)
        [i1] = watch.wait_for(finished(idem), timeout=30)
        # the windows started when the worker first saw the keys, before these finished
        window_over = time.monotonic() + WINDOW_S + 0.5

        check_run_state_deleted(settings, app_id, "multi-step", multi.data["run_id"])
        check_run_state_deleted(settings, app_id, "send-welcome-email", first.data["run_id"])

        time.sleep(max(0.0, window_over - time.monotonic()))
        # after the window: both start a new run
        [late] = client.send({"name": "app/auth.sign-up", "id": "dup-1", "data": {"email": "c@x"}})
        client.send({"name": "test/idem", "data": {"userId": "u1"}})
    runs = watch.wait_for(finished(welcome), count=2, timeout=30)
    idems = watch.wait_for(finished(idem), count=2, timeout=30)
    # same partition (same key), so the in-window duplicates were routed before these
    assert [e.data["event"]["data"]["email"] for e in runs] == ["a@x", "c@x"]
    assert runs[1].data["event"]["internal_id"] == late
    assert runs[1].data["run_id"] != first.data["run_id"]
    assert len({e.data["run_id"] for e in idems}) == 2 and idems[0].id == i1.id
    # The router deletes the first window's dedup entry of "dup-1" once its whole
    # generation (half a window) is past the window; records routed on its partition
    # do that work, so keep sending the id (duplicates of the new entry: no runs).
    topic = settings.topic(f"steplog-{app_id}-router-dedup-changelog")

    def first_entry_deleted() -> bool:
        client.send({"name": "app/auth.sign-up", "id": "dup-1", "data": {"email": "again"}})
        records = [m for m in read_all(settings, topic) if m.key().endswith(b"|dup-1")]
        keys = {m.key() for m in records}  # g<generation>|dup-1: the two windows' entries
        deleted = {m.key() for m in records if m.value() is None}
        return len(keys) == 2 and len(deleted) == 1 and min(keys) in deleted

    with Client(settings) as client:
        wait_until(first_entry_deleted, WINDOW_S * 1.5 + 10, "the first dedup entry's deletion")
    time.sleep(0.5)
    assert len(watch.matching(finished(welcome))) == 2
    assert len(watch.matching(finished(idem))) == 2


def check_run_state_deleted(settings: Settings, app_id: str, fn_id: str, run_id: str) -> None:
    """Every key of the finished run ends in a tombstone, written after the retention."""
    run_key = b"r" + run_id.encode()
    records = wait_until(
        lambda: (
            (recs := changelog(settings, app_id, fn_id))
            and run_key in tombstoned(recs, run_id)
            and recs
        ),
        RETENTION_S + 15,
        f"the state of {fn_id} run {run_id} to be deleted",
    )
    keys = {key for key, _, _ in records if run_id.encode() in key}
    gone = tombstoned(records, run_id)
    assert keys == set(gone), f"{fn_id}: keys left behind: {keys - set(gone)}"
    # deleted after the retention period, not before
    ended = max(ts for key, value, ts in records if key == run_key and value is not None)
    assert gone[run_key] - ended >= RETENTION_S * 1000 - 50
    if fn_id == "multi-step":  # a detached run had every kind of key
        assert {k[:1] for k in keys} >= {b"r", b"a", b"m"}, keys


def test_the_sweep_deletes_every_finished_run_of_a_partition_a_record_at_a_time(
    settings: Settings, watch: Watch, app_id: str, tmp_path: Path
) -> None:
    """Five runs on one partition (one concurrency key); each sweep record looks at one
    run state (STEPLOG_SWEEP_BATCH=1), so the sweep goes on in a record of its own each time."""
    proc = WorkerProc(
        settings,
        "tests.apps.sweep:app",
        app_id,
        tmp_path / "w1",
        STEPLOG_RUN_RETENTION=f"PT{RETENTION_S}S",
        STEPLOG_SWEEP_BATCH="1",
    ).start()
    try:
        with Client(settings) as client:
            client.send([{"name": "test/keyed", "data": {"k": "same", "n": n}} for n in range(5)])
        runs = watch.wait_for(finished(f"{app_id}-keyed"), count=5, timeout=30)
        assert sorted(e.data["result"] for e in runs) == [0, 1, 2, 3, 4]
        topic = settings.topic(f"steplog-{app_id}-fn-keyed-state-changelog")

        def all_deleted() -> bool:
            latest = {(m.partition(), m.key()): m.value() for m in read_all(settings, topic)}
            states = {k: v for k, v in latest.items() if k[1].startswith(b"r")}
            return len(states) == 5 and all(v is None for v in states.values())

        wait_until(all_deleted, RETENTION_S + 20, "every run state's deletion")
        journal = read_all(settings, settings.topic(f"steplog-{app_id}-fn-keyed"))
        resumed = [m for m in journal if b"sweep" in m.value() and b'"from"' in m.value()]
        assert resumed, "no sweep went on in a record of its own"
        assert len({m.partition() for m in journal if m.key() == b"same"}) == 1
    finally:
        proc.kill()
