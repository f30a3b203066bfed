"""The state of one function partition: the :class:`RunStore` interface, and a dict twin.

The lifecycle reads and writes a partition's state only through this interface.
The workers implement it over the partition's RocksDB database and changelog
(``agents.store.RocksRunStore``); :class:`MemoryRunStore` keeps it in memory for
``streams.testing`` and the lifecycle's own tests. Values are JSON-able bodies
with a ``kind`` (``run``, ``memo``, ``timer``, ``idem``); a store returns a fresh
copy on every read, as a real one decoding bytes would.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from typing import Any, Protocol


class RunStore(Protocol):
    """Get, put, delete and ordered prefix scans over one partition's keys."""

    def get(self, key: bytes) -> Any | None: ...

    def put(self, key: bytes, kind: str, body: Any) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def scan(
        self, prefix: bytes, upto: bytes | None = None, *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, Any]]:
        """Keys starting with ``prefix`` (from ``start``, below ``upto``), in order."""
        ...

    def scan_keys(
        self, prefix: bytes, upto: bytes | None = None, *, start: bytes | None = None
    ) -> Iterator[bytes]: ...


class MemoryRunStore:
    """A :class:`RunStore` in a dict with a sorted key list.

    ``writes`` logs every put and delete in order (``(key, kind, body)``, body None
    for a delete), like the changelog a worker's store writes: tests rebuild a
    store from a prefix of it to model what survived a crash.
    """

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[str, str]] = {}
        self._keys: list[bytes] = []
        self.writes: list[tuple[bytes, str | None, Any]] = []

    @classmethod
    def from_writes(cls, writes: list[tuple[bytes, str | None, Any]]) -> MemoryRunStore:
        store = cls()
        for key, kind, body in writes:
            if kind is None:
                store.delete(key)
            else:
                store.put(key, kind, body)
        return store

    def get(self, key: bytes) -> Any | None:
        item = self.data.get(key)
        return None if item is None else json.loads(item[1])

    def kind(self, key: bytes) -> str | None:
        item = self.data.get(key)
        return None if item is None else item[0]

    def put(self, key: bytes, kind: str, body: Any) -> None:
        text = json.dumps(body, separators=(",", ":"))
        if key not in self.data:
            bisect.insort(self._keys, key)
        self.data[key] = (kind, text)
        self.writes.append((key, kind, json.loads(text)))

    def delete(self, key: bytes) -> None:
        if key in self.data:
            del self.data[key]
            self._keys.pop(bisect.bisect_left(self._keys, key))
            self.writes.append((key, None, None))

    def scan_keys(
        self, prefix: bytes, upto: bytes | None = None, *, start: bytes | None = None
    ) -> Iterator[bytes]:
        # A snapshot: callers may write while they iterate (RocksDB iterators see
        # the database as it was when they were made, too).
        keys = self._keys
        first = bisect.bisect_left(keys, start if start is not None else prefix)
        out = []
        for key in keys[first:]:
            if not key.startswith(prefix) or (upto is not None and key >= upto):
                break
            out.append(key)
        return iter(out)

    def scan(
        self, prefix: bytes, upto: bytes | None = None, *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, Any]]:
        for key in list(self.scan_keys(prefix, upto, start=start)):
            yield key, json.loads(self.data[key][1])

    def __len__(self) -> int:
        return len(self.data)
