"""The ingest fast path says and writes exactly what the model path does.

``accept_fields`` + ``EventCodec.fields_writer`` (used by ``Client.encode`` and the
HTTP API) must accept the same events as ``accept(parse_event(raw))``, with the
same fields, the same record bytes as fastavro's writer, and the same error
messages (``Client.encode`` falls back to the models for every error).
"""

from __future__ import annotations

import enum
import io
import json
import math
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from streams.client import Client
from streams.errors import EventValidationError
from streams.event import (
    MAX_FUTURE_MS,
    Event,
    accept,
    accept_fields,
    encode_data,
    parse_event,
    seeded_ids,
)
from streams.ids import new_ulids, ulid_from_int, ulids_with_randomness
from streams.serde import EventCodec
from streams.settings import Settings

NOW = 1_700_000_000_000
IID = "01HF7YAT00ABCDEFGHJKMNPQRS"
MAX_BYTES = 400


def local_settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:1", "schema_registry_url": None}
    return Settings(**{**base, **kw})


# --- ULIDs ---------------------------------------------------------------------------------


def test_new_ulids_have_the_time_and_distinct_random_parts() -> None:
    ids = new_ulids(NOW, 2_000)
    assert len(set(ids)) == 2_000
    for text in ids[:50]:
        assert ULID.from_str(text).milliseconds == NOW and str(ULID.from_str(text)) == text
    assert new_ulids(NOW, 0) == []


def test_random_parts_use_every_character() -> None:
    chars = set("".join(i[10:] for i in new_ulids(NOW, 500)))
    assert chars == set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1))
def test_ulids_with_randomness_match_python_ulid(millis: int, randomness: int) -> None:
    expected = str(ULID.from_int((millis << 80) | randomness))
    assert ulids_with_randomness(millis, [randomness]) == [expected]
    assert ulid_from_int((millis << 80) | randomness) == expected


def test_seeded_ids_are_consecutive_ulids_of_the_seed() -> None:
    ids = seeded_ids("1700000000000,AAECAwQFBgcICQ==", 3)
    entropy = int.from_bytes(bytes(range(10)), "big")
    assert ids == [str(ULID.from_int((NOW << 80) | (entropy + i))) for i in range(3)]


# --- data as JSON --------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1


class Num(int):
    pass


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": 1, "b": [1.5, None, True, "é"]}, {"a": 1, "b": [1.5, None, True, "é"]}),
        ({"big": 2**70}, {"big": 2**70}),  # beyond orjson's 64 bits: json writes it
        ({"t": (1, 2)}, {"t": [1, 2]}),
        ({"nested": {1: "x"}}, {"nested": {"1": "x"}}),  # json's key coercion
        ({"sub": Num(3)}, {"sub": 3}),
    ],
)
def test_encode_data_writes_what_json_writes(data: dict[str, Any], expected: Any) -> None:
    assert json.loads(encode_data(data)) == expected
    assert json.loads(encode_data(data)) == json.loads(json.dumps(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x": math.nan}, "Out of range float values are not JSON compliant"),
        ({"x": [math.inf]}, "Out of range float values are not JSON compliant"),
        ({"x": object()}, "Object of type object is not JSON serializable"),
        ({"x": uuid.uuid4()}, "Object of type UUID is not JSON serializable"),
        ({"x": Color.RED}, "Object of type Color is not JSON serializable"),
        ({"x": "\ud800"}, "surrogates not allowed"),
    ],
)
def test_encode_data_refuses_what_json_refuses(data: dict[str, Any], message: str) -> None:
    with pytest.raises(EventValidationError, match="data is not JSON-serializable") as info:
        encode_data(data)
    assert message in str(info.value)
    assert accept_fields({"name": "a", "data": data}, NOW) is None


def test_circular_data_is_refused() -> None:
    data: dict[str, Any] = {}
    data["self"] = data
    with pytest.raises(EventValidationError, match="Circular reference"):
        encode_data(data)


