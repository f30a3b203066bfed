"""The event envelope (Inngest's fields and rules) and how an event is accepted.

An :class:`Event` is what users build and what functions receive. :func:`accept`
turns a user's event into an accepted one: it gets an ``internal_id`` (ULID),
``id`` defaults to it, ``ts`` 0 becomes the acceptance time, and the rules are
checked with messages that say what to fix.

:func:`accept_fields` is the ingest fast path for the same rules: it checks a plain
dict (or an :class:`Event`) without building a model and returns the accepted
fields with ``data`` already serialized. It never raises: for anything it is not
sure about, including every invalid event, it returns None and the caller takes
the model path above, which accepts the event or raises the error message. So
both paths accept the same events and say the same things about the others.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.clock import now_ms
from streams.errors import EventValidationError
from streams.ids import new_ulid, ulids_with_randomness

MAX_NAME_LENGTH = 256
MAX_ID_LENGTH = 1024
RESERVED_PREFIX = "inngest/"
#: ts bounds: 1980-01-01T00:00:00Z and 2100-01-01T00:00:00Z in ms.
MIN_TS_MS = 315_532_800_000
MAX_TS_MS = 4_102_444_800_000
#: How far ahead a ``ts`` may schedule delivery.
MAX_FUTURE_MS = 366 * 24 * 3600 * 1000


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
    encoded_data = encode_data(event.data)
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
    return ulids_with_randomness(millis, ((entropy + i) % 2**80 for i in range(count)))


# --- data as JSON ------------------------------------------------------------------------

#: Containers nested deeper than this are left to the standard library's encoder
#: (which reports circular references).
_MAX_PLAIN_DEPTH = 64

_stdlib_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _plain(value: Any, depth: int) -> bool:
    """Whether ``value`` holds only JSON's own types: dict (str keys), list, tuple,
    str, int, finite float, bool, None — the values orjson writes exactly as
    :mod:`json` does. Anything else (subclasses, UUIDs, enums, NaN ...) is left
    to :mod:`json`, so what is accepted and every error message stay its own."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return bool(value - value == 0.0)  # False for NaN and the infinities
    if depth >= _MAX_PLAIN_DEPTH:
        return False
    if t is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            ti = type(item)
            if ti is str or ti is int or ti is bool or item is None:
                continue
            if not _plain(item, depth + 1):
                return False
        return True
    if t is list or t is tuple:
        for item in value:
            ti = type(item)
            if ti is str or ti is int or ti is bool or item is None:
                continue
            if not _plain(item, depth + 1):
                return False
        return True
    return False


def _dump_data(data: Any) -> bytes:
    """The UTF-8 JSON of ``data``; raises TypeError or ValueError as :mod:`json` does."""
    if _plain(data, 0):
        try:
            return orjson.dumps(data)
        except orjson.JSONEncodeError:  # integers beyond 64 bits: json writes them
            pass
    return _stdlib_dumps(data).encode("utf-8")


def encode_data(data: Any) -> bytes:
    """``data`` as compact UTF-8 JSON: what the envelope carries and the size limit counts.

    Raises :class:`EventValidationError` for what JSON cannot carry (NaN, infinities,
    objects :mod:`json` cannot serialize, text that is not valid Unicode).
    """
    try:
        return _dump_data(data)
    except (TypeError, ValueError) as exc:
        raise EventValidationError(f"data is not JSON-serializable: {exc}") from None


# --- the ingest fast path ------------------------------------------------------------------


#: An accepted event's envelope fields, as :func:`accept_fields` returns them (a plain
#: tuple: it is made once per event on the hot path): ``(name, data, data_json, id, ts,
#: v)``; ``data_json`` is ``data`` as compact UTF-8 JSON, ``id`` None when it defaults
#: to the internal id (assigned by the caller).
AcceptedFields = tuple[str, dict[str, Any], bytes, str | None, int, str | None]


def accept_fields(
    raw: Any, at_ms: int, max_bytes: int | None = None, allow_reserved: bool = False
) -> AcceptedFields | None:
    """The accepted fields of a plain dict or an :class:`Event`, or None.

    The same rules as ``accept(parse_event(raw))`` for a dict (``accept(raw)`` for an
    Event), without building models. None means "take the model path": the event is
    invalid, or unusual in a way only the model path handles (types it would
    coerce, a ``data`` that is not a plain dict, ...). It never raises.
    """
    if type(raw) is dict:
        name = raw.get("name")
        if type(name) is not str or not name or len(name) > MAX_NAME_LENGTH or name.isspace():
            return None
        data = raw.get("data")
        if data is None:
            data = {}
        elif type(data) is not dict:
            return None
        event_id = raw.get("id")
        if event_id is not None:
            if type(event_id) is not str or len(event_id) > MAX_ID_LENGTH:
                return None
            event_id = event_id or None
        ts = raw.get("ts")
        if ts is None:
            ts = 0
        elif type(ts) is not int or (ts != 0 and not MIN_TS_MS <= ts <= MAX_TS_MS):
            return None
        v = raw.get("v")
        if v is not None:
            if type(v) is str:
                v = v or None
            elif type(v) is int:
                v = str(v)
            else:
                return None
        if "internal_id" in raw:  # validated by the model (then replaced at acceptance)
            iid = raw["internal_id"]
            if iid is not None and type(iid) is not str:
                return None
    elif isinstance(raw, Event):
        name, data, event_id, ts, v = raw.name, raw.data, raw.id, raw.ts, raw.v
        if (
            type(name) is not str
            or type(data) is not dict
            or type(ts) is not int
            or not (event_id is None or type(event_id) is str)
            or not (v is None or type(v) is str)
        ):
            return None
    else:
        return None
    if not allow_reserved and name.startswith(RESERVED_PREFIX):
        return None
    if ts and ts > at_ms + MAX_FUTURE_MS:
        return None
    if not _plain(data, 0):  # keys that are not text, values only json writes ...
        return None
    try:
        data_json = orjson.dumps(data)
    except orjson.JSONEncodeError:  # integers beyond 64 bits, text that is not Unicode
        return None
    if max_bytes is not None and len(data_json) + len(name) > max_bytes:
        return None
    return (name, data, data_json, event_id or None, ts or at_ms, v)
