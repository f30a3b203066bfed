"""Durations and times as Inngest users write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from streams.durations import parse_duration, to_datetime, to_ms
from streams.errors import ConfigError, DurationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1m30s500ms", timedelta(minutes=1, seconds=30, milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
    ],
)
def test_inngest_strings(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_numbers_are_seconds_and_timedeltas_pass_through() -> None:
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration(0.25) == timedelta(milliseconds=250)
    assert parse_duration(timedelta(hours=2)) == timedelta(hours=2)
    assert to_ms("1h") == 3_600_000


@pytest.mark.parametrize("bad", ["", "5", "5 minutes", "m5", "1h-5m", "-5s", "5x", "1h 2q"])
def test_bad_strings_say_what_to_write(bad: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)
    assert "30s" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, None, [1]])
def test_bad_values(bad: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(bad)  # type: ignore[arg-type]


def test_to_datetime_is_utc() -> None:
    assert to_datetime("2030-01-31T12:00:00Z") == datetime(2030, 1, 31, 12, tzinfo=UTC)
    paris = datetime(2030, 1, 31, 13, tzinfo=timezone(timedelta(hours=1)))
    assert to_datetime(paris) == datetime(2030, 1, 31, 12, tzinfo=UTC)
    assert to_datetime(paris).tzinfo is UTC
    assert to_datetime(datetime(2030, 1, 1)).tzinfo is UTC  # naive = UTC
    with pytest.raises(DurationError, match="ISO 8601"):
        to_datetime("next tuesday")