# --- accept_fields == accept(parse_event(...)) ---------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.one_of(
    st.sampled_from(["app/a", "app/user.created", "", "   ", "inngest/x", "x" * 256, "x" * 257]),
    st.text(max_size=30),
    st.integers(),
    st.none(),
    st.binary(max_size=5),
)
datas = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    st.dictionaries(st.integers(), st.integers(), max_size=2),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=5),
    st.just({"x": "y" * 500}),
)
ids = st.one_of(
    st.none(), st.just(""), st.text(max_size=10), st.just("i" * 1025), st.integers(), st.booleans()
)
tss = st.one_of(
    st.none(),
    st.just(0),
    st.integers(NOW - 10**9, NOW + 10**9),
    st.just(NOW + MAX_FUTURE_MS + 1),
    st.integers(0, 10**6),
    st.floats(NOW, NOW + 10),
    st.booleans(),
    st.text(max_size=3),
)
vs = st.one_of(
    st.none(), st.just(""), st.text(max_size=4), st.integers(), st.floats(0, 5), st.booleans()
)


#: Mostly valid values, so that the fast path is exercised often.
likely_valid = {
    "name": st.text(min_size=1, max_size=30) | st.sampled_from(["app/a", "inngest/x"]),
    "data": st.dictionaries(st.text(max_size=8), json_values, max_size=5) | st.none(),
    "id": st.none() | st.just("") | st.text(max_size=10),
    "ts": st.none() | st.just(0) | st.integers(NOW - 10**9, NOW + 10**9),
    "v": st.none() | st.just("") | st.text(max_size=4) | st.integers(),
}
anything = {"name": names, "data": datas, "id": ids, "ts": tss, "v": vs}


@st.composite
def raw_events(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in ("name", "data", "id", "ts", "v"):
        if draw(st.booleans()) or key == "name":
            pool = likely_valid if draw(st.integers(0, 3)) else anything
            raw[key] = draw(pool[key])
    if draw(st.integers(0, 9)) == 0:
        raw["internal_id"] = draw(st.one_of(st.none(), st.text(max_size=4), st.integers()))
    if draw(st.integers(0, 9)) == 0:
        raw["extra"] = draw(json_values)
    return raw


def model_path(raw: Any) -> Event | None:
    try:
        return accept(parse_event(raw), at_ms=NOW, internal_id=IID, max_bytes=MAX_BYTES)
    except (EventValidationError, TypeError, ValueError, OverflowError):
        return None


def assert_same(fields: Any, event: Event) -> None:
    name, data, data_json, event_id, ts, v = fields
    assert (name, data, event_id or IID, ts, v) == (
        event.name,
        event.data,
        event.id,
        event.ts,
        event.v,
    )
    assert json.loads(data_json) == json.loads(encode_data(event.data))


@settings(max_examples=1500, deadline=None)
@given(raw_events())
def test_fast_path_accepts_exactly_what_the_models_accept(raw: dict[str, Any]) -> None:
    event = model_path(raw)
    fields = accept_fields(raw, NOW, MAX_BYTES)
    if event is None:
        assert fields is None
    elif fields is not None:  # None: the caller takes the model path, which accepts
        assert_same(fields, event)


@settings(max_examples=300, deadline=None)
@given(raw_events())
def test_fast_path_for_event_objects(raw: dict[str, Any]) -> None:
    try:
        event = parse_event(raw)
    except EventValidationError:
        return
    try:
        expected = accept(event, at_ms=NOW, internal_id=IID, max_bytes=MAX_BYTES)
    except EventValidationError:
        assert accept_fields(event, NOW, MAX_BYTES) is None
        return
    fields = accept_fields(event, NOW, MAX_BYTES)
    if fields is not None:  # None: the model path (e.g. integers beyond 64 bits)
        assert_same(fields, expected)


def test_plain_valid_events_take_the_fast_path() -> None:
    assert accept_fields({"name": "app/a", "data": {"x": 1}}, NOW) is not None
    assert accept_fields({"name": "a", "id": "", "ts": 0, "v": 2}, NOW) == (
        "a",
        {},
        b"{}",
        None,
        NOW,
        "2",
    )
    assert accept_fields(Event(name="app/a", id="k", ts=NOW - 1), NOW) is not None


def test_reserved_names_only_when_allowed() -> None:
    assert accept_fields({"name": "inngest/x"}, NOW) is None
    assert accept_fields({"name": "inngest/x"}, NOW, allow_reserved=True) is not None


# --- the envelope writer == fastavro -------------------------------------------------------


@pytest.fixture(params=[1, 2], ids=["envelope-v1", "envelope-v2"])
def codec(request: pytest.FixtureRequest) -> EventCodec:
    return EventCodec(local_settings(), envelope_version=request.param)


def fastavro_value(codec: EventCodec, iid: str, fields: Any) -> bytes:
    name, _data, data_json, event_id, ts, v = fields
    record = {
        "internal_id": iid,
        "name": name,
        "data": data_json.decode(),
        "id": event_id or iid,
        "ts": ts,
        "v": v,
        "data_avro": None,
    }
    buf = io.BytesIO()
    buf.write(codec.header())
    schemaless_writer(buf, codec.envelope.parsed, record)
    return buf.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(min_size=1, max_size=40).filter(lambda n: n.strip() != ""),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    | st.just({"big": "x" * 20_000}),
    event_id=st.none() | st.text(min_size=1, max_size=80),
    ts=st.integers(315_532_800_000, 4_102_444_800_000),
    v=st.none() | st.text(min_size=1, max_size=5),
    iid=st.sampled_from([IID, "x" * 70]),
)
def test_writer_writes_fastavros_bytes(
    name: str, data: dict[str, Any], event_id: str | None, ts: int, v: str | None, iid: str
) -> None:
    for version in (1, 2):
        codec = EventCodec(local_settings(), envelope_version=version)
        try:
            data_json = encode_data(data)
        except EventValidationError:
            return
        fields = (name, data, data_json, event_id, ts, v)
        value = codec.fields_writer()(iid, fields)
        assert value == fastavro_value(codec, iid, fields)
        decoded = codec.decode(value)
        assert (decoded.name, decoded.id, decoded.internal_id, decoded.ts, decoded.v) == (
            name,
            event_id or iid,
            iid,
            ts,
            v,
        )
        assert decoded.data == json.loads(data_json)


