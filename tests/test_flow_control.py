"""Flow control on the real broker, checked from outside by what the steps record.

- "Max 3 notifications per user at once" (seed): 30 events for 3 users on two
  workers, one restarted while runs wait in the queue: never more than 3 of a
  user's steps at once, and the runs that waited start in their events' ``ts``
  order, not the order they arrived in.
- Pitfall #2, "Fan-Out Overwhelms External API → concurrency: { limit: 50 }": one
  event fans out to 2,000 sends of 0.5 s (and 10,000 of 50 ms) of a function with a
  key-less limit of 50, on three workers, the one running them restarted mid-way:
  never more than 50 at once across all of them, every send's run finished once,
  and (0.5 s sends) the overlap stays at the limit while runs wait (the mean overlap
  / limit is printed; 50 ms sends are bounded by the partition's pace instead).
- A throttle of 2 starts per 4 s per user (one every 2 s), two workers, one restarted
  while runs wait: every run starts once, each user's k-th run no sooner than 2 s
  after the one before, in ts order.
- A debounce of 2 s per user, two workers, one restarted between the edits: one run
  per user, with the last edit, no sooner than 2 s after it; an older edit sent late
  is ignored.
- A rate limit of 5 an hour per user, two workers, one restarted between two bursts:
  5 runs per user, the other events skipped (shown as skipped runs, no step ran).
- Singletons, two workers, the one running the key's run restarted: a second event
  of the key is skipped while the first run goes on elsewhere (``skip``), or cancels
  the run holding the key (``cancel``); once the run ends the key is free again.
- "Batch instead of fan-out" (seed): 10,000 events, sent in ten waves to three
  workers, one restarted mid-way, through ``Batch(max_size=100, timeout="5s")``
  key-less (one batch for the whole function, whatever partition an event came
  on) and keyed by user: every event in exactly one finished batch, at most 100
  per batch, a keyed batch holding one user's events only.
- An env-scoped limit (``scope="env"``): two functions share 2 slots of one key value,
  30 runs of each on two workers, one restarted mid-way: never more than 2 steps of
  the two functions at once, every run finished once.
- Priority: one job at a time (key-less limit of 1), two workers, the one holding
  the partition restarted while jobs wait: a VIP's job (priority 600 s) queued after
  five others (up to 10 s older) starts before them; they follow in ts order.
- Two limits at once (2 per user, 3 in all), two workers, one restarted mid-way: both
  hold from outside, every run finished once.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams import Client
from streams.cli.runs import read_history
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

TARGET = "tests.apps.flow:app"


@pytest.fixture
def app_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("flow")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Four partitions per topic, so that two or three workers each hold some."""
    return settings.model_copy(update={"partitions": 4})


class Cluster:
    """``n`` workers of the flow app, each with its own data dir, started and settled."""

    def __init__(
        self,
        settings: Settings,
        app_id: str,
        tmp_path: Path,
        workers: list[WorkerProc],
        n: int,
        fn_id: str,
        **env: str,
    ) -> None:
        self.settings = settings
        self.group = f"steplog-{app_id}"
        self.journal = settings.topic(f"steplog-{app_id}-fn-{fn_id}")
        self.pool = [
            WorkerProc(settings, TARGET, app_id, tmp_path / f"w{i}", **env) for i in range(n)
        ]
        for w in self.pool:
            workers.append(w.start())
        self.settle()

    def settle(self) -> None:
        wait_group_stable(self.settings, self.group, len(self.pool), self.journal)

    def restart(self, pid: int | None = None) -> dict[int, int]:
        """SIGTERM the worker with ``pid`` (else the first), start it again; returns
        {its old pid: when it had stopped (unix ms)}."""
        w = next(w for w in self.pool if pid is None or (w.proc and w.proc.pid == pid))
        assert w.proc is not None
        old = w.proc.pid
        w.stop()
        stopped = {old: int(time.time() * 1000)}
        w.start()
        return stopped


class Step:
    """One execution of a step body: who ran it, where, from when to when (unix ms)."""

    def __init__(self, run_id: str, label: str, pid: int, start: int, order: int) -> None:
        self.run_id, self.label, self.pid, self.start, self.order = run_id, label, pid, start, order
        self.end: int | None = None


