"""State in RocksDB tables backed by Kafka changelogs, as the lifecycle and agents need it.

Values are Avro ``steplog.StateValue`` records (a kind and a JSON body) under byte
keys with a one-letter prefix per kind (``streams.lifecycle.state``).

* :class:`RocksRunStore` is the lifecycle's :class:`~streams.lifecycle.store.RunStore`
  for one function partition. Its writes go to the table's changelog through an
  :class:`Outbox`, which holds each back until the sends made while the same journal
  record was handled are acknowledged, and reach the partition's RocksDB database only
  once the changelog has them (:class:`Changelog`); until then reads find them among
  its pending writes. So the local database is always a prefix of the changelog, up to
  the offset it records, even after a SIGKILL: a restarted worker reads only the
  changelog's tail instead of rebuilding every partition.
* The router and cron agents keep their tables the same way (one
  :class:`RocksRunStore` per partition, writes held back until the records the same
  input record sent are acknowledged).

No table is written through Faust's table API (which writes RocksDB first and
the changelog later). Prefix scans read a partition's database directly: Faust's
table API has no ordered range reads, and timers and memos need them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rocksdict import ReadOptions, WriteBatch

from streams.serde.internal import JsonBodyCodec

log = logging.getLogger(__name__)

STATE = JsonBodyCodec("steplog.StateValue")


#: A partition's writes not in its database yet: key -> (write number, raw value or
#: None for a deletion).
PendingWrites = dict[bytes, tuple[int, bytes | None]]


def group_of(key: bytes) -> bytes:
    """The group a pending write is indexed under: its key up to its first ``|``
    (``m<run id>|`` for a memo), else its first byte. Every key a prefix scan with a
    ``|`` in its prefix can find is in one group: the prefix's own."""
    bar = key.find(b"|")
    return key[: bar + 1] if bar >= 0 else key[:1]


def _candidates(
    pending: PendingWrites | None, groups: dict[bytes, set[bytes]] | None, prefix: bytes
) -> Iterable[bytes]:
    """The pending keys a scan of ``prefix`` must look at: one group's, when the
    prefix names one, else all of them."""
    if not pending:
        return ()
    if groups is not None and b"|" in prefix:
        return groups.get(group_of(prefix), ())
    return pending.keys()


def _bounded(prefix: bytes, upto: bytes | None) -> ReadOptions:
    """Read options that end an iterator at the scan's end (the iterator keeps a
    pointer into them, not a copy: keep them alive while it is used). Without a bound, the
    iterator's last step runs on over every deleted key (tombstone) after the range
    until it meets a live one, and a partition's memos of finished runs leave many
    (20 ms per scan behind 200,000 of them, against microseconds with the bound)."""
    end = _successor(prefix)
    if upto is not None and (end is None or upto < end):
        end = upto
    opts = ReadOptions()
    if end is not None:
        opts.set_iterate_upper_bound(end)
    return opts


