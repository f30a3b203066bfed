"""Flow control in the pure lifecycle: who starts, who queues, who goes next, who is
skipped (concurrency limits, priority, throttles, rate limits, singletons, debounce).

The partition's lifecycle is driven by hand here: ``Start`` records in, and the
runs it activates finish (or sleep) when the test says so - the edge's part.
"""

from __future__ import annotations

import json
from typing import Any

from streams import (
    App,
    Batch,
    Concurrency,
    Context,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    TriggerEvent,
)
from streams.core.effects import RunCompleted, RunSuspended
from streams.event import Event
from streams.lifecycle import (
    Activate,
    Announce,
    Command,
    History,
    Journal,
    LiveRun,
    MemoryRunStore,
    PartitionLifecycle,
    Release,
)
from streams.lifecycle.gate import EnvGate
from streams.lifecycle.limits import QUEUE
from streams.lifecycle.records import Cancel, Invoker, Resume, SlotAsk, SlotFree, Start, Wake
from streams.lifecycle.state import run_key
from streams.lifecycle.timers import PREFIX as TIMER_PREFIX
from streams.testing import Engine
from streams.testing.engine import RUNS

T0 = 1_700_000_000_000


async def handler(ctx: Context) -> None:
    return None


class Partition:
    """One function partition and the runs it activated (the edge's bookkeeping)."""

    def __init__(self, app: App, slug: str, store: MemoryRunStore | None = None) -> None:
        self.fn = app.functions[slug]
        self.store = store or MemoryRunStore()
        self.life = PartitionLifecycle(self.fn, 0, self.store, functions=app.functions)
        self.running: dict[str, LiveRun] = {}
        self.started: list[str] = []
        self.offset = 0
        self.feed(Resume())

    def feed(self, record: Any, key: str = "", now: int = T0) -> list[Command]:
        self.offset += 1
        return self.take(self.life.handle(record, key, now, self.offset))

    def take(self, commands: list[Command]) -> list[Command]:
        for cmd in commands:
            if isinstance(cmd, Activate):
                self.running[cmd.run.run_id] = cmd.run
                self.started.append(cmd.run.run_id)
        return commands

    def start(self, run_id: str, data: dict[str, Any], ts: int = T0, now: int = T0) -> None:
        event = {"name": "app/x", "data": data, "id": run_id, "ts": ts}
        self.feed(Start(run_id, event), self.fn.run_key(Event.model_validate(event)) or run_id, now)

    def finish(self, run_id: str, now: int = T0) -> None:
        run = self.running.pop(run_id)
        self.take(self.life.apply(run, RunCompleted(run_id, None), now))

    def sleep(self, run_id: str, until: int) -> None:
        run = self.running.pop(run_id)
        self.take(self.life.apply(run, RunSuspended(run_id, "sleep", until), T0))

    def status(self, run_id: str) -> str:
        return str(self.store.get(run_key(run_id))["status"])


def declare(**options: Any) -> tuple[App, str]:
    app = App("lim")
    app.function(fn_id="f", trigger=TriggerEvent("app/x"), **options)(handler)
    return app, "lim-f"


def test_a_keyed_limit_queues_the_runs_over_it_and_starts_them_as_slots_free() -> None:
    p = Partition(*declare(concurrency=Concurrency(limit=2, key="event.data.user")))
    for i in range(5):
        p.start(f"r{i}", {"user": "u1"})
    p.start("other", {"user": "u2"})
    assert p.started == ["r0", "r1", "other"]  # u2 has its own two slots
    assert [p.status(f"r{i}") for i in (2, 3, 4)] == ["queued"] * 3
    p.finish("r0")
    assert p.started[-1] == "r2"
    p.finish("other")  # frees a u2 slot: nothing of u1 moves
    assert len(p.started) == 4
    p.finish("r1")
    p.finish("r2")
    assert p.started[-2:] == ["r3", "r4"]
    # A started run's queue entry stays until its first burst is written (a crash
    # before then leaves it queued, not lost), then goes.
    assert len(list(p.store.scan(QUEUE))) == 2
    p.finish("r3")
    p.life.detach(p.running["r4"])
    assert not list(p.store.scan(QUEUE))