def steps(ledger: Path, stopped: dict[int, int] | None = None) -> list[Step]:
    """The ledger's executions, paired start to end. One that never recorded its end
    (its process went away) counts as running until its process stopped."""
    open_: dict[tuple[str, int], Step] = {}
    out: list[Step] = []
    for order, line in enumerate(ledger_lines(ledger)):
        run_id, what, label, at, pid = line.split(" ")
        if what == "start":
            step = Step(run_id, label, int(pid), int(at), order)
            open_[(run_id, int(pid))] = step
            out.append(step)
        else:
            open_.pop((run_id, int(pid))).end = int(at)
    for step in open_.values():
        step.end = (stopped or {}).get(step.pid, 2**62)
    return out


def first_starts(execs: list[Step]) -> list[Step]:
    """Each label's first execution (one a restart cut off ran again later), in the
    order they started."""
    first: dict[str, Step] = {}
    for s in sorted(execs, key=lambda s: s.order):
        first.setdefault(s.label, s)
    return list(first.values())


def overlap(execs: list[Step]) -> tuple[int, list[tuple[int, int]]]:
    """The most executions at once, and the count after each change: (ms, count).
    At one ms an end goes before a start (a slot handed over within the ms)."""
    changes = sorted([(s.start, 1) for s in execs] + [(s.end or 0, -1) for s in execs])
    running, most, curve = 0, 0, []
    for at, delta in changes:
        running += delta
        most = max(most, running)
        curve.append((at, running))
    return most, curve


def mean_overlap(curve: list[tuple[int, int]], begin: int, end: int) -> float:
    """The time-weighted mean of the count between ``begin`` and ``end`` (ms)."""
    total, last_at, last = 0.0, begin, 0
    for at, running in curve:
        if at > begin:
            total += last * (min(at, end) - last_at)
            last_at = min(at, end)
        last = running
        if at >= end:
            break
    total += last * max(end - last_at, 0)
    return total / max(end - begin, 1)


def test_max_3_notifications_per_user_at_once_in_ts_order_across_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    gate = tmp_path / "gate"
    env = {"TEST_LEDGER": str(ledger), "TEST_GATE": str(gate)}
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "notify", **env)
    slug = f"{app_id}-notify"
    # Per user: three events start runs that hold their slots; seven more arrive in
    # a shuffled order, their ts in another - the queue must follow ts.
    rng = random.Random(9)
    base = int(time.time() * 1000) - 60_000
    events, queued_order = [], {}
    for user in ("ann", "bob", "cy"):
        ts = [base + 1000 * i for i in range(10)]
        later = ts[3:]
        rng.shuffle(later)
        arrival = ts[:3] + later
        for seq, at in enumerate(arrival):
            events.append(
                {"name": "app/notification.send", "ts": at, "data": {"user": user, "seq": seq}}
            )
        by_ts = sorted(range(3, 10), key=lambda s: arrival[s])
        queued_order[user] = [f"{user}:{s}" for s in by_ts]
    with Client(settings) as client:
        # (events of one user may reach the function through different partitions of
        # `events`: the first three go first, so that they are the ones that run)
        client.send([e for e in events if e["data"]["seq"] < 3])
        wait_until(lambda: len(steps(ledger)) == 9, 60, "the first 3 runs of each user")
        client.send([e for e in events if e["data"]["seq"] >= 3])

    def queued() -> int:
        runs = read_history(settings, app_id)
        return sum(1 for r in runs.values() if r["status"] == "queued")

    wait_until(lambda: queued() == 21, 60, "21 runs queued behind the first 3 of each user")
    # A restart while they wait: the queue and the held slots survive it.
    first = steps(ledger)[0]
    stopped = cluster.restart(first.pid)
    cluster.settle()
    gate_at = int(time.time() * 1000)
    gate.touch()
    done = wait_distinct(watch, finished(slug), 30, timeout=90)
    assert sorted(e.data["result"] for e in done) == sorted(
        f"{e['data']['user']}:{e['data']['seq']}" for e in events
    )
    assert len({e.data["run_id"] for e in done}) == 30  # one run per event
    execs = steps(ledger, stopped)
    # The stopped worker's held steps were cut off and ran again on the new owner.
    cut = {s.run_id for s in execs if s.pid == first.pid}
    assert cut and all(any(s.run_id == r and s.pid != first.pid for s in execs) for r in cut)
    by_user: dict[str, list[Step]] = defaultdict(list)
    for s in execs:
        by_user[s.label.split(":")[0]].append(s)
    for user, mine in by_user.items():
        most, _ = overlap(mine)
        assert most <= 3, f"{user}: {most} steps at once"
        started = [s for s in first_starts(mine) if int(s.label.split(":")[1]) >= 3]
        assert [s.label for s in started] == queued_order[user], f"{user} out of ts order"
        assert all(s.start >= gate_at for s in started)  # none ran before a slot was free


