"""Ask a running worker what it holds in memory, from a benchmark (no engine hooks).

A bench app module calls :func:`serve` at import; when ``BENCH_PROBE_DIR`` is set,
a daemon thread in the worker process waits for ``<dir>/request-<n>`` files and
answers each with ``<dir>/report-<n>.json``: the process's RSS, Python's allocated
blocks, live objects by type after a ``gc.collect()`` (coroutines, asyncio tasks,
run drivers, LiveRuns), and, read off the worker object found through the garbage
collector, the free run slots, runs active in memory, timers in the in-memory
heaps, pending waits in the wait index, and the RocksDB memory of its tables
(memtables, block cache, table readers: RocksDB properties, summed over the
partition databases). The load generator calls :func:`ask` (``lite=True``: only
RSS and the worker's counters, no collection and no walk).

Counting objects walks ``gc.get_objects()`` (a few hundred ms with a million
objects) while holding the GIL; ask when nothing is being timed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

#: Object types counted in a report (by ``type.__qualname__``).
COUNTED = ("coroutine", "Task", "RunDriver", "LiveRun", "Wait", "Event", "Future")


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


_worker_ref: weakref.ref[Any] | None = None


def _worker() -> Any | None:
    for obj in gc.get_objects():
        kind = type(obj)
        if kind.__name__ == "Worker" and kind.__module__ == "agents.worker":
            return obj
    return None


def report(*, lite: bool = False) -> dict[str, Any]:
    """The figures above; ``lite``: only RSS and the worker's counters (no gc walk)."""
    out: dict[str, Any] = {"rss": rss_bytes(), "allocated_blocks": sys.getallocatedblocks()}
    t0 = time.perf_counter()
    if not lite:
        # Objects only garbage keeps alive (cycles not collected yet) are not held.
        out["gc_collected"] = gc.collect()
        out["allocated_blocks_after_gc"] = sys.getallocatedblocks()
        counts: Counter[str] = Counter()
        for obj in gc.get_objects():
            name = type(obj).__qualname__
            if name in COUNTED:
                counts[name] += 1
        out["objects"] = {name: counts.get(name, 0) for name in COUNTED}
    global _worker_ref
    worker = _worker_ref() if _worker_ref is not None else None
    if worker is None:
        worker = _worker()
        _worker_ref = weakref.ref(worker) if worker is not None else None
    if worker is not None:
        slots = worker.slots
        out["free_slots"] = getattr(slots, "_value", None)
        out["max_active_runs"] = worker.settings.max_active_runs
        out["active_runs"] = {
            slug: sum(len(life.active) for life in rt.parts.values())
            for slug, rt in worker.runtimes.items()
        }
        out["timer_heap"] = {
            slug: sum(len(life.timers.heap) for life in rt.parts.values())
            for slug, rt in worker.runtimes.items()
        }
        out["rocksdb"] = _rocksdb_memory(worker)
        out["pending_waits"] = len(worker.waits.index)
        out["recent_events"] = len(getattr(worker.waits.recent, "_order", ()))
    out["gc_walk_s"] = round(time.perf_counter() - t0, 3)
    return out


#: RocksDB properties summed over every partition database of the worker's tables.
ROCKSDB_PROPERTIES = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "block_cache": "rocksdb.block-cache-usage",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "keys": "rocksdb.estimate-num-keys",
}


def _rocksdb_memory(worker: Any) -> dict[str, int]:
    tables = [rt.table for rt in worker.runtimes.values()] + [worker.router.table]
    out = dict.fromkeys(ROCKSDB_PROPERTIES, 0)
    for table in tables:
        for db in list(getattr(table.data, "_dbs", {}).values()):
            for name, prop in ROCKSDB_PROPERTIES.items():
                with contextlib.suppress(Exception):
                    out[name] += int(db.property_int_value(prop) or 0)
    return out


def _serve(folder: Path) -> None:
    while True:
        for request in sorted(folder.glob("request-*")):
            n = request.name.split("-", 1)[1]
            try:
                body = report(lite=request.read_text() == "lite")
            except Exception as exc:  # a report must never take the worker down
                body = {"error": repr(exc)}
            tmp = folder / f".report-{n}.tmp"
            tmp.write_text(json.dumps(body))
            tmp.rename(folder / f"report-{n}.json")
            with contextlib.suppress(FileNotFoundError):
                request.unlink()
        time.sleep(0.2)


def serve() -> None:
    """Start answering requests if ``BENCH_PROBE_DIR`` is set (call at import)."""
    folder = os.environ.get("BENCH_PROBE_DIR")
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_serve, args=(path,), name="bench-introspect", daemon=True).start()


_asked = 0


def ask(folder: Path, timeout: float = 60.0, *, lite: bool = False) -> dict[str, Any]:
    """Request a report from the worker serving ``folder``; {} if none came."""
    global _asked
    _asked += 1
    n = f"{os.getpid()}.{_asked}"
    tmp = folder / f".request-{n}"
    tmp.write_text("lite" if lite else "")
    tmp.rename(folder / f"request-{n}")
    answer = folder / f"report-{n}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer.exists():
            body: dict[str, Any] = json.loads(answer.read_text())
            answer.unlink()
            return body
        time.sleep(0.1)
    return {}
