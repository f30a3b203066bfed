"""Wire formats of steplog's records: Avro (single-object or Confluent) and plain JSON.

``decode(value)`` turns any record value on ``events`` or a system topic into an
:class:`~streams.event.Event`; :class:`EventCodec` encodes and decodes with explicit
settings. See docs/avro.md.
"""

from streams.serde.codec import EventCodec, decode, default_codec, set_default_codec
from streams.serde.data import DataSchema, DataSchemas, event_key
from streams.serde.records import (
    derived_event_id,
    derived_internal_id,
    dlq_headers,
    ensure_accepted,
)
from streams.serde.registry import SchemaRegistryError
from streams.serde.schemas import (
    EVENT_SCHEMA,
    AvroSchema,
    SchemaCatalog,
    fingerprint_hex,
    load_catalog,
    rabin_fingerprint,
    schemas_dir,
)

__all__ = [
    "EVENT_SCHEMA",
    "AvroSchema",
    "DataSchema",
    "DataSchemas",
    "EventCodec",
    "SchemaCatalog",
    "SchemaRegistryError",
    "decode",
    "default_codec",
    "derived_event_id",
    "derived_internal_id",
    "dlq_headers",
    "ensure_accepted",
    "event_key",
    "fingerprint_hex",
    "load_catalog",
    "rabin_fingerprint",
    "schemas_dir",
    "set_default_codec",
]
