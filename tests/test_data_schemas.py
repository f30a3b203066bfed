"""Per-event Avro data schemas: selection by v, validation with field paths, typed data."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader

from streams.errors import ConfigError, DecodeError, EventValidationError
from streams.event import Event, accept
from streams.serde import EventCodec, event_key, load_catalog
from streams.settings import Settings

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NOW = 1_700_000_000_000

ORDER_V1: dict[str, Any] = {
    "type": "record",
    "name": "OrderCreated",
    "namespace": "app.events",
    "fields": [
        {"name": "orderId", "type": "string"},
        {"name": "total", "type": "double"},
        {
            "name": "currency",
            "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]},
        },
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "qty", "type": "int"},
                    ],
                },
            },
        },
        {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "placedAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "gift", "type": ["null", "Item"], "default": None},
    ],
}
ORDER_V2: dict[str, Any] = {
    **ORDER_V1,
    "fields": [
        *ORDER_V1["fields"],
        {"name": "coupon", "type": ["null", "string"], "default": None},
    ],
}
ORDER = {
    "orderId": "o-1",
    "total": 129.95,
    "currency": "EUR",
    "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}],
    "tags": {"channel": "web"},
    "note": None,
    "placedAt": NOW,
    "gift": {"sku": "g", "qty": 1},
}


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    for f in REPO_SCHEMAS.glob("*.avsc"):
        shutil.copy(f, tmp_path / f.name)
    events = tmp_path / "events"
    events.mkdir()
    (events / "app.order.created.v1.avsc").write_text(json.dumps(ORDER_V1))
    (events / "app.order.created.v2.avsc").write_text(json.dumps(ORDER_V2))
    return tmp_path


@pytest.fixture
def codec(schemas: Path) -> EventCodec:
    return EventCodec(Settings(schema_registry_url=None), schemas_dir=schemas)


def order(data: dict[str, Any] | None = None, v: str | None = "1") -> Event:
    return accept(Event(name="app/order.created", data=data or ORDER, v=v), at_ms=NOW)


def reject(codec: EventCodec, event: Event) -> str:
    with pytest.raises(EventValidationError) as info:
        codec.data_schemas.validate(event)
    return str(info.value)


class TestSelection:
    def test_event_key(self) -> None:
        assert event_key("app/order.created") == "app.order.created"

    def test_repo_ships_no_data_schemas(self) -> None:
        assert load_catalog().data == {}

    def test_versions_and_latest(self, codec: EventCodec) -> None:
        ds = codec.data_schemas
        assert ds.has("app/order.created") and not ds.has("app/other")
        assert ds.versions("app/order.created") == ["1", "2"]
        entry = ds.select(order(v=None))
        assert entry is not None and entry.version == "2"  # no v: the latest

    def test_natural_version_order(self, schemas: Path) -> None:
        for v in ("9", "10", "2024-01-02.1"):
            (schemas / "events" / f"app.thing.v{v}.avsc").write_text(
                json.dumps({"type": "record", "name": "T", "fields": []})
            )
        codec = EventCodec(Settings(schema_registry_url=None), schemas_dir=schemas)
        assert codec.data_schemas.versions("app/thing") == ["9", "10", "2024-01-02.1"]

    def test_unknown_v_is_rejected(self, codec: EventCodec) -> None:
        message = reject(codec, order(v="3"))
        assert "no data schema for v '3'" in message and "1, 2" in message

    def test_names_without_schemas_are_not_checked(self, codec: EventCodec) -> None:
        event = accept(Event(name="app/other", data={"anything": [1]}, v="99"), at_ms=NOW)
        assert codec.data_schemas.validate(event) is None


class TestValidation:
    def test_accepts_conforming_data(self, codec: EventCodec) -> None:
        entry = codec.data_schemas.validate(order())
        assert entry is not None and entry.version == "1"

    def test_int_is_a_valid_double(self, codec: EventCodec) -> None:
        assert codec.data_schemas.validate(order({**ORDER, "total": 5}))

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"total": "abc"}, "data.total: expected double, got 'abc'"),
            ({"total": None}, "data.total: expected double, got null"),
            ({"total": True}, "data.total: expected double, got true"),
            ({"orderId": 5}, "data.orderId: expected string, got 5"),
            ({"currency": "GBP"}, "data.currency: expected one of EUR, USD, got 'GBP'"),
            ({"items": {}}, "data.items: expected an array, got an object"),
            ({"items": [{"sku": "a", "qty": "x"}]}, "data.items[0].qty: expected int, got 'x'"),
            (
                {"items": [{"sku": "a", "qty": 2**40}]},
                "data.items[0].qty: 1099511627776 does not fit",
            ),
            ({"items": [{"sku": "a"}]}, "data.items[0].qty: is required"),
            ({"tags": {"x": 1}}, "data.tags.x: expected string, got 1"),
            ({"tags": {"a b": 1}}, "data.tags['a b']: expected string"),
            ({"note": 3}, "data.note: expected string, got 3"),
            ({"gift": {"sku": 1, "qty": 1}}, "data.gift.sku: expected string, got 1"),
            ({"placedAt": 1.5}, "data.placedAt: expected long, got 1.5"),
            ({"extra": 1}, "data.extra: is not a field of app.events.OrderCreated"),
        ],
    )
    def test_rejects_with_field_path(
        self, codec: EventCodec, change: dict[str, Any], message: str
    ) -> None:
        text = reject(codec, order({**ORDER, **change}))
        assert text.startswith(message), text
        assert "app.order.created.v1.avsc" in text

    def test_missing_required_field(self, codec: EventCodec) -> None:
        data = {k: v for k, v in ORDER.items() if k != "orderId"}
        assert reject(codec, order(data)).startswith("data.orderId: is required")

    def test_fields_with_defaults_may_be_left_out(self, codec: EventCodec) -> None:
        data = {k: v for k, v in ORDER.items() if k not in ("tags", "note", "gift")}
        assert codec.data_schemas.validate(order(data))

    def test_codec_validate(self, codec: EventCodec) -> None:
        entry = codec.validate(order())
        assert entry is not None and entry.version == "1"
        with pytest.raises(EventValidationError, match=r"^data\.total: expected double"):
            codec.validate(order({**ORDER, "total": "x"}))
        assert EventCodec(Settings(schema_registry_url=None)).validate(order()) is None

    def test_encode_validates(self, codec: EventCodec) -> None:
        with pytest.raises(EventValidationError, match=r"data\.total"):
            codec.encode(order({**ORDER, "total": "x"}))

    def test_json_records_are_validated_on_decode(self, codec: EventCodec) -> None:
        raw = json.dumps({"name": "app/order.created", "v": "1", "data": {**ORDER, "total": "x"}})
        with pytest.raises(
            DecodeError, match=r"invalid JSON event 'app/order.created': data\.total"
        ):
            codec.decode(raw.encode())


class TestTypedData:
    def test_round_trip(self, codec: EventCodec) -> None:
        event = order()
        value = codec.encode(event)
        assert codec.decode(value) == event

    def test_data_travels_in_data_avro(self, codec: EventCodec) -> None:
        event = order()
        value = codec.encode(event)
        envelope = codec.envelope
        record = schemaless_reader(io.BytesIO(value[10:]), envelope.parsed, None)
        assert record["data"] == ""
        typed = record["data_avro"]
        entry = codec.data_schemas.select(event)
        assert entry is not None
        assert typed[:2] == b"\xc3\x01" and typed[2:10] == entry.fingerprint
        assert len(value) < len(
            codec.encode(accept(Event(name="app/plain", data=ORDER), at_ms=NOW))
        )

    def test_defaults_are_filled_in(self, codec: EventCodec) -> None:
        data = {k: v for k, v in ORDER.items() if k not in ("tags", "note", "gift")}
        decoded = codec.decode(codec.encode(order(data)))
        assert decoded.data == {**data, "tags": {}, "note": None, "gift": None}

    def test_logical_types_stay_json(self, codec: EventCodec) -> None:
        decoded = codec.decode(codec.encode(order()))
        assert decoded.data["placedAt"] == NOW  # an int, not a datetime

    def test_without_v_uses_latest(self, codec: EventCodec) -> None:
        decoded = codec.decode(codec.encode(order(v=None)))
        assert decoded.v is None
        assert decoded.data == {**ORDER, "coupon": None}  # written with v2

    def test_unknown_data_fingerprint(self, codec: EventCodec, schemas: Path) -> None:
        value = codec.encode(order())
        (schemas / "events" / "app.order.created.v1.avsc").unlink()
        newer = EventCodec(Settings(schema_registry_url=None), schemas_dir=schemas)
        with pytest.raises(DecodeError, match="unknown data schema fingerprint"):
            newer.decode(value)

    def test_v1_envelope_codec_sends_json_data(self, schemas: Path) -> None:
        old = EventCodec(
            Settings(schema_registry_url=None), schemas_dir=schemas, envelope_version=1
        )
        event = order()
        assert old.decode(old.encode(event)) == event

    def test_v1_reader_cannot_lose_typed_data_silently(
        self, codec: EventCodec, schemas: Path
    ) -> None:
        old = EventCodec(
            Settings(schema_registry_url=None), schemas_dir=schemas, envelope_version=1
        )
        with pytest.raises(DecodeError, match="upgrade the reader"):
            old.decode(codec.encode(order()))

    def test_registry_round_trip(self, schemas: Path) -> None:
        codec = EventCodec(Settings(schema_registry_url="mock://typed"), schemas_dir=schemas)
        event = order()
        assert codec.decode(codec.encode(event)) == event
        subjects = set(codec.registry.client.get_subjects())  # type: ignore[union-attr]
        assert subjects == {"events-value", "steplog.data.app.order.created.v1"}


class TestLoading:
    def write(self, schemas: Path, name: str, schema: Any) -> None:
        (schemas / "events" / name).write_text(json.dumps(schema))

    def test_bytes_are_rejected(self, schemas: Path) -> None:
        self.write(
            schemas,
            "app.blob.v1.avsc",
            {"type": "record", "name": "B", "fields": [{"name": "b", "type": "bytes"}]},
        )
        with pytest.raises(ConfigError, match="cannot use bytes"):
            load_catalog(schemas)

    def test_top_level_must_be_record(self, schemas: Path) -> None:
        self.write(schemas, "app.enum.v1.avsc", {"type": "enum", "name": "E", "symbols": ["A"]})
        with pytest.raises(ConfigError, match="must be a record"):
            load_catalog(schemas)

    def test_data_schema_may_reference_a_shared_record_schema(self, schemas: Path) -> None:
        money = {
            "type": "record",
            "name": "Money",
            "namespace": "app.shared",
            "fields": [
                {"name": "amount", "type": "double"},
                {"name": "currency", "type": "string"},
            ],
        }
        (schemas / "app.shared.Money.v1.avsc").write_text(json.dumps(money))
        self.write(
            schemas,
            "app.payment.received.v1.avsc",
            {
                "type": "record",
                "name": "Paid",
                "fields": [{"name": "paid", "type": "app.shared.Money"}],
            },
        )
        codec = EventCodec(Settings(schema_registry_url=None), schemas_dir=schemas)
        event = accept(
            Event(name="app/payment.received", data={"paid": {"amount": 5.0, "currency": "EUR"}}),
            at_ms=NOW,
        )
        assert codec.decode(codec.encode(event)) == event
        bad = event.model_copy(update={"data": {"paid": {"amount": "x", "currency": "EUR"}}})
        with pytest.raises(EventValidationError, match=r"^data\.paid\.amount: expected double"):
            codec.data_schemas.validate(bad)