def test_encode_uses_the_writer_and_keeps_its_bytes(codec: EventCodec) -> None:
    event = accept(Event(name="app/x", data={"a": [1, 2]}, id="k", v="3"), at_ms=NOW)
    fields = accept_fields(event, NOW)
    assert fields is not None
    value = codec.encode(event)
    assert value == fastavro_value(codec, event.internal_id or "", fields)
    assert codec.decode(value) == event


def test_registry_framing_is_looked_up_once_per_writer() -> None:
    codec = EventCodec(local_settings(schema_registry_url="mock://fast-path"))
    event = accept(Event(name="app/x"), at_ms=NOW)
    fields = accept_fields(event, NOW)
    assert fields is not None
    value = codec.fields_writer("t.events")(event.internal_id or "", fields)
    assert value[0] == 0 and codec.decode(value) == event
    assert value == codec.encode(event, topic="t.events")


# --- Client.encode says what prepare() says ------------------------------------------------


@pytest.fixture
def client() -> Client:
    return Client(local_settings(max_event_bytes=MAX_BYTES))


def api_reference(client: Client, items: list[Any], as_list: bool) -> list[Event]:
    """What the HTTP API did before the fast path: parse all, then prepare."""
    events = [parse_event(item, index=i if as_list else None) for i, item in enumerate(items)]
    return client.prepare(events)


def accepted_alone(client: Client, item: Any) -> bool:
    try:
        api_reference(client, [item], False)
    except Exception:
        return False
    return True


INVALID_BATCHES: list[list[Any]] = [
    [{"name": "ok"}, {"name": ""}],
    [{"name": "ok"}, {"data": {}}],
    [{"name": "inngest/x"}, {"name": "a", "ts": 5}],  # accept error before a parse error
    [{"name": "a", "data": {"x": math.nan}}],
    [{"name": "a", "data": {"x": "y" * 500}}, {"name": "b"}],
    [{"name": "a", "ts": NOW * 10}],
    [{"name": "a", "ts": 2_000_000_000_000 + 400 * 86_400_000}],
    [{"name": "a"}, 5],
    [{"name": "a", "v": [1]}],
    [{"name": "a", "internal_id": 7}],
]


