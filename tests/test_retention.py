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


@pytest.fixture
def worker(settings: Settings, app_id: str, tmp_path: Path) -> Iterator[WorkerProc]:
    proc = WorkerProc(
        settings,
        "tests.apps.patterns:app",
        app_id,
        tmp_path / "w1",
        TEST_LEDGER=str(tmp_path / "ledger.txt"),
        STEPLOG_RUN_RETENTION=f"PT{RETENTION_S}S",
        STEPLOG_DEDUP_WINDOW=f"PT{WINDOW_S}S",
    ).start()
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
    time.sleep(0.5)
    assert len(watch.matching(finished(welcome))) == 2
    assert len(watch.matching(finished(idem))) == 2
    # the router deleted the expired dedup bookkeeping of "dup-1" (x<due>|<id> keys)
    topic = settings.topic(f"steplog-{app_id}-router-dedup-changelog")
    expiry = [m for m in read_all(settings, topic) if (m.key() or b"").startswith(b"x")]
    dup_keys = {m.key() for m in expiry if m.key().endswith(b"|dup-1")}
    assert len(dup_keys) == 2  # the first window's and the new one's
    deleted = {m.key() for m in expiry if m.value() is None}
    assert len(dup_keys & deleted) == 1


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