def test_a_run_that_sleeps_holds_no_slot_and_queues_again_when_it_wakes() -> None:
    p = Partition(*declare(concurrency=Concurrency(limit=1, key="event.data.user")))
    p.start("a", {"user": "u"})
    p.start("b", {"user": "u"})
    assert p.started == ["a"]
    p.sleep("a", T0 + 1000)
    assert p.started == ["a", "b"]  # a sleeps: b takes the slot
    timer = next(p.store.scan_keys(TIMER_PREFIX))
    p.feed(Wake("a", timer.decode()), "u", T0 + 1000)
    assert p.status("a") == "queued"  # b still runs
    assert next(p.store.scan_keys(TIMER_PREFIX), None) is None  # the queue entry moves it
    p.finish("b")
    assert p.started == ["a", "b", "a"]


def test_queued_runs_start_in_ts_order_then_arrival_and_priority_moves_them_ahead() -> None:
    p = Partition(
        *declare(
            concurrency=Concurrency(limit=1, key="event.data.user"),
            priority=Priority(run="has(event.data.vip) ? 30 : 0"),
        )
    )
    p.start("first", {"user": "u"}, ts=T0)
    p.start("late", {"user": "u"}, ts=T0 + 20_000)
    p.start("early", {"user": "u"}, ts=T0 + 5_000)  # arrived later, happened earlier
    p.start("tie", {"user": "u"}, ts=T0 + 5_000)
    p.start("vip", {"user": "u", "vip": True}, ts=T0 + 40_000)  # 30 s ahead: before late
    for _ in range(4):
        p.finish(p.started[-1])
    assert p.started == ["first", "early", "tie", "vip", "late"]


def test_a_key_less_limit_and_a_keyed_limit_both_hold() -> None:
    app, slug = declare(
        concurrency=[Concurrency(limit=3), Concurrency(limit=1, key="event.data.user")]
    )
    p = Partition(app, slug)
    for i, user in enumerate(["a", "a", "b", "c", "d", "b"]):
        p.start(f"r{i}", {"user": user})
    assert p.started == ["r0", "r2", "r3"]  # 3 in total, one per user
    p.finish("r0")  # a's slot and a total slot: r1 (a) is the oldest that fits
    assert p.started[-1] == "r1"
    p.finish("r2")  # b frees: r4 (d) came before r5 (b)
    assert p.started[-1] == "r4"
    p.finish("r3")
    assert p.started[-1] == "r5"
    assert len(p.running) == 3


def test_two_keyed_limits_a_freed_slot_of_the_second_key_serves_another_first_key() -> None:
    app, slug = declare(
        concurrency=[
            Concurrency(limit=1, key="event.data.user"),
            Concurrency(limit=1, key="event.data.team"),
        ]
    )
    p = Partition(app, slug)
    p.start("a", {"user": "u1", "team": "t"})
    p.start("b", {"user": "u2", "team": "t"})  # its user is free, its team is not
    assert p.started == ["a"]
    p.finish("a")
    assert p.started == ["a", "b"]


def test_a_queued_run_can_be_cancelled_and_its_place_is_gone() -> None:
    p = Partition(*declare(concurrency=Concurrency(limit=1, key="event.data.user")))
    p.start("a", {"user": "u"})
    p.start("b", {"user": "u"})
    p.start("c", {"user": "u"})
    out = p.feed(Cancel("b", "not needed"), "u")
    assert p.status("b") == "cancelled"
    assert any(isinstance(c, History) and c.record["status"] == "cancelled" for c in out)
    p.finish("a")
    assert p.started == ["a", "c"]


def test_a_run_queued_past_its_start_timeout_is_cancelled_instead_of_started() -> None:
    p = Partition(
        *declare(
            concurrency=Concurrency(limit=1, key="event.data.user"),
            timeouts=Timeouts(start="10s"),
        )
    )
    p.start("a", {"user": "u"})
    p.start("b", {"user": "u"})
    p.finish("a", now=T0 + 11_000)
    assert p.started == ["a"]
    assert p.status("b") == "cancelled"


