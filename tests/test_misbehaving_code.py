"""User code that misbehaves, on a real broker with a worker subprocess (issue 8 §6).

Each test makes one function misbehave (tests/apps/misbehave.py) and checks how its
run ends (``inngest/function.failed`` with an error that names the step), the log line
naming function, run and step, and that a well-behaved run on the same worker still
finishes with the worker process alive. Cases 2-6 share one worker (each test sends
its own events); the blocking case has a worker of its own with a short session
timeout. The pure side of each case is in tests/unit/test_core_misbehaving.py.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams import Client
from streams.event import Event
from streams.lifecycle.records import ENVELOPE as RUN_RECORDS
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.worker_harness import (
    SYSTEM,
    Watch,
    WorkerProc,
    finished,
    group_members,
    ledger_lines,
    read_all,
    wait_group_stable,
    wait_until,
)

pytestmark = pytest.mark.kafka

TARGET = "tests.apps.misbehave:app"
MIB = 1024 * 1024


@dataclass
class Shared:
    settings: Settings
    app_id: str
    worker: WorkerProc
    watch: Watch
    ledger: Path

    def slug(self, fn_id: str) -> str:
        return f"{self.app_id}-{fn_id}"

    def send(self, *events: dict[str, Any]) -> None:
        with Client(self.settings) as client:
            client.send(list(events))

    def failed(self, fn_id: str, count: int = 1, timeout: float = 60.0) -> list[Event]:
        slug = self.slug(fn_id)
        return self.wait(
            lambda e: e.name == "inngest/function.failed" and e.data["function_id"] == slug,
            count,
            timeout,
        )

    def completed(self, fn_id: str, count: int = 1, timeout: float = 60.0) -> list[Event]:
        return self.wait(finished(self.slug(fn_id)), count, timeout)

    def wait(self, pred: Callable[[Event], bool], count: int, timeout: float) -> list[Event]:
        try:
            return self.watch.wait_for(pred, count, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{self.worker.tail(80)}") from None

    def log(self) -> str:
        return self.worker.log.read_text(errors="replace")

    def still_serving(self, n: int) -> None:
        """A well-behaved run started now finishes, and the worker process is alive."""
        self.send({"name": "test/ok", "data": {"n": n}})
        self.wait(
            lambda e: finished(self.slug("well-behaved"))(e) and e.data["result"] == 2 + n,
            1,
            60,
        )
        assert self.worker.proc is not None and self.worker.proc.poll() is None

    def ledger_of(self, run_id: str) -> list[str]:
        return [line.split()[1] for line in ledger_lines(self.ledger) if line.startswith(run_id)]


@pytest.fixture(scope="module")
def shared(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One worker of the misbehaving app for cases 2-6."""
    tmp = tmp_path_factory.mktemp("misbehave")
    settings = Settings(
        bootstrap_servers=kafka_broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=tmp,
        partitions=2,
    )
    app_id = f"misbehave-{uuid.uuid4().hex[:8]}"
    ledger = tmp / "ledger.txt"
    worker = WorkerProc(settings, TARGET, app_id, tmp / "w1", TEST_LEDGER=str(ledger))
    watch = Watch(settings, *SYSTEM)
    try:
        worker.start()
        journal = settings.topic(f"steplog-{app_id}-fn-well-behaved")
        wait_group_stable(settings, f"steplog-{app_id}", 1, journal)
        yield Shared(settings, app_id, worker, watch, ledger)
    finally:
        worker.kill()
        watch.close()


def error_of(event: Event) -> dict[str, Any]:
    error: dict[str, Any] = event.data["error"]
    return error


# --- 2. an output that is not JSON-serializable ---------------------------------------


def test_an_unserializable_output_fails_the_run_naming_step_and_type(shared: Shared) -> None:
    shared.send({"name": "test/unserializable", "data": {}})
    (event,) = shared.failed("unserializable")
    run_id, error = event.data["run_id"], error_of(event)
    assert error["name"] == "SerializationError"
    assert (
        "step 'make' returned a value of type dict that is not JSON-serializable"
        in (error["message"])
    )
    assert "Object of type object" in error["message"]
    assert shared.ledger_of(run_id) == ["make"]  # failed for good: not retried
    assert f"function {shared.slug('unserializable')}, run {run_id} fails for good" in shared.log()
    shared.still_serving(2)


