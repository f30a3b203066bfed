"""Table recovery takes changelog records from the fetch loop in write batches.

A real Faust table on real RocksDB (rocksdict) and Faust's own recovery service; no
broker: the recovery is put in the state a rebalance leaves it in (an active
changelog partition with a known end), and records are handed to it as the fetch
loop does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP, Message

import agents.faust_app  # noqa: F401  (registers the steplog-rocksdb:// store)
from agents.restore import TableRestore


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return faust.App("restore-test", store="steplog-rocksdb://", datadir=str(tmp_path))


def restoring(app: Any, table: Any, partition: int, last_offset: int) -> TP:
    """Have the recovery restore ``partition`` of ``table`` up to ``last_offset``."""
    tp = TP(table.changelog_topic.get_topic_name(), partition)
    recovery = app.tables.recovery
    recovery.add_active(table, tp)
    recovery.active_highwaters[tp] = last_offset
    recovery._set_recovery_started()
    return tp


def record(tp: TP, offset: int, key: bytes, value: bytes | None) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, [], key, value, None)


def test_a_batch_is_written_with_its_offset_and_the_last_record_ends_the_recovery(
    app: Any,
) -> None:
    table = app.Table("state", partitions=2)
    tp = restoring(app, table, 0, last_offset=2)
    recovery = app.tables.recovery
    restore = TableRestore(app)

    assert restore.take(tp, record(tp, 0, b"a", b"1"))
    assert restore.take(tp, record(tp, 1, b"b", b"2"))
    assert table.data.persisted_offset(tp) is None  # nothing written before the flush
    restore.flush()

    db = table.data._db_for_partition(0)
    assert (db[b"a"], db[b"b"]) == (b"1", b"2")
    assert table.data.persisted_offset(tp) == 1
    assert recovery.in_recovery and not recovery.signal_recovery_end.is_set()

    restore.take(tp, record(tp, 2, b"a", None))  # a tombstone deletes
    restore.flush()

    assert b"a" not in db
    assert table.data.persisted_offset(tp) == 2
    assert not recovery.in_recovery and recovery.signal_recovery_end.is_set()
    assert restore.applied == 3


def test_a_record_already_read_is_not_written_again(app: Any) -> None:
    table = app.Table("state", partitions=2)
    tp = restoring(app, table, 1, last_offset=10)
    restore = TableRestore(app)
    restore.take(tp, record(tp, 5, b"k", b"new"))
    restore.flush()

    assert restore.take(tp, record(tp, 4, b"k", b"old"))  # taken, and dropped
    assert restore.take(tp, record(tp, 5, b"k", b"old"))
    restore.flush()

    assert table.data._db_for_partition(1)[b"k"] == b"new"
    assert table.data.persisted_offset(tp) == 5
    assert restore.applied == 1


def test_records_not_restored_here_go_the_usual_way(app: Any) -> None:
    table = app.Table("state", partitions=2)
    restoring(app, table, 0, last_offset=3)
    not_ours = TP(table.changelog_topic.get_topic_name(), 1)  # standby, revoked, ...
    assert not TableRestore(app).take(not_ours, record(not_ours, 0, b"k", b"v"))

    async def hook(event: Any) -> None:
        pass

    hooked = app.Table("hooked", partitions=2, on_changelog_event=hook)
    tp = restoring(app, hooked, 0, last_offset=3)
    assert not TableRestore(app).take(tp, record(tp, 0, b"k", b"v"))


def test_tables_on_another_store_go_the_usual_way(tmp_path: Path) -> None:
    app = faust.App("restore-memory-test", datadir=str(tmp_path))  # Faust's memory store
    table = app.Table("state", partitions=2)
    tp = restoring(app, table, 0, last_offset=3)
    assert not TableRestore(app).take(tp, record(tp, 0, b"k", b"v"))