def test_the_queue_survives_a_restart_and_the_resume_counts_the_runs_that_held_slots() -> None:
    app, slug = declare(concurrency=Concurrency(limit=2, key="event.data.user"))
    p = Partition(app, slug)
    for i in range(4):
        p.start(f"r{i}", {"user": "u"})
    p.life.detach(p.running["r0"])  # r0 outlives its burst: stored as active
    # A new owner of the partition: only the store survives. Before its resume marker
    # every start queues (the runs holding slots are not counted yet) ...
    q = Partition.__new__(Partition)
    q.fn, q.store, q.running, q.started, q.offset = p.fn, p.store, {}, [], 2
    q.life = PartitionLifecycle(q.fn, 0, q.store, functions=app.functions, resume_token="t")
    q.start("r1", {"user": "u"})  # read again at its offset: it ran inline, unstored
    assert q.started == []
    q.feed(Resume("t"))
    # ... then r0 resumes with its slot, and the oldest queued run takes the other.
    assert q.started == ["r0", "r1"]
    q.finish("r0")
    q.finish("r1")
    assert q.started == ["r0", "r1", "r2", "r3"]


def test_the_in_memory_engine_queues_runs_over_the_limit_and_starts_them_in_order() -> None:
    app = App("mem")
    began: dict[str, list[int]] = {"u0": [], "u1": []}

    @app.function(
        fn_id="notify",
        trigger=TriggerEvent("app/notify"),
        concurrency=Concurrency(limit=1, key="event.data.user"),
    )
    async def notify(ctx: Context) -> int:
        user, n = ctx.event.data["user"], ctx.event.data["n"]
        await ctx.step.run("begin", lambda: began[user].append(n))
        await ctx.step.run("end", lambda: n)
        return int(n)

    engine = Engine(app, detach_after=1)  # a run holds its slot past its first step
    engine.send([{"name": "app/notify", "data": {"user": f"u{n % 2}", "n": n}} for n in range(12)])
    engine.settle()
    runs = engine.runs("notify")
    assert sorted(r.result for r in runs) == list(range(12))
    assert began == {"u0": [0, 2, 4, 6, 8, 10], "u1": [1, 3, 5, 7, 9, 11]}
    statuses = [record["status"] for _, record, _ in engine.topics[RUNS]]
    assert statuses.count("queued") == 10  # all but the first of each user waited


# --- rate limits and singletons ---------------------------------------------------------


def test_a_rate_limit_skips_the_events_over_it_per_key_and_frees_up_with_time() -> None:
    p = Partition(*declare(rate_limit=RateLimit(limit=2, period="10s", key="event.data.user")))
    for i in range(5):
        p.start(f"r{i}", {"user": "u1"})
    p.start("other", {"user": "u2"})
    assert p.started == ["r0", "r1", "other"]
    assert [p.status(f"r{i}") for i in (2, 3, 4)] == ["skipped"] * 3
    # GCRA: the two starts spent the period; one comes back every 5 s.
    p.start("r5", {"user": "u1"}, now=T0 + 5_000)
    p.start("r6", {"user": "u1"}, now=T0 + 5_000)
    assert p.started[-1] == "r5" and p.status("r6") == "skipped"
    # A start read again (a crash re-delivery) stays skipped, even once there is room.
    out = p.feed(
        Start("r2", {"name": "app/x", "data": {"user": "u1"}, "id": "r2"}), "u1", T0 + 60_000
    )
    assert out == [] and p.status("r2") == "skipped"
    assert p.life.skipped["over its rate limit"] == 4


def test_a_skipped_run_is_shown_as_skipped_and_sends_no_system_event() -> None:
    p = Partition(*declare(rate_limit=RateLimit(limit=1, period="1h")))
    p.start("a", {})
    out = p.feed(Start("b", {"name": "app/x", "data": {}, "id": "b", "ts": T0}), "lim-f")
    [history] = out
    assert isinstance(history, History) and history.record["status"] == "skipped"
    assert json.loads(history.record["body"])["error"]["name"] == "Skipped"


