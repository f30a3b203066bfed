"""A thin view of one Faust table as steplog's key/value state.

Keys are bytes with a one-letter prefix per kind (run state, memo, timer ...);
values are Avro ``steplog.StateValue`` records (a kind and a JSON body). Writes
go through the Faust table, so they land in RocksDB *and* in the table's Kafka
changelog, and they must happen inside the agent's stream iteration (FAUST.md).
Prefix scans read the partition's RocksDB database directly: Faust's table API
has no ordered range reads, and timers and memos need them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streams.serde.internal import JsonBodyCodec

STATE = JsonBodyCodec("steplog.StateValue")


class TableState:
    """Get/put/delete/scan over a Faust table holding ``StateValue`` records."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes) -> Any | None:
        raw = self.table.get(key)
        if raw is None:
            return None
        return STATE.decode(raw)[1]

    def get_in(self, partition: int, key: bytes) -> Any | None:
        """``key`` in ``partition``'s database only (``get`` searches every partition)."""
        db = self._db(partition)
        raw = db.get(key) if db is not None else None
        return None if raw is None else STATE.decode(raw)[1]

    def put(self, key: bytes, kind: str, body: Any) -> None:
        self.table[key] = STATE.encode(kind, body)

    def delete(self, key: bytes) -> None:
        if self.table.get(key) is not None:
            del self.table[key]

    def scan(
        self,
        partition: int,
        prefix: bytes,
        upto: bytes | None = None,
        *,
        start: bytes | None = None,
    ) -> Iterator[tuple[bytes, Any]]:
        """Keys starting with ``prefix`` (from ``start``, < ``upto`` if given), in order."""
        db = self._db(partition)
        if db is None:
            return
        for key, raw in db.items(from_key=start if start is not None else prefix):
            if not key.startswith(prefix) or (upto is not None and key >= upto):
                break
            if raw is not None:
                yield key, STATE.decode(raw)[1]

    def scan_keys(
        self,
        partition: int,
        prefix: bytes,
        upto: bytes | None = None,
        *,
        start: bytes | None = None,
    ) -> Iterator[bytes]:
        """Like :meth:`scan`, keys only (values are not read or decoded)."""
        db = self._db(partition)
        if db is None:
            return
        for key in db.keys(from_key=start if start is not None else prefix):
            if not key.startswith(prefix) or (upto is not None and key >= upto):
                break
            yield key

    def _db(self, partition: int) -> Any | None:
        store = self.table.data
        opener = getattr(store, "_db_for_partition", None)
        return opener(partition) if opener is not None else None
