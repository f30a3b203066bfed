"""Per-event Avro data schemas: validation with field paths, typed Avro bodies.

An event name may register Avro schemas for its ``data``, one per version ``v``:
``schemas/events/<name with "/" replaced by ".">.v<v>.avsc``. For such a name:

* ``v`` selects the schema; an event without ``v`` is checked against the latest
  version (natural order: ``"2" < "10"``, ``"2024-01-02" < "2024-01-10"``); a ``v``
  with no schema is rejected, naming the versions that exist. Names without data
  schemas are not checked, whatever their ``v`` (Inngest's ``v`` is free-form).
* ``data`` must conform: every field without a default is present with the right
  JSON type, and no field the schema does not name is present (the typed encoding
  would otherwise drop it). Errors name the path: ``data.items[0].qty: expected
  int, got 'x'``.
* :class:`~streams.serde.codec.EventCodec` writes such data as typed Avro in the
  envelope's ``data_avro`` field (``data`` is then the empty string).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streams.errors import EventValidationError
from streams.event import Event
from streams.serde.schemas import (
    EVENTS_SUBDIR,
    PRIMITIVES,
    AvroSchema,
    SchemaCatalog,
    version_sort_key,
)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


def event_key(name: str) -> str:
    """The file-name form of an event name: ``app/order.created`` -> ``app.order.created``."""
    return name.replace("/", ".")


class _Invalid(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


_Check = Callable[[Any, str], None]


@dataclass(frozen=True)
class DataSchema:
    """One registered data schema: the Avro schema and its compiled checker."""

    event_key: str
    version: str
    schema: AvroSchema
    check: _Check

    @property
    def fingerprint(self) -> bytes:
        return self.schema.fingerprint

    @property
    def parsed(self) -> Any:
        return self.schema.parsed


class DataSchemas:
    """The event data schemas of one catalogue, by event name and ``v``."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog
        self._by_key: dict[str, dict[str, DataSchema]] = {}
        self._latest: dict[str, DataSchema] = {}
        self._by_fp: dict[bytes, DataSchema] = {}
        for key, versions in catalog.data.items():
            table = self._by_key[key] = {}
            for version, schema in versions.items():
                entry = DataSchema(key, version, schema, _compile(schema.expanded))
                table[version] = entry
                self._by_fp.setdefault(schema.fingerprint, entry)
            self._latest[key] = table[max(table, key=version_sort_key)]
        # Earlier-reference variants of data schemas decode too (read-only).
        for fp, schema in catalog.by_fingerprint.items():
            if schema.is_data and fp not in self._by_fp:
                current = self._by_key[schema.name][schema.version]
                self._by_fp[fp] = DataSchema(
                    current.event_key, current.version, schema, current.check
                )

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def has(self, name: str) -> bool:
        """Whether the event name has at least one data schema."""
        return event_key(name) in self._by_key

    def versions(self, name: str) -> list[str]:
        """The ``v`` values with a data schema for ``name``, oldest first."""
        return sorted(self._by_key.get(event_key(name), {}), key=version_sort_key)

    def select(self, event: Event) -> DataSchema | None:
        """The data schema ``event`` must conform to, or None when its name has none."""
        table = self._by_key.get(event_key(event.name))
        if table is None:
            return None
        if event.v is None:
            return self._latest[event_key(event.name)]
        entry = table.get(event.v)
        if entry is None:
            known = ", ".join(self.versions(event.name))
            raise EventValidationError(
                f"v: event {event.name!r} has no data schema for v {event.v!r} "
                f"(versions with schemas: {known}); add "
                f"schemas/{EVENTS_SUBDIR}/{event_key(event.name)}.v{event.v}.avsc or send a known v"
            )
        return entry

    def validate(self, event: Event) -> DataSchema | None:
        """Check ``event.data`` against its data schema; return the schema used (or None).

        Raises :class:`EventValidationError` naming the field: ``data.total: expected
        double, got 'abc'``.
        """
        entry = self.select(event)
        if entry is not None:
            try:
                entry.check(event.data, "data")
            except _Invalid as exc:
                raise EventValidationError(
                    f"{exc} (event {event.name!r}, data schema v{entry.version}: "
                    f"{entry.schema.path.name})"
                ) from None
        return entry

    def by_fingerprint(self, fp: bytes) -> DataSchema | None:
        return self._by_fp.get(bytes(fp))

    @staticmethod
    def write_body(entry: DataSchema, data: Mapping[str, Any]) -> bytes:
        """The schemaless Avro body of ``data`` (already validated)."""
        buf = io.BytesIO()
        schemaless_writer(buf, entry.parsed, data)
        return buf.getvalue()

    @staticmethod
    def read_body(parsed: Any, body: io.BytesIO) -> dict[str, Any]:
        value = schemaless_reader(body, parsed, None)
        if not isinstance(value, dict):
            raise ValueError("typed data is not a record")
        return value


