"""Cron schedules without Kafka: ticks (with time zones and DST), run ids, the event."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from ulid import ULID

from streams import App, Concurrency, TriggerCron, TriggerEvent
from streams.cron import (
    SCHEDULED_EVENT,
    next_due,
    next_tick,
    partition_of,
    plan_tick,
    rfc3339,
    scheduled_event,
    tick_run_id,
)

PARIS = ZoneInfo("Europe/Paris")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def utc(*args: int) -> int:
    return ms(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


def paris(ticks: int) -> str:
    return datetime.fromtimestamp(ticks / 1000, PARIS).isoformat()


def ticks(cron: str, after_ms: int, count: int) -> list[int]:
    trigger = TriggerCron(cron=cron)
    out = []
    for _ in range(count):
        after_ms = next_tick(trigger, after_ms)
        out.append(after_ms)
    return out


def test_next_tick_is_strictly_after() -> None:
    every5 = TriggerCron(cron="*/5 * * * *")
    assert next_tick(every5, utc(2024, 1, 1, 9, 4, 59)) == utc(2024, 1, 1, 9, 5)
    assert next_tick(every5, utc(2024, 1, 1, 9, 5)) == utc(2024, 1, 1, 9, 10)
    assert next_tick(every5, utc(2024, 1, 1, 9, 5) + 1) == utc(2024, 1, 1, 9, 10)
    assert ticks("0 * * * *", utc(2024, 1, 1, 23, 30), 2) == [utc(2024, 1, 2), utc(2024, 1, 2, 1)]


def test_time_zone_schedules_tick_in_local_time() -> None:
    # Monday 09:00 in Paris: 08:00 UTC in winter, 07:00 UTC in summer.
    got = ticks("TZ=Europe/Paris 0 9 * * 1", utc(2024, 3, 20), 3)
    assert got == [utc(2024, 3, 25, 8), utc(2024, 4, 1, 7), utc(2024, 4, 8, 7)]
    assert [paris(t) for t in got] == [
        "2024-03-25T09:00:00+01:00",
        "2024-04-01T09:00:00+02:00",
        "2024-04-08T09:00:00+02:00",
    ]
    # Without a prefix, the same fields are UTC.
    assert ticks("0 9 * * 1", utc(2024, 3, 20), 1) == [utc(2024, 3, 25, 9)]
    # Far from UTC, the local date matters: Monday 09:00 in Tokyo is Monday 00:00 UTC.
    assert ticks("TZ=Asia/Tokyo 0 9 * * 1", utc(2024, 3, 20), 1) == [utc(2024, 3, 25, 0)]


def test_dst_spring_forward_fires_a_skipped_local_time_once() -> None:
    # 2024-03-31: Paris clocks go from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    daily = ticks("TZ=Europe/Paris 30 2 * * *", utc(2024, 3, 29, 12), 3)
    assert [paris(t) for t in daily] == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:30:00+02:00",  # the skipped 02:30, one hour later in local time
        "2024-04-01T02:30:00+02:00",
    ]
    hourly = ticks("TZ=Europe/Paris 30 * * * *", utc(2024, 3, 30, 23), 4)
    assert [paris(t) for t in hourly] == [
        "2024-03-31T00:30:00+01:00",
        "2024-03-31T01:30:00+01:00",
        "2024-03-31T03:30:00+02:00",  # 02:30 and 03:30 are one instant: one tick
        "2024-03-31T04:30:00+02:00",
    ]


def test_dst_fall_back_fires_a_repeated_local_time_once() -> None:
    # 2024-10-27: Paris clocks go from 03:00 CEST back to 02:00 CET; 02:30 exists twice.
    daily = ticks("TZ=Europe/Paris 30 2 * * *", utc(2024, 10, 25, 12), 3)
    assert [paris(t) for t in daily] == [
        "2024-10-26T02:30:00+02:00",
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]
    # From inside the repeated hour, the first 02:30 is past: the next is 03:30 CET.
    inside = utc(2024, 10, 27, 1, 15)  # 02:15 CET, the second time round
    assert paris(next_tick(TriggerCron(cron="TZ=Europe/Paris 30 * * * *"), inside)) == (
        "2024-10-27T03:30:00+01:00"
    )


def test_missed_ticks_collapse_into_one() -> None:
    every5 = TriggerCron(cron="*/5 * * * *")
    tick = utc(2024, 1, 1, 9, 5)
    # On time: the next tick follows.
    assert next_due(every5, tick, tick + 300) == utc(2024, 1, 1, 9, 10)
    # Fired 23 minutes late (workers were down): the ticks in between never fire.
    assert next_due(every5, tick, utc(2024, 1, 1, 9, 28)) == utc(2024, 1, 1, 9, 30)


def test_run_ids_are_derived_from_function_and_tick() -> None:
    tick = utc(2024, 1, 1, 9, 5)
    rid = tick_run_id("shop-report", tick)
    assert rid == tick_run_id("shop-report", tick)
    assert ULID.from_str(rid).milliseconds == tick
    assert rid != tick_run_id("shop-report", tick + 60_000)
    assert rid != tick_run_id("shop-other", tick)


def test_scheduled_event_has_inngests_shape() -> None:
    trigger = TriggerCron(cron="TZ=Europe/Paris 0 9 * * 1")
    tick, fired = utc(2024, 3, 25, 8), utc(2024, 3, 25, 8) + 1234
    event = scheduled_event(trigger, "shop-report", tick, fired)
    assert event.name == SCHEDULED_EVENT == "inngest/scheduled.timer"
    assert event.id == "2024-03-25T08:00:00Z"
    assert event.data == {
        "cron": "TZ=Europe/Paris 0 9 * * 1",
        "scheduledAt": "2024-03-25T08:00:00Z",
        "fireAt": "2024-03-25T08:00:01.234Z",
    }
    assert event.ts == fired
    assert event.internal_id is not None
    assert ULID.from_str(event.internal_id).milliseconds == tick
    assert event.internal_id == scheduled_event(trigger, "shop-report", tick, fired + 5).internal_id
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


def test_plan_tick_keys_runs_like_the_router() -> None:
    app = App("shop")

    @app.function(fn_id="plain", trigger=TriggerCron(cron="* * * * *"))
    async def plain(ctx: object) -> None: ...

    @app.function(
        fn_id="keyed",
        trigger=[TriggerCron(cron="* * * * *"), TriggerEvent(event="app/x")],
        concurrency=Concurrency(limit=1, key="event.data.cron"),
    )
    async def keyed(ctx: object) -> None: ...

    tick = utc(2024, 1, 1, 9, 5)
    first = plan_tick(plain, TriggerCron(cron="* * * * *"), tick, tick + 10)
    assert first.start.run_id == tick_run_id("shop-plain", tick)
    assert first.start.key == first.start.run_id
    assert first.start.idempotency is None
    keyed_tick = plan_tick(keyed, TriggerCron(cron="* * * * *"), tick, tick + 10)
    assert keyed_tick.start.key == "* * * * *"
    # A cron function is never started by events the router sees, unless it also
    # has an event trigger.
    assert not plain.matches(first.event)
    assert keyed.event_patterns == ["app/x"]


@pytest.mark.parametrize("partitions", [1, 2, 8])
def test_partition_of_is_stable_and_in_range(partitions: int) -> None:
    for slug in ("shop-a", "shop-b", "shop-report"):
        p = partition_of(slug, partitions)
        assert 0 <= p < partitions
        assert p == partition_of(slug, partitions)
    assert partition_of("shop-report", 8) == 6  # fixed across releases (sha256)
