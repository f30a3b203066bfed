"""Time and coordination on the real broker: sleeps, future events, wait_for_event,
invoke, cancellation and timeouts, including the seed patterns Request-Reply, the
fan-in wait for three services, the Saga and rate limiting with sleep."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from streams import Client
from streams.event import Event
from streams.settings import Settings
from tests.test_api import Server
from tests.test_cli_events import steplog
from tests.worker_harness import (
    Watch,
    WorkerProc,
    finished,
    ledger_lines,
    read_all,
    wait_group_stable,
    wait_until,
)

pytestmark = pytest.mark.kafka

TARGET = "tests.apps.coordination:app"


@pytest.fixture
def app_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("crd")


@pytest.fixture
def worker(
    settings: Settings, app_id: str, tmp_path: Path, ledger: Path, workers: list[WorkerProc]
) -> Iterator[WorkerProc]:
    proc = WorkerProc(settings, TARGET, app_id, tmp_path / "w1", TEST_LEDGER=str(ledger))
    workers.append(proc.start())
    yield proc
    proc.stop()


def fn(app_id: str, fn_id: str) -> str:
    return f"{app_id}-{fn_id}"


def entries(ledger: Path, what: str | None = None) -> list[tuple[str, str, int]]:
    """(run id, what, unix ms) lines of the ledger, optionally only ``what``."""
    out = []
    for line in ledger_lines(ledger):
        run_id, rest = line.split(" ", 1)
        label, at, _pid = rest.rsplit(" ", 2)
        if what is None or label == what:
            out.append((run_id, label, int(at)))
    return out


def send(settings: Settings, *events: dict[str, object]) -> list[str]:
    with Client(settings) as client:
        return client.send(list(events))


def test_sleep_resumes_once_after_its_due_time(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    until = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    send(
        settings,
        {"name": "test/nap", "data": {"seconds": 2}},
        {"name": "test/nap-until", "data": {"until": until}},
        {"name": "app/api.external-call", "data": {"calls": 3}},
    )
    [done] = watch.wait_for(finished(fn(app_id, "nap")), timeout=30)
    assert done.data["result"] == {"slept": 2}
    [(_, _, before)] = entries(ledger, "before")
    [(_, _, after)] = entries(ledger, "after")
    assert after - before >= 2000
    watch.wait_for(finished(fn(app_id, "nap-until")), timeout=30)
    [(_, _, woke_at)] = entries(ledger, "woke")
    assert woke_at >= datetime.fromisoformat(until).timestamp() * 1000
    # rate limiting with sleep: one call per second
    [limited] = watch.wait_for(finished(fn(app_id, "rate-limited-api")), timeout=30)
    assert limited.data["result"] == ["call-0", "call-1", "call-2"]
    calls = [at for _, label, at in entries(ledger) if label.startswith("call-")]
    assert len(calls) == 3
    assert all(b - a >= 1000 for a, b in itertools.pairwise(calls))


def test_an_event_with_a_future_ts_starts_its_runs_at_ts(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    ts = int(time.time() * 1000) + 3000
    send(settings, {"name": "test/stamp", "data": {}, "ts": ts})
    watch.wait_for(finished(fn(app_id, "stamp")), timeout=30)
    [(_, _, started)] = entries(ledger, "stamp")
    assert started >= ts


def test_a_sleep_survives_every_worker_going_down(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    w1 = WorkerProc(settings, TARGET, app_id, tmp_path / "w1", TEST_LEDGER=str(ledger))
    workers.append(w1.start())
    send(settings, {"name": "test/nap", "data": {"seconds": 4}})
    wait_until(lambda: entries(ledger, "before"), 30, "the step before the sleep")
    # give the table write of the sleep time to reach its changelog, then crash
    time.sleep(1.0)
    w1.kill()
    due = entries(ledger, "before")[0][2] + 4000
    time.sleep(max(due / 1000 - time.time(), 0) + 1)  # every worker is down past the due time
    w2 = WorkerProc(settings, TARGET, app_id, tmp_path / "w2", TEST_LEDGER=str(ledger))
    workers.append(w2.start())
    watch.wait_for(finished(fn(app_id, "nap")), timeout=60)
    time.sleep(1.0)  # a second wake-up would show in the ledger by now
    assert [label for _, label, _ in entries(ledger)] == ["before", "after"]
    assert len({e.id for e in watch.matching(finished(fn(app_id, "nap")))}) == 1


def test_request_reply_gets_the_reply_even_when_it_races_the_wait(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    # the reply is sent by a run that the waiting run triggers just before it waits
    send(
        settings,
        *({"name": "app/report.requested", "data": {"reportId": f"r{i}"}} for i in range(5)),
        {"name": "app/report.requested", "data": {"reportId": "never-1", "timeout": "2s"}},
    )
    done = watch.wait_for(finished(fn(app_id, "process-report")), count=6, timeout=60)
    results = {e.data["event"]["data"]["reportId"]: e.data["result"] for e in done}
    for i in range(5):
        assert results[f"r{i}"] == {"status": "done", "url": f"https://reports/r{i}"}
    assert results["never-1"] == {"status": "timeout", "reportId": "never-1"}
    assert sorted(label for _, label, _ in entries(ledger)) == sorted(
        f"saved https://reports/r{i}" for i in range(5)
    )


def test_fan_in_waits_for_all_three_services(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    send(settings, {"name": "user/signup.completed", "data": {"userId": "u1"}})
    waits = settings.topic(f"steplog-{app_id}-waits")
    # the three waits are registered (only events accepted after that can match)
    wait_until(lambda: len([m for m in read_all(settings, waits) if m.value()]) >= 3, 30, "waits")
    send(
        settings,
        {"name": "crm/contact.added", "data": {"userId": "u2", "by": "wrong user"}},
        {"name": "crm/contact.added", "data": {"userId": "u1", "by": "crm"}},
        {"name": "email/welcome.sent", "data": {"userId": "u1", "by": "email"}},
    )
    time.sleep(0.5)
    assert not watch.matching(finished(fn(app_id, "orchestrate-onboarding")))
    send(settings, {"name": "subscription/trial.created", "data": {"userId": "u1", "by": "sub"}})
    [done] = watch.wait_for(finished(fn(app_id, "orchestrate-onboarding")), timeout=30)
    assert done.data["result"] == {
        "email": "email",
        "subscription": "sub",
        "crm": "crm",
        "done": "onboarded",
    }
    # completed waits are removed from the registry (tombstones)
    registry = read_all(settings, waits)
    latest = {m.key(): m.value() for m in registry}
    assert all(v is None for v in latest.values())


def test_several_runs_waiting_for_one_event_each_receive_it(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    send(settings, *({"name": "user/signup.completed", "data": {"userId": "same"}},) * 2)
    waits = settings.topic(f"steplog-{app_id}-waits")
    wait_until(lambda: len([m for m in read_all(settings, waits) if m.value()]) >= 6, 30, "waits")
    send(
        settings,
        {"name": "crm/contact.added", "data": {"userId": "same", "by": "crm"}},
        {"name": "email/welcome.sent", "data": {"userId": "same", "by": "email"}},
        {"name": "subscription/trial.created", "data": {"userId": "same", "by": "sub"}},
    )
    done = watch.wait_for(finished(fn(app_id, "orchestrate-onboarding")), count=2, timeout=30)
    assert len({e.data["run_id"] for e in done}) == 2
    assert all(e.data["result"]["crm"] == "crm" for e in done)


def test_invoke_returns_results_and_raises_failures_in_the_caller(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    send(
        settings,
        {"name": "test/checkout", "data": {"amount": 5}},
        {"name": "test/checkout", "data": {"amount": -1}},
        {"name": "test/ghost", "data": {}},
    )
    done = watch.wait_for(finished(fn(app_id, "checkout")), count=2, timeout=30)
    by_amount = {e.data["event"]["data"]["amount"]: e.data["result"] for e in done}
    assert by_amount[5] == {"paid": {"charged": 5}}
    assert "cannot charge -1" in by_amount[-1]["error"]
    children = watch.matching(lambda e: e.data.get("function_id") == fn(app_id, "charge"))
    assert {e.data["event"]["name"] for e in children} == {"inngest/function.invoked"}
    [ghost] = watch.wait_for(finished(fn(app_id, "call-ghost")), timeout=30)
    assert "no function 'no-such-function'" in ghost.data["result"]


def test_saga_runs_compensation_steps_after_a_failure(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    send(settings, {"name": "app/trip.booked", "data": {"tripId": "t1"}})
    [done] = watch.wait_for(finished(fn(app_id, "book-trip")), timeout=30)
    assert done.data["result"] == {"status": "rolled back", "error": "card declined"}
    assert [label for _, label, _ in entries(ledger)] == ["hotel", "undo hotel"]


def cancelled(function_id: str) -> Callable[[Event], bool]:
    return lambda e: (
        e.name == "inngest/function.cancelled" and e.data.get("function_id") == function_id
    )


def test_a_matching_event_cancels_the_run_between_steps(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    send(
        settings,
        {"name": "app/order.created", "data": {"orderId": "o1"}},
        {"name": "app/order.created", "data": {"orderId": "o2", "hold": "3s"}},
    )
    wait_until(lambda: len(entries(ledger, "first")) == 2, 30, "both runs' first step")
    send(settings, {"name": "app/order.cancelled", "data": {"orderId": "o1"}})
    [gone] = watch.wait_for(cancelled(fn(app_id, "cancellable")), timeout=30)
    assert gone.data["event"]["data"]["orderId"] == "o1"
    assert gone.data["error"]["message"] == "function cancelled"
    assert gone.id == f"{gone.data['run_id']}-cancelled"
    [kept] = watch.wait_for(finished(fn(app_id, "cancellable")), timeout=30)
    assert kept.data["event"]["data"]["orderId"] == "o2"
    assert [label for _, label, _ in entries(ledger, "second")] == ["second"]


def test_a_finish_timeout_cancels_the_run(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    send(settings, {"name": "test/slow", "data": {}})
    [gone] = watch.wait_for(cancelled(fn(app_id, "slow-finish")), timeout=30)
    assert gone.data["error"]["message"] == "function cancelled"
    assert [label for _, label, _ in entries(ledger)] == ["first"]


def test_runs_are_cancelled_by_the_http_api_and_the_cli(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    signed = settings.model_copy(update={"signing_key": SecretStr("s3cret")})
    send(
        settings,
        {"name": "app/order.created", "data": {"orderId": "api"}},
        {"name": "app/order.created", "data": {"orderId": "cli"}},
    )
    wait_until(lambda: len(entries(ledger, "first")) == 2, 30, "both runs' first step")
    api_run, cli_run = sorted(run_id for run_id, _, _ in entries(ledger, "first"))
    with Server(signed) as server:
        url = f"{server.url}/v1/runs/{api_run}"
        assert httpx.delete(url).status_code == 401
        bad = httpx.delete(f"{server.url}/v1/runs/nope", headers={"Authorization": "Bearer s3cret"})
        assert bad.status_code == 400 and "not a run id" in bad.json()["error"]
        ok = httpx.delete(url, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202 and ok.json() == {"run_id": api_run, "status": "cancelling"}
    out = steplog(settings, "runs", "cancel", cli_run)
    assert out.returncode == 0, out.stderr
    assert f"cancellation of {cli_run} requested" in out.stdout
    gone = watch.wait_for(cancelled(fn(app_id, "cancellable")), count=2, timeout=30)
    assert {e.data["run_id"] for e in gone} == {api_run, cli_run}
    assert not entries(ledger, "second")
    # cancelling again, or a run nobody knows, does nothing
    assert steplog(settings, "runs", "cancel", api_run).returncode == 0
    bad = steplog(settings, "runs", "cancel", "not-a-run")
    assert bad.returncode == 1 and "not a run id" in bad.stderr


def test_a_wait_survives_a_worker_crash_and_a_start_timeout_cancels_late_runs(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    w1 = WorkerProc(settings, TARGET, app_id, tmp_path / "w1", TEST_LEDGER=str(ledger))
    workers.append(w1.start())
    send(settings, {"name": "app/report.requested", "data": {"reportId": "manual-1"}})
    waits = settings.topic(f"steplog-{app_id}-waits")
    wait_until(lambda: [m for m in read_all(settings, waits) if m.value()], 30, "the wait")
    time.sleep(1.0)  # the run's waiting state reaches its changelog
    w1.kill()
    # while no worker runs: a reply, and an event whose run may start only within 3s
    send(
        settings,
        {"name": "app/report.generated", "data": {"reportId": "manual-1", "url": "u1"}},
        {"name": "test/prompt", "data": {}},
    )
    # late for sure: no worker runs until its start timeout has passed. (With 1 s and a
    # 1.5 s pause, the prompt run below missed its 1 s on a busy machine once.)
    time.sleep(3.5)
    w2 = WorkerProc(settings, TARGET, app_id, tmp_path / "w2", TEST_LEDGER=str(ledger))
    workers.append(w2.start())
    [done] = watch.wait_for(finished(fn(app_id, "process-report")), timeout=60)
    assert done.data["result"] == {"status": "done", "url": "u1"}
    [late] = watch.wait_for(cancelled(fn(app_id, "prompt-start")), timeout=30)
    assert late.data["error"]["message"] == "function cancelled"
    assert not entries(ledger, "ran")
    # a prompt one runs
    send(settings, {"name": "test/prompt", "data": {}})
    watch.wait_for(finished(fn(app_id, "prompt-start")), timeout=30)
    assert len(entries(ledger, "ran")) == 1


def test_waits_invokes_and_sleeps_work_across_two_workers(
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
    wait_group_stable(
        settings, f"steplog-{app_id}", 2, settings.topic(f"steplog-{app_id}-fn-process-report")
    )
    n = 12
    send(
        settings,
        *({"name": "app/report.requested", "data": {"reportId": f"r{i}"}} for i in range(n)),
        *({"name": "test/checkout", "data": {"amount": i}} for i in range(n)),
        *({"name": "test/nap", "data": {"seconds": 1}} for _ in range(n)),
    )
    reports = watch.wait_for(finished(fn(app_id, "process-report")), count=n, timeout=60)
    assert sorted(e.data["result"]["url"] for e in reports) == sorted(
        f"https://reports/r{i}" for i in range(n)
    )
    paid = watch.wait_for(finished(fn(app_id, "checkout")), count=n, timeout=60)
    assert sorted(e.data["result"]["paid"]["charged"] for e in paid) == list(range(n))
    naps = watch.wait_for(finished(fn(app_id, "nap")), count=n, timeout=60)
    assert len({e.data["run_id"] for e in naps}) == n
    # both workers ran steps (the runs' partitions are spread over them)
    pids = {line.rsplit(" ", 1)[1] for line in ledger_lines(ledger)}
    assert pids == {str(proc.proc.pid) for proc in workers if proc.proc}
