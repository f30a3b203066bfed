"""Cron schedules, free of Kafka and Faust: ticks, their run ids and their events.

A :class:`~streams.options.TriggerCron` names wall-clock times in a time zone
(UTC unless the schedule starts with ``TZ=Area/City``). :func:`next_tick` gives
the first of those instants strictly after a time, in ms since the epoch.
Daylight-saving changes follow one rule: every local time the schedule names
fires once. A local time that does not exist (skipped when clocks go forward)
fires at the same instant it would have had before the change (``02:30`` on the
spring-forward night in Paris fires at 03:30 CEST); a local time that exists
twice (clocks go back) fires at its first occurrence only.

Identities are derived from the tick, never drawn, so a tick handled twice
(a crash between firing and recording it, two workers during a rebalance)
names the same run: :func:`tick_run_id` is a ULID whose time is the tick and
whose randomness hashes ``(function, tick)``. Two cron triggers of one function
that name the same instant therefore start one run, as in Inngest.

The run receives Inngest's cron event, :func:`scheduled_event`: name
``inngest/scheduled.timer``, ``id`` the tick as RFC 3339 UTC (what Inngest uses
as the tick's idempotency key), ``data.cron`` the trigger's expression, plus
``data.scheduledAt`` (the tick) and ``data.fireAt`` (when steplog fired it; later
than the tick when it was caught up after every worker was down).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from croniter import croniter

from streams.event import Event
from streams.ids import derived_ulid
from streams.options import TriggerCron
from streams.routing import Routable, Start

#: The name of the event a cron tick starts its run with (Inngest's).
SCHEDULED_EVENT = "inngest/scheduled.timer"

#: Larger than any UTC offset change of a time zone (at most 2 h in the tz database).
_DST_MARGIN = timedelta(hours=3)


def _zone(trigger: TriggerCron) -> tzinfo:
    return ZoneInfo(trigger.timezone) if trigger.timezone else UTC


def _instant_ms(local: datetime, zone: tzinfo) -> int:
    """The instant of a naive local wall-clock time (first occurrence; gaps shift forward)."""
    aware = local.replace(tzinfo=zone, fold=0)
    return int(aware.timestamp() * 1000)


def next_tick(trigger: TriggerCron, after_ms: int) -> int:
    """The first tick of ``trigger`` strictly after ``after_ms`` (ms since the epoch)."""
    zone = _zone(trigger)
    after = datetime.fromtimestamp(after_ms / 1000, UTC)
    if zone is UTC:
        start = after.replace(tzinfo=None)
        candidate = croniter(trigger.schedule, start).get_next(datetime)
        return _instant_ms(candidate, UTC)
    # Iterate wall-clock times (naive), map each to an instant, keep the earliest one
    # after ``after_ms``. Around a DST change the mapping is not monotonic, so start a
    # margin early and stop once no later local time can map to an earlier instant.
    local_after = after.astimezone(zone).replace(tzinfo=None)
    it = croniter(trigger.schedule, local_after - _DST_MARGIN)
    best: tuple[int, datetime] | None = None
    while True:
        candidate = it.get_next(datetime)
        if best is not None and candidate > best[1] + _DST_MARGIN:
            return best[0]
        instant = _instant_ms(candidate, zone)
        if instant > after_ms and (best is None or instant < best[0]):
            best = (instant, candidate)


def next_due(trigger: TriggerCron, tick_ms: int, now_ms: int) -> int:
    """The tick to wait for once ``tick_ms`` has fired at ``now_ms``.

    The first tick after both: ticks missed while no worker ran collapse into the
    one that fired, instead of firing once each.
    """
    return next_tick(trigger, max(tick_ms, now_ms))


def rfc3339(ms: int, *, millis: bool = False) -> str:
    """``2024-01-01T09:05:00Z`` (``…:00.123Z`` with ``millis``) for ms since the epoch."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    text = moment.isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z")


def tick_run_id(function: str, tick_ms: int) -> str:
    """The run id of ``function``'s run for one tick: a ULID whose time is the tick."""
    return derived_ulid(tick_ms, "cron", function, str(tick_ms))


def scheduled_event(trigger: TriggerCron, function: str, tick_ms: int, fired_ms: int) -> Event:
    """The ``inngest/scheduled.timer`` event the tick's run receives."""
    scheduled = rfc3339(tick_ms)
    return Event(
        name=SCHEDULED_EVENT,
        data={
            "cron": trigger.cron,
            "scheduledAt": scheduled,
            "fireAt": rfc3339(fired_ms, millis=True),
        },
        id=scheduled,
        ts=fired_ms,
        internal_id=derived_ulid(tick_ms, "cron-event", function, str(tick_ms)),
    )


@dataclass(frozen=True)
class Tick:
    """What firing one tick does: start ``start`` with ``event``."""

    start: Start
    event: Event


def plan_tick(fn: Routable, trigger: TriggerCron, tick_ms: int, fired_ms: int) -> Tick:
    """The run a tick starts, keyed exactly as :func:`streams.routing.route` keys runs."""
    event = scheduled_event(trigger, fn.slug, tick_ms, fired_ms)
    rid = tick_run_id(fn.slug, tick_ms)
    idem = fn.idempotency_key(event)
    key = fn.run_key(event) or (f"idempotency:{idem}" if idem is not None else rid)
    return Tick(Start(fn.slug, rid, key, idem), event)


def partition_of(function: str, partitions: int) -> int:
    """The partition of the cron topic that holds ``function``'s schedule (stable)."""
    digest = hashlib.sha256(function.encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(partitions, 1)