@pytest.mark.parametrize(
    ("total", "step_s"),
    [
        # Sends of 0.5 s: the limit, not the partition's pace, bounds them (ideal 20 s).
        (2000, "0.5"),
        # Pitfall #2 as the seed tells it: 10,000 sends of 50 ms.
        (10_000, "0.05"),
    ],
    ids=["2000-sends-of-500ms", "10000-sends-of-50ms"],
)
def test_a_key_less_limit_of_50_holds_across_three_workers_and_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
    total: int,
    step_s: str,
) -> None:
    limit = 50
    env = {"TEST_LEDGER": str(ledger), "TEST_STEP_S": step_s}
    cluster = Cluster(settings, app_id, tmp_path, workers, 3, "email-send", **env)
    slug = f"{app_id}-email-send"
    with Client(settings) as client:
        client.send({"name": "app/campaign.started", "data": {"emails": total}})
    # Mid-way, the worker running the sends is restarted (SIGTERM, then started again).
    wait_until(lambda: len(ledger_lines(ledger)) >= total // 2, 120, "half of the sends")
    first = steps(ledger)[0]
    stopped = cluster.restart(first.pid)
    done = wait_distinct(watch, finished(slug), total, timeout=600)
    assert sorted(e.data["result"] for e in done) == list(range(total))
    assert len({e.data["run_id"] for e in done}) == total  # one run per send
    assert len(done) == total  # and each finished once
    execs = steps(ledger, stopped)
    assert {s.label for s in execs} == {str(n) for n in range(total)}
    most, curve = overlap(execs)
    assert most <= limit, f"{most} sends at once, over the limit of {limit}"
    # Saturation: from the first send until the last one started, runs were waiting.
    begin, end = min(s.start for s in execs), max(s.start for s in execs)
    mean = mean_overlap(curve, begin, end)
    print(
        f"key-less limit {limit}: {total} sends, {len(execs)} step executions, "
        f"max overlap {most}, mean overlap / limit {mean / limit:.2f} over {end - begin} ms"
    )


def history_of(settings: Settings, app_id: str, fn_id: str) -> list[dict[str, Any]]:
    """The latest history record of each run of ``fn_id``."""
    slug = f"{app_id}-{fn_id}"
    return [r for r in read_history(settings, app_id).values() if r["function_id"] == slug]


def seq_of(run: dict[str, Any]) -> int:
    return int(run["body"]["event"]["data"]["seq"])


def test_a_rate_limit_skips_the_events_over_it_across_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "digest", TEST_LEDGER=str(ledger))

    def ask(seqs: range) -> None:
        with Client(settings) as client:
            client.send(
                [
                    {"name": "app/digest.requested", "data": {"user": user, "seq": seq}}
                    for user in ("ann", "bob")
                    for seq in seqs
                ]
            )

    def ended(n: int) -> Callable[[], bool]:
        return lambda: (
            sum(
                r["status"] in ("completed", "skipped")
                for r in history_of(settings, app_id, "digest")
            )
            == n
        )

    ask(range(6))
    wait_until(ended(12), 60, "12 digest runs completed or skipped")
    cluster.restart()  # the limit's state moves with its partitions
    cluster.settle()
    ask(range(6, 12))
    wait_until(ended(24), 60, "24 digest runs completed or skipped")
    runs = history_of(settings, app_id, "digest")
    for user in ("ann", "bob"):
        mine = [r for r in runs if r["body"]["event"]["data"]["user"] == user]
        done = [seq_of(r) for r in mine if r["status"] == "completed"]
        skipped = [r for r in mine if r["status"] == "skipped"]
        assert len(done) == 5 and all(seq < 6 for seq in done), f"{user}: {sorted(done)}"
        assert len(skipped) == 7
        assert all("over its rate limit" in r["body"]["error"]["message"] for r in skipped)
        ran = {s.label for s in steps(ledger) if s.label.startswith(f"{user}:")}
        assert ran == {f"{user}:{seq}" for seq in done}  # a skipped event ran no step
    assert len(wait_distinct(watch, finished(f"{app_id}-digest"), 10)) == 10


