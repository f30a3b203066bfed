"""When to try again: Inngest's backoff table, with deterministic jitter.

A failed attempt is retried after 15 s, 30 s, 1 m, 2 m, 5 m, 10 m, 20 m, 40 m,
1 h, 2 h (then 2 h again), each +/- 10 %. The jitter is derived from a seed
(run id, step id and attempt), so computing the time twice - on a replay, or on
two workers - gives the same answer and the durable timer is set only once.
``scale`` shrinks every delay for tests (``scale=0`` retries at once).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.durations import parse_duration, to_datetime
from streams.errors import DurationError

#: Inngest's backoff, in seconds, for the 1st, 2nd ... retry.
DEFAULT_DELAYS: tuple[float, ...] = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)
MAX_DELAY_MS = 2 * 3600 * 1000
#: ``RetryAfterError.retry_after`` is clamped to this range.
MIN_RETRY_AFTER_MS = 1000
MAX_RETRY_AFTER_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and when to retry a failed step or function attempt.

    ``retries`` is the number of retries after the first attempt (Inngest's
    default 4 means 5 attempts). Attempts are numbered from 0.
    """

    retries: int = 4
    table: tuple[float, ...] = DEFAULT_DELAYS
    scale: float = 1.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not self.table or min(self.table) < 0:
            raise ValueError("the backoff table must list at least one delay >= 0")
        if self.scale < 0 or not 0 <= self.jitter < 1:
            raise ValueError("scale must be >= 0 and jitter in [0, 1)")

    def can_retry(self, attempt: int) -> bool:
        """Whether the failed ``attempt`` (0-based) leaves a retry."""
        return attempt < self.retries

    def delay_ms(self, attempt: int, seed: str) -> int:
        """The backoff after failed ``attempt``: table entry, jittered, capped, scaled."""
        base_ms = self.table[min(attempt, len(self.table) - 1)] * 1000
        factor = 1.0 + self.jitter * (2.0 * _unit(f"{seed}:{attempt}") - 1.0)
        return round(min(base_ms * factor, MAX_DELAY_MS) * self.scale)

    def retry_at_ms(self, now_ms: int, attempt: int, seed: str) -> int | None:
        """When to retry after failed ``attempt``, or None when retries are exhausted."""
        if not self.can_retry(attempt):
            return None
        return now_ms + self.delay_ms(attempt, seed)


def retry_after_ms(value: timedelta | int | float | str | datetime, now_ms: int) -> int:
    """The delay a ``RetryAfterError`` asks for, clamped to 1 s .. 24 h.

    Numbers are seconds (as every duration in steplog); a ``datetime`` or ISO
    string is an absolute time.
    """
    if isinstance(value, datetime):
        delay = round(to_datetime(value).timestamp() * 1000) - now_ms
    elif isinstance(value, timedelta):
        delay = round(value / timedelta(milliseconds=1))
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        delay = round(value * 1000)
    elif isinstance(value, str):
        try:
            delay = round(parse_duration(value) / timedelta(milliseconds=1))
        except DurationError:
            delay = round(to_datetime(value).timestamp() * 1000) - now_ms
    else:
        raise DurationError(f"retry_after {value!r} is neither a duration nor a time")
    return min(max(delay, MIN_RETRY_AFTER_MS), MAX_RETRY_AFTER_MS)


def _unit(seed: str) -> float:
    """A number in [0, 1) that depends only on ``seed``."""
    digest = hashlib.sha1(seed.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