def _successor(prefix: bytes) -> bytes | None:
    """The smallest key above every key with ``prefix`` (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _scan_keys(
    db: Any,
    prefix: bytes,
    upto: bytes | None,
    start: bytes | None,
    pending: PendingWrites | None = None,
    groups: dict[bytes, set[bytes]] | None = None,
) -> Iterator[bytes]:
    begin = start if start is not None else prefix
    opts = _bounded(prefix, upto)  # held while the iterator lives: it points into it
    stored = ((key, b"") for key in db.keys(from_key=begin, read_opt=opts))
    for key, _ in _in_order(stored, prefix, upto, begin, pending, groups):
        yield key
    del opts


def _scan(
    db: Any,
    prefix: bytes,
    upto: bytes | None,
    start: bytes | None,
    pending: PendingWrites | None = None,
    groups: dict[bytes, set[bytes]] | None = None,
) -> Iterator[tuple[bytes, Any]]:
    begin = start if start is not None else prefix
    opts = _bounded(prefix, upto)  # held while the iterator lives: it points into it
    stored = db.items(from_key=begin, read_opt=opts)
    for key, raw in _in_order(stored, prefix, upto, begin, pending, groups):
        yield key, STATE.decode(raw)[1]
    del opts


def _in_order(
    stored: Iterator[tuple[bytes, bytes | None]],
    prefix: bytes,
    upto: bytes | None,
    begin: bytes,
    pending: PendingWrites | None,
    groups: dict[bytes, set[bytes]] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """The ``stored`` items (key order, from ``begin``) with ``prefix`` and below
    ``upto``, with the ``pending`` writes in that range applied over them (looked for
    among ``groups`` of them, see :func:`group_of`, when given)."""

    def wanted(key: bytes) -> bool:
        return key.startswith(prefix) and (upto is None or key < upto)

    if pending:
        keys = _candidates(pending, groups, prefix)
        over = sorted((k, pending[k][1]) for k in keys if k >= begin and wanted(k) and k in pending)
        if over:
            stored = _merge(stored, over)
    for key, raw in stored:
        if not wanted(key):
            break
        if raw is not None:
            yield key, raw


def _merge(
    stored: Iterator[tuple[bytes, bytes | None]], over: list[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes | None]]:
    """Two key-ordered streams as one; on a key in both, ``over`` wins."""
    i = 0
    for key, raw in stored:
        while i < len(over) and over[i][0] < key:
            yield over[i]
            i += 1
        if i < len(over) and over[i][0] == key:
            yield over[i]
            i += 1
        else:
            yield key, raw
    yield from over[i:]


@dataclass
class _Unit:
    """What handling one journal record sent, and the state writes it made."""

    sends: list[asyncio.Future[Any]] = field(default_factory=list)
    #: What each send was (for the log when one takes long).
    labels: list[str] = field(default_factory=list)
    #: (partition, key, raw value or None, write number in the :class:`Changelog`)
    writes: list[tuple[int, bytes, bytes | None, int]] = field(default_factory=list)
    #: Set once the writes are delivered to the changelog (tracked only when watched:
    #: a detached run's forwarder waits for it).
    durable: asyncio.Event = field(default_factory=asyncio.Event)
    watched: bool = False


class Outbox:
    """Releases a function's changelog writes once the sends they depend on are acked.

    The lifecycle's writes while one record is handled (a run's final state, say)
    must not reach Kafka before what that record sent (the run's system events):
    otherwise a crash in between leaves a finished run whose end nobody heard of,
    and the re-delivered record finds nothing left to do. So :meth:`send` futures
    and :meth:`write` s collect in the current unit; :meth:`seal` closes it, and
    units release their writes in order, each once all its sends are delivered. A
    send that failed is logged and does not hold the writes back (it would stall
    every partition's commits). Before Faust commits offsets it awaits
    :meth:`drained` (see ``agents.faust_app.complete_flush_before_commit``).
    """

    def __init__(self, changelog: Changelog) -> None:
        self.changelog = changelog
        self.current = _Unit()
        self.sealed: deque[_Unit] = deque()
        self._waiting: asyncio.Future[Any] | None = None
        self._empty = asyncio.Event()
        self._empty.set()

    def send(self, future: asyncio.Future[Any], label: str) -> None:
        self.current.sends.append(future)
        self.current.labels.append(label)

    def waiting_for(self) -> str | None:
        """What the oldest held-back unit still waits for (None: nothing is held back)."""
        if not self.sealed:
            return None
        unit = self.sealed[0]
        pending = [label for f, label in zip(unit.sends, unit.labels, strict=True) if not f.done()]
        return ", ".join(pending) or "nothing (about to be released)"

    def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        seq = self.changelog.stage(partition, key, value)
        self.current.writes.append((partition, key, value, seq))

    def written(self) -> asyncio.Event:
        """Set once the writes made so far in the current unit are in the changelog.

        A detached run's forwarder waits for it before its first effect record: a
        journaled effect must not be durable before the state that says the run went
        on (else a crash re-runs the run from its start, and the step again).
        """
        self.current.watched = True
        return self.current.durable

    def seal(self) -> None:
        unit, self.current = self.current, _Unit()
        if not unit.writes and not self.sealed:
            unit.durable.set()
            return
        self.sealed.append(unit)
        self._empty.clear()
        if self._waiting is None:
            self._release()

    async def drained(self) -> None:
        await self._empty.wait()

    def _release(self, _done: Any = None) -> None:
        self._waiting = None
        while self.sealed:
            unit = self.sealed[0]
            pending = next((f for f in unit.sends if not f.done()), None)
            if pending is not None:
                self._waiting = pending
                pending.add_done_callback(self._release)
                return
            for fut, label in zip(unit.sends, unit.labels, strict=True):
                failure = _failure(fut)
                if failure is not None:
                    # It does not hold the writes back: every commit would wait for it.
                    log.error(
                        "sending %s, which state writes waited for, failed: %r", label, failure
                    )
            delivered = [self.changelog.send(*write) for write in unit.writes]
            self.sealed.popleft()
            if delivered and unit.watched:
                _when_all(delivered, unit.durable.set)
            else:
                unit.durable.set()
        self._empty.set()


def _failure(fut: asyncio.Future[Any]) -> BaseException | None:
    try:
        return None if fut.cancelled() else fut.exception()
    except asyncio.InvalidStateError:  # not done (should not happen: checked before)
        return None


def _when_all(futures: list[Any], then: Any) -> None:
    left = len(futures)

    def one_done(_: Any) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            then()

    for fut in futures:
        fut.add_done_callback(one_done)


class Changelog:
    """A function table's writes: read at once, in RocksDB once the changelog has them.

    A write is :meth:`stage` d (reads see it from then on), :meth:`send` to the
    table's changelog when the :class:`Outbox` releases it, and applied to the
    partition's database together with the changelog offset it got, in one RocksDB
    write batch, when the broker acknowledges it. Faust's own table writes go to
    RocksDB first and to the changelog later, so after a SIGKILL a database could hold
    writes Kafka never got; these databases never do.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        #: Per partition: the writes staged and not acknowledged yet.
        self.pending: dict[int, PendingWrites] = {}
        #: Per partition: the keys of ``pending`` by :func:`group_of` (so that a scan
        #: for a run's memos does not filter every pending write of the partition).
        self.groups: dict[int, dict[bytes, set[bytes]]] = {}
        self._seq = 0
        #: Per partition: the highest changelog offset written to its database here.
        self._persisted: dict[int, int] = {}

    def db(self, partition: int) -> Any:
        # Looked up each time, never kept: Faust reopens a partition's database after a
        # rebalance and cannot while an old handle to it is alive (it is locked).
        return self.table.data._db_for_partition(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        staged = self.pending.get(partition, {}).get(key)
        if staged is not None:
            return staged[1]
        raw: bytes | None = self.db(partition).get(key)
        return raw

    def stage(self, partition: int, key: bytes, value: bytes | None) -> int:
        self._seq += 1
        self.pending.setdefault(partition, {})[key] = (self._seq, value)
        self.groups.setdefault(partition, {}).setdefault(group_of(key), set()).add(key)
        return self._seq

    def send(self, partition: int, key: bytes, value: bytes | None, seq: int) -> Any:
        return self.table.changelog_topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            callback=partial(self._acknowledged, partition, key, value, seq),
            eager_partitioning=True,
        )

    def _acknowledged(
        self, partition: int, key: bytes, value: bytes | None, seq: int, fut: Any
    ) -> None:
        try:
            offset = int(fut.result().offset)
        except BaseException as exc:  # the value stays readable, in this process only
            log.error(
                "a state write to %s[%d] was not acknowledged: %r",
                self.table.changelog_topic.get_topic_name(),
                partition,
                exc,
            )
            return
        batch = WriteBatch(raw_mode=True)
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
        if offset > self._persisted.get(partition, -1):
            batch.put(self.table.data.offset_key, str(offset).encode())
            self._persisted[partition] = offset
        self.db(partition).write(batch)
        staged = self.pending.get(partition)
        if staged is not None and staged.get(key, (0, None))[0] == seq:
            del staged[key]
            groups = self.groups.get(partition, {})
            group = groups.get(group_of(key))
            if group is not None:
                group.discard(key)
                if not group:
                    del groups[group_of(key)]


class RocksRunStore:
    """One partition's state: its RocksDB database and the writes on their way to it
    (:class:`Changelog`), written through an :class:`Outbox`. The lifecycle's
    ``RunStore`` of a function partition; the router and cron agents keep their
    tables with it too."""

    def __init__(self, partition: int, outbox: Outbox) -> None:
        self.partition = partition
        self.outbox = outbox
        self.changelog = outbox.changelog

    def get(self, key: bytes) -> Any | None:
        raw = self.changelog.get(self.partition, key)
        return None if raw is None else STATE.decode(raw)[1]

    def put(self, key: bytes, kind: str, body: Any) -> None:
        self.outbox.write(self.partition, key, STATE.encode(kind, body))

    def delete(self, key: bytes) -> None:
        if self.changelog.get(self.partition, key) is not None:
            self.outbox.write(self.partition, key, None)

    def scan(
        self, prefix: bytes, upto: bytes | None = None, *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, Any]]:
        db, pending, groups = self._view()
        return _scan(db, prefix, upto, start, pending, groups)

    def scan_keys(
        self, prefix: bytes, upto: bytes | None = None, *, start: bytes | None = None
    ) -> Iterator[bytes]:
        db, pending, groups = self._view()
        return _scan_keys(db, prefix, upto, start, pending, groups)

    def _view(self) -> tuple[Any, PendingWrites | None, dict[bytes, set[bytes]] | None]:
        changelog = self.changelog
        p = self.partition
        return changelog.db(p), changelog.pending.get(p), changelog.groups.get(p)