def test_a_singleton_skips_or_cancels_while_a_run_holds_its_key_across_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    gate = tmp_path / "gate"
    env = {"TEST_LEDGER": str(ledger), "TEST_GATE": str(gate)}
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "sync", **env)

    def send(name: str, account: str, seq: int) -> None:
        with Client(settings) as client:
            client.send({"name": name, "data": {"account": account, "seq": seq}})

    def started(label: str) -> Step:
        return wait_until(
            lambda: next((s for s in steps(ledger) if s.label == label), None), 60, label
        )

    send("app/account.sync", "acme", 0)
    first = started("0")
    # The worker running it stops: the run goes on on the other one, and holds the key.
    cluster.restart(first.pid)
    cluster.settle()
    send("app/account.sync", "acme", 1)  # skipped: seq 0 is not finished
    send("app/account.sync", "other", 2)  # another key: runs
    started("2")
    wait_until(
        lambda: (
            [r["status"] for r in history_of(settings, app_id, "sync") if seq_of(r) == 1]
            == ["skipped"]
        ),
        60,
        "the second sync of acme skipped",
    )
    send("app/account.resync", "acme", 10)
    started("10")
    send("app/account.resync", "acme", 11)  # cancels seq 10, then runs
    [cancelled] = watch.wait_for(
        lambda e: (
            e.name == "inngest/function.cancelled" and e.data["function_id"] == f"{app_id}-resync"
        ),
        timeout=60,
    )
    assert cancelled.data["event"]["data"]["seq"] == 10
    started("11")
    gate.touch()
    done = wait_distinct(watch, finished(f"{app_id}-sync"), 2, timeout=60)
    assert sorted(e.data["result"] for e in done) == ["0", "2"]
    send("app/account.sync", "acme", 3)  # the key is free again
    done = wait_distinct(watch, finished(f"{app_id}-sync"), 3, timeout=60)
    assert sorted(e.data["result"] for e in done) == ["0", "2", "3"]
    [resynced] = wait_distinct(watch, finished(f"{app_id}-resync"), 1, timeout=60)
    assert resynced.data["result"] == "11"
    # The first sync ran again on the other worker, and never two syncs of acme at once.
    assert len({s.pid for s in steps(ledger) if s.label == "0"}) >= 2  # moved once or twice
    acme = [s for s in steps(ledger) if s.label in ("0", "1", "3")]
    assert overlap(acme)[0] == 1


def test_a_throttle_spreads_the_starts_of_a_key_across_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "paced", TEST_LEDGER=str(ledger))
    base = int(time.time() * 1000) - 60_000
    with Client(settings) as client:
        client.send(
            [
                {"name": "app/report.paced", "ts": base + seq, "data": {"user": u, "seq": seq}}
                for u in ("ann", "bob")
                for seq in range(5)
            ]
        )
    wait_until(lambda: len(steps(ledger)) >= 4, 60, "two starts per user")
    cluster.restart()  # the queue and the throttle's state move with the partitions
    done = wait_distinct(watch, finished(f"{app_id}-paced"), 10, timeout=90)
    assert len({e.data["run_id"] for e in done}) == 10
    for user in ("ann", "bob"):
        first: dict[str, Step] = {}
        for s in steps(ledger):
            if s.label.startswith(f"{user}:"):
                first.setdefault(s.label, s)
        starts = sorted(first.values(), key=lambda s: s.start)
        assert sorted(s.label for s in starts) == [f"{user}:{n}" for n in range(5)]
        # The first to arrive started; the others waited, and went in ts order.
        waited = [s.label for s in starts[1:]]
        assert waited == sorted(waited, key=lambda label: int(label.split(":")[1]))
        # The throttle takes its place when the lifecycle starts the run, a few ms
        # before the step's body notes it: 200 ms of slack for that.
        t0 = starts[0].start
        for k, s in enumerate(starts):
            assert s.start >= t0 + 2000 * k - 200, f"{user}: start {k} at {s.start - t0} ms"


