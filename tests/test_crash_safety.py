"""Crash safety on the real broker: SIGKILL a worker at bad moments, restart it.

Every test kills a worker with SIGKILL (no shutdown hook, no commit, nothing
flushed) and starts a new one, either on the same data dir (local RocksDB kept)
or on a fresh one (state must come back from the Kafka changelogs). Step bodies
append a line per execution to a ledger file, so executions are counted across
processes. A restart after SIGKILL costs the broker's session timeout (the dead
member holds its partitions until then).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from rocksdict import AccessType, Rdict

from agents.local_state import OFFSET_KEY
from agents.store import STATE
from streams import Client
from streams.event import Event
from streams.lifecycle.records import ENVELOPE as RUN_RECORDS
from streams.routing import run_id as derived_run_id
from streams.settings import Settings
from tests.worker_harness import (
    Watch,
    WorkerProc,
    finished,
    ledger_lines,
    read_all,
    wait_distinct,
    wait_group_stable,
    wait_until,
)

pytestmark = pytest.mark.kafka

TARGET = "tests.apps.patterns:app"


@pytest.fixture
def app_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("crash")


def start(
    procs: list[WorkerProc],
    settings: Settings,
    app_id: str,
    data_dir: Path,
    ledger: Path,
    **env: str,
) -> WorkerProc:
    proc = WorkerProc(settings, TARGET, app_id, data_dir, TEST_LEDGER=str(ledger), **env)
    procs.append(proc)
    proc.start()
    # a worker slow to start may be dropped from the group and rejoin: let that settle
    journal = settings.topic(f"steplog-{app_id}-fn-multi-step")
    wait_group_stable(settings, f"steplog-{app_id}", 1, journal)
    return proc


def step_counts(ledger: Path, run_id: str) -> Counter[str]:
    """How many times each step of ``run_id`` executed, from the ledger."""
    return Counter(
        line.split()[1] for line in ledger_lines(ledger) if line.startswith(run_id + " ")
    )


def distinct_ids(events: list[Event]) -> set[str]:
    return {e.id for e in events if e.id}


def durable_steps(
    settings: Settings, app_id: str, fn_id: str, before_ms: int
) -> set[tuple[str, str]]:
    """(run id, step name) of step completions that were in Kafka before ``before_ms``.

    A completion is durable once its ``effect`` record is in the function's journal
    topic or its memo is in the state changelog; record timestamps are producer
    create times, so records written by the killed worker are the ones before the kill.
    """
    base = settings.topic(f"steplog-{app_id}-fn-{fn_id}")
    done: set[tuple[str, str]] = set()
    for msg in read_all(settings, base):
        if msg.timestamp()[1] >= before_ms or not msg.value():
            continue
        kind, body, rec = RUN_RECORDS.decode(msg.value())
        if kind == "effect" and body.get("type") == "step.completed":
            done.add((rec["run_id"], body["name"]))
    for msg in read_all(settings, f"{base}-state-changelog"):
        key = msg.key() or b""
        if msg.timestamp()[1] >= before_ms or not msg.value() or not key.startswith(b"m"):
            continue
        _, body, _ = STATE.decode(msg.value())
        if body.get("status") == "completed":
            done.add((key[1:].split(b"|", 1)[0].decode(), body["name"]))
    return done


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def reading_starts(log: str, topic: str) -> dict[int, int]:
    """Per partition of changelog ``topic``: the offset the first recovery in a worker's
    ``log`` started reading it at (Faust's "Reading Starts At - Active" table)."""
    starts: dict[int, int] = {}
    block = log.split("Reading Starts At - Active", 1)[1].split("\n[", 1)[0]
    current = None
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].isdigit():
            continue
        current = cells[0] if cells[0] != "〃" else current
        if current == topic:
            starts[int(cells[1])] = int(cells[2])
    return starts


