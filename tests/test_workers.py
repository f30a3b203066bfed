"""Several workers of one app on the real broker: sharing, hand-over, refusal, no blocking."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from streams import Client
from streams.settings import Settings
from tests.worker_harness import (
    Watch,
    WorkerProc,
    finished,
    ledger_lines,
    wait_group_stable,
    wait_until,
)

pytestmark = pytest.mark.kafka

TARGET = "tests.apps.patterns:app"


@pytest.fixture
def app_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("wrk")


def test_two_workers_share_partitions_and_hand_over_runs_in_flight(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    settings = settings.model_copy(update={"partitions": 4})
    for name in ("w1", "w2"):
        proc = WorkerProc(settings, TARGET, app_id, tmp_path / name, TEST_LEDGER=str(ledger))
        workers.append(proc.start(wait=False))
    for proc in workers:
        proc.wait_ready()
    journal = settings.topic(f"steplog-{app_id}-fn-tracked-steps")
    wait_group_stable(settings, f"steplog-{app_id}", 2, journal)
    w1, w2 = workers

    runs = 8
    with Client(settings) as client:
        client.send(
            [
                {"name": "test/tracked", "data": {"steps": 4, "step_seconds": 1.5, "n": i}}
                for i in range(runs)
            ]
        )

    def by_run() -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for line in ledger_lines(ledger):
            run_id, step, pid = line.split()
            out[run_id].append((step, pid))
        return out

    pid1, pid2 = f"pid-{w1.proc.pid}", f"pid-{w2.proc.pid}"  # type: ignore[union-attr]
    # every run started, and both workers execute some of them (they share partitions)
    wait_until(
        lambda: (
            len(by_run()) == runs
            and {pid for steps in by_run().values() for _, pid in steps} == {pid1, pid2}
        ),
        30,
        "all runs started, on both workers",
    )
    on_w1 = {run for run, steps in by_run().items() if steps[0][1] == pid1}
    # SIGTERM while its runs are in their first steps. A stopping worker keeps running
    # its runs until Faust has stopped its consumer (a few seconds), then cancels them;
    # its partitions move only after that, so a run never executes on both at once.
    w1.stop()

    fn = f"{app_id}-tracked-steps"
    done = watch.wait_for(finished(fn), count=runs, timeout=60)
    time.sleep(0.5)
    done = watch.matching(finished(fn))
    assert len({e.id for e in done}) == runs
    assert {e.data["result"] for e in done} == {sum(range(4))}
    executions = by_run()
    for run in on_w1:
        steps = executions[run]
        # w1 began it; w2 finished it, from its memos
        assert steps[-1] == ("step-3", pid2), steps
        counts = Counter(step for step, _ in steps)
        assert set(counts) == {f"step-{i}" for i in range(4)} and max(counts.values()) <= 2, steps
    assert on_w1, "w1 ran none of the runs; nothing was handed over"


def test_a_worker_with_other_functions_is_refused_while_the_app_runs(
    settings: Settings, app_id: str, tmp_path: Path, ledger: Path, workers: list[WorkerProc]
) -> None:
    workers.append(
        WorkerProc(settings, TARGET, app_id, tmp_path / "w1", TEST_LEDGER=str(ledger)).start()
    )
    other = WorkerProc(settings, "tests.apps.other:app", app_id, tmp_path / "w2")
    workers.append(other.start(wait=False))
    assert other.proc is not None
    code = other.proc.wait(60)
    log = " ".join(other.log.read_text().split())  # rich wraps long lines
    assert code != 0, log
    assert f"workers of app '{app_id}' already running host functions" in log
    assert f"['{app_id}-something-else']" in log  # names what this worker hosts
    assert "Run the same code on every worker" in log
    assert "Ready" not in log


def test_a_slow_step_does_not_block_other_runs_on_its_partition(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    settings = settings.model_copy(update={"partitions": 1})
    workers.append(
        WorkerProc(settings, TARGET, app_id, tmp_path / "w1", TEST_LEDGER=str(ledger)).start()
    )
    with Client(settings) as client:
        client.send({"name": "test/slow", "data": {"seconds": 3}})
        sent = time.monotonic()
        client.send({"name": "app/auth.sign-up", "data": {"email": "fast@x"}})
    fast_fn, slow_fn = f"{app_id}-send-welcome-email", f"{app_id}-slow-step"
    watch.wait_for(finished(fast_fn), timeout=30)
    fast_after = time.monotonic() - sent
    watch.wait_for(finished(slow_fn), timeout=30)
    order = [e.data["function_id"] for e in watch.matching(lambda e: True)]
    assert order.index(fast_fn) < order.index(slow_fn), order
    assert fast_after < 2.5, f"the fast run waited {fast_after:.1f}s behind the slow step"