def test_a_debounce_runs_once_with_the_last_event_across_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "reindex", TEST_LEDGER=str(ledger))
    base = int(time.time() * 1000)

    def edit(user: str, seq: int) -> int:
        with Client(settings) as client:
            client.send(
                {"name": "app/profile.edited", "ts": base + seq, "data": {"user": user, "seq": seq}}
            )
        return int(time.time() * 1000)

    edit("bob", 0)
    for seq in range(3):
        edit("ann", seq)
        time.sleep(0.5)
    cluster.restart()  # the held run and its timer move with the partition
    last = edit("ann", 3)
    edit("ann", -1)  # older than the held one: ignored
    done = wait_distinct(watch, finished(f"{app_id}-reindex"), 2, timeout=60)
    assert sorted(e.data["result"] for e in done) == ["ann:3", "bob:0"]
    [ann] = [s for s in steps(ledger) if s.label.startswith("ann:")]
    assert ann.start >= last + 2000 - 200  # the wait restarted with the last edit
    wait_until(
        lambda: (
            sorted(r["status"] for r in history_of(settings, app_id, "reindex"))
            == ["completed"] * 2 + ["skipped"] * 4
        ),
        30,
        "the replaced and the ignored edits shown as skipped runs",
    )


def test_batches_hold_every_event_once_across_three_workers_and_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    total, waves, users = 10_000, 10, 7
    cluster = Cluster(settings, app_id, tmp_path, workers, 3, "rows", TEST_LEDGER=str(ledger))
    stopped: dict[int, int] = {}
    with Client(settings) as client:
        for wave in range(waves):
            per = total // waves
            rows = range(wave * per, (wave + 1) * per)
            client.send(
                [{"name": "app/row.added", "data": {"n": n, "user": f"u{n % users}"}} for n in rows]
            )
            if wave == waves // 2:  # the worker that ran a batch goes away and comes back
                wait_until(lambda: bool(ledger_lines(ledger)), 60, "a first batch")
                stopped = cluster.restart(steps(ledger)[0].pid)
    for fn_id in ("rows", "rows-by-user"):
        slug = f"{app_id}-{fn_id}"

        def batches(slug: str = slug) -> dict[str, Any]:
            return {e.data["run_id"]: e for e in watch.matching(finished(slug))}

        wait_until(
            lambda: sum(len(e.data["result"]) for e in batches().values()) >= total,
            180,
            f"{fn_id}: batches holding all {total} events",
        )
        done = batches()
        rows = [n for e in done.values() for n in e.data["result"]]
        assert sorted(rows) == list(range(total)), f"{fn_id}: an event lost or in two batches"
        sizes = sorted(len(e.data["result"]) for e in done.values())
        assert max(sizes) <= 100
        for e in done.values():  # function.finished carries the batch's events
            assert [x["data"]["n"] for x in e.data["events"]] == e.data["result"]
            assert e.data["event"] == e.data["events"][0]
        if fn_id == "rows-by-user":
            for e in done.values():
                result = e.data["result"]
                assert len({n % users for n in result}) == 1, f"a batch of two users: {result}"
        full = sum(1 for n in sizes if n == 100)
        print(
            f"{fn_id}: {len(done)} batches for {total} events, {full} full, "
            f"smallest {sizes[0]} (a restart at {sorted(stopped.values())})"
        )
    # Key-less: one batch for the whole function. The events came on every partition
    # of events; only the batches a timeout ended (the last of a wave, the one open at
    # the restart) are not full.
    rows_done = {e.data["run_id"]: e for e in watch.matching(finished(f"{app_id}-rows"))}
    partial = [e for e in rows_done.values() if len(e.data["result"]) < 100]
    assert len(partial) <= waves + 2, f"{len(partial)} partial batches"


