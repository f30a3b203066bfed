"""The wait index: hints from if_exp, matching rules, and the recent-events buffer."""

from __future__ import annotations

from streams.event import Event, accept
from streams.expressions import event_vars
from streams.waits import (
    RecentEvents,
    Wait,
    WaitIndex,
    hint_is_whole,
    index_hint,
    matches_wait,
    trigger_for,
)

T0 = 1_700_000_000_000
TRIGGER = event_vars(Event(name="app/report.requested", data={"reportId": "r1", "n": 2}))


def test_hints_come_from_top_level_equalities_with_a_known_side() -> None:
    assert index_hint("async.data.reportId == event.data.reportId", TRIGGER) == (
        "data.reportId",
        '"r1"',
    )
    assert index_hint("event.data.n == async.data.count", TRIGGER) == ("data.count", "2")
    assert index_hint("async.data.kind == 'pdf'", TRIGGER) == ("data.kind", '"pdf"')
    assert index_hint(
        "(async.data.ok == true) && async.data.reportId == event.data.reportId", TRIGGER
    ) == ("data.ok", "true")
    assert index_hint("async.data.x > 1 && 7 == async.data.y", TRIGGER) == ("data.y", "7")
    # no usable equality: evaluated for every candidate of the name
    assert index_hint("async.data.a == event.data.a || async.data.b == 1", TRIGGER) is None
    assert index_hint("async.data.a == event.data.missing", TRIGGER) is None
    assert index_hint("async.data.total > 10", TRIGGER) is None
    assert index_hint(None, TRIGGER) is None


def wait(n: int, *, if_exp: str | None, registered: int = T0, expires: int = T0 + 60_000) -> Wait:
    return Wait(
        function="app-f",
        run_id=f"run-{n}",
        step_id="s",
        run_key=f"run-{n}",
        event="app/report.generated",
        if_exp=if_exp,
        registered_ms=registered,
        expires_ms=expires,
        trigger=event_vars(Event(name="app/report.requested", data={"reportId": f"r{n}"})),
        hint=index_hint(
            if_exp,
            event_vars(Event(name="app/report.requested", data={"reportId": f"r{n}"})),
        ),
    )


def reply(report: str, at: int = T0 + 10, **data: object) -> Event:
    return accept(Event(name="app/report.generated", data={"reportId": report, **data}), at_ms=at)


def test_an_event_meets_only_its_bucket_and_every_waiter_in_it() -> None:
    index = WaitIndex()
    eq = "async.data.reportId == event.data.reportId"
    for n in range(1000):
        index.add(wait(n, if_exp=eq))
    twin = Wait(**{**wait(7, if_exp=eq).__dict__, "run_id": "run-7b", "run_key": "run-7b"})
    index.add(twin)
    assert len(list(index.candidates(reply("r7")))) == 2
    assert {w.run_id for w in index.matches(reply("r7"))} == {"run-7", "run-7b"}
    assert index.matches(reply("nobody")) == []
    assert index.matches(Event(name="other", data={})) == []


def test_only_events_accepted_after_registration_and_before_expiry_match() -> None:
    index = WaitIndex()
    index.add(wait(1, if_exp=None, registered=T0, expires=T0 + 1000))
    assert index.matches(reply("r1", at=T0 - 1)) == []
    assert len(index.matches(reply("r1", at=T0))) == 1
    assert index.matches(reply("r1", at=T0 + 1000)) == []
    assert [w.run_id for w in index.expire(T0 + 1000)] == ["run-1"]
    assert len(index) == 0


def test_full_condition_is_still_evaluated_after_the_index() -> None:
    index = WaitIndex()
    index.add(wait(1, if_exp="async.data.reportId == event.data.reportId && async.data.ok"))
    assert index.matches(reply("r1", ok=False)) == []
    assert len(index.matches(reply("r1", ok=True))) == 1
    # an expression that fails on a candidate (missing field) is false, not an error
    assert index.matches(reply("r1")) == []


def test_removing_and_replacing_waits() -> None:
    index = WaitIndex()
    w = wait(1, if_exp="async.data.reportId == event.data.reportId")
    index.add(w)
    index.add(w)  # registered twice (a re-read journal record): one wait
    assert len(index) == 1
    assert index.remove(w.key) == w
    assert index.remove(w.key) is None
    assert index.matches(reply("r1")) == []


def test_wait_round_trips_through_a_dict() -> None:
    w = wait(3, if_exp="async.data.reportId == event.data.reportId")
    assert Wait.from_dict(w.to_dict()) == w
    assert matches_wait(w, reply("r3"))
    assert not matches_wait(w, reply("r4"))


def test_recent_events_keep_what_was_routed_in_the_window() -> None:
    recent = RecentEvents(window_ms=1000)
    recent.add(reply("a", at=T0), now_ms=T0)
    recent.add(reply("b", at=T0 + 500), now_ms=T0 + 500)
    recent.add(Event(name="other", data={}), now_ms=T0 + 500)
    assert [e.data["reportId"] for _, e in recent.since("app/report.generated", T0 + 1)] == ["b"]
    recent.add(reply("c", at=T0 + 1400), now_ms=T0 + 1400)
    assert [e.data["reportId"] for _, e in recent.since("app/report.generated", 0)] == ["b", "c"]
    recent.trim(T0 + 1600)  # also when idle
    assert [e.data["reportId"] for _, e in recent.since("app/report.generated", 0)] == ["c"]
    # a router that lags: an event accepted long ago is still remembered once routed
    recent.add(reply("late", at=T0 - 120_000), now_ms=T0 + 1700)
    assert [e.data["reportId"] for _, e in recent.since("app/report.generated", T0 - 200_000)] == [
        "c",
        "late",
    ]
    # only events accepted since the wait's registration count
    assert [e.data["reportId"] for _, e in recent.since("app/report.generated", T0 + 1400)] == ["c"]


def test_recent_events_since_walks_only_the_newest() -> None:
    recent = RecentEvents(window_ms=10**9, max_events=10**6)
    for i in range(50_000):
        recent.add(reply(f"r{i}", at=T0 + i), now_ms=T0 + i)
    # the registration is recent: only the newest events are looked at (fast), in order
    got = recent.since("app/report.generated", T0 + 49_990)
    assert [e.data["reportId"] for _, e in got] == [f"r{i}" for i in range(49_990, 50_000)]


def test_a_whole_equality_needs_no_cel_after_the_index() -> None:
    assert hint_is_whole("async.data.reportId == event.data.reportId")
    assert hint_is_whole("(event.data.n == async.data.count)")
    assert not hint_is_whole("async.data.a == event.data.a && async.data.ok")
    assert not hint_is_whole("async.data.total > 1")
    assert not hint_is_whole(None)


def test_a_wait_keeps_its_trigger_only_when_its_condition_needs_it() -> None:
    eq = "async.data.reportId == event.data.reportId"
    assert trigger_for(eq, TRIGGER) == {}
    assert trigger_for(None, TRIGGER) == {}
    assert trigger_for(eq + " && async.data.ok", TRIGGER) == TRIGGER
    slim = Wait(**{**wait(1, if_exp=eq).__dict__, "trigger": {}})
    assert matches_wait(slim, reply("r1")) and not matches_wait(slim, reply("r2"))
    index = WaitIndex()
    index.add(slim)
    assert index.matches(reply("r1")) == [slim]
