"""A function table's writes reach RocksDB only once their changelog acknowledges them.

The databases are real RocksDB (rocksdict) in a temporary directory; what stands in
for Faust is the table's two entry points the store uses (its partition databases and
its changelog topic's ``send_soon``), so a test decides when the broker answers.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from agents.local_state import OFFSET_KEY
from agents.store import STATE, Changelog, Outbox, RocksRunStore, _scan, _scan_keys, _successor


class Acked:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class Sent:
    """A changelog record handed to the producer, answered when the test says so."""

    def __init__(self, key: bytes, value: bytes | None, callback: Any) -> None:
        self.key, self.value, self.callback = key, value, callback
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def ack(self, offset: int) -> None:
        self.future.set_result(Acked(offset))
        self.callback(self.future)

    def fail(self) -> None:
        self.future.set_exception(RuntimeError("broker gone"))
        self.callback(self.future)


class Topic:
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def send_soon(self, *, key: bytes, value: bytes | None, callback: Any, **_: Any) -> Any:
        self.sent.append(Sent(key, value, callback))
        return self.sent[-1].future

    def get_topic_name(self) -> str:
        return "fn-x-state-changelog"


class Store:
    offset_key = OFFSET_KEY

    def __init__(self, path: Path) -> None:
        self.dbs = {0: Rdict(str(path / "t-0.db"), Options(raw_mode=True))}

    def _db_for_partition(self, partition: int) -> Rdict:
        return self.dbs[partition]


class Table:
    def __init__(self, path: Path) -> None:
        self.data = Store(path)
        self.changelog_topic = Topic()


@pytest.fixture
def table(tmp_path: Path) -> Any:
    table = Table(tmp_path)
    yield table
    for db in table.data.dbs.values():
        db.close()


def raw(body: Any) -> bytes:
    return STATE.encode("run", body)


async def test_a_write_is_read_at_once_and_stored_only_when_acknowledged(table: Any) -> None:
    outbox = Outbox(Changelog(table))
    store = RocksRunStore(0, outbox)
    db = table.data.dbs[0]
    store.put(b"r1", "run", {"n": 1})
    assert store.get(b"r1") == {"n": 1}
    outbox.seal()  # no sends to wait for: released to the changelog now
    (sent,) = table.changelog_topic.sent
    assert db.get(b"r1") is None and db.get(OFFSET_KEY) is None
    sent.ack(41)
    assert db.get(b"r1") == raw({"n": 1})
    assert db.get(OFFSET_KEY) == b"41"
    assert outbox.changelog.pending[0] == {}
    assert store.get(b"r1") == {"n": 1}


async def test_writes_wait_for_the_sends_of_their_record(table: Any) -> None:
    outbox = Outbox(Changelog(table))
    store = RocksRunStore(0, outbox)
    event: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    outbox.send(event, "function.finished")
    store.put(b"r1", "run", {"status": "completed"})
    outbox.seal()
    assert table.changelog_topic.sent == []  # held back: the system event is not acked
    event.set_result(None)
    await asyncio.sleep(0)
    assert [s.key for s in table.changelog_topic.sent] == [b"r1"]


async def test_a_later_write_of_a_key_stays_visible_while_an_earlier_one_is_acked(
    table: Any,
) -> None:
    outbox = Outbox(Changelog(table))
    store = RocksRunStore(0, outbox)
    store.put(b"r1", "run", {"n": 1})
    outbox.seal()
    store.put(b"r1", "run", {"n": 2})
    outbox.seal()
    first, second = table.changelog_topic.sent
    first.ack(7)
    assert store.get(b"r1") == {"n": 2}  # the database has n=1, the pending write wins
    assert table.data.dbs[0].get(b"r1") == raw({"n": 1})
    second.ack(8)
    assert store.get(b"r1") == {"n": 2}
    assert table.data.dbs[0].get(OFFSET_KEY) == b"8"


async def test_an_offset_acknowledged_late_never_moves_the_persisted_offset_back(
    table: Any,
) -> None:
    outbox = Outbox(Changelog(table))
    store = RocksRunStore(0, outbox)
    store.put(b"a", "run", 1)
    store.put(b"b", "run", 2)
    outbox.seal()
    a, b = table.changelog_topic.sent
    b.ack(11)
    a.ack(10)
    assert table.data.dbs[0].get(OFFSET_KEY) == b"11"
    assert store.get(b"a") == 1 and store.get(b"b") == 2


async def test_a_deletion_hides_the_stored_value_until_it_is_stored(table: Any) -> None:
    outbox = Outbox(Changelog(table))
    store = RocksRunStore(0, outbox)
    table.data.dbs[0][b"m1|a"] = raw("memo")
    store.delete(b"m1|a")
    assert store.get(b"m1|a") is None
    assert list(store.scan_keys(b"m1|")) == []
    outbox.seal()
    table.changelog_topic.sent[0].ack(3)
    assert b"m1|a" not in table.data.dbs[0]
    store.delete(b"m1|a")  # nothing there any more: no second tombstone
    outbox.seal()
    assert len(table.changelog_topic.sent) == 1


async def test_a_failed_write_stays_readable_and_never_reaches_the_database(
    table: Any, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(Changelog(table))
    store = RocksRunStore(0, outbox)
    store.put(b"r1", "run", {"n": 1})
    outbox.seal()
    table.changelog_topic.sent[0].fail()
    assert table.data.dbs[0].get(b"r1") is None
    assert store.get(b"r1") == {"n": 1}
    assert "a state write to fn-x-state-changelog[0] was not acknowledged" in caplog.text


async def test_scans_merge_pending_writes_into_the_stored_keys_in_order(table: Any) -> None:
    outbox = Outbox(Changelog(table))
    store = RocksRunStore(0, outbox)
    db = table.data.dbs[0]
    for key in (b"m1|b", b"m1|d", b"m2|a", b"r1"):
        db[key] = raw(key.decode())
    store.put(b"m1|a", "memo", "new a")
    store.put(b"m1|d", "memo", "new d")
    store.put(b"m1|e", "memo", "new e")
    store.put(b"m3|x", "memo", "other run")
    store.delete(b"m1|b")
    assert list(store.scan_keys(b"m1|")) == [b"m1|a", b"m1|d", b"m1|e"]
    assert list(store.scan(b"m1|")) == [(b"m1|a", "new a"), (b"m1|d", "new d"), (b"m1|e", "new e")]
    assert list(store.scan(b"m", upto=b"m2")) == [
        (b"m1|a", "new a"),
        (b"m1|d", "new d"),
        (b"m1|e", "new e"),
    ]
    assert list(store.scan_keys(b"m", start=b"m1|e")) == [b"m1|e", b"m2|a", b"m3|x"]
    assert list(store.scan_keys(b"r")) == [b"r1"]


async def test_a_scan_for_one_runs_memos_looks_only_at_its_pending_group(table: Any) -> None:
    changelog = Changelog(table)
    outbox = Outbox(changelog)
    store = RocksRunStore(0, outbox)
    for n in range(50):
        store.put(b"m%d|a" % n, "memo", n)
    store.put(b"r1", "run", "state")
    outbox.seal()
    assert changelog.groups[0][b"m7|"] == {b"m7|a"}
    assert changelog.groups[0][b"r"] == {b"r1"}
    assert list(store.scan(b"m7|")) == [(b"m7|a", 7)]
    for fut in table.changelog_topic.sent:
        fut.ack(1)
    assert changelog.groups[0] == {} and changelog.pending[0] == {}
    assert list(store.scan(b"m7|")) == [(b"m7|a", 7)]  # from the database now


def test_a_scan_ends_at_its_prefix_or_upto_whatever_follows_in_the_database(
    tmp_path: Path,
) -> None:
    db = Rdict(str(tmp_path / "db"), options=Options(raw_mode=True))
    for key in (b"m1|a", b"m1|b", b"m1\xff", b"m2|a", b"n"):
        db[key] = STATE.encode("memo", key.decode(errors="replace"))
    for n in range(1000):  # deleted keys right after the range: passed over quickly
        db[b"m1}%04d" % n] = b"x"
        del db[b"m1}%04d" % n]
    assert list(_scan_keys(db, b"m1|", None, None)) == [b"m1|a", b"m1|b"]
    assert list(_scan_keys(db, b"m", b"m1|b", None)) == [b"m1|a"]
    assert list(_scan_keys(db, b"m1\xff", None, None)) == [b"m1\xff"]
    assert [k for k, _ in _scan(db, b"m", None, b"m1\xff")] == [b"m1\xff", b"m2|a"]
    assert _successor(b"m1|") == b"m1}" and _successor(b"a\xff\xff") == b"b"
    assert _successor(b"\xff") is None
    db.close()


def test_a_scan_reads_its_whole_range_when_consumed_after_other_allocations(
    tmp_path: Path,
) -> None:
    """The iterator's upper bound lives in its read options: they must live as long
    as the scan does (a temporary let the bound be overwritten: scans came up short)."""
    db = Rdict(str(tmp_path / "db"), options=Options(raw_mode=True))
    for n in range(200):
        db[b"e1|%06d" % n] = STATE.encode("batched", n)
    scans = [_scan(db, b"e1|", None, None) for _ in range(20)]
    gc.collect()
    noise = [bytes(64) * (n % 7) for n in range(20_000)]
    assert all(len(list(scan)) == 200 for scan in scans), len(noise)
    db.close()
