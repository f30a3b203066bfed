"""Fault soak (issue 8 §5): steady mixed load on three workers while workers die.

Three ``steplog worker bench.apps.soak:app`` processes (each with its own
STEPLOG_DATA_DIR under the output dir, their logs kept there) run the soak app
(bench/apps/soak.py: 3-step runs, sleeps of 1-3 s, request-reply waits, invokes,
a step that fails once and retries). This process sends a steady rate of events
with explicit unique ids through ``streams.Client`` and, every 5-10 s (seeded),
SIGKILLs a random worker and restarts it on its data dir; every ``--sigterm-every``
th fault is a rolling SIGTERM restart instead. The load stops a few seconds after
the last fault; then it drains: waits until every expected run finished, or the
drain timeout.

The truth comes from Kafka, read with plain confluent-kafka consumers after the
workers stopped: the system topics (``inngest.function.finished/.failed/.cancelled``),
the events topic, and each function's journal and state changelog. Every step body
appends a line to a ledger file, so executions are counted across processes.

Figures (see :class:`Report`): runs expected / finished / lost / unfinished,
finished records vs distinct run ids, duplicate runs (a second run id for one
(function, event)), steps executed more than once (each re-execution attributed
to the fault that ended the process that ran the step before, or else to the most
recent fault), and progress after each fault, measured per journal partition of
the faulted worker (the definition is printed with the figures). Unfinished and
duplicated runs come with their evidence: where their event and journal records
are, whether the router routed the event, what the group committed, and the
hand-over lines the owning worker logged around them. Exit code 0 always; a
PASS/FAIL line compares with the targets.

The interval between faults counts from the moment the last restarted worker
was ready. run.json in the output dir keeps what the analysis needs, so
``--analyse DIR`` analyses a finished soak again (its broker must still run).

Usage: .venv/bin/python bench/soak.py [--quick | --kills N] [--rate 20] [--duration 600]
       [--seed 1] [--workers 3] [--kafka-data-dir DIR | --bootstrap HOST:PORT] [--out DIR]
       .venv/bin/python bench/soak.py --analyse DIR
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.store import STATE  # noqa: E402
from bench import procs  # noqa: E402
from streams import Client, decode  # noqa: E402
from streams.lifecycle.records import ENVELOPE as RUN_RECORDS  # noqa: E402
from streams.routing import run_id as derived_run_id  # noqa: E402
from streams.settings import Settings  # noqa: E402
from tests.worker_harness import (  # noqa: E402
    SYSTEM,
    Watch,
    WorkerProc,
    committed_offsets,
    read_all,
    wait_group_stable,
)

TARGET = "bench.apps.soak:app"

#: What the load sends: kind -> (event name, the functions it runs, in causal order).
MIX: dict[str, tuple[str, tuple[str, ...]]] = {
    "steps": ("soak/steps", ("steps",)),
    "sleep": ("soak/sleep", ("sleeper",)),
    "request": ("soak/request", ("requester", "responder")),
    "invoke": ("soak/invoke", ("caller", "callee")),
    "flaky": ("soak/flaky", ("flaky",)),
}
#: function -> the name of the event on the events topic that starts its runs
START_EVENT = {fns[0]: name for name, fns in MIX.values()} | {"responder": "soak/ask"}
FUNCTIONS = ("steps", "sleeper", "requester", "responder", "caller", "callee", "flaky")
#: How many times a step body runs in a run without faults (default 1).
EXPECTED_EXECUTIONS = {("flaky", "flaky"): 2}
#: Journal records that come from outside the partition's owner (demand for it).
DEMAND_KINDS = ("start", "resolve", "cancel")

#: Targets of the PASS/FAIL line.
TARGET_KILL_P99_S = 15.0
TARGET_TERM_P99_S = 3.0

#: What a worker logs when a record it fetched was never processed while later ones were.
HOLE = "not committing past"

#: Worker log lines worth counting (per worker process) as evidence.
MARKERS = (
    "consumer group was reset",
    HOLE,
    "Seek stream partitions",
    "Resuming flow",
    "no committed offset",
    "resuming the partition",
    "from its memos",
    "Timer commit is overlapping",
    "producer buffer full",
    "flush took",
    "Traceback",
    "[ERROR]",
)

LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[(\d+)\] \[(\w+)\] (.*)$")
TABLE_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*\{([^}]*)\}\s*\|")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def clock(ms: int) -> str:
    """Local wall-clock time with milliseconds, as the worker logs print it."""
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


# --- parameters ----------------------------------------------------------------------


@dataclass
class Params:
    rate: float = 20.0
    duration: float = 600.0
    kills: int = 20
    seed: int = 1
    workers: int = 3
    partitions: int = 6
    interval: tuple[float, float] = (5.0, 10.0)
    sigterm_every: int = 4
    calm: float = 10.0
    tail: float = 5.0
    drain_timeout: float = 90.0
    backoff_scale: float = 0.05
    reply_timeout: str = "40s"

    @classmethod
    def quick(cls, **overrides: Any) -> Params:
        """About two minutes: 5 faults (the 4th a SIGTERM), a 60 s drain at most."""
        return cls(**{"kills": 5, "duration": 120.0, "drain_timeout": 60.0, **overrides})

    def text(self) -> str:
        lo, hi = self.interval
        return (
            f"rate {self.rate:g} events/s, duration <= {self.duration:g}s, faults {self.kills} "
            f"(every {lo:g}-{hi:g}s, every {self.sigterm_every}th a SIGTERM), seed {self.seed}, "
            f"{self.workers} workers, {self.partitions} partitions, calm {self.calm:g}s, "
            f"tail {self.tail:g}s, drain <= {self.drain_timeout:g}s, retry backoff x"
            f"{self.backoff_scale:g}, reply/invoke timeout {self.reply_timeout}"
        )


# --- workers ---------------------------------------------------------------------------


class SoakWorker(WorkerProc):
    """A worker slot: one data dir and log, restarted in place after each fault.

    The log keeps every incarnation (lines carry the pid), so readiness is looked for
    in what the new process wrote.
    """

    def __init__(self, settings: Settings, app_id: str, data_dir: Path, **env: str) -> None:
        super().__init__(settings, TARGET, app_id, data_dir, BENCH_APP_ID=app_id, **env)
        self._log_from = 0
        self.pids: list[int] = []
        #: CPU seconds of this slot's processes, each sampled just before it was signalled
        self.cpu_used = 0.0

    def sample_cpu(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.cpu_used += procs.cpu_seconds(self.proc.pid)

    def start(self, *, wait: bool = True, timeout: float = 90.0) -> SoakWorker:
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        super().start(wait=False)
        assert self.proc is not None
        self.pids.append(self.proc.pid)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        needle = f"[{self.proc.pid}] [INFO] [^Worker]: Ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            with self.log.open("rb") as f:
                f.seek(self._log_from)
                if needle in f.read().decode(errors="replace"):
                    return
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@dataclass
class Fault:
    n: int
    kind: str  # "SIGKILL" or "SIGTERM"
    slot: int
    pid: int
    at_ms: int
    exited_ms: int = 0
    ready_ms: int = 0
    new_pid: int = 0
    note: str = ""


# --- load ------------------------------------------------------------------------------


@dataclass
class Sent:
    id: str
    kind: str
    at_ms: int


class Load(threading.Thread):
    """Sends ``rate`` events per second (kinds drawn from MIX) until stopped."""

    def __init__(self, settings: Settings, prefix: str, rate: float, seed: int) -> None:
        super().__init__(daemon=True, name="soak-load")
        self.settings = settings
        self.prefix = prefix
        self.rate = rate
        self.rng = random.Random(seed)
        self.sent: list[Sent] = []
        self.unacked: list[str] = []
        self.errors: list[str] = []
        self.started_ms = 0
        self.stopped_ms = 0
        self._halt = threading.Event()

    def make(self, i: int) -> tuple[str, dict[str, Any]]:
        kind = self.rng.choice(list(MIX))
        event_id = f"{self.prefix}-{i:06d}"
        data = {
            "soak": event_id,
            "req": event_id,
            "seconds": round(self.rng.uniform(1.0, 3.0), 2),
            "ms": self.rng.choice((0, 0, 10, 100)),
            "x": i,
        }
        return kind, {"name": MIX[kind][0], "id": event_id, "data": data}

    def run(self) -> None:
        t0 = time.monotonic()
        self.started_ms = now_ms()
        n = 0
        with Client(self.settings) as client:
            while not self._halt.is_set():
                due = int((time.monotonic() - t0) * self.rate) + 1
                batch = [self.make(i) for i in range(n, due)]
                n = max(n, due)
                if batch:
                    try:
                        client.send([event for _, event in batch])
                    except Exception as exc:  # a bench reports, it does not die
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                        self.unacked += [event["id"] for _, event in batch]
                    else:
                        at = now_ms()
                        self.sent += [Sent(event["id"], kind, at) for kind, event in batch]
                self._halt.wait(0.02)
        self.stopped_ms = now_ms()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


@dataclass
class LoadResult:
    """What the load sent (kept in run.json, so a soak can be analysed again)."""

    sent: list[Sent]
    unacked: list[str]
    started_ms: int
    stopped_ms: int


def expected_runs(sent: Iterable[Sent]) -> set[tuple[str, str]]:
    """(function, event id) of every run the sent events must produce."""
    return {(fn, s.id) for s in sent for fn in MIX[s.kind][1]}


# --- what Kafka says -------------------------------------------------------------------


@dataclass
class Finish:
    topic: str
    fn: str
    run_id: str
    soak: str
    ts: int
    result: Any


@dataclass
class JournalRecord:
    fn: str
    partition: int
    offset: int
    ts: int
    kind: str
    run_id: str
    body: Any


@dataclass
class Truth:
    finishes: list[Finish] = field(default_factory=list)
    journal: list[JournalRecord] = field(default_factory=list)
    #: (fn, partition) -> sorted timestamps of the function's state changelog records
    changelog: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    #: (run id, step name) -> (the first time its completion was in Kafka, where)
    durable: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    #: run id -> the first time its run state ("r" key) was in the changelog
    state_written: dict[str, int] = field(default_factory=dict)
    #: event id -> (events partition, offset, timestamp)
    events: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: run id -> (fn, journal partition), from its start record
    run_partition: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: (fn, event id) -> run ids started for it (start records)
    started: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: run id -> the event it started for (as the start record has it)
    run_event: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: run id -> (time, status) of its last run-state record in the changelog
    state_last: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: event id -> when the router first wrote its dedup entry (it routed the event)
    dedup: dict[str, int] = field(default_factory=dict)
    #: (event name, soak id) -> the id of that event on the events topic
    event_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (events partition, offset) -> event id
    events_at: dict[tuple[int, int], str] = field(default_factory=dict)
    #: topic -> partition -> the workers' group's committed offset after the soak
    committed: dict[str, dict[int, int]] = field(default_factory=dict)


def slug_fn(app_id: str, slug: str) -> str:
    return slug[len(app_id) + 1 :] if slug.startswith(app_id + "-") else slug


def read_truth(settings: Settings, app_id: str) -> Truth:
    truth = Truth()
    for topic in SYSTEM:
        for msg in read_all(settings, settings.topic(topic), timeout=120):
            if not msg.value():
                continue
            e = decode(msg.value())
            event = e.data.get("event") or {}
            truth.finishes.append(
                Finish(
                    topic,
                    slug_fn(app_id, e.data.get("function_id", "")),
                    e.data.get("run_id", ""),
                    str((event.get("data") or {}).get("soak", "")),
                    msg.timestamp()[1],
                    e.data.get("result"),
                )
            )
    for msg in read_all(settings, settings.topic("events"), timeout=120):
        key = (msg.key() or b"").decode(errors="replace")
        truth.events.setdefault(key, (msg.partition(), msg.offset(), msg.timestamp()[1]))
        truth.events_at[(msg.partition(), msg.offset())] = key
        with contextlib.suppress(Exception):  # not every record need be ours
            e = decode(msg.value())
            truth.event_ids.setdefault((e.name, str(e.data.get("soak"))), key)
    group = f"steplog-{app_id}"
    truth.committed[settings.topic("events")] = committed_offsets(
        settings, group, settings.topic("events")
    )
    for msg in read_all(settings, settings.topic(f"{group}-router-dedup-changelog"), timeout=120):
        key = (msg.key() or b"").decode(errors="replace")
        if msg.value() and (key.startswith("g") or key.startswith("d")):
            event_id = key.split("|", 1)[1] if key.startswith("g") else key[1:]
            truth.dedup.setdefault(event_id, msg.timestamp()[1])
    for fn in FUNCTIONS:
        base = settings.topic(f"steplog-{app_id}-fn-{fn}")
        truth.committed[base] = committed_offsets(settings, group, base)
        for msg in read_all(settings, base, timeout=120):
            if not msg.value():
                continue
            kind, body, rec = RUN_RECORDS.decode(msg.value())
            ts = msg.timestamp()[1]
            r = JournalRecord(fn, msg.partition(), msg.offset(), ts, kind, rec["run_id"], body)
            truth.journal.append(r)
            if kind == "start":
                event = body.get("event") or {}
                soak = str((event.get("data") or {}).get("soak", ""))
                truth.run_partition.setdefault(r.run_id, (fn, r.partition))
                truth.started.setdefault((fn, soak), set()).add(r.run_id)
                truth.run_event.setdefault(r.run_id, event)
            elif kind == "effect" and body.get("type") == "step.completed":
                key = (r.run_id, str(body.get("name")))
                where = f"effect in {fn}[{r.partition}]@{r.offset}"
                truth.durable[key] = min(truth.durable.get(key, (ts, where)), (ts, where))
        stamps: dict[tuple[str, int], list[int]] = defaultdict(list)
        for msg in read_all(settings, f"{base}-state-changelog", timeout=120):
            ts = msg.timestamp()[1]
            stamps[(fn, msg.partition())].append(ts)
            key = msg.key() or b""
            if msg.value() and key.startswith(b"r"):
                run = key[1:].decode()
                truth.state_written[run] = min(truth.state_written.get(run, ts), ts)
                status = str(STATE.decode(msg.value())[1].get("status"))
                truth.state_last[run] = max(truth.state_last.get(run, (ts, status)), (ts, status))
            if msg.value() and key.startswith(b"m"):
                _, body, _ = STATE.decode(msg.value())
                if body.get("status") == "completed":
                    step = (key[1:].split(b"|", 1)[0].decode(), str(body.get("name")))
                    where = f"memo in {fn}-state-changelog[{msg.partition()}]@{msg.offset()}"
                    truth.durable[step] = min(truth.durable.get(step, (ts, where)), (ts, where))
        truth.changelog.update({k: sorted(v) for k, v in stamps.items()})
    return truth


# --- the ledger and the worker logs ----------------------------------------------------


@dataclass
class Execution:
    run_id: str
    fn: str
    step: str
    pid: int
    at_ms: int
    soak: str


def read_ledger(path: Path) -> list[Execution]:
    out = []
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 6:
            run_id, fn, step, pid, at, soak = parts
            out.append(Execution(run_id, fn, step, int(pid), int(at), soak))
    return sorted(out, key=lambda e: e.at_ms)


def log_ms(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1000)


def parse_parts(text: str) -> set[int]:
    out: set[int] = set()
    for piece in text.split(","):
        piece = piece.strip()
        if "-" in piece:
            lo, hi = piece.split("-", 1)
            out |= set(range(int(lo), int(hi) + 1))
        elif piece:
            out.add(int(piece))
    return out


@dataclass
class Assignment:
    pid: int
    at_ms: int
    topics: dict[str, set[int]]


@dataclass
class WorkerLog:
    slot: int
    path: Path
    lines: list[str]
    assignments: list[Assignment]
    #: (time, pid, line) of every line that starts with a time stamp
    entries: list[tuple[int, int, str]]

    @classmethod
    def read(cls, slot: int, path: Path) -> WorkerLog:
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        assignments: list[Assignment] = []
        entries: list[tuple[int, int, str]] = []
        current: Assignment | None = None
        for line in lines:
            m = LOG_LINE.match(line)
            if m:
                entries.append((log_ms(m.group(1)), int(m.group(2)), line))
                current = None
                if "Setting newly assigned partitions" in m.group(4):
                    current = Assignment(int(m.group(2)), log_ms(m.group(1)), {})
                    assignments.append(current)
                continue
            row = TABLE_ROW.match(line)
            if current is not None and row:
                current.topics[row.group(1)] = parse_parts(row.group(2))
        return cls(slot, path, lines, assignments, entries)

    def owned(self, pid: int, at_ms: int) -> dict[str, set[int]]:
        """What ``pid`` was last assigned at or before ``at_ms``."""
        found: dict[str, set[int]] = {}
        for a in self.assignments:
            if a.pid == pid and a.at_ms <= at_ms:
                found = a.topics
        return found

    def markers(self) -> dict[int, Counter[str]]:
        out: dict[int, Counter[str]] = defaultdict(Counter)
        for line in self.lines:
            m = LOG_LINE.match(line)
            if not m:
                continue
            pid = int(m.group(2))
            for marker in MARKERS:
                if marker in line:
                    out[pid][marker] += 1
        return out

    def grep(self, needle: str, limit: int = 12) -> list[str]:
        return [ln for ln in self.lines if needle in ln][:limit]


def owner(logs: list[WorkerLog], topic: str, partition: int, at_ms: int) -> tuple[int, int] | None:
    """(slot, pid) of the process last assigned ``topic[partition]`` by ``at_ms``."""
    best: tuple[int, int, int] | None = None
    for log in logs:
        for a in log.assignments:
            mine = partition in a.topics.get(topic, set())
            if mine and a.at_ms <= at_ms and (best is None or a.at_ms >= best[0]):
                best = (a.at_ms, log.slot, a.pid)
    return (best[1], best[2]) if best else None


def next_owner(
    logs: list[WorkerLog], topic: str, partition: int, at_ms: int
) -> tuple[int, int, int] | None:
    """(time, slot, pid) of the first assignment of ``topic[partition]`` after ``at_ms``."""
    found = [
        (a.at_ms, log.slot, a.pid)
        for log in logs
        for a in log.assignments
        if a.at_ms > at_ms and partition in a.topics.get(topic, set())
    ]
    return min(found) if found else None


def owner_of(logs: list[WorkerLog], topic: str, partition: int, at_ms: int) -> str:
    found = owner(logs, topic, partition, at_ms)
    return f"w{found[0]} pid {found[1]}" if found else "nobody (no assignment logged)"


#: Worker log lines that tell how a partition changed hands.
TIMELINE = (
    "Revoking previously assigned",
    "Setting newly assigned",
    "Resuming flow",
    "Seek stream partitions",
    "no committed offset",
    "Signal received",
    "[^Worker]: Ready",
)


def timeline(
    logs: list[WorkerLog], topic: str, partition: int, at_ms: int, window_ms: int = 8000
) -> list[str]:
    """What the owner of ``topic[partition]`` at ``at_ms`` logged about hand-overs around it."""
    found = owner(logs, topic, partition, at_ms)
    if found is None:
        return []
    slot, pid = found
    mentions = (f"{topic}:{partition}:", f"{topic}[{partition}]")
    out = []
    for ms, line_pid, line in logs[slot].entries:
        near = line_pid == pid and abs(ms - at_ms) <= window_ms
        if near and (any(m in line for m in TIMELINE) or any(m in line for m in mentions)):
            out.append(f"w{slot} {line.strip()[:220]}")
    return out[:16]


# --- figures ---------------------------------------------------------------------------


@dataclass
class Recovery:
    fault: Fault
    held: int  # journal partitions the faulted process held
    first_s: float | None  # until the first of them progressed again
    all_s: float | None  # until every one with work progressed again (None: no work seen)
    stalled: list[tuple[str, int]]  # partitions with work that never progressed again
    slowest: str
    reexecuted: int = 0


def pcts(values: list[float]) -> str:
    if not values:
        return "n/a"
    v = sorted(values)
    return (
        f"p50 {procs.pct(v, 0.5):.2f}s p99 {procs.pct(v, 0.99):.2f}s max {v[-1]:.2f}s (n={len(v)})"
    )


@dataclass
class Report:
    params: Params
    out_dir: Path
    app_id: str
    machine: str
    sent: int = 0
    unacked: int = 0
    expected: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    finished_records: int = 0
    finished_run_ids: int = 0
    duplicate_runs: list[str] = field(default_factory=list)
    duplicate_details: list[str] = field(default_factory=list)
    reply_details: list[str] = field(default_factory=list)
    executions: int = 0
    reexecuted: list[str] = field(default_factory=list)
    reexecuted_durable: list[str] = field(default_factory=list)
    reexecuted_without_fault: int = 0
    reexecuted_twice_per_fault: int = 0
    reexecuted_after_finish: int = 0
    reply_timeouts: int = 0
    invoke_errors: int = 0
    recoveries: list[Recovery] = field(default_factory=list)
    calm_latency: list[float] = field(default_factory=list)
    drain_s: float = 0.0
    load_s: float = 0.0
    cpu_busy: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_wall: float = 0.0
    evidence: list[str] = field(default_factory=list)
    #: commit guard lines: a record fetched and not processed, later ones processed
    holes: list[str] = field(default_factory=list)
    t0_ms: int = 0

    # figures for the targets
    def progress(self, kind: str, which: str = "all") -> list[float]:
        out = []
        for r in self.recoveries:
            if r.fault.kind != kind:
                continue
            value = r.all_s if which == "all" else r.first_s
            if r.stalled:
                value = float("inf")
            if value is not None:
                out.append(value)
        return out

    def verdicts(self) -> list[tuple[str, bool]]:
        kill = sorted(self.progress("SIGKILL"))
        term = sorted(self.progress("SIGTERM"))
        kill_p99 = procs.pct(kill, 0.99) if kill else 0.0
        term_p99 = procs.pct(term, 0.99) if term else 0.0
        return [
            (f"lost {len(self.lost)} == 0", not self.lost),
            (f"unfinished after the drain {len(self.unfinished)} == 0", not self.unfinished),
            (f"duplicate runs {len(self.duplicate_runs)} == 0", not self.duplicate_runs),
            (
                f"records skipped and held back by the commit guard {len(self.holes)} == 0",
                not self.holes,
            ),
            (
                f"re-executions of durable steps {len(self.reexecuted_durable)}, without a fault "
                f"{self.reexecuted_without_fault}, of one step twice for one fault "
                f"{self.reexecuted_twice_per_fault}: all 0",
                not self.reexecuted_durable
                and not self.reexecuted_without_fault
                and not self.reexecuted_twice_per_fault,
            ),
            (
                f"progress p99 after SIGKILL {kill_p99:.1f}s <= {TARGET_KILL_P99_S:g}s",
                kill_p99 <= TARGET_KILL_P99_S,
            ),
            (
                f"progress p99 after SIGTERM {term_p99:.1f}s <= {TARGET_TERM_P99_S:g}s",
                term_p99 <= TARGET_TERM_P99_S,
            ),
        ]

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.verdicts())

    def text(self) -> str:
        p = self.params
        lines = [
            f"fault soak, app {self.app_id}; output (worker logs, ledger): {self.out_dir}",
            f"machine: {self.machine}",
            f"parameters: {p.text()}",
            f"load ran {self.load_s:.0f}s, drain {self.drain_s:.0f}s; machine CPU busy "
            f"{self.cpu_busy:.0%} of {os.cpu_count()} cores over load+drain",
            "CPU over load+drain: "
            + ", ".join(
                f"{n} {c:.0f}s ({c / max(self.cpu_wall, 1e-9):.0%})" for n, c in self.cpu.items()
            )
            + " (a worker's CPU is sampled just before it is signalled)",
            "",
            f"events sent (acknowledged) {self.sent}, not acknowledged {self.unacked}",
            f"runs expected {self.expected}: finished {self.finished} (completed), failed "
            f"{self.failed}, cancelled {self.cancelled}",
            f"  lost (no finished record, no run state, no step executed): {len(self.lost)}",
            f"  still not finished after the drain (lost included): {len(self.unfinished)}",
            f"  request-reply waits that timed out: {self.reply_timeouts}; invokes that "
            f"failed or timed out: {self.invoke_errors} (not targets: they finished)",
            f"function.finished records {self.finished_records} for {self.finished_run_ids} "
            f"distinct run ids (a run may be announced twice after a crash, same event id)",
            f"duplicate runs (one event, one function, another run id): {len(self.duplicate_runs)}",
            f"step executions {self.executions}; re-executed {len(self.reexecuted)} "
            f"(of durable steps {len(self.reexecuted_durable)}, before any fault "
            f"{self.reexecuted_without_fault}, twice for one fault "
            f"{self.reexecuted_twice_per_fault}); {self.reexecuted_after_finish} of them in "
            "runs whose function.finished was already out (their final state was not durable)",
        ]
        per_fault = [r.reexecuted for r in self.recoveries]
        if per_fault:
            lines.append(
                f"  re-executed steps per fault: max {max(per_fault)}, mean "
                f"{statistics.mean(per_fault):.1f}"
            )
        lines += [
            "",
            "progress after a fault, per journal partition the faulted process held (from the",
            "'Setting newly assigned partitions' table of its log): progress = a state-changelog",
            "record of that partition written after the process exited, or a step body of one of",
            "its runs executed by another process. 'all' = until every such partition that had",
            "work (a start/resolve/cancel record pending at the fault or arriving after it)",
            "progressed, each measured from max(fault, its first pending record); 'first' = until",
            "the first of them progressed. A partition with work that never progressed = stall.",
        ]
        for kind in ("SIGKILL", "SIGTERM"):
            lines.append(
                f"  after {kind}: all {pcts(self.progress(kind, 'all'))}; first "
                f"{pcts(self.progress(kind, 'first'))}"
            )
        lines.append(
            f"  without faults (calm phase), start/resolve record -> next progress of its "
            f"partition: {pcts(self.calm_latency)}"
        )
        lines.append("faults:")
        for r in self.recoveries:
            f = r.fault
            first = f"{r.first_s:.2f}s" if r.first_s is not None else "-"
            every = f"{r.all_s:.2f}s" if r.all_s is not None else "-"
            stalled = f" STALLED {r.stalled}" if r.stalled else ""
            lines.append(
                f"  #{f.n} {f.kind} w{f.slot} pid {f.pid} at {clock(f.at_ms)} "
                f"(+{(f.at_ms - self.t0_ms) / 1000:.1f}s)"
                f" exit {(f.exited_ms - f.at_ms) / 1000:.1f}s ready "
                f"{(f.ready_ms - f.at_ms) / 1000:.1f}s (pid {f.new_pid}): held {r.held} "
                f"partitions, first {first}, all {every} ({r.slowest}), re-executed "
                f"{r.reexecuted}{stalled}{' ' + f.note if f.note else ''}"
            )
        if self.duplicate_details:
            lines.append(f"duplicate runs, by event ({len(self.duplicate_details)} events):")
            lines += [f"  {d}" for d in self.duplicate_details[:15]]
        if self.unfinished:
            lines += ["unfinished runs:", *(f"  {u}" for u in self.unfinished[:20])]
        if self.reexecuted:
            lines.append("re-executed steps (first 12):")
            lines += [f"  {x}" for x in self.reexecuted[:12]]
        if self.reply_details:
            lines += [
                "request-reply waits that timed out:",
                *(f"  {x}" for x in self.reply_details),
            ]
        if self.reexecuted_durable:
            lines += [
                "re-executed after their completion was durable:",
                *(f"  {x}" for x in self.reexecuted_durable[:20]),
            ]
        if self.evidence:
            lines += ["evidence from the worker logs:", *self.evidence]
        if self.holes:
            lines += ["records skipped (the commit guard held the commit back):"]
            lines += [f"  {line[:300]}" for line in self.holes[:12]]
        lines.append("")
        for text, ok in self.verdicts():
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {text}")
        lines.append(f"{'PASS' if self.passed else 'FAIL'}: fault soak against the targets")
        return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, load {procs.loadavg()}"


def analyse(
    report: Report,
    truth: Truth,
    ledger: list[Execution],
    logs: list[WorkerLog],
    faults: list[Fault],
    load: LoadResult,
    settings: Settings,
    calm_until_ms: int,
) -> None:
    app_id = report.app_id
    expected = expected_runs(load.sent)
    report.sent, report.unacked, report.expected = len(load.sent), len(load.unacked), len(expected)

    # --- runs: finished, failed, duplicates -----------------------------------------
    ends: dict[tuple[str, str], set[str]] = defaultdict(set)
    timed_out: list[Finish] = []
    status: dict[tuple[str, str], str] = {}
    for f in truth.finishes:
        if f.fn not in FUNCTIONS:
            continue
        ends[(f.fn, f.soak)].add(f.run_id)
        status.setdefault((f.fn, f.soak), f.topic)
        if f.topic == SYSTEM[0]:
            if f.fn == "requester" and isinstance(f.result, dict) and not f.result.get("replied"):
                report.reply_timeouts += 1
                timed_out.append(f)
            if f.fn == "caller" and isinstance(f.result, dict) and not f.result.get("invoked"):
                report.invoke_errors += 1
    finished_records = [f for f in truth.finishes if f.topic == SYSTEM[0]]
    report.finished_records = len(finished_records)
    report.finished_run_ids = len({f.run_id for f in finished_records})
    report.finished = sum(1 for k in expected if status.get(k) == SYSTEM[0])
    report.failed = sum(1 for k in expected if status.get(k) == SYSTEM[1])
    report.cancelled = sum(1 for k in expected if status.get(k) == SYSTEM[2])
    runs_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key, ids in truth.started.items():
        runs_of[key] |= ids
    for key, ids in ends.items():
        runs_of[key] |= ids
    by_run: dict[str, list[Execution]] = defaultdict(list)
    for e in ledger:
        by_run[e.run_id].append(e)
    for f in timed_out:
        report.reply_details.append(reply_text(f, truth, logs, settings, app_id))
    kind_of = {s.id: s.kind for s in load.sent}
    duplicated: dict[str, dict[str, set[str]]] = defaultdict(dict)
    for (fn, soak), ids in sorted(runs_of.items()):
        if len(ids) > 1 and soak:
            report.duplicate_runs.append(f"{fn} {soak}")
            duplicated[soak][fn] = ids
    for soak, fns in sorted(duplicated.items()):
        report.duplicate_details.append(
            duplicate_text(soak, kind_of.get(soak, "?"), fns, truth, ends, app_id, logs)
        )

    # --- unfinished and lost ------------------------------------------------------------
    for fn, soak in sorted(expected - set(status)):
        ids = runs_of.get((fn, soak), set())
        began = any(rid in truth.state_last for rid in ids)
        if not began and not any(e.soak == soak and e.fn == fn for e in ledger):
            report.lost.append(f"{fn} {soak}")
        report.unfinished.append(
            unfinished_text(fn, soak, ids, truth, by_run, logs, settings, app_id)
        )

    per_fault_list = reexecutions(report, truth, ledger, faults)
    progress_figures(report, truth, ledger, logs, faults, per_fault_list, settings, calm_until_ms)
    report.calm_latency = calm_latency(truth, ledger, load.started_ms + 2000, calm_until_ms)
    report.evidence = evidence(logs, faults)
    report.holes = [line for log in logs for line in log.grep(HOLE, limit=100)]


def reexecutions(
    report: Report, truth: Truth, ledger: list[Execution], faults: list[Fault]
) -> list[int]:
    """Count step bodies that ran more often than a run without faults runs them.

    Each re-execution is attributed to the fault that ended the process that ran the
    step before (or, if that process still ran, to the most recent fault before it).
    Returns the count per fault.
    """
    report.executions = len(ledger)
    fault_times = [f.at_ms for f in faults]
    ended_by = {f.pid: i for i, f in enumerate(faults)}
    per_fault = [0] * len(faults)
    per_fault_step: Counter[tuple[int, str, str]] = Counter()
    finish_ms: dict[str, int] = {}
    for f in truth.finishes:
        finish_ms[f.run_id] = min(finish_ms.get(f.run_id, f.ts), f.ts)
    previous: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    for e in ledger:
        key = (e.run_id, e.step)
        before = previous[key]
        before.append(e)
        if len(before) <= EXPECTED_EXECUTIONS.get((e.fn, e.step), 1):
            continue
        i = ended_by.get(before[-2].pid, -1)
        if i < 0 or faults[i].at_ms > e.at_ms:
            i = bisect.bisect_right(fault_times, e.at_ms) - 1
        cause = f"fault #{faults[i].n}" if i >= 0 else "no fault before it"
        what = (
            f"{e.fn} run {e.run_id} step {e.step!r}: pid {before[-2].pid} then pid {e.pid} "
            f"at {clock(e.at_ms)} ({cause})"
        )
        report.reexecuted.append(what)
        if i < 0:
            report.reexecuted_without_fault += 1
        else:
            per_fault[i] += 1
            per_fault_step[(i, e.run_id, e.step)] += 1
            if per_fault_step[(i, e.run_id, e.step)] > 1:
                report.reexecuted_twice_per_fault += 1
        durable = truth.durable.get(key)
        if durable is not None and durable[0] < e.at_ms:
            state = truth.state_written.get(e.run_id)
            had_state = (
                f"its run state was first written at {clock(state)}"
                if state is not None
                else "its run state was never written"
            )
            report.reexecuted_durable.append(
                f"{what}: its completion was durable {(e.at_ms - durable[0]) / 1000:.2f}s before"
                f" ({durable[1]} at {clock(durable[0])}; {had_state})"
            )
        elif finish_ms.get(e.run_id, 1 << 62) < e.at_ms:
            report.reexecuted_after_finish += 1
    return per_fault


def progress_events(
    truth: Truth, ledger: list[Execution]
) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """(fn, journal partition) -> sorted (time, pid) of signs that its owner works on it.

    A state-changelog record (pid 0: the writer is not known) or a step body of a run
    of that partition (the ledger names the process).
    """
    progress: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for part, stamps in truth.changelog.items():
        progress[part] += [(ts, 0) for ts in stamps]
    for e in ledger:
        where = truth.run_partition.get(e.run_id)
        if where:
            progress[where].append((e.at_ms, e.pid))
    for events in progress.values():
        events.sort()
    return progress


def demand_records(truth: Truth) -> dict[tuple[str, int], list[int]]:
    """(fn, journal partition) -> sorted times of records written from outside its owner."""
    demand: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in truth.journal:
        if r.kind in DEMAND_KINDS:
            demand[(r.fn, r.partition)].append(r.ts)
    for stamps in demand.values():
        stamps.sort()
    return demand


def progress_figures(
    report: Report,
    truth: Truth,
    ledger: list[Execution],
    logs: list[WorkerLog],
    faults: list[Fault],
    reexecuted: list[int],
    settings: Settings,
    calm_until_ms: int,
) -> None:
    progress = progress_events(truth, ledger)
    demand = demand_records(truth)
    topic_fn = {settings.topic(f"steplog-{report.app_id}-fn-{fn}"): fn for fn in FUNCTIONS}
    for fault, count in zip(faults, reexecuted, strict=True):
        owned = logs[fault.slot].owned(fault.pid, fault.at_ms)
        held = [(topic_fn[t], p) for t, parts in owned.items() if t in topic_fn for p in parts]
        rec = recovery(fault, held, progress, demand)
        rec.reexecuted = count
        report.recoveries.append(rec)


def calm_latency(truth: Truth, ledger: list[Execution], start_ms: int, end_ms: int) -> list[float]:
    """Seconds from each start/resolve record in [start, end) to its partition's next progress."""
    progress = progress_events(truth, ledger)
    out = []
    for part, stamps in demand_records(truth).items():
        prog = [ts for ts, _ in progress.get(part, [])]
        for a in stamps:
            if start_ms <= a < end_ms:
                j = bisect.bisect_right(prog, a)
                if j < len(prog):
                    out.append((prog[j] - a) / 1000)
    return out


