"""Encode/decode rates of the event codec, per wire form, on one core.

    .venv/bin/python bench/avro_codec.py [N]

Prints figures only; it never fails on timing. N (default 50,000) records per form.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from streams.event import Event, accept
from streams.serde import EventCodec
from streams.settings import Settings

DATA = {
    "orderId": "ord_01HZX3K9Q2",
    "userId": "user_42",
    "total": 129.95,
    "currency": "EUR",
    "items": [
        {"sku": "sku-1001", "qty": 2, "price": 19.99},
        {"sku": "sku-2002", "qty": 1, "price": 89.97},
    ],
    "shipping": {"country": "DE", "city": "Berlin", "express": False},
}

ORDER_SCHEMA = {
    "type": "record",
    "name": "OrderCreated",
    "namespace": "bench",
    "fields": [
        {"name": "orderId", "type": "string"},
        {"name": "userId", "type": "string"},
        {"name": "total", "type": "double"},
        {"name": "currency", "type": "string"},
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
                        {"name": "price", "type": "double"},
                    ],
                },
            },
        },
        {
            "name": "shipping",
            "type": {
                "type": "record",
                "name": "Shipping",
                "fields": [
                    {"name": "country", "type": "string"},
                    {"name": "city", "type": "string"},
                    {"name": "express", "type": "boolean"},
                ],
            },
        },
    ],
}


def rate(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 1000)):  # warm up caches
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def row(label: str, size: int, enc: float | None, dec: float) -> None:
    encoded = f"{enc:>12,.0f}/s" if enc is not None else f"{'-':>14}"
    print(f"{label:<34} {size:>6} B {encoded} {dec:>12,.0f}/s")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    event = accept(Event(name="app/order.created", data=DATA, id="order-ord_01HZX3K9Q2"))
    plain = EventCodec(Settings(schema_registry_url=None))
    registry = EventCodec(Settings(schema_registry_url="mock://bench"))

    print(f"steplog event codec, {n:,} records per form, one core")
    print(f"{'form':<34} {'size':>8} {'encode':>14} {'decode':>14}")

    value = plain.encode(event)
    row(
        "Avro single-object (C3 01)",
        len(value),
        rate(lambda: plain.encode(event), n),
        rate(lambda: plain.decode(value), n),
    )

    value = registry.encode(event)
    row(
        "Avro Confluent (mock registry)",
        len(value),
        rate(lambda: registry.encode(event), n),
        rate(lambda: registry.decode(value), n),
    )

    value = EventCodec.encode_json(event)
    row(
        "plain JSON object",
        len(value),
        rate(lambda: EventCodec.encode_json(event), n),
        rate(lambda: plain.decode(value), n),
    )

    v1 = EventCodec(Settings(schema_registry_url=None), envelope_version=1)
    value = v1.encode(event)
    row("Avro v1 record read by v2 reader", len(value), None, rate(lambda: plain.decode(value), n))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for f in plain.catalog.root.glob("*.avsc"):
            shutil.copy(f, root / f.name)
        (root / "events").mkdir()
        (root / "events" / "app.order.created.v1.avsc").write_text(json.dumps(ORDER_SCHEMA))
        typed = EventCodec(Settings(schema_registry_url=None), schemas_dir=root)
        value = typed.encode(event)
        row(
            "typed data (validate + data_avro)",
            len(value),
            rate(lambda: typed.encode(event), n),
            rate(lambda: typed.decode(value), n),
        )


if __name__ == "__main__":
    main()