def test_a_singleton_skips_new_runs_while_one_is_unfinished_even_asleep() -> None:
    p = Partition(*declare(singleton=Singleton(key="event.data.user", mode="skip")))
    p.start("a", {"user": "u"})
    p.start("b", {"user": "u"})
    p.start("x", {"user": "v"})
    assert p.started == ["a", "x"] and p.status("b") == "skipped"
    p.sleep("a", T0 + 1000)  # a sleeping run is still the key's run
    p.start("c", {"user": "u"})
    assert p.status("c") == "skipped"
    timer = next(p.store.scan_keys(TIMER_PREFIX))
    p.feed(Wake("a", timer.decode()), "u", T0 + 1000)
    p.finish("a")
    p.start("d", {"user": "u"})
    assert p.started == ["a", "x", "a", "d"]


def test_a_singleton_in_cancel_mode_cancels_the_run_holding_the_key() -> None:
    p = Partition(*declare(singleton=Singleton(key="event.data.user", mode="cancel")))
    p.start("a", {"user": "u"})
    event = {"name": "app/x", "data": {"user": "u"}, "id": "b", "ts": T0}
    out = p.feed(Start("b", event), "u")
    assert p.status("a") == "cancelled"
    assert any(isinstance(c, Release) and c.run.run_id == "a" and c.stop for c in out)
    [cancelled] = [c.event for c in out if isinstance(c, Announce)]
    assert cancelled.name == "inngest/function.cancelled" and cancelled.data["run_id"] == "a"
    assert p.started == ["a", "b"]


def test_the_in_memory_engine_applies_rate_limits_and_singletons() -> None:
    app = App("mem")

    @app.function(
        fn_id="digest",
        trigger=TriggerEvent("app/digest"),
        rate_limit=RateLimit(limit=1, period="1h", key="event.data.user"),
    )
    async def digest(ctx: Context) -> str:
        return str(ctx.event.data["user"])

    engine = Engine(app)
    engine.send([{"name": "app/digest", "data": {"user": u}} for u in ("a", "a", "b", "a")])
    engine.settle()
    runs = engine.runs("digest")
    assert sorted(r.result for r in runs if r.status == "completed") == ["a", "b"]
    assert [r.status for r in runs].count("skipped") == 2


# --- throttles ------------------------------------------------------------------------


def fire(p: Partition, now: int) -> None:
    """The partition's timer loop at ``now``: its wake records, applied."""
    for cmd in p.life.fire_due(now):
        record = getattr(cmd, "record", None)
        if isinstance(record, Wake):
            p.feed(record, cmd.key, now)


def test_a_throttle_delays_the_runs_over_it_and_starts_them_in_order() -> None:
    p = Partition(*declare(throttle=Throttle(limit=2, period="10s", key="event.data.user")))
    for i in range(5):
        p.start(f"r{i}", {"user": "u1"}, ts=T0 + i)
    p.start("other", {"user": "u2"})
    assert p.started == ["r0", "other"]  # no burst: one start per 5 s per key
    assert [p.status(f"r{i}") for i in range(1, 5)] == ["queued"] * 4
    fire(p, T0 + 4_999)
    assert p.started == ["r0", "other"]
    fire(p, T0 + 5_000)
    assert p.started[-1] == "r1"
    p.start("late", {"user": "u1"}, ts=T0 + 1, now=T0 + 6_000)  # behind the queue
    for at in (10_000, 15_000, 20_000, 25_000):
        fire(p, T0 + at)
    # In ts order (late happened at r1's ts), one every 5 s.
    assert p.started == ["r0", "other", "r1", "late", "r2", "r3", "r4"]
    assert not list(p.store.scan(b"w")) or all(
        body["run_id"] in p.running for _, body in p.store.scan(b"w")
    )


