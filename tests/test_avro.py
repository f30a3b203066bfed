"""Avro schemas, fingerprints and the three wire forms (no broker needed)."""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from streams.errors import ConfigError, DecodeError, EventValidationError
from streams.event import Event, accept
from streams.serde import (
    EVENT_SCHEMA,
    EventCodec,
    derived_event_id,
    derived_internal_id,
    dlq_headers,
    ensure_accepted,
    fingerprint_hex,
    load_catalog,
    rabin_fingerprint,
    schemas_dir,
)
from streams.settings import Settings

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NOW = 1_700_000_000_000


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {"schema_registry_url": None, "topic_prefix": ""}
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


def accepted(**kw: object) -> Event:
    base: dict[str, object] = {
        "name": "app/order.created",
        "data": {
            "orderId": "o-1",
            "total": 12.5,
            "items": [{"sku": "a", "qty": 2}],
            "note": "héllo",
        },
    }
    base.update(kw)
    return accept(Event.model_validate(base), at_ms=NOW)


# --- an independent CRC-64-AVRO (Rabin) implementation, written from the Avro spec ----------

EMPTY64 = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY64 if fp & 1 else 0)
        table.append(fp)
    return table


TABLE = _table()


def spec_fingerprint(text: str) -> int:
    fp = EMPTY64
    for byte in text.encode("utf-8"):
        fp = (fp >> 8) ^ TABLE[(fp ^ byte) & 0xFF]
    return fp


V1_CANONICAL = (
    '{"name":"steplog.Event","type":"record","fields":['
    '{"name":"internal_id","type":"string"},{"name":"name","type":"string"},'
    '{"name":"data","type":"string"},{"name":"id","type":"string"},'
    '{"name":"ts","type":"long"},{"name":"v","type":["null","string"]}]}'
)


class TestFingerprints:
    @pytest.mark.parametrize(
        ("schema", "expected"),
        [  # values from the Avro project's schema test data (signed Java longs)
            ('"null"', 7195948357588979594),
            ('"boolean"', -6970731678124411036),
            ('"int"', 8247732601305521295),
        ],
    )
    def test_known_vectors(self, schema: str, expected: int) -> None:
        assert struct.unpack("<q", rabin_fingerprint(schema))[0] == expected
        assert spec_fingerprint(schema) == expected & 0xFFFFFFFFFFFFFFFF

    def test_every_schema_fingerprint_matches_independent_computation(self) -> None:
        catalog = load_catalog()
        assert catalog.records, "no record schemas loaded"
        for versions in catalog.records.values():
            for schema in versions.values():
                raw = json.loads(schema.path.read_text())
                canonical = to_parsing_canonical_form(parse_schema(raw, named_schemas={}))
                assert canonical == schema.canonical
                expected = spec_fingerprint(canonical).to_bytes(8, "little")
                assert schema.fingerprint == expected, schema.label
                assert catalog.by_fp(expected) is schema

    def test_v1_canonical_form(self) -> None:
        v1 = load_catalog().get(EVENT_SCHEMA, 1)
        assert v1.canonical == V1_CANONICAL
        assert v1.fingerprint == spec_fingerprint(V1_CANONICAL).to_bytes(8, "little")

    def test_fingerprint_hex(self) -> None:
        assert fingerprint_hex(rabin_fingerprint('"int"')) == "0x7275d51a3f395c8f"


class TestCatalog:
    def test_default_dir_is_repo_schemas(self) -> None:
        assert schemas_dir() == REPO_SCHEMAS.resolve()

    def test_missing_dir(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="does not exist"):
            schemas_dir(tmp_path / "nope")

    def test_envelope_versions(self) -> None:
        catalog = load_catalog()
        assert catalog.versions(EVENT_SCHEMA)[:2] == ["1", "2"]
        assert catalog.latest(EVENT_SCHEMA).version == catalog.versions(EVENT_SCHEMA)[-1]
        for name in catalog.names():
            for version, schema in catalog.records[name].items():
                assert schema.path.name == f"{name}.v{version}.avsc"

    def test_file_name_must_match_schema_name(self, tmp_path: Path) -> None:
        (tmp_path / "steplog.Other.v1.avsc").write_text(
            json.dumps({"type": "record", "name": "Wrong", "namespace": "steplog", "fields": []})
        )
        with pytest.raises(ConfigError, match=r"file name says steplog\.Other"):
            load_catalog(tmp_path)

    def test_file_name_needs_version(self, tmp_path: Path) -> None:
        (tmp_path / "steplog.Other.avsc").write_text("{}")
        with pytest.raises(ConfigError, match="version"):
            load_catalog(tmp_path)

    def test_invalid_json(self, tmp_path: Path) -> None:
        (tmp_path / "steplog.Other.v1.avsc").write_text("{not json")
        with pytest.raises(ConfigError, match="not a readable JSON schema"):
            load_catalog(tmp_path)

    def test_unknown_reference(self, tmp_path: Path) -> None:
        (tmp_path / "steplog.Other.v1.avsc").write_text(
            json.dumps(
                {
                    "type": "record",
                    "name": "Other",
                    "namespace": "steplog",
                    "fields": [{"name": "x", "type": "steplog.Missing"}],
                }
            )
        )
        with pytest.raises(ConfigError, match=r"unknown type 'steplog\.Missing'"):
            load_catalog(tmp_path)

    def test_cross_file_references_are_inlined(self, tmp_path: Path) -> None:
        err = {
            "type": "record",
            "name": "Err",
            "namespace": "steplog",
            "fields": [{"name": "message", "type": "string"}],
        }
        journal = {
            "type": "record",
            "name": "Journal",
            "namespace": "steplog",
            "fields": [
                {"name": "error", "type": "steplog.Err"},
                {"name": "previous", "type": ["null", "Err"], "default": None},
            ],
        }
        (tmp_path / "steplog.Err.v1.avsc").write_text(json.dumps(err))
        (tmp_path / "steplog.Journal.v1.avsc").write_text(json.dumps(journal))
        schema = load_catalog(tmp_path).latest("steplog.Journal")
        # Defined once at its first use, referenced by name afterwards (canonical form rule).
        assert schema.canonical.count('"name":"steplog.Err","type":"record"') == 1
        assert '["null","steplog.Err"]' in schema.canonical
        buf = io.BytesIO()
        record = {"error": {"message": "boom"}, "previous": {"message": "before"}}
        schemaless_writer(buf, schema.parsed, record)
        buf.seek(0)
        assert schemaless_reader(buf, schema.parsed, None) == record


