"""Cron triggers end to end: real broker, real worker processes, a fast clock.

The workers run ``tests/apps/cron_app.py``, whose clock runs ``speed`` times
faster than real time from an anchor shared by every worker of a test, so
``* * * * *`` ticks every second (speed 60) and ``0 * * * *`` every two
seconds (speed 1800).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ulid import ULID

from streams import Client, Event
from streams.settings import Settings
from tests.worker_harness import (
    Watch,
    WorkerProc,
    finished,
    ledger_lines,
    wait_distinct,
    wait_group_stable,
    wait_until,
)

pytestmark = pytest.mark.kafka

TARGET = "tests.apps.cron_app:app"
MINUTE = 60_000


def cron_env(speed: float, **extra: str) -> dict[str, str]:
    return {
        "TEST_CRON_SPEED": str(speed),
        "TEST_CRON_ANCHOR_MS": str(time.time_ns() // 1_000_000),
        **extra,
    }


def parse(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def runs_by_tick(watch: Watch, fn: str) -> dict[int, set[str]]:
    """scheduledAt (ms) -> run ids of the finished runs of ``fn``."""
    out: dict[int, set[str]] = {}
    for e in watch.matching(finished(fn)):
        tick = parse(e.data["event"]["data"]["scheduledAt"])
        out.setdefault(tick, set()).add(e.data["run_id"])
    return out


def ticks_of(watch: Watch, fn: str) -> list[int]:
    by_tick = runs_by_tick(watch, fn)
    assert all(len(ids) == 1 for ids in by_tick.values()), f"a tick started 2 runs: {by_tick}"
    return sorted(by_tick)


def gaps(ticks: list[int]) -> set[int]:
    return {b - a for a, b in itertools.pairwise(ticks)}


def check_scheduled_event(e: Event, cron: str) -> None:
    trigger = e.data["event"]
    data = trigger["data"]
    assert trigger["name"] == "inngest/scheduled.timer"
    assert data["cron"] == cron
    assert trigger["id"] == data["scheduledAt"]
    tick = parse(data["scheduledAt"])
    assert tick % MINUTE == 0
    assert parse(data["fireAt"]) >= tick
    assert ULID.from_str(e.data["run_id"]).milliseconds == tick


def wait_ticks(watch: Watch, fn: str, count: int, timeout: float = 30.0) -> list[int]:
    wait_until(lambda: len(runs_by_tick(watch, fn)) >= count, timeout, f"{count} ticks of {fn}")
    return ticks_of(watch, fn)


def test_each_tick_starts_one_run_with_two_workers(
    settings: Settings,
    watch: Watch,
    workers: list[WorkerProc],
    ledger: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    app_id = unique_name("cron")
    fn = f"{app_id}-every-minute"
    env = cron_env(60, TEST_LEDGER=str(ledger))
    for name in ("w1", "w2"):
        workers.append(WorkerProc(settings, TARGET, app_id, tmp_path / name, **env))
    for w in workers:
        w.start(wait=False)
    for w in workers:
        w.wait_ready()
    cron_topic = settings.topic(f"steplog-{app_id}-cron")
    wait_group_stable(settings, f"steplog-{app_id}", 2, cron_topic)

    # Once the group is stable, every minute ticks once.
    seen = len(runs_by_tick(watch, fn))
    ticks = wait_ticks(watch, fn, seen + 6)
    steady = ticks[seen + 1 :]
    assert gaps(steady) == {MINUTE}
    for e in watch.matching(finished(fn)):
        check_scheduled_event(e, "* * * * *")
        assert e.data["result"] == {"scheduledAt": e.data["event"]["data"]["scheduledAt"]}

    # A function with a cron and an event trigger runs for both.
    with Client(settings) as client:
        client.send({"name": "test/cron.now", "data": {"x": 1}})
    mixed = f"{app_id}-mixed"
    wait_until(
        lambda: (
            {e.data["result"]["name"] for e in watch.matching(finished(mixed))}
            >= {"test/cron.now", "inngest/scheduled.timer"}
        ),
        30,
        "runs of the mixed function from its event and its cron",
    )

    # Kill one worker: the other takes its partitions over; still one run per tick.
    workers[0].kill()
    before = len(runs_by_tick(watch, fn))

    def ticking_again() -> bool:
        # runs of different ticks live on different partitions and may finish out of
        # order (one partition may still be recovering): wait for two in a row
        ticks = ticks_of(watch, fn)
        return len(ticks) >= before + 4 and ticks[-1] - ticks[-2] == MINUTE

    wait_until(ticking_again, 45, "consecutive ticks after the kill")
    # Each tick's step ran in exactly one worker process.
    lines = [line.split() for line in ledger_lines(ledger)]
    per_tick: dict[str, int] = {}
    for _, scheduled, _pid in lines:
        per_tick[scheduled] = per_tick.get(scheduled, 0) + 1
    finished_ticks = {e.data["event"]["data"]["scheduledAt"] for e in watch.matching(finished(fn))}
    # (a run in flight when its worker was SIGKILLed may run its step again: allow that one)
    repeated = [t for t, n in per_tick.items() if n > 1]
    assert len(repeated) <= 1, per_tick
    assert finished_ticks <= set(per_tick)


def test_missed_ticks_fire_once_after_every_worker_was_down(
    settings: Settings,
    watch: Watch,
    workers: list[WorkerProc],
    ledger: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    app_id = unique_name("cron")
    fn = f"{app_id}-every-minute"
    env = cron_env(60, TEST_LEDGER=str(ledger))
    first = WorkerProc(settings, TARGET, app_id, tmp_path / "w1", **env)
    workers.append(first)
    first.start()
    before = wait_ticks(watch, fn, 3)
    first.stop()
    last = ticks_of(watch, fn)[-1]
    time.sleep(5)  # about 5 virtual minutes with no worker at all

    # A new worker with an empty data dir: its table comes back from the changelog.
    second = WorkerProc(settings, TARGET, app_id, tmp_path / "w2", **env)
    workers.append(second)
    second.start()
    ticks = wait_ticks(watch, fn, len(ticks_of(watch, fn)) + 4)
    assert ticks[: len(before)] == before
    fire = {
        parse(e.data["event"]["data"]["scheduledAt"]): parse(e.data["event"]["data"]["fireAt"])
        for e in watch.matching(finished(fn))
    }
    resumed = [t for t in ticks if t > last]
    # The first missed tick fires once, late; the others missed never fire. (A tick
    # fired just before the stop may start its run only after the restart: not late.)
    late = [t for t in resumed if fire[t] - t >= 4 * MINUTE]
    assert len(late) == 1, [(t, fire[t] - t) for t in resumed]
    catch_up = late[0]
    assert catch_up in (last + MINUTE, last + 2 * MINUTE)
    assert resumed.index(catch_up) == (catch_up - last) // MINUTE - 1
    after = resumed[resumed.index(catch_up) + 1 :]
    assert after[0] == (fire[catch_up] // MINUTE + 1) * MINUTE  # the first tick after it fired
    assert gaps(after) == {MINUTE}
    for e in watch.matching(finished(fn)):
        check_scheduled_event(e, "* * * * *")
    # One execution per tick: clean stops re-run nothing.
    scheduled = [line.split()[1] for line in ledger_lines(ledger)]
    assert len(scheduled) == len(set(scheduled))


def test_hourly_batch_cron_fans_out_with_send_event(
    settings: Settings,
    watch: Watch,
    workers: list[WorkerProc],
    ledger: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    """Seed pattern "Batch Processing": an hourly cron loads pending work and fans it out."""
    app_id = unique_name("cronbatch")
    db = tmp_path / "db"
    (db / "pending").mkdir(parents=True)
    for i in range(1, 6):
        (db / "pending" / f"n{i}").touch()
    env = cron_env(1800, TEST_LEDGER=str(ledger), TEST_CRON_DB=str(db))
    worker = WorkerProc(settings, "tests.apps.cron_app:batch_app", app_id, tmp_path / "w1", **env)
    workers.append(worker)
    worker.start()

    send = f"{app_id}-send-notification"
    batch = f"{app_id}-batch-notifications"
    wait_distinct(watch, finished(send), 5, timeout=30)
    [loaded] = wait_until(
        lambda: [e for e in watch.matching(finished(batch)) if e.data["result"]["sent"] == 5],
        20,
        "the first batch run",
    )
    # The next hours find nothing pending.
    wait_until(
        lambda: any(e.data["result"]["sent"] == 0 for e in watch.matching(finished(batch))),
        20,
        "an hourly run with nothing pending",
    )
    # New work is picked up by the next hour.
    for name in ("n6", "n7"):
        (db / "pending" / name).touch()
    wait_distinct(watch, finished(send), 7, timeout=30)

    sent = sorted(line for line in ledger_lines(ledger))
    assert sent == sorted(f"sent n{i}" for i in range(1, 8))  # each exactly once
    assert sorted(p.name for p in (db / "sent").iterdir()) == [f"n{i}" for i in range(1, 8)]
    hours = ticks_of(watch, batch)
    assert all(t % (60 * MINUTE) == 0 for t in hours)
    check_scheduled_event(loaded, "0 * * * *")
    # The fanned-out events carry ids derived from the batch run (no duplicates).
    events = [e.data["event"] for e in watch.matching(finished(send))]
    assert len({e["id"] for e in events}) == len({e["data"]["id"] for e in events}) == 7
    assert datetime.fromtimestamp(hours[0] / 1000, UTC).minute == 0