def test_a_throttle_burst_starts_more_at_once_and_a_queued_run_can_be_cancelled() -> None:
    p = Partition(*declare(throttle=Throttle(limit=1, period="1m", burst=2)))
    for i in range(5):
        p.start(f"r{i}", {})
    assert p.started == ["r0", "r1", "r2"]
    p.feed(Cancel("r3", "not needed"), "lim-f")
    assert p.status("r3") == "cancelled"
    fire(p, T0 + 60_000)
    assert p.started == ["r0", "r1", "r2", "r4"]
    p.life.detach(p.running["r4"])  # its first burst written: its queue entry goes
    assert not list(p.store.scan(b"w"))


# --- debounce ---------------------------------------------------------------------------


def test_a_debounce_starts_one_run_period_after_the_last_event_with_that_event() -> None:
    p = Partition(*declare(debounce=Debounce(period="10s", key="event.data.user")))
    p.start("a", {"user": "u"}, ts=T0, now=T0)
    p.start("b", {"user": "u"}, ts=T0 + 4_000, now=T0 + 4_000)  # restarts the wait
    p.start("old", {"user": "u"}, ts=T0 + 1_000, now=T0 + 5_000)  # older than b: ignored
    p.start("x", {"user": "v"}, ts=T0, now=T0 + 5_000)
    assert p.started == []
    assert [p.status(r) for r in ("a", "b", "old")] == ["skipped", "scheduled", "skipped"]
    fire(p, T0 + 10_000)  # a's timer: a was replaced, nothing starts
    assert p.started == []
    fire(p, T0 + 14_000)
    assert p.started == ["b"]
    assert p.running["b"].state.event["data"]["user"] == "u"
    fire(p, T0 + 15_000)
    assert p.started == ["b", "x"]
    p.start("c", {"user": "u"}, ts=T0 + 20_000, now=T0 + 20_000)  # a new debounce
    fire(p, T0 + 30_000)
    assert p.started == ["b", "x", "c"]


def test_a_debounce_timeout_caps_the_delay_from_the_first_event() -> None:
    p = Partition(*declare(debounce=Debounce(period="10s", timeout="15s")))
    for i in range(4):  # an event every 4 s would put the run off for ever
        p.start(f"r{i}", {}, ts=T0 + 4_000 * i, now=T0 + 4_000 * i)
        fire(p, T0 + 4_000 * i)
    fire(p, T0 + 15_000)
    assert p.started == ["r3"]  # the last event before the cap
    p.start("r4", {}, ts=T0 + 16_000, now=T0 + 16_000)
    assert p.status("r4") == "scheduled"  # a new debounce, from r4


# --- batches ------------------------------------------------------------------------------


def batch_events(p: Partition, run_id: str) -> list[str]:
    return [str(e["id"]) for e in p.running[run_id].state.events]


def test_a_batch_starts_its_run_when_full_with_its_events_in_arrival_order() -> None:
    p = Partition(*declare(batch_events=Batch(max_size=3, timeout="5s", key="event.data.user")))
    for i in range(7):
        p.start(f"u{i}", {"user": "u"})
    p.start("v0", {"user": "v"})
    assert p.started == ["u0", "u3"]  # a batch's run has the run id of its first event
    assert batch_events(p, "u0") == ["u0", "u1", "u2"]
    assert batch_events(p, "u3") == ["u3", "u4", "u5"]
    assert p.running["u0"].state.event["id"] == "u0"  # ctx.event is the first
    assert [p.status(r) for r in ("u1", "u2", "u6", "v0")] == ["batched"] * 4
    fire(p, T0 + 4_999)
    assert p.started == ["u0", "u3"]
    fire(p, T0 + 5_000)  # the timeout: the open batches start with what they have
    assert sorted(p.started[2:]) == ["u6", "v0"]
    assert batch_events(p, "u6") == ["u6"]
    assert not list(p.store.scan(b"b")) and not list(p.store.scan(b"e"))


