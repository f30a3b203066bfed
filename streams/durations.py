"""Durations and points in time, written the way Inngest users write them.

Every option that takes a duration (``timeout``, ``period``, ``retry_after`` ...)
accepts a ``timedelta``, a number of seconds, or an Inngest string such as
``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, ``"1w"`` or ``"500ms"``. Parsing
happens once, at declaration, so a typo fails before any event arrives.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from streams.errors import DurationError

_UNITS: dict[str, timedelta] = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# One "<number><unit>" part; "ms" is listed before "m" so it wins.
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*")
_HELP = 'write a number and a unit (ms, s, m, h, d, w), e.g. "30s", "5m", "1h30m", "2d"'


def parse_duration(value: timedelta | str | int | float) -> timedelta:
    """Read a duration: a ``timedelta``, seconds (int/float) or an Inngest string.

    Raises :class:`DurationError` (a ``ValueError`` and a ``ConfigError``) with
    a message that quotes the value and shows the accepted forms.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise DurationError(f"duration {value} is negative; durations must be >= 0")
        return value
    if isinstance(value, bool):
        raise DurationError(f"duration {value!r} is a bool; {_HELP}, or give seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise DurationError(f"duration {value!r} must be a finite number of seconds >= 0")
        return timedelta(seconds=value)
    if isinstance(value, str):
        return _parse_string(value)
    raise DurationError(
        f"duration {value!r} has type {type(value).__name__}; give a timedelta, seconds or a "
        "string like '30s'"
    )


def _parse_string(text: str) -> timedelta:
    if not text.strip():
        raise DurationError(f"duration {text!r} is empty; {_HELP}")
    total = timedelta(0)
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise DurationError(f"duration {text!r} is not understood at {text[pos:]!r}; {_HELP}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


def to_datetime(value: datetime | str) -> datetime:
    """Read a point in time: a ``datetime`` or an ISO 8601 string; returned in UTC.

    A naive ``datetime`` (or a string without an offset) is taken to be UTC.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DurationError(
                f"time {value!r} is not an ISO 8601 timestamp; write e.g. '2030-01-31T12:00:00Z'"
            ) from None
    else:
        raise DurationError(
            f"time {value!r} has type {type(value).__name__}; give a datetime or an ISO string"
        )
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_ms(value: timedelta | str | int | float) -> int:
    """A duration in whole milliseconds (what timers and effects carry)."""
    return round(parse_duration(value) / timedelta(milliseconds=1))