class TestSingleObject:
    def test_round_trip(self) -> None:
        codec = EventCodec(settings())
        event = accepted(id="order-1", v="3")
        value = codec.encode(event)
        assert codec.decode(value) == event

    def test_framing(self) -> None:
        codec = EventCodec(settings())
        event = accepted()
        value = codec.encode(event)
        latest = load_catalog().latest(EVENT_SCHEMA)
        assert value[:2] == b"\xc3\x01"
        assert value[2:10] == spec_fingerprint(latest.canonical).to_bytes(8, "little")
        body = io.BytesIO(value[10:])
        record = schemaless_reader(body, parse_schema(json.loads(latest.path.read_text())), None)
        assert record["internal_id"] == event.internal_id
        assert record["name"] == "app/order.created"
        assert json.loads(record["data"]) == event.data
        assert record["id"] == event.id == event.internal_id
        assert record["ts"] == NOW
        assert record["v"] is None

    def test_system_event_uses_same_envelope(self) -> None:
        codec = EventCodec(settings())
        event = accept(
            Event(
                name="inngest/function.finished",
                data={"function_id": "shop-process-order", "run_id": "r1", "result": None},
                id="finished-r1",
            ),
            allow_reserved=True,
            at_ms=NOW,
        )
        assert codec.decode(codec.encode(event, topic="inngest.function.finished")) == event

    def test_encode_needs_accepted_event(self) -> None:
        with pytest.raises(EventValidationError, match="not accepted"):
            EventCodec(settings()).encode(Event(name="app/x"))

    def test_unicode_and_nesting(self) -> None:
        codec = EventCodec(settings())
        event = accepted(data={"emoji": "🚀", "nested": {"a": [1, 2.5, None, True, {"b": "c"}]}})
        assert codec.decode(codec.encode(event)).data == event.data


class TestJson:
    def test_round_trip(self) -> None:
        codec = EventCodec(settings())
        event = accepted(id="abc", v="2")
        assert codec.decode(EventCodec.encode_json(event)) == event

    def test_plain_producer_record(self) -> None:
        codec = EventCodec(settings())
        event = codec.decode(b'  {"name": "app/user.created", "data": {"id": 7}}\n')
        assert event.name == "app/user.created"
        assert event.data == {"id": 7}
        assert event.id is None and event.internal_id is None and event.ts == 0

    def test_v_number_becomes_string(self) -> None:
        event = EventCodec(settings()).decode(b'{"name": "a/b", "v": 2}')
        assert event.v == "2"