def test_a_repeated_start_adds_no_event_to_a_batch_open_or_started() -> None:
    p = Partition(*declare(batch_events=Batch(max_size=3, timeout="5s")))
    p.start("a", {})
    p.start("a", {})  # the router sent it again
    p.start("b", {})
    p.start("b", {})
    assert p.started == []
    p.start("c", {})
    assert batch_events(p, "a") == ["a", "b", "c"]
    p.start("c", {})
    p.start("a", {})  # the batch's own run id: the run exists
    p.start("d", {})
    fire(p, T0 + 5_000)
    assert p.started == ["a", "d"]
    assert batch_events(p, "d") == ["d"]


def test_a_batch_runs_under_the_functions_concurrency_limit() -> None:
    p = Partition(
        *declare(batch_events=Batch(max_size=2, timeout="5s"), concurrency=Concurrency(limit=1))
    )
    for i in range(6):
        p.start(f"r{i}", {})
    assert p.started == ["r0"]
    assert p.status("r2") == "queued" and p.status("r4") == "queued"
    p.finish("r0")
    assert p.started == ["r0", "r2"]
    assert batch_events(p, "r2") == ["r2", "r3"]


def test_the_in_memory_engine_batches_events_and_finished_carries_them() -> None:
    app = App("mem")
    seen: list[list[int]] = []

    @app.function(
        fn_id="bulk",
        trigger=TriggerEvent("app/row"),
        batch_events=Batch(max_size=4, timeout="2s"),
    )
    async def bulk(ctx: Context) -> int:
        rows = [int(e.data["n"]) for e in ctx.events]
        await ctx.step.run("write", lambda: seen.append(rows))
        assert ctx.event is ctx.events[0]
        return len(rows)

    engine = Engine(app)
    engine.send([{"name": "app/row", "data": {"n": n}} for n in range(10)])  # processed
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7]]
    engine.settle()  # jumps to the open batch's timeout
    assert seen[-1] == [8, 9]
    finished = [e for e in engine.events if e.name == "inngest/function.finished"]
    assert [len(e.data["events"]) for e in finished] == [4, 4, 2]
    assert [e.data["events"][0]["data"]["n"] for e in finished] == [0, 4, 8]
    assert sorted(r.result for r in engine.runs("bulk")) == [2, 4, 4]


def test_an_invoked_run_is_not_batched_and_a_future_event_joins_a_batch_at_its_ts() -> None:
    p = Partition(*declare(batch_events=Batch(max_size=2, timeout="5s")))
    invoked = {"name": "inngest/function.invoked", "data": {}, "id": "i", "ts": T0}
    p.feed(Start("i", invoked, invoker=Invoker("lim-g", "parent", "step", "k")), "lim-f")
    assert p.started == ["i"] and batch_events(p, "i") == []  # at once, its one event
    later = {"name": "app/x", "data": {}, "id": "later", "ts": T0 + 60_000}
    p.feed(Start("later", later, not_before=T0 + 60_000), "lim-f")
    p.start("now", {})
    assert p.status("later") == "scheduled" and p.status("now") == "batched"
    fire(p, T0 + 60_000)  # now's batch timed out (alone); later joins a new one
    assert p.started == ["i", "now"] and p.status("later") == "batched"
    p.start("last", {}, now=T0 + 61_000)
    assert p.started == ["i", "now", "later"]
    assert batch_events(p, "later") == ["later", "last"]


# --- env-scoped limits: the app's gate -------------------------------------------------------


def ask(run_id: str, value: str = "openai", limit: int = 2, score: int = 0) -> SlotAsk:
    return SlotAsk(run_id, value, limit, "app-f", run_id, 3, score)


def granted(commands: list[Command]) -> list[str]:
    return [c.record.run_id for c in commands if isinstance(c, Journal)]