def recovery(
    fault: Fault,
    held: list[tuple[str, int]],
    progress: dict[tuple[str, int], list[tuple[int, int]]],
    demand: dict[tuple[str, int], list[int]],
) -> Recovery:
    k, exited = fault.at_ms, fault.exited_ms
    firsts: list[float] = []
    waits: list[tuple[float, str]] = []
    stalled: list[tuple[str, int]] = []
    for fn, p in sorted(held):
        prog = progress.get((fn, p), [])
        after = [ts for ts, pid in prog if ts > k and ((pid and pid != fault.pid) or ts > exited)]
        first = after[0] if after else None
        if first is not None:
            firsts.append((first - k) / 1000)
        stamps = [ts for ts, _ in prog]
        pending_since: int | None = None
        for a in demand.get((fn, p), []):
            if a > k:
                if first is None or a <= first:
                    pending_since = a if pending_since is None else pending_since
                break
            # a record before the fault is pending if nothing progressed since it
            j = bisect.bisect_right(stamps, a)
            if j >= len(stamps) or stamps[j] > k:
                pending_since = k
                break
        if pending_since is None:
            continue
        if first is None:
            stalled.append((fn, p))
        else:
            waits.append(((first - pending_since) / 1000, f"{fn}[{p}]"))
    worst = max(waits) if waits else None
    return Recovery(
        fault,
        len(held),
        min(firsts) if firsts else None,
        worst[0] if worst else None,
        stalled,
        f"slowest {worst[1]}" if worst else "no partition had work",
    )


