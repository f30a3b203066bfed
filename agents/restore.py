"""Table recovery reads a changelog in write batches, not one record at a time.

A worker given a partition rebuilds its tables from their changelogs before any
stream of the app resumes, so a hand-over takes as long as the slowest of those
reads. faust-streaming 0.15 reads them the way it reads a stream: every record goes
through the conductor's callback (flow control, decoding, an ``Event``), a queue, and
``Recovery._slurp_changelogs``, which takes it off the queue under a timeout and then
recomputes the records still to read over every assigned changelog partition
(``need_recovery()``: a ``Counter`` of ~90 partitions here) before the next one. That
came to ~100 µs a record: one worker alone restored 9,600 records/s, a loaded one
3,000-4,000, and a member taking over a partition it had held long before read the
changes since for 3-4 s (bench/recovery.py; BENCHMARKS.md).

:class:`TableRestore` takes the records of an active changelog partition straight
from the fetch loop (``agents.delivery``), keeps Faust's recovery bookkeeping as its
loop does (offset read, last event seen), and writes each fetched batch to its table
with one RocksDB write batch per partition; whether the recovery is complete is
asked once per batch. What the batch leaves out goes the usual way: records of a
partition that is not an active changelog partition of this worker (standby
replicas, a partition just revoked), tables with an ``on_changelog_event`` hook, and
tables not on RocksDB (other stores read a record's decoded key and value, which
only the conductor's callback makes).
"""

from __future__ import annotations

from dataclasses import dataclass
from time import monotonic
from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore


@dataclass(frozen=True, slots=True)
class Change:
    """One changelog record as a table's ``apply_changelog_batch`` reads it."""

    message: Any


class TableRestore:
    """Applies fetched changelog records of the partitions Faust's recovery restores."""

    def __init__(self, app: Any) -> None:
        self.app = app
        #: table -> its records taken since the last :meth:`flush`, in offset order
        self.pending: dict[Any, list[Change]] = {}
        self.applied = 0

    def take(self, tp: Any, message: Any) -> bool:
        """Queue ``message`` for its table if ``tp`` is being restored here; False if the
        record must go the usual way. A record at or below the offset read is dropped."""
        recovery = self.app.tables.recovery  # faust internals: not typed
        if tp not in recovery.active_tps:
            return False
        table = recovery.tp_to_table.get(tp)
        if (
            table is None
            or table._on_changelog_event is not None
            or not isinstance(table.data, RocksDBStore)  # it writes the records' raw bytes
        ):
            return False
        offsets = recovery.active_offsets
        seen = offsets.get(tp)
        if seen is None or message.offset > seen:
            offsets[tp] = message.offset
            self.pending.setdefault(table, []).append(Change(message))
            recovery._active_events_received_at[tp] = monotonic()
        return True

    def flush(self) -> None:
        """Write what :meth:`take` queued; end the recovery if nothing is left to read.

        Called with no ``await`` since the records were taken, so the partitions they
        belong to are still assigned and their stores open."""
        if not self.pending:
            return
        recovery = self.app.tables.recovery
        for table, changes in self.pending.items():
            table.apply_changelog_batch(changes)  # also stores each partition's offset
            self.applied += len(changes)
        self.pending.clear()
        recovery._last_flush_at = monotonic()
        if recovery.in_recovery and not recovery.need_recovery():
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
