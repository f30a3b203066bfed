"""The event envelope's rules, as Inngest states them."""

from __future__ import annotations

import pytest
from ulid import ULID

from streams.errors import EventValidationError
from streams.event import Event, accept, parse_event, seeded_ids

NOW = 1_700_000_000_000


def test_accept_stamps_internal_id_id_and_ts() -> None:
    e = accept(Event(name="app/a"), at_ms=NOW)
    assert e.internal_id and ULID.from_str(e.internal_id).milliseconds == NOW
    assert e.id == e.internal_id and e.key == e.id
    assert e.ts == NOW


def test_given_id_and_ts_are_kept() -> None:
    e = accept(Event(name="app/a", id="order-1", ts=NOW - 5), at_ms=NOW)
    assert e.id == "order-1" and e.key == "order-1" and e.ts == NOW - 5
    assert e.internal_id != "order-1"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({}, "name: is required"),
        ({"name": ""}, "name is empty"),
        ({"name": "x" * 257}, "limit is 256"),
        ({"name": "a", "data": [1]}, "data must be a JSON object"),
        ({"name": "a", "ts": 1_700_000_000}, "outside 1980-2100"),
        ({"name": "a", "ts": "soon"}, "ts must be milliseconds"),
        ({"name": "a", "id": 5}, "id must be a string"),
        ([1], "must be a JSON object"),
    ],
)
def test_invalid_events_say_what_is_wrong(raw: object, fragment: str) -> None:
    with pytest.raises(EventValidationError, match=fragment):
        parse_event(raw)


def test_reserved_prefix_and_far_future_are_rejected() -> None:
    with pytest.raises(EventValidationError, match="reserved prefix"):
        accept(Event(name="inngest/function.failed"), at_ms=NOW)
    assert accept(Event(name="inngest/function.failed"), at_ms=NOW, allow_reserved=True)
    with pytest.raises(EventValidationError, match="366 days"):
        accept(Event(name="a", ts=NOW + 367 * 86_400_000), at_ms=NOW)


def test_size_limit_and_json_data() -> None:
    with pytest.raises(EventValidationError, match="limit is 100 bytes"):
        accept(Event(name="a", data={"x": "y" * 200}), at_ms=NOW, max_bytes=100)
    with pytest.raises(EventValidationError, match="not JSON-serializable"):
        accept(Event(name="a", data={"x": object()}), at_ms=NOW)


def test_empty_id_and_zero_ts_mean_absent_as_inngest_sdks_send_them() -> None:
    e = parse_event({"name": "a", "id": "", "ts": 0, "v": 2})
    assert e.id is None and e.ts == 0 and e.v == "2"


def test_seeded_ids_are_stable_and_distinct() -> None:
    seed = "1700000000000,AAECAwQFBgcICQ=="
    ids = seeded_ids(seed, 3)
    assert ids == seeded_ids(seed, 3)
    assert ids is not None and len(set(ids)) == 3
    assert all(ULID.from_str(i).milliseconds == NOW for i in ids)
    assert seeded_ids("garbage", 2) is None and seeded_ids(None, 1) is None
