"""Where steplog changes how Faust drives RocksDB and the Kafka consumer: no full garbage
collection on a rebalance, a short wait on an idle fetch.

A real Faust table on real RocksDB (rocksdict) in a temporary directory; no broker is
involved, the partitions are revoked and reopened the way a rebalance does it.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP

from agents.faust_app import FETCH_MAX_WAIT_MS, RocksStore, make_faust_app
from streams.settings import Settings


@pytest.fixture
def table(tmp_path: Path) -> Any:
    app = faust.App("rocks-store-test", store="steplog-rocksdb://", datadir=str(tmp_path))
    return app.Table("state", partitions=2)


def changelog_tp(table: Any, partition: int) -> TP:
    return TP(table.changelog_topic.get_topic_name(), partition)


def test_tables_of_a_steplog_app_use_it(table: Any) -> None:
    assert isinstance(table.data, RocksStore)


def test_revoking_partitions_collects_nothing(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    table.data._db_for_partition(0)[b"k"] = b"v"
    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    table.data.revoke_partitions(table, {changelog_tp(table, 0), changelog_tp(table, 1)})
    assert collections == []
    assert table.data._dbs == {}


def test_a_partition_reopens_while_a_cycle_still_holds_its_old_handle(table: Any) -> None:
    db = table.data._db_for_partition(0)
    db[b"k"] = b"v"
    cycle: list[Any] = [db]
    cycle.append(cycle)  # only the cycle collector can drop this handle (and its lock)
    del db, cycle
    table.data.revoke_partitions(table, {changelog_tp(table, 0)})

    reopened = table.data._db_for_partition(0)

    assert reopened[b"k"] == b"v"


async def test_the_worker_consumer_waits_briefly_on_an_idle_fetch(tmp_path: Path) -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=tmp_path)
    app = make_faust_app("fetch-wait-test", settings, datadir=tmp_path)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500  # Faust asks for 1500