# --- 3. outputs at and over 4 MiB -------------------------------------------------------


def test_an_output_over_4_mib_fails_for_good_and_nothing_oversized_reaches_kafka(
    shared: Shared,
) -> None:
    at_limit = 2 * MIB - 1  # "é" is 2 bytes: 4 MiB - 2 of text + 2 quotes = the limit
    shared.send(
        {"name": "test/oversized", "data": {"chars": at_limit}},
        {"name": "test/oversized", "data": {"chars": at_limit + 1}},
    )
    (done,) = shared.completed("oversized", timeout=90)
    assert done.data["result"] == at_limit
    (event,) = shared.failed("oversized", timeout=90)
    run_id, error = event.data["run_id"], error_of(event)
    assert error["name"] == "LimitExceededError"
    assert f"step 'big' returned {4 * MIB + 2} bytes of JSON" in error["message"]
    assert "the output size limit is 4 MiB" in error["message"]
    assert shared.ledger_of(run_id) == ["big"]  # not retried
    assert f"run {run_id} fails for good" in shared.log()
    shared.still_serving(3)

    # The run at the limit went through the journal (it was detached) in one record of
    # about 4 MiB; the run over it produced nothing large anywhere.
    base = shared.settings.topic(f"steplog-{shared.app_id}-fn-oversized")
    records = read_all(shared.settings, base) + read_all(shared.settings, f"{base}-state-changelog")
    sizes = [len(m.value() or b"") for m in records]
    assert max(sizes) < 4 * MIB + 4096, sorted(sizes)[-3:]
    big_ones = [
        RUN_RECORDS.decode(m.value())[2]["run_id"]
        for m in records
        if len(m.value() or b"") > 64 * 1024 and m.topic() == base
    ]
    assert run_id not in big_ones and big_ones == [done.data["run_id"]]


# --- 4. SystemExit, KeyboardInterrupt, GeneratorExit -----------------------------------


def test_exits_raised_by_step_bodies_fail_the_step_and_the_worker_goes_on(
    shared: Shared,
) -> None:
    cases = [
        (kind, sync)
        for kind in ("SystemExit", "KeyboardInterrupt", "GeneratorExit")
        for sync in (True, False)
    ]
    shared.send(*({"name": "test/exit", "data": {"kind": k, "sync": s}} for k, s in cases))
    events = shared.failed("exits", count=len(cases))
    seen = set()
    for event in events:
        trigger = event.data["event"]["data"]
        kind, run_id, error = trigger["kind"], event.data["run_id"], error_of(event)
        seen.add((kind, trigger["sync"]))
        assert error["name"] == "UserCodeExitError", error
        assert f"step 'quit' raised {kind}" in error["message"]
        assert "not as a request to stop the worker" in error["message"]
        assert kind in (error["stack"] or "")
        assert shared.ledger_of(run_id) == ["exit", "exit"]  # retries=1: two attempts
        assert f"function {shared.slug('exits')}, run {run_id}: step 'quit' failed for good" in (
            shared.log()
        )
    assert seen == set(cases)
    shared.still_serving(4)


# --- 5. a step inside another step -----------------------------------------------------

NESTED = "step 'inner' was called inside the body of step 'outer': steps cannot nest"


def test_a_nested_step_fails_the_run_with_a_clear_error(shared: Shared) -> None:
    shared.send(
        {"name": "test/nested", "data": {}},
        {"name": "test/nested", "data": {"sync": True}},
    )
    for event in shared.failed("nested", count=2):
        run_id, error = event.data["run_id"], error_of(event)
        assert error["name"] == "StepMisuseError"
        assert NESTED in error["message"]
        assert shared.ledger_of(run_id) == ["outer"]  # the inner body never ran, no retry
        assert f"function {shared.slug('nested')}, run {run_id} fails for good" in shared.log()
    shared.still_serving(5)


