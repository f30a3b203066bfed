"""Encoding events to Kafka record values and decoding any record back into an Event.

Three wire forms are read, whatever the codec is configured to write:

* Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO
  fingerprint + schemaless body; the writer schema is found by fingerprint in
  ``schemas/`` and resolved against the latest envelope (the reader schema);
* the Confluent wire format: ``00`` + 4-byte big-endian schema id + body; the
  writer schema is fetched from the schema registry by id;
* a plain JSON object: ``{"name": ..., "data": {...}, "id"?, "ts"?, "v"?}``.

Writing uses the single-object encoding, or the Confluent wire format when
``Settings.schema_registry_url`` is set, always with the latest envelope version.

Envelopes whose data travels as JSON are written by :class:`_EnvelopeWriter`, a
few lines of Avro binary encoding for the envelope's flat layout (strings, a long,
nullable unions), which is several times cheaper per record than fastavro's
general writer and writes the same bytes (tests compare them). Any envelope
version it does not recognise is written by fastavro.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streams.errors import DecodeError, EventValidationError
from streams.event import AcceptedFields, Event, encode_data, parse_event
from streams.serde.data import DataSchema, DataSchemas
from streams.serde.registry import HEADER_LEN, MAGIC, Registry, SchemaRegistryError, make_client
from streams.serde.schemas import (
    EVENT_SCHEMA,
    AvroSchema,
    SchemaCatalog,
    fingerprint_hex,
    load_catalog,
)
from streams.settings import Settings

#: Avro single-object encoding marker.
SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10

_JSON_START = frozenset(b" \t\r\n{")
_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_loads = json.loads

#: Avro varints of 0..127 (zig-zag encoded lengths of short strings are even numbers < 128).
_SMALL_VARINTS = [bytes((n,)) for n in range(128)]
_NULL_BRANCH = b"\x00"
_STRING_BRANCH = b"\x02"
#: The envelope fields, in order, that _EnvelopeWriter writes (and their Avro types).
_FLAT_LAYOUT = (
    ("internal_id", "string"),
    ("name", "string"),
    ("data", "string"),
    ("id", "string"),
    ("ts", "long"),
    ("v", ["null", "string"]),
)


def _varint(n: int) -> bytes:
    """Avro's variable-length encoding of an already zig-zag encoded (non-negative) int."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_long(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _avro_string(b: bytes) -> bytes:
    return _varint(len(b) << 1) + b


class _EnvelopeWriter:
    """Avro binary encoding of envelopes with ``_FLAT_LAYOUT``, data as JSON.

    Fields after those of ``_FLAT_LAYOUT`` must be unions whose first branch is
    null (``data_avro`` and any later optional field); they are written as null.
    """

    __slots__ = ("_last_ts", "_names", "_tail")

    #: Encoded event names kept (names are few; this bounds memory all the same).
    MAX_NAMES = 4096

    def __init__(self, tail_nulls: int) -> None:
        self._tail = _NULL_BRANCH * tail_nulls
        self._names: dict[str, bytes] = {}
        #: The last ``ts`` written and its encoding (one tuple: threads share the writer).
        self._last_ts: tuple[int, bytes] = (0, _avro_long(0))

    @classmethod
    def for_schema(cls, expanded: Any) -> _EnvelopeWriter | None:
        """A writer for this envelope schema, or None when its layout is not the flat one."""
        fields = expanded.get("fields") if isinstance(expanded, dict) else None
        if not isinstance(fields, list) or len(fields) < len(_FLAT_LAYOUT):
            return None
        for fld, (name, kind) in zip(fields, _FLAT_LAYOUT, strict=False):
            if not isinstance(fld, dict) or fld.get("name") != name or fld.get("type") != kind:
                return None
        extra = fields[len(_FLAT_LAYOUT) :]
        for fld in extra:
            branches = fld.get("type") if isinstance(fld, dict) else None
            if not (isinstance(branches, list) and branches and branches[0] == "null"):
                return None
        return cls(len(extra))

    def write(
        self,
        header: bytes,
        internal_id: str,
        name: str,
        data_json: bytes,
        event_id: str,
        ts: int,
        v: str | None,
    ) -> bytes:
        """One record value: ``header`` + the Avro body."""
        return self.fields_writer(header)(internal_id, (name, {}, data_json, event_id, ts, v))

    def fields_writer(self, header: bytes) -> Callable[[str, AcceptedFields], bytes]:
        """``write(internal_id, fields)`` -> record value, for many records with ``header``.

        One closure with everything it needs bound, so that writing a record is a
        single call (this is the hot loop of ingest).
        """
        names = self._names
        tail = self._tail
        small = _SMALL_VARINTS
        max_names = self.MAX_NAMES

        def write(internal_id: str, fields: AcceptedFields) -> bytes:
            name, _data, data_json, event_id, ts, v = fields
            raw_iid = internal_id.encode()
            size = len(raw_iid)
            iid = small[size << 1] + raw_iid if size < 64 else _avro_string(raw_iid)
            name_part = names.get(name)
            if name_part is None:
                name_part = _avro_string(name.encode())
                if len(names) >= max_names:
                    names.clear()
                names[name] = name_part
            size = len(data_json) << 1
            if size < 0x80:
                size_part = small[size]
            elif size < 0x4000:
                size_part = bytes(((size & 0x7F) | 0x80, size >> 7))
            else:
                size_part = _varint(size)
            last = self._last_ts
            if last[0] == ts:
                ts_part = last[1]
            else:
                ts_part = _avro_long(ts)
                self._last_ts = (ts, ts_part)
            return b"".join(
                (
                    header,
                    iid,
                    name_part,
                    size_part,
                    data_json,
                    iid
                    if event_id is None or event_id == internal_id
                    else _avro_string(event_id.encode()),
                    ts_part,
                    _NULL_BRANCH if v is None else _STRING_BRANCH + _avro_string(v.encode()),
                    tail,
                )
            )

        return write


