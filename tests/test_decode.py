"""`decode`: any record value on events or a system topic, and clear errors for the rest."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastavro import schemaless_writer

from streams.errors import DecodeError
from streams.event import Event, accept
from streams.serde import EventCodec, decode, default_codec, load_catalog, set_default_codec
from streams.settings import Settings

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NOW = 1_700_000_000_000


@pytest.fixture
def codec() -> EventCodec:
    return EventCodec(Settings(schema_registry_url=None))


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("STEPLOG_SCHEMA_REGISTRY_URL", raising=False)
    set_default_codec(None)
    yield
    set_default_codec(None)


def event() -> Event:
    return accept(Event(name="app/order.created", data={"total": 3, "who": "x"}), at_ms=NOW)


class TestModuleDecode:
    def test_decodes_every_form(self, codec: EventCodec, fresh_default: None) -> None:
        e = event()
        assert decode(codec.encode(e)) == e
        assert decode(EventCodec.encode_json(e)) == e
        assert decode(bytearray(codec.encode(e))) == e  # type: ignore[arg-type]
        assert decode(memoryview(codec.encode(e))) == e  # type: ignore[arg-type]

    def test_default_codec_is_shared_and_lazy(self, fresh_default: None) -> None:
        first = default_codec()
        assert default_codec() is first

    def test_default_codec_uses_registry_setting(
        self, monkeypatch: pytest.MonkeyPatch, fresh_default: None
    ) -> None:
        monkeypatch.setenv("STEPLOG_SCHEMA_REGISTRY_URL", "mock://decode-default")
        codec = default_codec()
        assert codec.uses_registry
        e = event()
        value = codec.encode(e)
        assert value[0] == 0
        assert decode(value) == e

    def test_importable_from_package(self) -> None:
        import streams.serde

        assert streams.serde.decode is decode


class TestErrors:
    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (b"garbage\x01\x02", "not a steplog record"),
            (b"\x07\x08\x09", "starts with 07 08 09"),
            (b"", "empty record value"),
            (b"{not json", "not JSON"),
            (b'{"name": "a/b"', "not JSON"),
            (b"[1, 2]", "a JSON array is not an event"),
            (b'  [{"name": "a/b"}]', "a JSON array is not an event"),
            (b'"just a string"', "must be an object, got str"),
            (b"42", "must be an object, got int"),
            (b'{"data": {"a": 1}}', "name: is required"),
            (b'{"name": ""}', "name: the event name is empty"),
            (b'{"name": "a/b", "data": [1]}', "data: data must be a JSON object"),
            (b'{"name": "a/b", "ts": 5}', "ts 5 is outside 1980-2100"),
            (b"\xc3\x01\x00\x00", "truncated Avro single-object header"),
            (b"\x00\x00\x01", "truncated Confluent wire-format header"),
        ],
    )
    def test_messages(self, codec: EventCodec, value: bytes, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            codec.decode(value)

    def test_none(self, codec: EventCodec) -> None:
        with pytest.raises(DecodeError, match="tombstone"):
            codec.decode(None)

    def test_truncated_avro_body(self, codec: EventCodec) -> None:
        value = codec.encode(event())
        for cut in (11, 20, len(value) - 1):
            with pytest.raises(DecodeError, match="truncated or corrupt Avro body"):
                codec.decode(value[:cut])

    def test_trailing_bytes(self, codec: EventCodec) -> None:
        with pytest.raises(DecodeError, match="3 bytes left over"):
            codec.decode(codec.encode(event()) + b"xyz")

    def test_unknown_fingerprint(self, codec: EventCodec) -> None:
        fp = (0x0123456789ABCDEF).to_bytes(8, "little")
        with pytest.raises(DecodeError) as info:
            codec.decode(b"\xc3\x01" + fp + b"\x00")
        text = str(info.value)
        assert "unknown schema fingerprint 0x0123456789abcdef" in text
        assert "not in schemas/" in text

    def test_data_not_json_inside_avro(self, codec: EventCodec) -> None:
        schema = codec.envelope
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + schema.fingerprint)
        record = {
            "internal_id": "i",
            "name": "a/b",
            "data": "{oops",
            "id": "i",
            "ts": NOW,
            "v": None,
        }
        schemaless_writer(buf, schema.parsed, record)
        with pytest.raises(DecodeError, match="data is not JSON"):
            codec.decode(buf.getvalue())

    def test_invalid_event_inside_avro(self, codec: EventCodec) -> None:
        schema = codec.envelope
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + schema.fingerprint)
        record = {"internal_id": "i", "name": "", "data": "{}", "id": "i", "ts": NOW, "v": None}
        schemaless_writer(buf, schema.parsed, record)
        with pytest.raises(DecodeError, match="invalid event in Avro record: name"):
            codec.decode(buf.getvalue())

    def test_record_of_another_schema(self, tmp_path: Path) -> None:
        for f in REPO_SCHEMAS.glob("*.avsc"):
            shutil.copy(f, tmp_path / f.name)
        other = {"type": "record", "name": "Timer", "namespace": "steplog", "fields": []}
        (tmp_path / "steplog.Timer.v1.avsc").write_text(json.dumps(other))
        codec = EventCodec(Settings(schema_registry_url=None), schemas_dir=tmp_path)
        timer = load_catalog(tmp_path).latest("steplog.Timer")
        with pytest.raises(DecodeError, match=r"is a steplog\.Timer v1.*not an event"):
            codec.decode(b"\xc3\x01" + timer.fingerprint)

    def test_topic_named_in_message(self, codec: EventCodec) -> None:
        with pytest.raises(DecodeError, match=r"^events: not JSON"):
            codec.decode(b"{x", topic="events")

    def test_typed_data_without_data_avro_field_is_explained(self, codec: EventCodec) -> None:
        # A v1 writer's record with empty data: only a typed-data record has that.
        v1 = codec.catalog.get("steplog.Event", 1)
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + v1.fingerprint)
        record = {"internal_id": "i", "name": "a/b", "data": "", "id": "i", "ts": NOW, "v": None}
        schemaless_writer(buf, v1.parsed, record)
        with pytest.raises(DecodeError, match="typed Avro"):
            codec.decode(buf.getvalue())
