"""The event envelope (Inngest's fields and rules) and how an event is accepted.

An :class:`Event` is what users build and what functions receive. :func:`accept`
turns a user's event into an accepted one: it gets an ``internal_id`` (ULID),
``id`` defaults to it, ``ts`` 0 becomes the acceptance time, and the rules are
checked with messages that say what to fix.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.errors import EventValidationError
from streams.ids import new_ulid, ulid_from_int

MAX_NAME_LENGTH = 256
MAX_ID_LENGTH = 1024
RESERVED_PREFIX = "inngest/"
#: ts bounds: 1980-01-01T00:00:00Z and 2100-01-01T00:00:00Z in ms.
MIN_TS_MS = 315_532_800_000
MAX_TS_MS = 4_102_444_800_000
#: How far ahead a ``ts`` may schedule delivery.
MAX_FUTURE_MS = 366 * 24 * 3600 * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Event(BaseModel):
    """An event: ``name`` and a JSON-object ``data``, optional ``id``, ``ts``, ``v``.

    ``internal_id`` is set by steplog when the event is accepted; it is the id
    returned to the sender. ``id`` (the deduplication key) defaults to it.
    """

    model_config = ConfigDict(extra="ignore")

    name: str
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    ts: int = 0
    v: str | None = None
    internal_id: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError(
                "the event name is empty: give the event a name like 'app/user.created'"
            )
        if len(value) > MAX_NAME_LENGTH:
            raise ValueError(
                f"the event name is {len(value)} characters; the limit is {MAX_NAME_LENGTH}"
            )
        return value

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"data must be a JSON object, got {type(value).__name__}")
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError(f"id must be a string, got {type(value).__name__}")
        if len(value) > MAX_ID_LENGTH:
            raise ValueError(f"id is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
        return value

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> Any:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("ts must be milliseconds since the Unix epoch (an integer)")
        ts = int(value)
        if ts != 0 and not MIN_TS_MS <= ts <= MAX_TS_MS:
            raise ValueError(
                f"ts {ts} is outside 1980-2100; give milliseconds since the epoch (not seconds)"
            )
        return ts

    @field_validator("v", mode="before")
    @classmethod
    def _v(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @property
    def key(self) -> str:
        """The Kafka key of this event's record: its ``id`` (set once accepted)."""
        return self.id or self.internal_id or ""


def parse_event(raw: Any, *, index: int | None = None) -> Event:
    """Validate one raw JSON value as an :class:`Event`; errors name the field."""
    where = f"event {index}: " if index is not None else ""
    if not isinstance(raw, dict):
        raise EventValidationError(
            f"{where}an event must be a JSON object, got {type(raw).__name__}"
        )
    try:
        return Event.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "event"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "is required"
        raise EventValidationError(f"{where}{field}: {msg}") from None


def accept(
    event: Event,
    *,
    at_ms: int | None = None,
    internal_id: str | None = None,
    allow_reserved: bool = False,
    max_bytes: int | None = None,
) -> Event:
    """Return the accepted form of ``event``: stamped ids and ``ts``, rules checked."""
    now = now_ms() if at_ms is None else at_ms
    if not allow_reserved and event.name.startswith(RESERVED_PREFIX):
        raise EventValidationError(
            f"event name {event.name!r} uses the reserved prefix {RESERVED_PREFIX!r}; "
            "those events are sent by steplog itself"
        )
    if event.ts and event.ts > now + MAX_FUTURE_MS:
        raise EventValidationError(
            f"ts {event.ts} is more than 366 days ahead; delayed delivery is limited to 366 days"
        )
    try:
        encoded_data = json.dumps(event.data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EventValidationError(f"data is not JSON-serializable: {exc}") from None
    if max_bytes is not None and len(encoded_data) + len(event.name) > max_bytes:
        raise EventValidationError(
            f"event {event.name!r} is {len(encoded_data)} bytes; the limit is {max_bytes} bytes"
        )
    iid = internal_id or new_ulid(now)
    return event.model_copy(
        update={"internal_id": iid, "id": event.id or iid, "ts": event.ts or now}
    )


def seeded_ids(seed: str | None, count: int) -> list[str] | None:
    """Event ids derived from an ``x-inngest-event-id-seed`` header, or None.

    The seed is ``"<millis>,<base64 of 10 random bytes>"``: the ULID of the
    i-th event has the seed's time and its entropy plus i, so an SDK that
    retries a request with the same seed gets the same ids back.
    """
    if not seed:
        return None
    try:
        millis_text, entropy_text = seed.split(",", 1)
        millis = int(millis_text)
        entropy = int.from_bytes(base64.b64decode(entropy_text, validate=True), "big")
    except (ValueError, binascii.Error):
        return None
    if not 0 <= millis < 2**48 or entropy >= 2**80:
        return None
    return [ulid_from_int((millis << 80) | ((entropy + i) % 2**80)) for i in range(count)]
