"""Triggers and function options, with inngest-py's names and fields.

These are plain, frozen pydantic models: they check types and shapes when they
are built. Checks that need the function they belong to (CEL compiles, name
wildcards, options this version does not implement yet) happen in
``App.function`` so their messages can name the function and the field.

Durations accept a ``timedelta``, seconds, or an Inngest string (``"30s"``,
``"1h30m"``); see :mod:`streams.durations`.
"""

from __future__ import annotations

import zoneinfo
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from croniter import croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from streams.durations import parse_duration
from streams.errors import ConfigError

if TYPE_CHECKING:
    # What users may pass (``"1h30m"``, seconds, a timedelta); the stored value is
    # always a timedelta. Type checkers see the union so that ``period="5m"`` checks.
    Duration = timedelta | str | int | float
else:
    Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Option(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TriggerEvent(_Option):
    """Run the function for events named ``event`` (wildcards: ``app/*``, ``app/user.*``).

    ``expression`` is an optional CEL condition on ``event``, e.g.
    ``"event.data.total > 100"``.
    """

    event: str
    expression: str | None = None


class TriggerCron(_Option):
    """Run the function on a schedule: 5 cron fields, optionally ``"TZ=Area/City "`` first."""

    cron: str

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        timezone, fields = _split_cron(value)
        if timezone is not None:
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigError(
                    f"cron {value!r}: unknown time zone {timezone!r}; use an IANA name "
                    "such as 'TZ=Europe/Paris 0 9 * * *'"
                ) from None
        if len(fields.split()) != 5 or not croniter.is_valid(fields):
            raise ConfigError(
                f"cron {value!r} is not a valid schedule: write 5 fields (minute hour "
                "day-of-month month day-of-week), e.g. '0 9 * * 1-5', optionally prefixed "
                "with 'TZ=Area/City '"
            )
        return value

    @property
    def timezone(self) -> str | None:
        return _split_cron(self.cron)[0]

    @property
    def schedule(self) -> str:
        """The 5 cron fields without the time zone prefix."""
        return _split_cron(self.cron)[1]


def _split_cron(value: str) -> tuple[str | None, str]:
    text = value.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, rest = text.partition(" ")
        return prefix.split("=", 1)[1], rest.strip()
    return None, text


class Concurrency(_Option):
    """At most ``limit`` runs at once, per value of the CEL ``key`` when given.

    The first concurrency key also picks the partition of the function's runs,
    so runs of one key start in the order their events arrived. ``limit`` 0
    means no limit (as Inngest).
    """

    limit: int = Field(ge=0)
    key: str | None = None
    scope: Literal["fn", "env", "account"] = "fn"


class Throttle(_Option):
    """Start at most ``limit`` runs per ``period`` (per ``key``); excess runs wait."""

    limit: int = Field(ge=1)
    period: Duration
    key: str | None = None
    burst: int | None = Field(default=None, ge=1)


class RateLimit(_Option):
    """Start at most ``limit`` runs per ``period`` (per ``key``); excess events are dropped."""

    limit: int = Field(ge=1)
    period: Duration
    key: str | None = None


class Debounce(_Option):
    """Run once after events stop arriving for ``period`` (per ``key``), at most ``timeout``."""

    period: Duration
    key: str | None = None
    timeout: Duration | None = None


class Priority(_Option):
    """``run``: a CEL expression giving a priority in seconds (-600..600)."""

    run: str | None = None


class Batch(_Option):
    """Hand the function up to ``max_size`` events at once, waiting at most ``timeout``."""

    max_size: int = Field(ge=1)
    timeout: Duration
    key: str | None = None


class Singleton(_Option):
    """At most one run at a time (per ``key``); ``mode`` skips or cancels the other."""

    key: str | None = None
    mode: Literal["skip", "cancel"] = "skip"


class Cancel(_Option):
    """Cancel a run when ``event`` arrives and ``if_exp`` holds (within ``timeout``)."""

    event: str
    if_exp: str | None = None
    timeout: Duration | None = None


class Timeouts(_Option):
    """Cancel a run not started within ``start`` or not finished within ``finish``."""

    start: Duration | None = None
    finish: Duration | None = None