def test_an_env_limit_holds_across_two_functions_two_workers_and_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    per, limit = 30, 2
    env = {"TEST_LEDGER": str(ledger), "TEST_STEP_S": "0.2"}
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "summarize", **env)
    with Client(settings) as client:
        client.send(
            [
                {"name": f"app/{fn_id}.requested", "data": {"n": n}}
                for n in range(per)
                for fn_id in ("summarize", "translate")
            ]
        )
    wait_until(lambda: len(ledger_lines(ledger)) >= per, 120, "a third of the calls")
    stopped = cluster.restart(steps(ledger)[0].pid)
    for fn_id in ("summarize", "translate"):
        done = wait_distinct(watch, finished(f"{app_id}-{fn_id}"), per, timeout=180)
        assert sorted(e.data["result"] for e in done) == sorted(
            f"{app_id}-{fn_id}:{n}" for n in range(per)
        )
        assert len({e.data["run_id"] for e in done}) == per
    execs = steps(ledger, stopped)
    most, curve = overlap(execs)
    assert most <= limit, f"{most} calls of the two functions at once, over {limit}"
    begin, end = min(s.start for s in execs), max(s.start for s in execs)
    mean = mean_overlap(curve, begin, end)
    print(
        f"env limit {limit} over two functions: {len(execs)} step executions, "
        f"max overlap {most}, mean overlap / limit {mean / limit:.2f} over {end - begin} ms"
    )


def test_priority_moves_a_queued_run_ahead_across_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    gate = tmp_path / "gate"
    env = {"TEST_LEDGER": str(ledger), "TEST_GATE": str(gate)}
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "jobs", **env)
    base = int(time.time() * 1000) - 60_000

    def job(seq: int, ts: int, vip: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": seq, **({"vip": True} if vip else {})}
        return {"name": "app/job.queued", "ts": ts, "data": data}

    with Client(settings) as client:
        client.send(job(0, base))  # holds the one slot until the gate opens
        wait_until(lambda: len(steps(ledger)) == 1, 60, "the first job")
        client.send([job(seq, base + 1000 * seq) for seq in range(1, 6)])
        client.send(job(6, base + 10_000, vip=True))

    def queued() -> int:
        return sum(1 for r in read_history(settings, app_id).values() if r["status"] == "queued")

    wait_until(lambda: queued() == 6, 60, "six jobs queued behind the first")
    stopped = cluster.restart(steps(ledger)[0].pid)
    cluster.settle()
    gate.touch()
    done = wait_distinct(watch, finished(f"{app_id}-jobs"), 7, timeout=90)
    assert sorted(e.data["result"] for e in done) == [str(n) for n in range(7)]
    order = [s.label for s in first_starts(steps(ledger, stopped))]
    assert order == ["0", "6", "1", "2", "3", "4", "5"], order


def test_two_limits_at_once_both_hold_across_a_restart(
    settings: Settings,
    app_id: str,
    tmp_path: Path,
    ledger: Path,
    watch: Watch,
    workers: list[WorkerProc],
) -> None:
    users, per = 4, 6
    env = {"TEST_LEDGER": str(ledger), "TEST_STEP_S": "0.2"}
    cluster = Cluster(settings, app_id, tmp_path, workers, 2, "export", **env)
    with Client(settings) as client:
        client.send(
            [
                {"name": "app/export.requested", "data": {"user": f"u{u}", "seq": seq}}
                for seq in range(per)
                for u in range(users)
            ]
        )
    wait_until(lambda: len(ledger_lines(ledger)) >= 12, 60, "the first exports")
    stopped = cluster.restart(steps(ledger)[0].pid)
    done = wait_distinct(watch, finished(f"{app_id}-export"), users * per, timeout=120)
    assert sorted(e.data["result"] for e in done) == sorted(
        f"u{u}:{seq}" for u in range(users) for seq in range(per)
    )
    execs = steps(ledger, stopped)
    most, _ = overlap(execs)
    assert most <= 3, f"{most} exports at once, over the limit of 3 in all"
    for u in range(users):
        mine, _ = overlap([s for s in execs if s.label.startswith(f"u{u}:")])
        assert mine <= 2, f"u{u}: {mine} exports at once, over its limit of 2"