@pytest.mark.parametrize("items", INVALID_BATCHES)
def test_client_errors_are_the_model_paths(client: Client, items: list[Any]) -> None:
    with pytest.raises(Exception) as expected:
        client.prepare(items)
    with pytest.raises(type(expected.value)) as got:
        client.encode(items)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("items", INVALID_BATCHES)
@pytest.mark.parametrize("as_list", [True, False])
def test_api_errors_are_the_model_paths(client: Client, items: list[Any], as_list: bool) -> None:
    if not as_list:  # one JSON object: an item that is invalid on its own
        items = [next(i for i in items if not accepted_alone(client, i))]
    with pytest.raises(Exception) as expected:
        api_reference(client, items, as_list)
    with pytest.raises(type(expected.value)) as got:
        client.encode(items, index_parse_errors=as_list)
    assert str(got.value) == str(expected.value)


def test_client_encodes_what_prepare_accepts(client: Client) -> None:
    items: list[Any] = [
        {"name": "app/a", "data": {"x": 1}},
        {"name": "app/b", "id": "dedup-1", "ts": NOW, "v": 2},
        {"name": "app/c", "ts": 1.7e12},  # a float ts: the model path (coerced)
        Event(name="app/d", data={"y": [1, 2]}),
        {"name": "app/e", "data": {"big": 2**70}},
    ]
    iids = new_ulids(NOW, len(items))
    records = client.encode(items, internal_ids=iids)
    expected = client.prepare(items, internal_ids=iids)
    assert records.ids == iids
    assert records.keys == [e.key for e in expected]
    decoded = [client.codec.decode(v) for v in records.values]
    for got, want in zip(decoded, expected, strict=True):
        assert got.model_dump(exclude={"ts"}) == want.model_dump(exclude={"ts"})
        assert abs(got.ts - want.ts) < 60_000


def test_events_with_a_data_schema_are_validated(tmp_path: Any) -> None:
    import shutil
    from pathlib import Path

    for f in (Path(__file__).resolve().parents[2] / "schemas").glob("*.avsc"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "app.signup.v1.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Signup",
                "fields": [{"name": "email", "type": "string"}, {"name": "age", "type": "int"}],
            }
        )
    )
    client = Client(local_settings())
    client.codec = EventCodec(local_settings(), schemas_dir=tmp_path)
    good = {"name": "app/signup", "data": {"email": "a", "age": 3}}
    records = client.encode([{"name": "app/other"}, good])
    typed = client.codec.decode(records.values[1])
    assert typed.data == {"email": "a", "age": 3}
    assert records.values[1][10:].count(b'"email"') == 0  # typed Avro, not JSON
    bad = {"name": "app/signup", "data": {"email": "a", "age": "x"}}
    with pytest.raises(EventValidationError) as expected:
        client.prepare([good, bad])
    with pytest.raises(EventValidationError) as got:
        client.encode([good, bad])
    assert str(got.value) == str(expected.value) and "data.age" in str(got.value)


def test_refused_records_are_named_by_their_values(client: Client) -> None:
    from streams.client import _Batch
    from streams.errors import KafkaUnavailableError

    records = client.encode([{"name": "a"}, {"name": "b"}, {"name": "c"}])
    batch = _Batch(3, lambda: None)

    class Refused:
        def value(self) -> bytes:
            return records.values[1]

    batch.report(None, None)
    batch.report(KafkaError(KafkaError._MSG_TIMED_OUT), Refused())
    batch.report(None, None)
    with pytest.raises(KafkaUnavailableError, match="acknowledged 2 of 3") as info:
        client._check(batch, records)
    assert info.value.acked_ids == [records.ids[0], records.ids[2]]
    assert "Message timed out" in str(info.value)