class EventCodec:
    """Encode accepted events as Avro; decode Avro (both framings) or JSON into events.

    ``settings`` defaults to ``Settings()``; ``schemas_dir`` overrides where the
    ``.avsc`` files are read from; ``registry_client`` injects a confluent-kafka
    ``SchemaRegistryClient`` (otherwise one is made from
    ``settings.schema_registry_url`` when that is set); ``envelope_version`` pins
    the envelope version written (and read into), by default the latest in
    ``schemas/`` (pin the previous one while a new version rolls out to readers).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        schemas_dir: str | Path | None = None,
        *,
        registry_client: Any = None,
        envelope_version: int | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.catalog: SchemaCatalog = load_catalog(schemas_dir)
        self.data_schemas = DataSchemas(self.catalog)
        #: The envelope this codec writes, and the reader schema it decodes into.
        self.envelope: AvroSchema = (
            self.catalog.latest(EVENT_SCHEMA)
            if envelope_version is None
            else self.catalog.get(EVENT_SCHEMA, envelope_version)
        )
        self._envelope_fields = {
            f["name"] for f in self.envelope.expanded.get("fields", []) if isinstance(f, dict)
        }
        self._has_data_avro = "data_avro" in self._envelope_fields
        url = self.settings.schema_registry_url
        self.registry: Registry | None = None
        if registry_client is not None or url:
            client = registry_client if registry_client is not None else make_client(str(url))
            self.registry = Registry(client, self.catalog, url or "")
        self._so_header = SINGLE_OBJECT_MARKER + self.envelope.fingerprint
        self._writer = _EnvelopeWriter.for_schema(self.envelope.expanded)
        self._headers: dict[str | None, bytes] = {}
        self._fields_writers: dict[str | None, Callable[[str, AcceptedFields], bytes]] = {}

    @property
    def uses_registry(self) -> bool:
        return self.registry is not None

    def header(self, topic: str | None = None) -> bytes:
        """The framing in front of every envelope this codec writes to ``topic``.

        Avro single-object encoding (``C3 01`` + fingerprint), or with a schema
        registry the Confluent header (``00`` + the schema id registered under the
        subject ``<topic>-value``; ``topic`` defaults to the settings' ``events`` topic).
        """
        if self.registry is None:
            return self._so_header
        found = self._headers.get(topic)
        if found is None:
            subject = f"{topic if topic is not None else self.settings.topic('events')}-value"
            schema_id = self.registry.schema_id(subject, self.envelope)
            found = self._headers[topic] = b"\x00" + schema_id.to_bytes(4, "big")
        return found

    def validate(self, event: Event) -> DataSchema | None:
        """Check ``event.data`` against its registered data schema, if its name has one.

        Returns the data schema used (None when the name has none); raises
        :class:`EventValidationError` naming the field (``data.total: expected double,
        got 'abc' ...``). Call it at ingest; :meth:`encode` calls it too.
        """
        return self.data_schemas.validate(event) if self.data_schemas else None

    # --- encoding --------------------------------------------------------------------------

    def encode(self, event: Event, *, topic: str | None = None) -> bytes:
        """The record value for an accepted event (``internal_id`` set).

        ``topic`` (default: the settings' ``events`` topic, prefix included) names the
        Confluent subject ``<topic>-value`` when a schema registry is used. Events
        whose name has a data schema are validated (``EventValidationError``) and
        their data is written as typed Avro in ``data_avro``.
        """
        if not event.internal_id:
            raise EventValidationError(
                f"event {event.name!r} is not accepted yet (no internal_id): "
                "pass it through streams.event.accept() before encoding"
            )
        entry = self.validate(event)
        if entry is None and self._writer is not None:
            return self._writer.write(
                self.header(topic),
                event.internal_id,
                event.name,
                encode_data(event.data),
                event.id or event.internal_id,
                event.ts,
                event.v,
            )
        record: dict[str, Any] = {
            "internal_id": event.internal_id,
            "name": event.name,
            "id": event.id or event.internal_id,
            "ts": event.ts,
            "v": event.v,
        }
        if entry is not None and self._has_data_avro:
            record["data"] = ""
            record["data_avro"] = self._frame_data(entry, event)
        else:
            record["data"] = encode_data(event.data).decode("utf-8")
            record["data_avro"] = None
        buf = io.BytesIO()
        buf.write(self.header(topic))
        schemaless_writer(buf, self.envelope.parsed, record)
        return buf.getvalue()

    def fields_writer(self, topic: str | None = None) -> Callable[[str, AcceptedFields], bytes]:
        """:meth:`encode` for the ingest fast path: ``write(internal_id, fields)``.

        ``fields`` come from :func:`streams.event.accept_fields` (already accepted,
        ``data`` already JSON). Events whose name has a data schema are validated and
        written by :meth:`encode` (raises ``EventValidationError``). Kept per topic.
        """
        found = self._fields_writers.get(topic)
        if found is None:
            found = self._fields_writers[topic] = self._make_fields_writer(topic)
        return found

    def _make_fields_writer(self, topic: str | None) -> Callable[[str, AcceptedFields], bytes]:
        header = self.header(topic)

        def model_write(internal_id: str, fields: AcceptedFields) -> bytes:
            name, data, _data_json, event_id, ts, v = fields
            event = Event.model_construct(
                name=name,
                data=data,
                id=event_id or internal_id,
                ts=ts,
                v=v,
                internal_id=internal_id,
            )
            return self.encode(event, topic=topic)

        if self._writer is None:
            return model_write
        fast = self._writer.fields_writer(header)
        schemas = self.data_schemas
        if not schemas:
            return fast

        def write(internal_id: str, fields: AcceptedFields) -> bytes:
            if schemas.has(fields[0]):
                return model_write(internal_id, fields)
            return fast(internal_id, fields)

        return write

    def _frame_data(self, entry: DataSchema, event: Event) -> bytes:
        body = DataSchemas.write_body(entry, event.data)
        if self.registry is None:
            return SINGLE_OBJECT_MARKER + entry.fingerprint + body
        subject = f"steplog.data.{entry.event_key}.v{entry.version}"
        schema_id = self.registry.schema_id(subject, entry.schema)
        return b"\x00" + schema_id.to_bytes(4, "big") + body

    @staticmethod
    def encode_json(event: Event) -> bytes:
        """The plain-JSON form of an event (what kcat or any producer may send)."""
        doc: dict[str, Any] = {"name": event.name, "data": event.data}
        if event.id is not None:
            doc["id"] = event.id
        if event.ts:
            doc["ts"] = event.ts
        if event.v is not None:
            doc["v"] = event.v
        if event.internal_id is not None:
            doc["internal_id"] = event.internal_id
        return _dumps(doc).encode()

    # --- decoding --------------------------------------------------------------------------
    def decode(
        self, value: bytes | bytearray | memoryview | None, *, topic: str | None = None
    ) -> Event:
        """The event in a record value, whatever its wire form (raises ``DecodeError``).

        JSON events are checked with the envelope rules and against their data
        schema; ids they lack are not derived here (see ``ensure_accepted``).
        ``topic`` is only used in error messages.
        """
        if value is None or len(value) == 0:
            raise DecodeError(
                _where(topic) + "empty record value (a tombstone?): no event to decode"
            )
        if not isinstance(value, bytes):
            value = bytes(value)
        first = value[0]
        if first == 0xC3 and value[1:2] == b"\x01":
            return self._decode_single_object(value, topic)
        if first == MAGIC:
            return self._decode_confluent(value, topic)
        if first in _JSON_START or value.startswith(_UTF8_BOM):
            return self._decode_json(value, topic)
        stripped = value.lstrip(_WHITESPACE)
        if stripped[:1] in (b"[", b'"') or stripped[:1].isdigit():
            return self._decode_json(value, topic)
        raise DecodeError(
            _where(topic)
            + "not a steplog record: expected Avro single-object encoding (C3 01 ...), the "
            "Confluent wire format (00 + schema id ...) or a JSON object; the value starts "
            f"with {value[:16].hex(' ')}"
        )

    def _decode_single_object(self, value: bytes, topic: str | None) -> Event:
        if len(value) < SINGLE_OBJECT_HEADER_LEN:
            raise DecodeError(
                _where(topic) + f"truncated Avro single-object header ({len(value)} bytes; "
                "a header is C3 01 + an 8-byte fingerprint)"
            )
        fp = value[2:SINGLE_OBJECT_HEADER_LEN]
        writer = self.catalog.by_fp(fp)
        if writer is None:
            raise DecodeError(
                _where(topic) + f"unknown schema fingerprint {fingerprint_hex(fp)}: the record was "
                f"written with a schema that is not in schemas/ ({self.catalog.root})"
            )
        if writer.name != EVENT_SCHEMA:
            raise DecodeError(
                _where(topic) + f"the record is a {writer.label}, not an event ({EVENT_SCHEMA})"
            )
        return self._read_envelope(
            value, writer.parsed, writer is self.envelope, writer.label, topic
        )

    def _decode_confluent(self, value: bytes, topic: str | None) -> Event:
        if len(value) < HEADER_LEN:
            raise DecodeError(
                _where(topic) + f"truncated Confluent wire-format header ({len(value)} bytes; "
                "a header is 00 + a 4-byte schema id)"
            )
        schema_id = int.from_bytes(value[1:HEADER_LEN], "big")
        if self.registry is None:
            raise DecodeError(
                _where(topic)
                + f"the record is in the Confluent wire format (schema id {schema_id}) "
                "but no schema registry is configured: set STEPLOG_SCHEMA_REGISTRY_URL"
            )
        try:
            writer = self.registry.writer(schema_id)
        except SchemaRegistryError as exc:
            raise DecodeError(_where(topic) + str(exc)) from None
        if writer.local is not None and writer.local.name != EVENT_SCHEMA:
            raise DecodeError(
                _where(topic) + f"schema id {schema_id} is {writer.local.label}, not an event"
            )
        same = writer.local is self.envelope
        return self._read_envelope(
            value, writer.parsed, same, f"schema id {schema_id}", topic, start=HEADER_LEN
        )

    def _read_envelope(
        self,
        value: bytes,
        writer: Any,
        same: bool,
        label: str,
        topic: str | None,
        *,
        start: int = SINGLE_OBJECT_HEADER_LEN,
    ) -> Event:
        fo = io.BytesIO(value)
        fo.seek(start)
        try:
            record = schemaless_reader(fo, writer, None if same else self.envelope.parsed)
        except Exception as exc:
            raise DecodeError(
                _where(topic) + f"truncated or corrupt Avro body ({label}): "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if fo.tell() != len(value):
            raise DecodeError(
                _where(topic) + f"corrupt Avro body ({label}): {len(value) - fo.tell()} bytes "
                "left over after the record"
            )
        if not isinstance(record, dict):
            raise DecodeError(_where(topic) + f"the Avro body ({label}) is not a record")
        typed = record.get("data_avro")
        text = record.get("data")
        try:
            if typed is not None:
                record["data"] = self._read_data(typed)
            elif text:
                record["data"] = _loads(text)
            elif text == "":
                raise DecodeError(
                    "the record's data travels as typed Avro (data_avro), which this reader's "
                    "envelope schema does not include: upgrade the reader"
                )
        except DecodeError as exc:
            raise DecodeError(_where(topic) + str(exc)) from None
        except ValueError as exc:
            raise DecodeError(_where(topic) + f"the event's data is not JSON: {exc}") from None
        record.pop("data_avro", None)
        try:
            return parse_event(record)
        except EventValidationError as exc:
            raise DecodeError(_where(topic) + f"invalid event in Avro record: {exc}") from None

    def _read_data(self, typed: bytes) -> dict[str, Any]:
        fo = io.BytesIO(typed)
        if typed[:2] == SINGLE_OBJECT_MARKER:
            if len(typed) < SINGLE_OBJECT_HEADER_LEN:
                raise DecodeError("truncated typed data header")
            fp = typed[2:SINGLE_OBJECT_HEADER_LEN]
            entry = self.data_schemas.by_fingerprint(fp)
            if entry is None:
                raise DecodeError(
                    f"unknown data schema fingerprint {fingerprint_hex(fp)}: the event's data "
                    "was written with a data schema that is not in schemas/events/ "
                    f"({self.catalog.root})"
                )
            parsed = entry.parsed
            fo.seek(SINGLE_OBJECT_HEADER_LEN)
        elif typed[:1] == b"\x00" and len(typed) >= HEADER_LEN:
            schema_id = int.from_bytes(typed[1:HEADER_LEN], "big")
            if self.registry is None:
                raise DecodeError(
                    f"the event's typed data uses schema id {schema_id} of a schema registry, "
                    "but none is configured: set STEPLOG_SCHEMA_REGISTRY_URL"
                )
            try:
                parsed = self.registry.writer(schema_id).parsed
            except SchemaRegistryError as exc:
                raise DecodeError(str(exc)) from None
            fo.seek(HEADER_LEN)
        else:
            raise DecodeError("the event's typed data (data_avro) has an unknown framing")
        try:
            data = DataSchemas.read_body(parsed, fo)
        except Exception as exc:
            raise DecodeError(
                f"truncated or corrupt typed data: {type(exc).__name__}: {exc}"
            ) from None
        if fo.tell() != len(typed):
            raise DecodeError("corrupt typed data: bytes left over after the record")
        return data

    def _decode_json(self, value: bytes, topic: str | None) -> Event:
        try:
            raw = _loads(value)
        except ValueError as exc:
            raise DecodeError(_where(topic) + f"not JSON: {exc}") from None
        if isinstance(raw, list):
            raise DecodeError(
                _where(topic) + "a JSON array is not an event: send one JSON object per record"
            )
        if not isinstance(raw, dict):
            raise DecodeError(
                _where(topic) + f"a JSON event must be an object, got {type(raw).__name__}"
            )
        try:
            event = parse_event(raw)
            if self.data_schemas:
                self.data_schemas.validate(event)
        except EventValidationError as exc:
            name = raw.get("name")
            what = f"invalid JSON event {name!r}" if isinstance(name, str) else "invalid JSON event"
            raise DecodeError(_where(topic) + f"{what}: {exc}") from None
        return event


def _where(topic: str | None) -> str:
    return f"{topic}: " if topic else ""


# --- the process-wide default codec ------------------------------------------------------------

_default: EventCodec | None = None
_default_lock = threading.Lock()


def default_codec() -> EventCodec:
    """The process-wide codec, built on first use from ``Settings()``."""
    global _default
    codec = _default
    if codec is None:
        with _default_lock:
            codec = _default
            if codec is None:
                codec = _default = EventCodec()
    return codec


def set_default_codec(codec: EventCodec | None) -> None:
    """Replace (or with None, forget) the process-wide codec, e.g. in tests."""
    global _default
    with _default_lock:
        _default = codec


def decode(value: bytes) -> Event:
    """Decode any record value on ``events`` or a system topic into an :class:`Event`.

    Accepts Avro single-object encoding, the Confluent wire format (with
    ``STEPLOG_SCHEMA_REGISTRY_URL``) and plain JSON objects; raises
    :class:`~streams.errors.DecodeError` saying what was wrong.
    """
    return default_codec().decode(value)