def assert_databases_are_changelog_prefixes(
    settings: Settings, tabledir: Path, table: str, changelog: str
) -> dict[int, int]:
    """Each of ``table``'s partition databases in ``tabledir`` holds exactly what its
    changelog partition holds up to the offset the database records; returns those
    offsets by partition."""
    records: dict[int, list[Any]] = {}
    for msg in read_all(settings, changelog):
        records.setdefault(msg.partition(), []).append(msg)
    kept: dict[int, int] = {}
    for path in sorted(tabledir.glob(f"{table}-*.db")):
        partition = int(path.name[len(table) + 1 : -3])
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            stored = {k: v for k, v in db.items() if k != OFFSET_KEY}
            raw = db.get(OFFSET_KEY)
        finally:
            db.close()
        offset = -1 if raw is None else int(raw)
        folded: dict[bytes, bytes] = {}
        for msg in records.get(partition, []):
            if msg.offset() > offset:
                break
            if msg.value() is None:
                folded.pop(msg.key(), None)
            else:
                folded[msg.key()] = msg.value()
        assert stored == folded, f"{path.name} is not its changelog up to offset {offset}"
        kept[partition] = offset
    return kept


@pytest.mark.parametrize("data_dir", ["same", "fresh"])
def test_sigkill_mid_run_resumes_from_the_last_durable_step(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
    data_dir: str,
) -> None:
    w1 = start(workers, settings, app_id, tmp_path / "w1", ledger)
    with Client(settings) as client:
        client.send({"name": "test/multi", "data": {"steps": 6, "step_seconds": 0.3}})
    # kill in the middle of step-2: steps 0 and 1 completed (and were journaled) before
    line = wait_until(
        lambda: next((ln for ln in ledger_lines(ledger) if ln.endswith(" step-2")), None),
        30,
        "step-2 to start",
    )
    run_id = line.split()[0]
    time.sleep(0.15)
    w1.kill()
    killed_ms = now_ms()
    before = step_counts(ledger, run_id)
    assert before["step-5"] == 0, "the run finished before the kill; nothing was tested"

    start(workers, settings, app_id, tmp_path / ("w1" if data_dir == "same" else "w2"), ledger)
    fn = f"{app_id}-multi-step"
    [done, *dupes] = watch.wait_for(finished(fn), timeout=60)
    assert done.data["run_id"] == run_id
    assert done.data["result"] == sum(range(6))
    time.sleep(1.0)  # a second run (or a second finish) would show up by now
    assert distinct_ids(watch.matching(finished(fn))) == {done.id}, "the run finished twice"
    assert not dupes or {e.data["run_id"] for e in dupes} == {run_id}

    counts = step_counts(ledger, run_id)
    assert set(counts) == {f"step-{i}" for i in range(6)}, counts
    # steps whose completion was durable before the kill never ran again
    durable = {step for run, step in durable_steps(settings, app_id, "multi-step", killed_ms)}
    assert {"step-0", "step-1"} <= durable
    assert all(counts[step] == 1 for step in durable), (durable, counts)
    # at most the step in flight ran twice
    assert all(n <= 2 for n in counts.values()), counts
    assert sum(1 for n in counts.values() if n == 2) <= 1, counts