# --- the compiled checker ----------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def _type_label(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return " or ".join(_type_label(n) for n in node)
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error", "enum"):
            return f"{kind} {node.get('name')}"
        if kind in ("array", "map"):
            return str(kind)
        return _type_label(kind)
    return str(node)


def _compile(expanded: Any) -> _Check:
    named: dict[str, _Check] = {}
    return _compile_node(expanded, named)


def _compile_node(node: Any, named: dict[str, _Check]) -> _Check:
    if isinstance(node, str):
        if node in PRIMITIVES:
            return _PRIMITIVE_CHECKS[node]
        # A reference to a named type defined earlier (possibly recursive): late lookup.
        return lambda value, path: named[node](value, path)
    if isinstance(node, list):
        return _compile_union(node, named)
    kind = node.get("type")
    if kind in ("record", "error"):
        return _compile_record(node, named)
    if kind == "enum":
        symbols = frozenset(node.get("symbols", []))
        label = ", ".join(node.get("symbols", []))

        def check_enum(value: Any, path: str) -> None:
            if not isinstance(value, str) or value not in symbols:
                raise _Invalid(path, f"expected one of {label}, got {_describe(value)}")

        named[str(node["name"])] = check_enum
        return check_enum
    if kind == "array":
        item = _compile_node(node.get("items"), named)

        def check_array(value: Any, path: str) -> None:
            if not isinstance(value, list):
                raise _Invalid(path, f"expected an array, got {_describe(value)}")
            for i, v in enumerate(value):
                item(v, f"{path}[{i}]")

        return check_array
    if kind == "map":
        val = _compile_node(node.get("values"), named)

        def check_map(value: Any, path: str) -> None:
            if not isinstance(value, dict):
                raise _Invalid(path, f"expected an object (map), got {_describe(value)}")
            for k, v in value.items():
                val(v, _child(path, str(k)))

        return check_map
    return _compile_node(kind, named)


def _compile_record(node: Mapping[str, Any], named: dict[str, _Check]) -> _Check:
    name = str(node["name"])
    fields: list[tuple[str, _Check, bool]] = []
    allowed: set[str] = set()

    def check_record(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(path, f"expected an object ({name}), got {_describe(value)}")
        for fname, check, has_default in fields:
            if fname in value:
                check(value[fname], _child(path, fname))
            elif not has_default:
                raise _Invalid(_child(path, fname), "is required")
        for key in value:
            if key not in allowed:
                raise _Invalid(
                    _child(path, str(key)),
                    f"is not a field of {name} (fields: {', '.join(sorted(allowed)) or 'none'})",
                )

    named[name] = check_record
    for fld in node.get("fields", []):
        fname = str(fld["name"])
        allowed.add(fname)
        fields.append((fname, _compile_node(fld["type"], named), "default" in fld))
    return check_record


def _compile_union(branches: list[Any], named: dict[str, _Check]) -> _Check:
    checks = [_compile_node(b, named) for b in branches]
    nullable = "null" in branches
    others = [c for b, c in zip(branches, checks, strict=True) if b != "null"]
    label = " or ".join(_type_label(b) for b in branches)

    def check_union(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        if len(others) == 1:
            others[0](value, path)  # the one real type: its own, more precise error
            return
        for check in others:
            try:
                check(value, path)
                return
            except _Invalid:
                continue
        raise _Invalid(path, f"expected {label}, got {_describe(value)}")

    return check_union


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_null(value: Any, path: str) -> None:
    if value is not None:
        raise _Invalid(path, f"expected null, got {_describe(value)}")


def _check_boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _Invalid(path, f"expected boolean, got {_describe(value)}")


def _check_int(value: Any, path: str) -> None:
    if not _is_int(value):
        raise _Invalid(path, f"expected int, got {_describe(value)}")
    if not INT_MIN <= value <= INT_MAX:
        raise _Invalid(path, f"{value} does not fit an int (32 bits); use long")


def _check_long(value: Any, path: str) -> None:
    if not _is_int(value):
        raise _Invalid(path, f"expected long, got {_describe(value)}")
    if not LONG_MIN <= value <= LONG_MAX:
        raise _Invalid(path, f"{value} does not fit a long (64 bits)")


def _number(kind: str) -> _Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(path, f"expected {kind}, got {_describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _Invalid(path, f"expected a finite {kind}, got {value}")

    return check


def _check_string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected string, got {_describe(value)}")


def _check_bytes(value: Any, path: str) -> None:  # rejected when loading; kept for safety
    raise _Invalid(path, "bytes cannot be carried in JSON event data")


_PRIMITIVE_CHECKS: dict[str, _Check] = {
    "null": _check_null,
    "boolean": _check_boolean,
    "int": _check_int,
    "long": _check_long,
    "float": _number("float"),
    "double": _number("double"),
    "string": _check_string,
    "bytes": _check_bytes,
}
