"""The Confluent Schema Registry side of the codec (used with STEPLOG_SCHEMA_REGISTRY_URL).

Records are framed in the Confluent wire format: magic byte 0, the 4-byte
big-endian schema id, then the schemaless Avro body. The envelope is registered
under the subject ``<topic>-value`` (TopicNameStrategy); typed event data under
``steplog.data.<event key>.v<v>`` (one subject per version: data schema versions
are selected by ``v`` and need not be compatible). Ids and parsed writer schemas
are cached.

confluent-kafka's Schema Registry client is imported only when a registry is used;
``mock://`` URLs give its in-memory registry (for tests).
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from streams.errors import ConfigError, StreamsError
from streams.serde.schemas import AvroSchema, SchemaCatalog, rabin_fingerprint

MAGIC = 0
HEADER_LEN = 5


class SchemaRegistryError(StreamsError):
    """The schema registry could not be reached or refused a request."""


@dataclass(frozen=True)
class WriterSchema:
    """A writer schema fetched by id: parsed, and the local schema it equals (if any)."""

    schema_id: int
    parsed: Any
    local: AvroSchema | None


def make_client(url: str) -> Any:
    """A confluent-kafka ``SchemaRegistryClient`` for ``url`` (``mock://`` works)."""
    try:
        # authlib (imported by the client) warns about its own httpx integration on
        # import, with an "always" filter of its own: record the warning and drop it.
        with warnings.catch_warnings(record=True):
            from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:  # the [schemaregistry] extras are missing
        raise ConfigError(
            "STEPLOG_SCHEMA_REGISTRY_URL is set but confluent-kafka's Schema Registry client "
            f"cannot be imported ({exc}); install its dependencies (authlib, cachetools)"
        ) from None
    conf = {"url": url}
    new_client = getattr(SchemaRegistryClient, "new_client", None)
    if new_client is not None:
        return new_client(conf)
    if url.startswith("mock://"):
        from confluent_kafka.schema_registry.mock_schema_registry_client import (
            MockSchemaRegistryClient,
        )

        return MockSchemaRegistryClient(conf)
    return SchemaRegistryClient(conf)


class Registry:
    """Schema ids for steplog's schemas, and writer schemas by id, both cached."""

    def __init__(self, client: Any, catalog: SchemaCatalog, url: str = "") -> None:
        self.client = client
        self.catalog = catalog
        self.url = url
        self._ids: dict[tuple[str, bytes], int] = {}
        self._writers: dict[int, WriterSchema] = {}
        self._lock = threading.Lock()

    def schema_id(self, subject: str, schema: AvroSchema) -> int:
        """The registry id of ``schema`` under ``subject``: looked up, else registered."""
        key = (subject, schema.fingerprint)
        found = self._ids.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._ids.get(key)
            if found is None:
                found = self._register(subject, schema)
                self._ids[key] = found
                self._writers.setdefault(found, WriterSchema(found, schema.parsed, schema))
        return found

    def _register(self, subject: str, schema: AvroSchema) -> int:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError as SRError

        sr_schema = Schema(schema.schema_str(), "AVRO")
        try:
            return int(self.client.lookup_schema(subject, sr_schema).schema_id)
        except SRError as exc:
            if exc.http_status_code not in (404, None):
                raise SchemaRegistryError(self._explain(f"looking up {subject}", exc)) from None
        except Exception as exc:
            raise SchemaRegistryError(self._explain(f"looking up {subject}", exc)) from None
        try:
            return int(self.client.register_schema(subject, sr_schema))
        except Exception as exc:
            raise SchemaRegistryError(
                self._explain(f"registering {schema.label} under {subject}", exc)
            ) from None

    def writer(self, schema_id: int) -> WriterSchema:
        """The writer schema with id ``schema_id`` (raises SchemaRegistryError)."""
        found = self._writers.get(schema_id)
        if found is not None:
            return found
        try:
            registered = self.client.get_schema(schema_id)
        except Exception as exc:
            raise SchemaRegistryError(
                self._explain(f"fetching schema id {schema_id}", exc)
            ) from None
        if (registered.schema_type or "AVRO") != "AVRO":
            raise SchemaRegistryError(
                f"schema id {schema_id} is a {registered.schema_type} schema, not Avro"
            )
        try:
            parsed = parse_schema(json.loads(registered.schema_str), named_schemas={})
            fp = rabin_fingerprint(to_parsing_canonical_form(parsed))
        except Exception as exc:
            raise SchemaRegistryError(
                f"schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from None
        local = self.catalog.by_fp(fp)
        found = WriterSchema(schema_id, local.parsed if local else parsed, local)
        with self._lock:
            self._writers[schema_id] = found
        return found

    def _explain(self, what: str, exc: Exception) -> str:
        return f"schema registry {self.url or '(client)'}: {what} failed: {exc}"
