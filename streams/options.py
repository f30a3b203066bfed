"""Triggers and function options, with inngest-py's names and fields.

These are plain, frozen pydantic models: they check types and shapes when they
are built. Checks that need the function they belong to (CEL compiles, name
wildcards, options this version does not implement yet) happen in
``App.function`` so their messages can name the function and the field.

Durations accept a ``timedelta``, seconds, or an Inngest string (``"30s"``,
``"1h30m"``); see :mod:`streams.durations`.

Options take keywords, as inngest-py writes them. The two triggers also take
their fields positionally, in order: ``TriggerEvent("app/x", "event.data.a > 1")``
and ``TriggerCron("0 9 * * 1")`` are ``TriggerEvent(event=..., expression=...)``
and ``TriggerCron(cron=...)``; the values are validated the same way.
"""

from __future__ import annotations

import zoneinfo
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from croniter import croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from streams.durations import parse_duration
from streams.errors import ArgumentError, ConfigError

if TYPE_CHECKING:
    # What users may pass (``"1h30m"``, seconds, a timedelta); the stored value is
    # always a timedelta. Type checkers see the union so that ``period="5m"`` checks.
    Duration = timedelta | str | int | float
else:
    Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Option(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The fields that may be given positionally, in order (the triggers' only).
    _positional: ClassVar[tuple[str, ...]] = ()
    #: What to do instead of passing more positional arguments (default: use keywords).
    _positional_hint: ClassVar[str] = ""

    if not TYPE_CHECKING:  # type checkers keep the keyword signature pydantic derives

        def __init__(self, *args: Any, **fields: Any) -> None:
            super().__init__(**_by_name(type(self), args, fields))


def _by_name(model: type[_Option], args: tuple[Any, ...], fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the positional ``args`` added under ``model._positional``, in order."""
    cls, names = model.__name__, model._positional
    if len(args) > len(names):
        if not names:
            takes = "no positional arguments"
        elif len(names) == 1:
            takes = f"at most 1 positional argument ({names[0]})"
        else:
            takes = f"at most {len(names)} positional arguments ({', '.join(names)})"
        keywords = ", ".join(f"{name}=..." for name in model.model_fields)
        hint = model._positional_hint or f"pass the fields by keyword: {cls}({keywords})"
        given = "1 was given" if len(args) == 1 else f"{len(args)} were given"
        raise ArgumentError(
            f"{cls}() takes {takes} but {given}: {', '.join(repr(a) for a in args)}; {hint}"
        )
    out = dict(fields)
    for name, value in zip(names, args, strict=False):
        if name in out:
            raise ArgumentError(
                f"{cls}() got {name!r} twice: positionally ({value!r}) and as a keyword "
                f"({out[name]!r}); give it once"
            )
        out[name] = value
    return out


class TriggerEvent(_Option):
    """Run the function for events named ``event`` (wildcards: ``app/*``, ``app/user.*``).

    ``expression`` is an optional CEL condition on ``event``, e.g.
    ``"event.data.total > 100"``. Both may be given positionally:
    ``TriggerEvent("app/order.created", "event.data.total > 100")``.
    """

    _positional = ("event", "expression")
    _positional_hint = (
        "for several event names give a list: "
        "trigger=[TriggerEvent('app/a'), TriggerEvent('app/b')]"
    )

    event: str
    expression: str | None = None

    if TYPE_CHECKING:  # the signature type checkers see; the fields' types

        def __init__(self, event: str, expression: str | None = None) -> None: ...


class TriggerCron(_Option):
    """Run the function on a schedule: 5 cron fields, optionally ``"TZ=Area/City "`` first.

    ``TriggerCron("0 9 * * 1")`` is ``TriggerCron(cron="0 9 * * 1")``.
    """

    _positional = ("cron",)
    _positional_hint = "a time zone goes first in the schedule: 'TZ=Europe/Paris 0 9 * * 1'"

    cron: str

    if TYPE_CHECKING:  # the signature type checkers see; the field's type

        def __init__(self, cron: str) -> None: ...

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