def duplicate_text(
    soak: str,
    kind: str,
    fns: dict[str, set[str]],
    truth: Truth,
    ends: dict[tuple[str, str], set[str]],
    app_id: str,
    logs: list[WorkerLog],
) -> str:
    """One event's duplicated runs: the first function of its kind explains the others."""
    order = MIX[kind][1] if kind in MIX else tuple(sorted(fns))
    out = f"{soak} ({kind}):"
    for fn in [f for f in order if f in fns]:
        parts = []
        epochs: set[int] = set()
        for rid in sorted(fns[fn]):
            event = truth.run_event.get(rid, {})
            internal = event.get("internal_id") or ""
            epoch = next(
                (n for n in range(20) if derived_run_id(internal, f"{app_id}-{fn}", n) == rid),
                None,
            )
            where = truth.run_partition.get(rid)
            done = "finished" if rid in ends.get((fn, soak), ()) else "not finished"
            origin = f"epoch {epoch}" if epoch is not None else "derived"
            if epoch is not None:
                epochs.add(epoch)
            parts.append(f"{rid} ({origin}, {fn}[{where[1] if where else '?'}], {done})")
        out += f" {fn} x{len(parts)}: " + ", ".join(parts) + ";"
        event_ids = {str(truth.run_event.get(rid, {}).get("id")) for rid in fns[fn]}
        for event_id in sorted(event_ids):
            ev = truth.events.get(event_id)
            if ev is None:
                continue
            out += f" its event {event_id} is events[{ev[0]}]@{ev[1]};"
            for epoch in sorted(e for e in epochs if e):
                needle = f"events:{ev[0]}: committed offset"
                resets = [
                    ln
                    for log in logs
                    for ln in log.grep(needle, limit=1000)
                    if f"(epoch {epoch})" in ln
                ]
                out += "".join(f"\n      {ln.strip()[:260]}" for ln in resets[:1])
    return out


