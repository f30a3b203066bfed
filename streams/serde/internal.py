"""Avro codecs for steplog's internal records (run journal, table values, history).

They always use single-object encoding (C3 01 + fingerprint + body), whatever the
event wire format: these records are read only by steplog, which knows every
version in schemas/. A reader resolves an older or newer writer version of the
same name to its own (the newest it has).
"""

from __future__ import annotations

import io
import json
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streams.errors import DecodeError
from streams.serde.schemas import SchemaCatalog, fingerprint_hex, load_catalog

MARKER = b"\xc3\x01"

_catalog: SchemaCatalog | None = None


def _shared_catalog() -> SchemaCatalog:
    global _catalog
    if _catalog is None:
        _catalog = load_catalog()
    return _catalog


class RecordCodec:
    """Encode/decode one internal record type (e.g. ``steplog.RunRecord``)."""

    def __init__(self, name: str, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog or _shared_catalog()
        self.schema = self.catalog.latest(name)
        self.name = name
        self._header = MARKER + self.schema.fingerprint

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        schemaless_writer(buf, self.schema.parsed, record)
        return buf.getvalue()

    def decode(self, value: bytes) -> dict[str, Any]:
        if value[:2] != MARKER or len(value) < 10:
            raise DecodeError(f"not a {self.name} record: expected Avro single-object encoding")
        fp = value[2:10]
        writer = self.schema if fp == self.schema.fingerprint else self.catalog.by_fp(fp)
        if writer is None or writer.name != self.name:
            raise DecodeError(f"not a {self.name} record (fingerprint {fingerprint_hex(fp)})")
        buf = io.BytesIO(value)
        buf.seek(10)
        reader = None if writer is self.schema else self.schema.parsed
        out = schemaless_reader(buf, writer.parsed, reader)
        if not isinstance(out, dict):
            raise DecodeError(f"{self.name} record did not decode to a record")
        return out


def compact_json(value: Any, **options: Any) -> str:
    """``value`` as compact JSON text, non-ASCII characters left as they are.

    Escaping them (``\\u00e9``) would make a 4 MiB step output of accented or CJK text
    up to three times larger in its record. Text with lone surrogates, which UTF-8 cannot
    carry, is escaped instead.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), **options)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, separators=(",", ":"), **options)
    return text


class JsonBodyCodec:
    """A record type whose payload is a JSON ``body`` beside a ``kind``."""

    def __init__(self, name: str, catalog: SchemaCatalog | None = None) -> None:
        self.records = RecordCodec(name, catalog)

    def encode(self, kind: str, body: Any, **fields: Any) -> bytes:
        return self.records.encode({"kind": kind, "body": compact_json(body), **fields})

    def decode(self, value: bytes) -> tuple[str, Any, dict[str, Any]]:
        rec = self.records.decode(value)
        return rec["kind"], json.loads(rec["body"]), rec
