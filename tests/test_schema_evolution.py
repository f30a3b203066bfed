"""Schema evolution: each version's reader reads the next version's records and vice versa."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from streams.errors import DecodeError
from streams.event import Event, accept
from streams.serde import EVENT_SCHEMA, AvroSchema, EventCodec, SchemaCatalog, load_catalog
from streams.settings import Settings

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NOW = 1_700_000_000_000
SAMPLES = 40


def write(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, record)
    return buf.getvalue()


def read(body: bytes, writer: Any, reader: Any) -> Any:
    return schemaless_reader(io.BytesIO(body), writer, reader)


def field_names(schema: AvroSchema) -> set[str]:
    return {f["name"] for f in schema.expanded.get("fields", [])}


def check_readable(writer: AvroSchema, reader: AvroSchema) -> None:
    """Records of ``writer`` (random samples) resolve into ``reader`` keeping shared fields."""
    shared = field_names(writer) & field_names(reader)
    for sample in generate_many(writer.parsed, SAMPLES):
        out = read(write(writer.parsed, sample), writer.parsed, reader.parsed)
        if shared:
            assert {k: out[k] for k in shared} == {k: sample[k] for k in shared}
        for missing in field_names(reader) - field_names(writer):
            assert missing in out  # filled from the reader's default


def consecutive_pairs(catalog: SchemaCatalog) -> list[tuple[AvroSchema, AvroSchema]]:
    pairs = []
    for name in catalog.names():
        versions = catalog.versions(name)
        for old, new in itertools.pairwise(versions):
            pairs.append((catalog.records[name][old], catalog.records[name][new]))
    return pairs


REPO_PAIRS = consecutive_pairs(load_catalog())


@pytest.mark.parametrize(
    ("old", "new"), REPO_PAIRS, ids=[f"{o.name}:v{o.version}-v{n.version}" for o, n in REPO_PAIRS]
)
def test_consecutive_versions_are_backward_and_forward_compatible(
    old: AvroSchema, new: AvroSchema
) -> None:
    check_readable(old, new)  # backward: the new reader reads old records
    check_readable(new, old)  # forward: the old reader reads new records


def test_there_is_at_least_the_envelope_pair() -> None:
    assert any(o.name == EVENT_SCHEMA for o, _ in REPO_PAIRS)


def test_versions_are_contiguous() -> None:
    catalog = load_catalog()
    for name in catalog.names():
        versions = [int(v) for v in catalog.versions(name)]
        assert versions == list(range(1, len(versions) + 1)), f"{name}: {versions}"


def test_check_catches_an_incompatible_change(tmp_path: Path) -> None:
    base = {"type": "record", "name": "Rec", "namespace": "steplog"}
    v1 = {**base, "fields": [{"name": "a", "type": "string"}]}
    v2 = {**base, "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "long"}]}
    (tmp_path / "steplog.Rec.v1.avsc").write_text(json.dumps(v1))
    (tmp_path / "steplog.Rec.v2.avsc").write_text(json.dumps(v2))
    (old, new) = consecutive_pairs(load_catalog(tmp_path))[0]
    with pytest.raises(Exception, match="No default value for field b"):
        check_readable(old, new)  # no default for b: the v2 reader cannot read v1 records


class TestEnvelope:
    def setup_method(self) -> None:
        catalog = load_catalog()
        self.v1 = catalog.get(EVENT_SCHEMA, 1)
        self.v2 = catalog.get(EVENT_SCHEMA, 2)
        self.record = {
            "internal_id": "01HZZZZZZZZZZZZZZZZZZZZZZZ",
            "name": "app/order.created",
            "data": '{"total":1}',
            "id": "order-1",
            "ts": NOW,
            "v": "1",
        }

    def test_v1_reader_reads_v2_records(self) -> None:
        body = write(self.v2.parsed, {**self.record, "data_avro": None})
        assert read(body, self.v2.parsed, self.v1.parsed) == self.record

    def test_v2_reader_reads_v1_records(self) -> None:
        body = write(self.v1.parsed, self.record)
        assert read(body, self.v1.parsed, self.v2.parsed) == {**self.record, "data_avro": None}

    def test_v2_adds_only_an_optional_field(self) -> None:
        added = [f for f in self.v2.expanded["fields"] if f["name"] not in field_names(self.v1)]
        assert [f["name"] for f in added] == ["data_avro"]
        assert added[0]["default"] is None

    def test_codec_decodes_v1_single_object_records(self) -> None:
        codec = EventCodec(Settings(schema_registry_url=None))
        value = b"\xc3\x01" + self.v1.fingerprint + write(self.v1.parsed, self.record)
        event = codec.decode(value)
        assert (event.id, event.data, event.v, event.ts) == ("order-1", {"total": 1}, "1", NOW)

    def test_codec_pinned_to_v1_reads_v2_records(self) -> None:
        event = accept(Event(name="app/x", data={"a": [1, 2]}), at_ms=NOW)
        new = EventCodec(Settings(schema_registry_url=None))
        old = EventCodec(Settings(schema_registry_url=None), envelope_version=1)
        assert old.envelope.version == "1"
        assert old.decode(new.encode(event)) == event
        assert new.decode(old.encode(event)) == event
        assert old.encode(event)[2:10] == self.v1.fingerprint

    def test_v1_only_reader_resolves_v2_through_registry(self, tmp_path: Path) -> None:
        shutil.copy(REPO_SCHEMAS / "steplog.Event.v1.avsc", tmp_path)
        writer = EventCodec(Settings(schema_registry_url="mock://evolution"))
        reader = EventCodec(
            Settings(schema_registry_url=None),
            schemas_dir=tmp_path,
            registry_client=writer.registry.client,  # type: ignore[union-attr]
        )
        assert reader.envelope.version == "1"
        event = accept(Event(name="app/x", data={"a": 1}, v="7"), at_ms=NOW)
        assert reader.decode(writer.encode(event)) == event
        # without a registry, a v1-only reader cannot know v2's fingerprint
        plain = EventCodec(Settings(schema_registry_url=None))
        with pytest.raises(DecodeError, match="unknown schema fingerprint"):
            reader.decode(plain.encode(event))

    def test_registry_writer_with_older_version_resolves(self) -> None:
        codec = EventCodec(Settings(schema_registry_url="mock://older"))
        client = codec.registry.client  # type: ignore[union-attr]
        from confluent_kafka.schema_registry import Schema

        schema_id = client.register_schema("events-value", Schema(self.v1.schema_str(), "AVRO"))
        value = b"\x00" + schema_id.to_bytes(4, "big") + write(self.v1.parsed, self.record)
        assert codec.decode(value).id == "order-1"


def test_records_written_before_a_referenced_type_changed_still_decode(tmp_path: Path) -> None:
    err_v1 = {
        "type": "record",
        "name": "Err",
        "namespace": "steplog",
        "fields": [{"name": "message", "type": "string"}],
    }
    err_v2 = {
        **err_v1,
        "fields": [
            {"name": "message", "type": "string"},
            {"name": "stack", "type": ["null", "string"], "default": None},
        ],
    }
    journal = {
        "type": "record",
        "name": "Journal",
        "namespace": "steplog",
        "fields": [{"name": "error", "type": "steplog.Err"}],
    }
    (tmp_path / "steplog.Err.v1.avsc").write_text(json.dumps(err_v1))
    (tmp_path / "steplog.Journal.v1.avsc").write_text(json.dumps(journal))
    before = load_catalog(tmp_path).latest("steplog.Journal")
    (tmp_path / "steplog.Err.v2.avsc").write_text(json.dumps(err_v2))
    after = load_catalog(tmp_path)
    current = after.latest("steplog.Journal")
    assert current.fingerprint != before.fingerprint  # now expanded with Err v2
    old = after.by_fp(before.fingerprint)  # ... yet the old expansion is still known
    assert old is not None and not old.is_current and old.name == "steplog.Journal"
    body = write(before.parsed, {"error": {"message": "boom"}})
    assert read(body, old.parsed, current.parsed) == {"error": {"message": "boom", "stack": None}}
    assert parse_schema(current.expanded, named_schemas={})  # self-contained