def reply_text(
    f: Finish, truth: Truth, logs: list[WorkerLog], settings: Settings, app_id: str
) -> str:
    """A requester whose wait timed out: when it waited, when its reply was sent."""

    recs = [r for r in truth.journal if r.run_id == f.run_id]
    kinds = [
        f"{r.kind}{'/' + str(r.body.get('type')) if r.kind == 'effect' else ''}@{clock(r.ts)}"
        for r in recs
    ]
    where = truth.run_partition.get(f.run_id)
    answers = [x for x in truth.finishes if x.fn == "responder" and x.soak == f.soak]
    answered = ", ".join(f"responder {x.run_id} finished {clock(x.ts)}" for x in answers)
    owner = ""
    if where and recs:
        journal = settings.topic(f"steplog-{app_id}-fn-requester")
        owner = f", requester[{where[1]}] held by {owner_of(logs, journal, where[1], recs[0].ts)}"
    return (
        f"requester {f.run_id} for {f.soak}: journal {kinds}{owner}; "
        f"{answered or 'no responder finished'}; timed out {clock(f.ts)}"
    )


def unfinished_text(
    fn: str,
    soak: str,
    ids: set[str],
    truth: Truth,
    by_run: dict[str, list[Execution]],
    logs: list[WorkerLog],
    settings: Settings,
    app_id: str,
) -> str:
    """What Kafka, the ledger and the worker logs say about an expected run that never ended."""
    events = settings.topic("events")
    event_id = truth.event_ids.get((START_EVENT.get(fn, ""), soak))
    ev = truth.events.get(event_id) if event_id else None
    lines = []
    if not ids and ev is None:
        return f"{fn} {soak}: no start record (the run that would start it never got there)"
    if not ids and ev is not None:
        p, o, ts = ev
        routed = truth.dedup.get(str(event_id))
        head = f"{fn} {soak}: no start record; its event is events[{p}]@{o}, sent {clock(ts)}, "
        head += f"partition held by {owner_of(logs, events, p, ts)}; "
        head += f"routed {clock(routed)}" if routed else "never routed (no dedup entry)"
        near = []
        for d in (-1, 1):
            other = truth.events_at.get((p, o + d))
            if other:
                at = truth.dedup.get(other)
                near.append(f"@{o + d} routed {clock(at)}" if at else f"@{o + d} not routed")
        head += f" ({', '.join(near)})" if near else ""
        done = truth.committed.get(events, {}).get(p)
        if done is not None:
            head += f"; the group committed events[{p}] up to {done}"
            head += " (past it)" if done > o else ""
        lines += [head, *timeline(logs, events, p, ts)]
    journal = settings.topic(f"steplog-{app_id}-fn-{fn}")
    for rid in sorted(ids):
        recs = [r for r in truth.journal if r.run_id == rid]
        steps = [f"{e.step}@{clock(e.at_ms)}/pid {e.pid}" for e in by_run.get(rid, [])]
        text = f"{fn} {soak} run {rid}: steps {steps or 'none'}"
        state = truth.state_last.get(rid)
        text += f"; last run state {state[1]!r} at {clock(state[0])}" if state else "; no run state"
        if recs:
            first, last = recs[0], recs[-1]
            kind = last.kind + (f"/{last.body.get('type')}" if last.kind == "effect" else "")
            text += (
                f"; journal {[r.kind for r in recs]}, last {kind} {fn}[{last.partition}]"
                f"@{last.offset} at {clock(last.ts)} (partition held by "
                f"{owner_of(logs, journal, last.partition, last.ts)} then, by "
                f"{owner_of(logs, journal, last.partition, 1 << 62)} at the end)"
            )
            done = truth.committed.get(journal, {}).get(last.partition)
            if done is not None:
                text += f"; the group committed {fn}[{last.partition}] up to {done}"
                text += " (past it)" if done > last.offset else ""
            lines += [text, *timeline(logs, journal, first.partition, first.ts)]
            if state is None:  # the next owner should have applied the start record
                after = next_owner(logs, journal, first.partition, first.ts)
                if after is not None:
                    lines.append(
                        f"next assigned {fn}[{first.partition}]: w{after[1]} pid {after[2]} "
                        f"at {clock(after[0])}"
                    )
                    lines += timeline(logs, journal, first.partition, after[0] + 1)
        else:
            lines.append(text + "; no journal record")
    return "\n      ".join(lines)


