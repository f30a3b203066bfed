"""Pure helpers for Kafka records: dead-letter headers and deterministic ids.

A JSON record from a plain producer has no ``internal_id`` and maybe no ``id``.
Both are derived from where the record sits in Kafka, so a record that Kafka
delivers again (after a crash) becomes exactly the same event:

* ``id``: the record key decoded as text when there is a key, else
  ``<topic>/<partition>/<offset>``;
* ``internal_id``: a ULID whose time part is the record timestamp and whose
  random part is the first 80 bits of SHA-256 of ``<topic>/<partition>/<offset>``;
* ``ts`` (when 0 or absent): the record timestamp.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from ulid import ULID

from streams.clock import now_ms
from streams.event import MAX_ID_LENGTH, Event, accept

#: Dead-letter header names (values are UTF-8 text).
H_ERROR = "steplog.error"
H_SOURCE_TOPIC = "steplog.source.topic"
H_SOURCE_PARTITION = "steplog.source.partition"
H_SOURCE_OFFSET = "steplog.source.offset"
H_FAILED_AT = "steplog.failed_at"
#: Error texts longer than this are cut (headers count against the record size).
MAX_ERROR_HEADER = 8 * 1024


def dlq_headers(
    error: str, topic: str, partition: int, offset: int, *, failed_at_ms: int | None = None
) -> list[tuple[str, bytes]]:
    """Headers for a record copied to ``events.dlq``: the error and where it came from.

    ``steplog.failed_at`` is an ISO-8601 UTC time with milliseconds (now unless given).
    """
    at = now_ms() if failed_at_ms is None else failed_at_ms
    stamp = datetime.fromtimestamp(at / 1000, tz=UTC).isoformat(timespec="milliseconds")
    text = error.encode("utf-8", errors="replace")
    if len(text) > MAX_ERROR_HEADER:
        text = text[: MAX_ERROR_HEADER - 3].decode("utf-8", errors="ignore").encode() + b"..."
    return [
        (H_ERROR, text),
        (H_SOURCE_TOPIC, topic.encode()),
        (H_SOURCE_PARTITION, str(partition).encode()),
        (H_SOURCE_OFFSET, str(offset).encode()),
        (H_FAILED_AT, stamp.replace("+00:00", "Z").encode()),
    ]


def derived_event_id(key: bytes | None, topic: str, partition: int, offset: int) -> str:
    """The ``id`` of a JSON record that has none: its key as text, else its position.

    A key that is not UTF-8 becomes its hex form; one longer than the id limit,
    ``sha256:<hex digest>``.
    """
    if key:
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            text = key.hex()
        if len(text) > MAX_ID_LENGTH:
            text = "sha256:" + hashlib.sha256(key).hexdigest()
        if text.strip():
            return text
    return f"{topic}/{partition}/{offset}"


def derived_internal_id(topic: str, partition: int, offset: int, timestamp_ms: int) -> str:
    """A deterministic ULID for the record at ``topic``/``partition``/``offset``."""
    randomness = hashlib.sha256(f"{topic}/{partition}/{offset}".encode()).digest()[:10]
    ms = min(max(timestamp_ms, 0), 2**48 - 1)
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + randomness))


def ensure_accepted(
    event: Event,
    *,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    allow_reserved: bool = False,
) -> Event:
    """The accepted form of an event read from Kafka, derived deterministically.

    An event that already has ``internal_id`` and ``id`` (every Avro record) is
    returned as it is. Otherwise ``id``, ``internal_id`` and ``ts`` are derived
    from the record (see the module doc) and the envelope rules are checked with
    :func:`streams.event.accept` at the record's time (raises
    ``EventValidationError``). A record without a timestamp (``timestamp_ms <= 0``)
    falls back to the current time.
    """
    if event.internal_id and event.id:
        return event
    at = timestamp_ms if timestamp_ms > 0 else now_ms()
    iid = event.internal_id or derived_internal_id(topic, partition, offset, at)
    eid = event.id or derived_event_id(key, topic, partition, offset)
    return accept(
        event.model_copy(update={"id": eid}),
        at_ms=at,
        internal_id=iid,
        allow_reserved=allow_reserved,
    )
