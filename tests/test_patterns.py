"""End to end on the real broker: the Command, Event (fan-out), Choreography and
dead-letter patterns, system events, run history, retries and on_failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams import Client, decode
from streams.cli.runs import read_history
from streams.settings import Settings
from tests.worker_harness import Watch, WorkerProc, finished

pytestmark = pytest.mark.kafka


@pytest.fixture
def app_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("pat")


@pytest.fixture
def worker(settings: Settings, app_id: str, tmp_path: Path, ledger: Path) -> Iterator[WorkerProc]:
    proc = WorkerProc(
        settings, "tests.apps.patterns:app", app_id, tmp_path / "w1", TEST_LEDGER=str(ledger)
    ).start()
    yield proc
    proc.stop()


def slug(app_id: str, fn_id: str) -> str:
    return f"{app_id}-{fn_id}"


def test_command_and_fan_out(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    with Client(settings) as client:
        client.send({"name": "app/auth.sign-up", "data": {"email": "a@b.c"}})
        [event_id] = client.send({"name": "app/user.signed-up", "data": {"userId": "u1"}})
    [cmd] = watch.wait_for(finished(slug(app_id, "send-welcome-email")))
    assert cmd.data["result"] == {"sent": "a@b.c"}
    [w] = watch.wait_for(finished(slug(app_id, "welcome")))
    [r] = watch.wait_for(finished(slug(app_id, "record-signup")))
    assert w.data["result"] == "welcomed u1" and r.data["result"] == "recorded u1"
    assert w.data["event"]["internal_id"] == event_id
    # one handler failing does not affect the others
    [f] = watch.wait_for(finished(slug(app_id, "fragile"), "failed"))
    assert f.data["error"]["message"] == "the CRM is down for good"
    [failed] = watch.wait_for(lambda e: e.name == "inngest/function.failed")
    assert failed.id == f"{failed.data['run_id']}-failed"
    assert w.data["run_id"] != r.data["run_id"]


def test_choreography_chains_send_event(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str, ledger: Path
) -> None:
    with Client(settings) as client:
        client.send({"name": "shop/order.placed", "data": {"orderId": "o-7"}})
    [shipped] = watch.wait_for(finished(slug(app_id, "ship")))
    assert shipped.data["result"] == "shipped o-7"
    assert ledger.read_text().splitlines() == ["reserve o-7"]


def test_undecodable_records_go_to_the_dead_letter_topic(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    dlq = Watch(settings, "events.dlq")
    try:
        producer = Producer(settings.kafka_config())
        producer.produce(settings.topic("events"), b"\xc3\x01garbage", key=b"k1")
        producer.produce(settings.topic("events"), b'{"data": {}}', key=b"k2")
        # a plain JSON producer works too (no id: derived from the key)
        producer.produce(
            settings.topic("events"),
            b'{"name": "app/auth.sign-up", "data": {"email": "json@x"}}',
            key=b"k3",
        )
        producer.flush(10)
        dlq.wait_for(lambda e: True, count=0, timeout=1)
        deadline_msgs = _wait_raw(dlq, 2)
        by_key = {m.key(): m for m in deadline_msgs}
        assert by_key[b"k1"].value() == b"\xc3\x01garbage"  # original bytes, unchanged
        headers = dict(by_key[b"k2"].headers())
        assert b"name" in headers["steplog.error"]
        assert headers["steplog.source.topic"] == settings.topic("events").encode()
        assert headers["steplog.source.offset"] == b"1"
        [ok] = watch.wait_for(finished(slug(app_id, "send-welcome-email")))
        assert ok.data["event"]["id"] == "k3"
    finally:
        dlq.close()


def _wait_raw(w: Watch, count: int, timeout: float = 30.0) -> list:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(w.raw) < count:
        time.sleep(0.05)
    assert len(w.raw) >= count, f"{len(w.raw)} dead letters"
    return list(w.raw)


def test_retries_use_durable_timers_and_step_error_reaches_user_code(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    with Client(settings) as client:
        client.send([{"name": "test/flaky"}, {"name": "test/gives-up"}])
    [ok] = watch.wait_for(finished(slug(app_id, "flaky")), timeout=60)
    assert ok.data["result"] == "ok after 3 attempts"
    [comp] = watch.wait_for(finished(slug(app_id, "gives-up")), timeout=60)
    assert comp.data["result"] == "compensated: nope"


def test_on_failure_handler_and_plain_consumer_decode(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    with Client(settings) as client:
        client.send({"name": "test/fails"})
    [handled] = watch.wait_for(finished(slug(app_id, "fails-failure")))
    assert handled.data["result"] == "handled broken on purpose"
    # a plain confluent-kafka consumer decodes inngest.function.failed with one call
    raw = [m for m in watch.raw if m.topic() == settings.topic("inngest.function.failed")]
    event = decode(raw[0].value())
    assert event.name == "inngest/function.failed"
    assert event.data["function_id"] == slug(app_id, "fails")
    assert event.data["error"]["name"] == "NonRetriableError"


def test_run_history_lists_runs_with_their_steps(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    with Client(settings) as client:
        client.send({"name": "test/multi", "data": {"steps": 3, "step_seconds": 0.01}})
    [done] = watch.wait_for(finished(slug(app_id, "multi-step")))
    runs = read_history(settings, app_id)
    run = runs[done.data["run_id"]]
    assert run["status"] == "completed" and run["function_id"] == slug(app_id, "multi-step")
    names = [s["name"] for s in run["body"]["steps"]]
    assert names == ["step-0", "step-1", "step-2"]
    assert all(s["ended_ms"] >= s["started_ms"] > 0 for s in run["body"]["steps"])
    assert run["body"]["result"] == 3


def test_event_id_dedup_and_idempotency_key(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    with Client(settings) as client:
        first = client.send(
            {"name": "app/auth.sign-up", "id": "signup-1", "data": {"email": "x@y"}}
        )
        again = client.send(
            {"name": "app/auth.sign-up", "id": "signup-1", "data": {"email": "x@y"}}
        )
        assert first != again  # each accepted event has its own internal id
        client.send(
            [
                {"name": "test/idem", "data": {"userId": "u9"}},
                {"name": "test/idem", "data": {"userId": "u9"}},
                {"name": "test/idem", "data": {"userId": "u10"}},
            ]
        )
        client.send({"name": "test/multi", "data": {"steps": 1, "step_seconds": 0}})
    # the last event finishing after the others shows they were all routed
    watch.wait_for(finished(slug(app_id, "multi-step")))
    watch.wait_for(finished(slug(app_id, "idempotent")), count=2)
    watch.wait_for(finished(slug(app_id, "send-welcome-email")))
    import time

    time.sleep(2)
    assert len(watch.matching(finished(slug(app_id, "send-welcome-email")))) == 1
    results = sorted(e.data["result"] for e in watch.matching(finished(slug(app_id, "idempotent"))))
    assert results == ["charged u10", "charged u9"]


def test_large_outputs_and_parallel_steps(
    worker: WorkerProc, watch: Watch, settings: Settings, app_id: str
) -> None:
    with Client(settings) as client:
        client.send([{"name": "test/big"}, {"name": "test/parallel"}])
    [big] = watch.wait_for(finished(slug(app_id, "big-output")))
    assert big.data["result"] == 3 * 1024 * 1024
    [par] = watch.wait_for(finished(slug(app_id, "fan-in")))
    assert par.data["result"] == [0, 1, 4, 9]