# --- 6. a step called after the function returned ---------------------------------------


def test_a_step_called_after_the_function_returned_does_nothing(shared: Shared) -> None:
    shared.send({"name": "test/late", "data": {}})
    (event,) = shared.completed("late-step")
    run_id = event.data["run_id"]
    assert event.data["result"] == "returned"
    line = (
        f"function {shared.slug('late-step')}, run {run_id}: step.run('late') was called "
        "after the function returned, so it did not run"
    )
    wait_until(lambda: line in shared.log(), 10, "the late-step warning")
    shared.still_serving(6)
    assert shared.ledger_of(run_id) == []
    journal = shared.settings.topic(f"steplog-{shared.app_id}-fn-late-step")
    effects = [
        body.get("type")
        for kind, body, rec in (
            RUN_RECORDS.decode(m.value()) for m in read_all(shared.settings, journal)
        )
        if kind == "effect" and rec["run_id"] == run_id
    ]
    assert effects == ["step.completed", "run.completed"]  # nothing after the end


# --- 1. an async step body that blocks the event loop -----------------------------------


def test_a_loop_blocked_longer_than_the_session_timeout_keeps_the_worker_in_its_group(
    settings: Settings,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    app_id = unique_name("block")
    block, session = 9.0, 6.0
    worker = WorkerProc(
        settings,
        TARGET,
        app_id,
        tmp_path / "w1",
        TEST_LEDGER=str(ledger),
        TEST_BLOCK_SECONDS=str(block),
        STEPLOG_SESSION_TIMEOUT_MS=str(int(session * 1000)),
    )
    workers.append(worker.start())
    group = f"steplog-{app_id}"
    journal = settings.topic(f"steplog-{app_id}-fn-block-loop")
    wait_group_stable(settings, group, 1, journal)
    before = {m.member_id for m in group_members(settings, group)}

    with Client(settings) as client:
        client.send({"name": "test/block", "data": {}})
        wait_until(
            lambda: any(line.endswith("block-start") for line in ledger_lines(ledger)),
            30,
            "the blocking step to start",
        )
        started = time.monotonic()
        client.send([{"name": "test/ok", "data": {"n": n}} for n in range(3)])
    # past the session timeout, the broker still counts the blocked worker as a member
    # holding its partitions: heartbeats come from Faust's consumer thread
    time.sleep(max(session + 1.0 - (time.monotonic() - started), 0))
    assert any(line.endswith("block-start") for line in ledger_lines(ledger))
    assert not any(line.endswith("block-end") for line in ledger_lines(ledger)), "blocked?"
    members = group_members(settings, group)
    assert {m.member_id for m in members} == before
    assert all(m.assignment and m.assignment.topic_partitions for m in members)

    (done,) = watch.wait_for(finished(f"{app_id}-block-loop"), timeout=60)
    run_id = done.data["run_id"]
    results = {e.data["result"] for e in watch.wait_for(finished(f"{app_id}-well-behaved"), 3, 60)}
    assert results == {2, 3, 4}
    assert {m.member_id for m in group_members(settings, group)} == before  # never rejoined
    lines = [line.split()[1] for line in ledger_lines(ledger) if line.startswith(run_id)]
    assert lines == ["block-start", "block-end", "after"]  # the step ran once

    log = worker.log.read_text()
    who = f"step 'hog' of run {run_id} (function {app_id}-block-loop)"
    assert re.search(rf"has been blocked for \d+\.\ds so far by {re.escape(who)}", log), log
    ended = [ln for ln in log.splitlines() if "the event loop was blocked for" in ln]
    assert len(ended) == 1 and who in ended[0] and "misbehave.py" in ended[0], ended
    seconds = float(ended[0].split("the event loop was blocked for ", 1)[1].split("s", 1)[0])
    assert block - 0.5 <= seconds <= block + 3, ended[0]
    assert "Revoking" not in log.split("Ready", 1)[1]  # no rebalance after the start
    assert worker.proc is not None and worker.proc.poll() is None