def test_the_gate_grants_up_to_the_limit_queues_in_order_and_drains_on_free() -> None:
    gate = EnvGate(MemoryRunStore())
    assert granted(gate.handle(ask("a"), "openai", T0, 1)) == ["a"]
    assert granted(gate.handle(ask("b"), "openai", T0, 2)) == ["b"]
    assert granted(gate.handle(ask("c", score=T0 + 5), "openai", T0, 3)) == []
    assert granted(gate.handle(ask("d", score=T0), "openai", T0, 4)) == []  # earlier ts
    assert granted(gate.handle(ask("x", value="other"), "other", T0, 5)) == ["x"]
    grant = gate.handle(ask("a"), "openai", T0, 6)  # asked again: granted again
    assert granted(grant) == ["a"] and grant[0].partition == 3 and grant[0].function == "app-f"
    assert granted(gate.handle(ask("c"), "openai", T0, 7)) == []  # keeps its place
    assert granted(gate.handle(SlotFree("a", "openai"), "openai", T0, 8)) == ["d"]
    assert granted(gate.handle(SlotFree("c", "openai"), "openai", T0, 9)) == []  # gave up
    assert granted(gate.handle(SlotFree("b", "openai"), "openai", T0, 10)) == []
    assert sorted(gate.holders("openai")) == ["d"]
    assert granted(gate.handle(SlotFree("b", "openai"), "openai", T0, 11)) == []  # repeated


def test_two_functions_share_an_env_limit_by_key_value_in_memory() -> None:
    app = App("env")
    began: list[str] = []

    for fn_id in ("summarize", "translate"):

        async def work(ctx: Context, fn_id: str = fn_id) -> str:
            await ctx.step.run("begin", lambda: began.append(f"{fn_id}:{ctx.event.data['n']}"))
            await ctx.step.sleep("pause", "1s")  # holds no slot while it sleeps
            return await ctx.step.run("end", lambda: fn_id)

        app.function(
            fn_id=fn_id,
            trigger=TriggerEvent(f"app/{fn_id}"),
            concurrency=Concurrency(limit=1, key='"openai"', scope="env"),
        )(work)

    engine = Engine(app, detach_after=1)  # a run holds its slot past its first step
    engine.send(
        [
            {"name": f"app/{f}", "data": {"n": n}}
            for n in range(2)
            for f in ("summarize", "translate")
        ]
    )
    engine.settle()
    assert len(began) == 4  # each began, one at a time, as the one before slept
    queued = [r for _, r, _ in engine.topics[RUNS] if r["status"] == "queued"]
    assert len(queued) >= 3
    engine.advance("1s")
    engine.settle()
    assert sorted(r.result for r in engine.runs()) == ["summarize"] * 2 + ["translate"] * 2
    assert engine.gate.holders("openai") == []


def test_a_debounce_with_a_rate_limit_or_singleton_counts_the_runs_it_starts() -> None:
    p = Partition(
        *declare(
            debounce=Debounce(period="10s", key="event.data.user"),
            rate_limit=RateLimit(limit=1, period="1h", key="event.data.user"),
        )
    )
    p.start("a", {"user": "u"}, ts=T0, now=T0)
    p.start("b", {"user": "u"}, ts=T0 + 1_000, now=T0 + 1_000)  # replaces a: not counted
    fire(p, T0 + 11_000)
    assert p.started == ["b"]
    p.finish("b", now=T0 + 12_000)
    p.start("c", {"user": "u"}, ts=T0 + 20_000, now=T0 + 20_000)
    assert p.status("c") == "scheduled"  # held: the rate limit counts starts, not events
    fire(p, T0 + 30_000)
    assert p.started == ["b"] and p.status("c") == "skipped"  # the hour's one run was b
    assert p.life.skipped["over its rate limit"] == 1

    s = Partition(*declare(debounce=Debounce(period="10s"), singleton=Singleton()))
    s.start("x", {}, ts=T0, now=T0)
    fire(s, T0 + 10_000)
    assert s.started == ["x"]
    s.start("y", {}, ts=T0 + 11_000, now=T0 + 11_000)
    fire(s, T0 + 21_000)  # x still runs: y, when its debounce ends, is skipped
    assert s.started == ["x"] and s.status("y") == "skipped"
    s.finish("x", now=T0 + 22_000)
    s.start("z", {}, ts=T0 + 23_000, now=T0 + 23_000)
    fire(s, T0 + 33_000)
    assert s.started == ["x", "z"]