def evidence(logs: list[WorkerLog], faults: list[Fault]) -> list[str]:
    lines = []
    for log in logs:
        for pid, counts in log.markers().items():
            shown = ", ".join(f"{m!r} x{n}" for m, n in counts.items())
            lines.append(f"  w{log.slot} pid {pid}: {shown or '-'}")
        for line in log.grep("consumer group was reset", limit=10):
            lines.append(f"    {line[:300]}")
    return lines


# --- the run -------------------------------------------------------------------------


def run_soak(
    settings: Settings, out_dir: Path, params: Params, broker_pid: int | None = None
) -> Report:
    """Run the soak against the broker of ``settings`` and return its report.

    ``broker_pid`` (when known) adds the broker's CPU to the report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    app_id = f"soak-{uuid.uuid4().hex[:6]}"
    settings = settings.model_copy(
        update={
            "topic_prefix": settings.topic_prefix or f"{app_id}.",
            "partitions": params.partitions,
            "data_dir": out_dir,
        }
    )
    ledger = out_dir / "ledger.txt"
    report = Report(params, out_dir, app_id, machine())
    env = {
        "SOAK_LEDGER": str(ledger),
        "SOAK_REPLY_TIMEOUT": params.reply_timeout,
        "STEPLOG_RETRY_BACKOFF_SCALE": str(params.backoff_scale),
    }
    slots = [SoakWorker(settings, app_id, out_dir / f"w{i}", **env) for i in range(params.workers)]
    rng = random.Random(params.seed)
    faults: list[Fault] = []
    load = Load(settings, app_id, params.rate, params.seed)
    watch: Watch | None = None
    try:
        for w in slots:
            w.start(wait=False)
        for w in slots:
            w.wait_ready(120)
        group = f"steplog-{app_id}"
        wait_group_stable(
            settings, group, params.workers, settings.topic(f"steplog-{app_id}-fn-steps"), 120
        )
        watch = Watch(settings, *SYSTEM)
        busy0, wall0 = procs.machine_busy(), time.monotonic()
        workers0 = sum(procs.cpu_seconds(w.pid) for w in slots)
        own0 = procs.cpu_seconds(os.getpid())
        broker0 = procs.cpu_seconds(broker_pid) if broker_pid else 0.0
        load.start()
        report.t0_ms = now_ms()
        deadline = time.monotonic() + params.duration
        time.sleep(min(params.calm, params.duration))
        calm_until = now_ms()
        for n in range(1, params.kills + 1):
            # the interval counts from the moment the last restarted worker was ready
            next_at = time.monotonic() + rng.uniform(*params.interval)
            if next_at > deadline:
                break
            time.sleep(max(next_at - time.monotonic(), 0))
            slot = rng.randrange(len(slots))
            kind = "SIGTERM" if n % params.sigterm_every == 0 else "SIGKILL"
            faults.append(fault(slots[slot], slot, n, kind))
            if n == 1:
                calm_until = faults[0].at_ms
        time.sleep(max(min(params.tail, deadline - time.monotonic()), 0))
        load.stop()
        report.load_s = (load.stopped_ms - load.started_ms) / 1000
        expected = expected_runs(load.sent)
        t_drain = time.monotonic()
        while time.monotonic() - t_drain < params.drain_timeout:
            done = {
                (
                    slug_fn(app_id, e.data.get("function_id", "")),
                    str(e.data["event"]["data"].get("soak")),
                )
                for e in watch.matching(lambda e: True)
                if isinstance(e.data.get("event"), dict)
            }
            if expected <= done:
                break
            time.sleep(1.0)
        report.drain_s = time.monotonic() - t_drain
        wall = time.monotonic() - wall0
        busy = procs.machine_busy() - busy0
        report.cpu_busy = busy / (wall * (os.cpu_count() or 1))
        for w in slots:
            w.sample_cpu()
        report.cpu = {"workers": sum(w.cpu_used for w in slots) - workers0}
        report.cpu["soak process (load, watch)"] = procs.cpu_seconds(os.getpid()) - own0
        if broker_pid:
            report.cpu["broker"] = procs.cpu_seconds(broker_pid) - broker0
        report.cpu["other"] = max(busy - sum(report.cpu.values()), 0.0)
        report.cpu_wall = wall
    finally:
        for w in slots:
            if w.proc and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in slots:
            w.stop(timeout=30)
        if load.is_alive():
            load.stop()
        if watch is not None:
            watch.close()
    result = LoadResult(load.sent, load.unacked, load.started_ms, load.stopped_ms)
    run = {
        "bootstrap": settings.resolved_bootstrap(),
        "topic_prefix": settings.topic_prefix,
        "app_id": app_id,
        "params": asdict(params),
        "faults": [asdict(f) for f in faults],
        "load": asdict(result),
        "calm_until_ms": calm_until,
        "report": {k: getattr(report, k) for k in RUN_FIELDS},
    }
    (out_dir / "run.json").write_text(json.dumps(run))
    return analysed(report, settings, out_dir, faults, result, calm_until)


#: Report fields measured while the soak ran (the rest comes from the analysis).
RUN_FIELDS = ("t0_ms", "load_s", "drain_s", "cpu_busy", "cpu", "cpu_wall")


def analysed(
    report: Report,
    settings: Settings,
    out_dir: Path,
    faults: list[Fault],
    load: LoadResult,
    calm_until: int,
) -> Report:
    truth = read_truth(settings, report.app_id)
    logs = [
        WorkerLog.read(i, out_dir / f"w{i}" / "worker.log") for i in range(report.params.workers)
    ]
    ledger = read_ledger(out_dir / "ledger.txt")
    analyse(report, truth, ledger, logs, faults, load, settings, calm_until)
    return report


def reanalyse(out_dir: Path) -> Report:
    """Analyse a finished soak again from its run.json (its broker must still hold the topics)."""
    run = json.loads((out_dir / "run.json").read_text())
    raw = run["params"]
    params = Params(**{**raw, "interval": tuple(raw["interval"])})
    settings = Settings(
        bootstrap_servers=run["bootstrap"],
        topic_prefix=run["topic_prefix"],
        partitions=params.partitions,
        data_dir=out_dir,
    )
    report = Report(params, out_dir, run["app_id"], machine())
    for key, value in run["report"].items():
        setattr(report, key, value)
    faults = [Fault(**f) for f in run["faults"]]
    raw_load = run["load"]
    load = LoadResult(
        [Sent(**x) for x in raw_load["sent"]],
        raw_load["unacked"],
        raw_load["started_ms"],
        raw_load["stopped_ms"],
    )
    return analysed(report, settings, out_dir, faults, load, run["calm_until_ms"])


def fault(worker: SoakWorker, slot: int, n: int, kind: str) -> Fault:
    """Signal ``worker`` (SIGKILL, or SIGTERM and wait for it to stop), then restart it."""
    worker.sample_cpu()
    f = Fault(n, kind, slot, worker.pid, now_ms())
    if kind == "SIGKILL":
        worker.kill()
    else:
        worker.stop(timeout=60)
        assert worker.proc is not None
        if worker.proc.returncode == -signal.SIGKILL:
            f.note = "(did not stop within 60s: killed)"
    f.exited_ms = now_ms()
    for attempt in range(2):
        try:
            worker.start(timeout=90)
            break
        except AssertionError as exc:
            f.note += f" (restart {attempt + 1} failed: {str(exc).splitlines()[0]})"
            worker.kill()
    f.ready_ms = now_ms()
    f.new_pid = worker.pid
    return f


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 faults, about two minutes")
    parser.add_argument("--kills", type=int, help="number of faults (default 20; --quick 5)")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--duration", type=float, help="longest load time in seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--sigterm-every", type=int, default=4)
    parser.add_argument("--drain-timeout", type=float)
    parser.add_argument("--out", help="output dir (default: a new one under /tmp)")
    parser.add_argument("--kafka-data-dir", help="use the broker `steplog kafka start` runs there")
    parser.add_argument("--bootstrap", help="use this broker")
    parser.add_argument(
        "--analyse", metavar="DIR", help="only analyse again the soak whose output dir is DIR"
    )
    args = parser.parse_args()
    if args.analyse:
        print(reanalyse(Path(args.analyse)).text(), flush=True)
        return
    base = Params.quick() if args.quick else Params()
    overrides: dict[str, Any] = {
        "rate": args.rate,
        "seed": args.seed,
        "workers": args.workers,
        "partitions": args.partitions,
        "sigterm_every": args.sigterm_every,
    }
    for name in ("kills", "duration", "drain_timeout"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    params = Params(**{**base.__dict__, **overrides})
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="steplog-soak-"))
    print(f"output dir (worker logs, ledger): {out}", flush=True)
    with procs.broker(args.bootstrap, args.kafka_data_dir, out) as b:
        settings = Settings(bootstrap_servers=b.bootstrap, topic_prefix="", partitions=6)
        report = run_soak(settings, out, params, b.pid)
    print(report.text(), flush=True)


if __name__ == "__main__":
    main()
