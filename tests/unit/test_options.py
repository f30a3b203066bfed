"""Option models: durations as Inngest strings, cron validated at construction, triggers
taking their fields positionally or by keyword."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from pydantic import ValidationError

from streams.errors import ArgumentError, ConfigError
from streams.options import (
    Cancel,
    Concurrency,
    Debounce,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
)


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


# --- The triggers take their fields positionally too (README: TriggerCron("0 9 * * 1")) ---


def test_triggers_take_their_fields_positionally() -> None:
    assert TriggerCron("0 9 * * 1") == TriggerCron(cron="0 9 * * 1")
    assert TriggerCron("TZ=Europe/Paris 0 9 * * 1").timezone == "Europe/Paris"
    assert TriggerEvent("app/x") == TriggerEvent(event="app/x")
    both = TriggerEvent("app/x", "event.data.a > 1")
    assert both == TriggerEvent(event="app/x", expression="event.data.a > 1")
    assert TriggerEvent("app/x", expression="event.data.a > 1") == both


def test_triggers_keep_inngest_py_keywords() -> None:
    assert TriggerCron(cron="*/5 * * * *").cron == "*/5 * * * *"
    trigger = TriggerEvent(event="app/*", expression=None)
    assert (trigger.event, trigger.expression) == ("app/*", None)


def test_positional_values_are_validated_as_keywords_are() -> None:
    with pytest.raises(ConfigError, match="cron '61 9 \\* \\* \\*' is not a valid schedule"):
        TriggerCron("61 9 * * *")
    with pytest.raises(ValidationError, match="valid string"):
        TriggerEvent(42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="cron\n  Field required"):
        TriggerCron()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # Type checkers flag these calls too ("gets multiple values for keyword argument").
        (
            lambda: TriggerCron("0 9 * * 1", cron="0 10 * * 1"),  # type: ignore[misc]
            "TriggerCron() got 'cron' twice",
        ),
        (
            lambda: TriggerEvent("app/x", event="app/y"),  # type: ignore[misc]
            "TriggerEvent() got 'event' twice",
        ),
        (
            lambda: TriggerEvent("app/x", "event.data.a > 1", expression="true"),  # type: ignore[misc]
            "TriggerEvent() got 'expression' twice",
        ),
    ],
)
def test_a_field_given_positionally_and_as_a_keyword_is_refused(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ArgumentError, match=re.escape(message)) as caught:
        make()
    assert "positionally" in str(caught.value) and "give it once" in str(caught.value)
    assert isinstance(caught.value, TypeError)  # what Python raises for such a call


def test_too_many_positional_arguments_say_what_the_trigger_takes() -> None:
    with pytest.raises(ArgumentError) as cron:
        TriggerCron("0 9 * * 1", "Europe/Paris")  # type: ignore[call-arg]
    assert str(cron.value) == (
        "TriggerCron() takes at most 1 positional argument (cron) but 2 were given: "
        "'0 9 * * 1', 'Europe/Paris'; a time zone goes first in the schedule: "
        "'TZ=Europe/Paris 0 9 * * 1'"
    )
    with pytest.raises(ArgumentError) as event:
        TriggerEvent("app/a", "app/b", "app/c")  # type: ignore[call-arg]
    assert str(event.value).startswith(
        "TriggerEvent() takes at most 2 positional arguments (event, expression) but 3 were "
        "given: 'app/a', 'app/b', 'app/c'; for several event names give a list"
    )


def test_other_options_take_keywords_only_and_say_so() -> None:
    with pytest.raises(ArgumentError) as caught:
        Concurrency(3)  # type: ignore[call-arg]
    assert str(caught.value) == (
        "Concurrency() takes no positional arguments but 1 was given: 3; pass the fields by "
        "keyword: Concurrency(limit=..., key=..., scope=...)"
    )