def test_sigkill_during_retry_backoff_retries_once(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    # the first retry waits 15 s x 0.2 = 3 s (+/- 10 % jitter)
    env = {"STEPLOG_RETRY_BACKOFF_SCALE": "0.2"}
    w1 = start(workers, settings, app_id, tmp_path / "w1", ledger, **env)
    with Client(settings) as client:
        client.send({"name": "test/flaky-once"})
    line = wait_until(
        lambda: next((ln for ln in ledger_lines(ledger) if " attempt-0 " in ln), None),
        30,
        "the first attempt",
    )
    run_id, _, failed_ms = line.split()
    time.sleep(1.0)  # the failure and its retry timer are durable (committed) by now
    w1.kill()
    assert len(ledger_lines(ledger)) == 1, "the retry ran before the kill; nothing was tested"

    start(workers, settings, app_id, tmp_path / "w2", ledger, **env)
    fn = f"{app_id}-flaky-once"
    [done, *_] = watch.wait_for(finished(fn), timeout=60)
    assert done.data["run_id"] == run_id
    assert done.data["result"] == "ok after 2 attempts"
    time.sleep(1.0)
    lines = ledger_lines(ledger)
    assert [ln.split()[1] for ln in lines] == ["attempt-0", "attempt-1"], lines
    retried_ms = int(lines[1].split()[2])
    assert retried_ms - int(failed_ms) >= 2700, "the retry did not wait for its backoff"
    assert distinct_ids(watch.matching(finished(fn))) == {done.id}


def test_sigkill_during_a_burst_runs_each_event_once(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    w1 = start(workers, settings, app_id, tmp_path / "w1", ledger)
    fn = f"{app_id}-multi-step"
    with Client(settings) as client:
        ids = client.send(
            [
                {
                    "name": "test/multi",
                    "id": f"burst-{i}",  # the router keeps a dedup entry for each
                    "data": {"steps": 2, "step_seconds": 0.1, "n": i},
                }
                for i in range(50)
            ]
        )
    # kill while the burst is being routed and run: some runs finished, others not
    watch.wait_for(finished(fn), count=5, timeout=30)
    w1.kill()
    killed_ms = now_ms()
    finished_before = len(distinct_ids(watch.matching(finished(fn))))
    assert finished_before < 50, "the burst finished before the kill; nothing was tested"
    # what SIGKILL left of the function's state is a prefix of its changelog, so the
    # restart may keep it and read only the rest
    tabledir = tmp_path / "w1" / "worker" / f"{settings.topic_prefix}{app_id}" / "v1" / "tables"
    changelog = settings.topic(f"steplog-{app_id}-fn-multi-step-state-changelog")
    kept = assert_databases_are_changelog_prefixes(
        settings, tabledir, "multi-step-state", changelog
    )
    assert any(offset >= 0 for offset in kept.values()), "the killed worker left no state"
    dedup = settings.topic(f"steplog-{app_id}-router-dedup-changelog")
    kept_dedup = assert_databases_are_changelog_prefixes(settings, tabledir, "router-dedup", dedup)
    assert any(offset >= 0 for offset in kept_dedup.values()), "no dedup entry was stored"

    before_restart = w1.log.stat().st_size  # the restarted worker appends to this log
    again = start(workers, settings, app_id, tmp_path / "w1", ledger)
    wait_distinct(watch, finished(fn), 50, timeout=60)
    time.sleep(1.0)
    done = watch.matching(finished(fn))
    runs_of_event: dict[str, set[str]] = {}
    for e in done:
        runs_of_event.setdefault(e.data["event"]["internal_id"], set()).add(e.data["run_id"])
    assert set(runs_of_event) == set(ids)
    assert all(len(runs) == 1 for runs in runs_of_event.values()), "an event ran twice"
    # ... with the run ids of the first delivery: the restart was not taken for a replay
    assert {r for runs in runs_of_event.values() for r in runs} == {
        derived_run_id(i, fn) for i in ids
    }
    assert len(distinct_ids(done)) == 50  # one distinct finished id per run
    # ... and the restart read only what came after: not one partition from the start
    log = again.log.read_bytes()[before_restart:].decode(errors="replace")
    assert reading_starts(log, changelog) == kept
    assert reading_starts(log, dedup) == kept_dedup
    # a step ran again only if its completion was not durable yet when the worker died
    durable = durable_steps(settings, app_id, "multi-step", killed_ms)
    for run in {e.data["run_id"] for e in done}:
        counts = step_counts(ledger, run)
        assert set(counts) == {"step-0", "step-1"}, (run, counts)
        assert all(n <= 2 for n in counts.values()), (run, counts)
        again = {step for step, n in counts.items() if n == 2}
        assert not again & {step for r, step in durable if r == run}, (run, counts)


class KillOnFirst:
    """A thread that SIGKILLs ``proc`` the moment a record matching ``pred`` appears in
    one of ``topics`` (read with a 10 ms fetch wait), and records what it saw."""

    def __init__(
        self, settings: Settings, topics: list[str], pred: Callable[[Any], bool], proc: WorkerProc
    ) -> None:
        self.killed_at: float | None = None
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"test-kill-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                    "topic.metadata.refresh.interval.ms": 200,
                }
            )
        )
        self.consumer.subscribe(topics)
        self.pred = pred
        self.proc = proc
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while self.killed_at is None:
                msg = self.consumer.poll(0.01)
                if msg is not None and not msg.error() and self.pred(msg):
                    assert self.proc.proc is not None
                    os.kill(self.proc.proc.pid, signal.SIGKILL)
                    self.killed_at = time.monotonic()
        finally:
            self.consumer.close()

    def wait(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert self.killed_at is not None, "the moment to kill at never came"
        assert self.proc.proc is not None
        self.proc.proc.wait(10)


SYSTEM_TOPICS = {
    "completed": "inngest/function.finished",
    "failed": "inngest/function.failed",
    "cancelled": "inngest/function.cancelled",
}
FINAL = tuple(SYSTEM_TOPICS)


def terminal_states(settings: Settings, changelog: str) -> set[str]:
    """Run ids whose final state is in ``changelog``."""
    return {
        (msg.key() or b"")[1:].decode()
        for msg in read_all(settings, changelog)
        if (msg.key() or b"").startswith(b"r")
        and msg.value()
        and STATE.decode(msg.value())[1]["status"] in FINAL
    }


def announced(watch: Watch, name: str, slug: str) -> set[str]:
    return {
        e.data["run_id"]
        for _, e in list(watch.events)
        if e.name == name and e.data.get("function_id") == slug
    }


@pytest.mark.parametrize("moment", ["first-final-state", "first-announcement"])
def test_sigkill_as_runs_end_loses_no_system_event(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
    moment: str,
) -> None:
    """Kill the worker the instant the first run's final state reaches its changelog, or
    the instant the first system event is announced: the moments between a run's end
    being announced and being stored. A final state is never durable without its system
    event (it is written only once the event is acknowledged), and after the restart
    every run of every kind - finished, failed, cancelled - is announced, with one id."""
    w1 = start(workers, settings, app_id, tmp_path / "w1", ledger)
    kinds = {"multi-step": "completed", "fails": "failed", "cancellable": "cancelled"}

    def changelog(fn: str) -> str:
        return settings.topic(f"steplog-{app_id}-fn-{fn}-state-changelog")

    def final_state(msg: Any) -> bool:
        key = msg.key() or b""
        value = msg.value()
        return bool(key.startswith(b"r") and value and STATE.decode(value)[1]["status"] in FINAL)

    if moment == "first-final-state":
        killer = KillOnFirst(settings, [changelog(fn) for fn in kinds], final_state, w1)
    else:
        names = [settings.topic(n.replace("/", ".")) for n in SYSTEM_TOPICS.values()]
        killer = KillOnFirst(settings, names, lambda msg: True, w1)
    n = 12
    with Client(settings) as client:
        client.send([{"name": "test/cancellable", "data": {"n": i}} for i in range(n)])
        client.send(
            [{"name": "test/multi", "data": {"steps": 2, "step_seconds": 0}} for _ in range(n)]
            + [{"name": "test/fails", "data": {"n": i}} for i in range(n)]
            + [{"name": "test/cancel-it", "data": {"n": i}} for i in range(n)]
        )
    killer.wait()
    # What the killed worker made durable: no final state without its system event.
    for fn, status in kinds.items():
        stored = terminal_states(settings, changelog(fn))
        topic = settings.topic(SYSTEM_TOPICS[status].replace("/", "."))
        events = {m.key().decode() for m in read_all(settings, topic) if m.key()}
        assert stored <= events, f"{fn}: stored as ended, never announced: {stored - events}"
    start(workers, settings, app_id, tmp_path / "w2", ledger)
    for fn, status in kinds.items():
        slug, name = f"{app_id}-{fn}", SYSTEM_TOPICS[status]
        wait_until(
            lambda slug=slug, name=name: len(announced(watch, name, slug)) >= n,
            60,
            f"{n} runs of {fn} announced",
        )
    ids: dict[tuple[str, str], set[str | None]] = {}
    for _, e in list(watch.events):
        if e.name.startswith("inngest/function."):
            ids.setdefault((e.data["run_id"], e.name), set()).add(e.id)
    assert all(len(v) == 1 for v in ids.values()), "a run announced with two ids"