class TestConfluent:
    def test_mock_registry_round_trip(self) -> None:
        codec = EventCodec(settings(schema_registry_url="mock://steplog-test"))
        assert codec.uses_registry
        event = accepted(id="order-9")
        value = codec.encode(event)
        assert value[0] == 0
        schema_id = int.from_bytes(value[1:5], "big")
        registered = codec.registry.client.get_latest_version("events-value")  # type: ignore[union-attr]
        assert registered.schema_id == schema_id
        assert codec.decode(value) == event
        # the body is plain schemaless Avro of the registered schema
        parsed = parse_schema(json.loads(registered.schema.schema_str))
        record = schemaless_reader(io.BytesIO(value[5:]), parsed, None)
        assert record["id"] == "order-9"

    def test_subject_uses_topic_and_prefix(self) -> None:
        codec = EventCodec(settings(schema_registry_url="mock://x", topic_prefix="prod."))
        event = accepted()
        codec.encode(event)
        codec.encode(event, topic="prod.inngest.function.failed")
        subjects = set(codec.registry.client.get_subjects())  # type: ignore[union-attr]
        assert subjects == {"prod.events-value", "prod.inngest.function.failed-value"}

    def test_ids_are_cached(self) -> None:
        codec = EventCodec(settings(schema_registry_url="mock://cache"))
        client = codec.registry.client  # type: ignore[union-attr]
        calls = {"n": 0}
        original = client.lookup_schema

        def counting(*args: object, **kw: object) -> object:
            calls["n"] += 1
            return original(*args, **kw)

        client.lookup_schema = counting
        for _ in range(5):
            codec.encode(accepted())
        assert calls["n"] == 1

    def test_shared_registry_between_codecs(self) -> None:
        writer = EventCodec(settings(schema_registry_url="mock://shared"))
        reader = EventCodec(settings(), registry_client=writer.registry.client)  # type: ignore[union-attr]
        event = accepted()
        assert reader.decode(writer.encode(event)) == event

    def test_registry_codec_reads_all_forms(self) -> None:
        plain = EventCodec(settings())
        codec = EventCodec(settings(schema_registry_url="mock://all"))
        event = accepted()
        assert codec.decode(plain.encode(event)) == event
        assert codec.decode(EventCodec.encode_json(event)) == event
        assert codec.decode(codec.encode(event)) == event

    def test_without_registry_confluent_record_is_explained(self) -> None:
        value = EventCodec(settings(schema_registry_url="mock://y")).encode(accepted())
        with pytest.raises(DecodeError, match="STEPLOG_SCHEMA_REGISTRY_URL"):
            EventCodec(settings()).decode(value)

    def test_unknown_schema_id(self) -> None:
        codec = EventCodec(settings(schema_registry_url="mock://z"))
        with pytest.raises(DecodeError, match="schema id 4242"):
            codec.decode(b"\x00" + (4242).to_bytes(4, "big") + b"\x02")


class TestRecords:
    def test_dlq_headers(self) -> None:
        headers = dlq_headers("not JSON: boom", "events", 3, 1234, failed_at_ms=NOW)
        assert headers == [
            ("steplog.error", b"not JSON: boom"),
            ("steplog.source.topic", b"events"),
            ("steplog.source.partition", b"3"),
            ("steplog.source.offset", b"1234"),
            ("steplog.failed_at", b"2023-11-14T22:13:20.000Z"),
        ]

    def test_dlq_headers_cut_long_errors(self) -> None:
        error = dict(dlq_headers("x" * 100_000, "events", 0, 0))["steplog.error"]
        assert len(error) <= 8 * 1024 and error.endswith(b"...")

    def test_derived_event_id(self) -> None:
        assert derived_event_id(b"order-7", "events", 1, 5) == "order-7"
        assert derived_event_id(None, "events", 1, 5) == "events/1/5"
        assert derived_event_id(b"", "events", 1, 5) == "events/1/5"
        assert derived_event_id(b"\xff\xfe", "events", 1, 5) == "fffe"
        assert derived_event_id(b"k" * 2000, "events", 1, 5).startswith("sha256:")

    def test_ensure_accepted_is_deterministic(self) -> None:
        raw = EventCodec(settings()).decode(b'{"name": "app/x", "data": {"a": 1}}')
        kw = {"key": None, "topic": "events", "partition": 2, "offset": 99, "timestamp_ms": NOW}
        first = ensure_accepted(raw, **kw)  # type: ignore[arg-type]
        again = ensure_accepted(raw, **kw)  # type: ignore[arg-type]
        assert first == again
        assert first.id == "events/2/99"
        assert first.ts == NOW
        assert first.internal_id == derived_internal_id("events", 2, 99, NOW)
        from ulid import ULID

        assert ULID.from_str(first.internal_id or "").milliseconds == NOW
        other = ensure_accepted(raw, **{**kw, "offset": 100})  # type: ignore[arg-type]
        assert other.internal_id != first.internal_id

    def test_ensure_accepted_uses_key_and_keeps_given_fields(self) -> None:
        raw = Event(name="app/x", id=None, ts=NOW - 5)
        event = ensure_accepted(
            raw, key=b"user-1", topic="events", partition=0, offset=1, timestamp_ms=NOW
        )
        assert event.id == "user-1" and event.ts == NOW - 5
        done = accepted()
        assert (
            ensure_accepted(done, key=b"k", topic="events", partition=0, offset=1, timestamp_ms=NOW)
            is done
        )

    def test_ensure_accepted_checks_rules(self) -> None:
        with pytest.raises(EventValidationError, match="reserved"):
            ensure_accepted(
                Event(name="inngest/x"),
                key=None,
                topic="events",
                partition=0,
                offset=1,
                timestamp_ms=NOW,
            )


def test_schemas_override_dir(tmp_path: Path) -> None:
    for f in REPO_SCHEMAS.glob("*.avsc"):
        shutil.copy(f, tmp_path / f.name)
    codec = EventCodec(settings(), schemas_dir=tmp_path)
    assert codec.catalog.root == tmp_path
    event = accepted()
    assert codec.decode(EventCodec(settings()).encode(event)) == event
