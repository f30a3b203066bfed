"""Option models: durations as Inngest strings, cron validated at construction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from streams.errors import ConfigError
from streams.options import Cancel, Concurrency, Debounce, Throttle, Timeouts, TriggerCron


def test_durations_accept_strings_and_timedeltas() -> None:
    assert Throttle(limit=1, period="1h30m").period == timedelta(minutes=90)
    assert Debounce(period=timedelta(seconds=5)).period == timedelta(seconds=5)
    assert Cancel(event="app/x", timeout="2d").timeout == timedelta(days=2)
    assert Timeouts(finish=30).finish == timedelta(seconds=30)


def test_bad_duration_is_a_validation_error_naming_the_value() -> None:
    with pytest.raises(ValidationError, match="5 minutes"):
        Throttle(limit=1, period="5 minutes")


def test_cron_with_and_without_time_zone() -> None:
    assert TriggerCron(cron="0 9 * * 1-5").schedule == "0 9 * * 1-5"
    tz = TriggerCron(cron="TZ=Europe/Paris 0 9 * * *")
    assert tz.timezone == "Europe/Paris"
    assert tz.schedule == "0 9 * * *"


@pytest.mark.parametrize(
    "cron", ["61 9 * * *", "0 9 * * * *", "0 9 * *", "TZ=Nowhere/City 0 9 * * *", "@daily"]
)
def test_bad_cron_fails_at_construction(cron: str) -> None:
    with pytest.raises(ConfigError, match="cron"):
        TriggerCron(cron=cron)


def test_models_are_frozen_and_strict_about_fields() -> None:
    c = Concurrency(limit=3, key="event.data.userId")
    assert c.scope == "fn"
    with pytest.raises(ValidationError):
        Concurrency(limit=3, kee="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        c.limit = 4
