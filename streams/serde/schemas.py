"""The Avro schemas in ``schemas/``: locating, loading, expanding, fingerprinting.

``schemas/`` (at the repository root, beside the ``streams`` package) is the only
place steplog's schemas live. Two kinds of files are loaded:

* record schemas: ``schemas/**/<full name>.v<N>.avsc`` (``N`` an integer), e.g.
  ``schemas/steplog.Event.v2.avsc``. The file's top-level schema is a named type
  whose full name (with a namespace) is the file name's first part. Such a type may
  be referenced by full name from any other file; a reference is expanded to the
  latest version of that type, and the catalogue also indexes the fingerprints of
  the schema expanded with every earlier version of what it references, so records
  written before a referenced type gained a version still decode.
* event data schemas: ``schemas/events/<event name, "/" replaced by ".">.v<v>.avsc``,
  e.g. ``schemas/events/app.order.created.v1.avsc`` for ``app/order.created`` with
  ``v == "1"``. The top-level schema is a record; see :mod:`streams.serde.data`.

Every schema is indexed by its CRC-64-AVRO (Rabin) fingerprint of the Parsing
Canonical Form, as Avro's single-object encoding needs it (8 bytes, little-endian).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

import streams
from streams.errors import ConfigError

#: The envelope's full name (the events topic and the system topics).
EVENT_SCHEMA = "steplog.Event"
#: Where event data schemas live, inside the schemas directory.
EVENTS_SUBDIR = "events"
#: At most this many expansions of one schema (combinations of referenced versions).
MAX_VARIANTS = 256

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})

_FILE_RE = re.compile(r"^(?P<name>.+)\.v(?P<version>[^/]+)\.avsc$")


def schemas_dir(override: str | Path | None = None) -> Path:
    """The schemas directory: ``override`` if given, else steplog's own ``schemas/``.

    In the source tree ``streams/schemas`` is a link to the top-level ``schemas/``; a
    wheel carries the files themselves there. Raises :class:`ConfigError` when the
    directory does not exist.
    """
    if override is not None:
        path = Path(override)
        if not path.is_dir():
            raise ConfigError(f"the schemas directory {path} does not exist")
        return path
    package = Path(streams.__file__).resolve().parent
    for path in (package / "schemas", package.parent / "schemas"):
        if path.is_dir():
            return path.resolve()  # in the source tree, through the link to schemas/
    raise ConfigError(
        f"steplog's Avro schemas were not found in {package / 'schemas'} nor in "
        f"{package.parent / 'schemas'}: reinstall steplog (its wheel carries them) or run "
        "it from its source tree"
    )


def rabin_fingerprint(canonical: str) -> bytes:
    """The CRC-64-AVRO fingerprint of a Parsing Canonical Form, as 8 little-endian bytes."""
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def fingerprint_hex(fp: bytes) -> str:
    """A fingerprint as the 64-bit number Avro's tools print, e.g. ``0x7275d51a3f395c8f``."""
    return f"0x{int.from_bytes(fp, 'little'):016x}"


def version_sort_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order for free-form versions: ``"2" < "10"``, ``"2024-01-02" < "2024-01-10"``."""
    parts = re.split(r"(\d+)", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


@dataclass(frozen=True)
class SchemaFile:
    """One ``.avsc`` file as read: its kind, name part, version and JSON."""

    path: Path
    name: str
    version: str
    raw: Any
    is_data: bool


@dataclass(frozen=True)
class AvroSchema:
    """One loaded schema (one version of a name, expanded once).

    ``parsed`` is fastavro's parsed form, ready for ``schemaless_writer``/``reader``;
    ``expanded`` is self-contained JSON (every referenced type inlined once).
    """

    name: str
    version: str
    path: Path
    expanded: Any
    parsed: Any
    canonical: str
    fingerprint: bytes
    is_data: bool = False
    #: False for expansions with earlier versions of referenced types (read-only).
    is_current: bool = True

    @property
    def fingerprint_int(self) -> int:
        return int.from_bytes(self.fingerprint, "little")

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.path.name})"

    def schema_str(self) -> str:
        """The self-contained schema as JSON text (what a schema registry stores)."""
        return json.dumps(self.expanded, separators=(",", ":"))


@dataclass
class SchemaCatalog:
    """Every schema in one schemas directory, indexed by name + version and fingerprint."""

    root: Path
    #: record schemas: full name -> version (int as str) -> schema
    records: dict[str, dict[str, AvroSchema]] = field(default_factory=dict)
    #: data schemas: event key (name with "/" -> ".") -> v -> schema
    data: dict[str, dict[str, AvroSchema]] = field(default_factory=dict)
    #: fingerprint -> schema (current expansions and earlier-reference variants)
    by_fingerprint: dict[bytes, AvroSchema] = field(default_factory=dict)

    # --- lookups ---------------------------------------------------------------------
    def get(self, name: str, version: int | str) -> AvroSchema:
        try:
            return self.records[name][str(version)]
        except KeyError:
            raise ConfigError(
                f"no schema {name} v{version} in {self.root} "
                f"(expected a file {name}.v{version}.avsc)"
            ) from None

    def versions(self, name: str) -> list[str]:
        """The versions of a record schema, oldest first."""
        return sorted(self.records.get(name, {}), key=int)

    def latest(self, name: str) -> AvroSchema:
        versions = self.versions(name)
        if not versions:
            raise ConfigError(
                f"no schema named {name} in {self.root} (expected files {name}.v<N>.avsc)"
            )
        return self.records[name][versions[-1]]

    def by_fp(self, fp: bytes) -> AvroSchema | None:
        return self.by_fingerprint.get(bytes(fp))

    def names(self) -> list[str]:
        return sorted(self.records)


# --- loading ---------------------------------------------------------------------------


def load_catalog(override: str | Path | None = None) -> SchemaCatalog:
    """Load and index every ``.avsc`` file under the schemas directory."""
    root = schemas_dir(override)
    files = list(_read_files(root))
    catalog = SchemaCatalog(root=root)

    # Top-level record schemas, by full name and version: what references resolve to.
    defs: dict[str, dict[str, SchemaFile]] = {}
    data_defs: dict[str, dict[str, SchemaFile]] = {}
    for f in files:
        table = (data_defs if f.is_data else defs).setdefault(f.name, {})
        if f.version in table:
            raise ConfigError(
                f"{f.path}: {f.name} v{f.version} is defined twice "
                f"(also in {table[f.version].path})"
            )
        table[f.version] = f

    for f in sorted(files, key=lambda f: (f.is_data, f.name, version_sort_key(f.version))):
        variants = _expansions(f, defs)
        for i, expanded in enumerate(variants):
            schema = _build(f, expanded, is_current=i == 0)
            if i == 0:
                target = catalog.data if f.is_data else catalog.records
                target.setdefault(f.name, {})[f.version] = schema
            known = catalog.by_fingerprint.get(schema.fingerprint)
            if known is None or (schema.is_current and not known.is_current):
                catalog.by_fingerprint[schema.fingerprint] = schema
    return catalog


def _read_files(root: Path) -> Iterator[SchemaFile]:
    data_root = root / EVENTS_SUBDIR
    for path in sorted(root.rglob("*.avsc")):
        is_data = data_root in path.parents
        m = _FILE_RE.match(path.name)
        if m is None:
            raise ConfigError(
                f"{path}: a schema file name must carry its version: <name>.v<version>.avsc"
            )
        name, version = m["name"], m["version"]
        if not is_data and not version.isdigit():
            raise ConfigError(
                f"{path}: the version of a record schema must be a number (v1, v2 ...)"
            )
        if not is_data:
            version = str(int(version))
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable JSON schema: {exc}") from None
        if not isinstance(raw, dict) or raw.get("type") not in NAMED_KINDS:
            raise ConfigError(f"{path}: the top-level schema must be a record, enum or fixed")
        if is_data:
            if raw["type"] not in ("record", "error"):
                raise ConfigError(
                    f"{path}: an event data schema must be a record (data is an object)"
                )
        else:
            full = _full_name(raw, "")
            if full != name:
                raise ConfigError(
                    f"{path}: the file name says {name} but the schema is named {full!r}; "
                    "name the file <namespace>.<name>.v<N>.avsc"
                )
            if "." not in full:
                raise ConfigError(f"{path}: give the schema a namespace (e.g. steplog)")
        yield SchemaFile(path=path, name=name, version=version, raw=raw, is_data=is_data)


def _full_name(node: Mapping[str, Any], namespace: str) -> str:
    name = str(node.get("name", ""))
    if "." in name:
        return name
    ns = node.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _expansions(f: SchemaFile, defs: Mapping[str, Mapping[str, SchemaFile]]) -> list[Any]:
    """Self-contained forms of ``f``: first with the latest referenced versions, then the rest."""
    refs = sorted(_referenced(f, defs))
    choices = [sorted(defs[r], key=int, reverse=True) for r in refs]
    out: list[Any] = []
    seen: set[str] = set()
    for combo in itertools.islice(itertools.product(*choices), MAX_VARIANTS * 4):
        pick = dict(zip(refs, combo, strict=True))
        expanded = _Expander(f, defs, pick).expand()
        key = json.dumps(expanded, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(expanded)
        if len(out) >= MAX_VARIANTS:
            break
    return out


def _referenced(f: SchemaFile, defs: Mapping[str, Mapping[str, SchemaFile]]) -> set[str]:
    """Top-level names ``f`` references, transitively, over every version of each."""
    found: set[str] = set()
    todo = [f]
    while todo:
        current = todo.pop()
        for ref in _string_refs(current.raw, ""):
            if ref in defs and ref not in found:
                found.add(ref)
                todo.extend(defs[ref].values())
    if not f.is_data:
        found.discard(f.name)
    return found


def _string_refs(node: Any, namespace: str) -> Iterable[str]:
    if isinstance(node, str):
        if node not in PRIMITIVES:
            yield node if "." in node or not namespace else f"{namespace}.{node}"
            if "." not in node and namespace:
                yield node
    elif isinstance(node, list):
        for item in node:
            yield from _string_refs(item, namespace)
    elif isinstance(node, dict):
        kind = node.get("type")
        ns = namespace
        if kind in NAMED_KINDS:
            full = _full_name(node, namespace)
            ns = full.rpartition(".")[0]
        if kind in ("record", "error"):
            for fld in node.get("fields", []):
                yield from _string_refs(fld.get("type"), ns)
        elif kind == "array":
            yield from _string_refs(node.get("items"), ns)
        elif kind == "map":
            yield from _string_refs(node.get("values"), ns)
        elif kind not in NAMED_KINDS:
            yield from _string_refs(kind, ns)


class _Expander:
    """Inline every referenced top-level type at its first use (spec canonical form)."""

    def __init__(
        self, f: SchemaFile, defs: Mapping[str, Mapping[str, SchemaFile]], pick: dict[str, str]
    ) -> None:
        self.f = f
        self.defs = defs
        self.pick = pick
        self.defined: set[str] = set()

    def expand(self) -> Any:
        return self._node(self.f.raw, "")

    def _node(self, node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            return self._ref(node, namespace)
        if isinstance(node, list):
            return [self._node(item, namespace) for item in node]
        if not isinstance(node, dict):
            raise ConfigError(f"{self.f.path}: {node!r} is not an Avro schema")
        kind = node.get("type")
        out = dict(node)
        if kind in NAMED_KINDS:
            full = _full_name(node, namespace)
            out["name"] = full
            out.pop("namespace", None)
            self.defined.add(full)
            ns = full.rpartition(".")[0]
            if kind in ("record", "error"):
                out["fields"] = [
                    {**fld, "type": self._node(fld.get("type"), ns)}
                    for fld in node.get("fields", [])
                ]
            return out
        if kind == "array":
            out["items"] = self._node(node.get("items"), namespace)
        elif kind == "map":
            out["values"] = self._node(node.get("values"), namespace)
        elif isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in PRIMITIVES):
            out["type"] = self._node(kind, namespace)
        return out

    def _ref(self, name: str, namespace: str) -> Any:
        if name in PRIMITIVES:
            return name
        candidates = (
            [name] if "." in name else [f"{namespace}.{name}", name] if namespace else [name]
        )
        for full in candidates:
            if full in self.defined:
                return full
        for full in candidates:
            if full in self.defs and full in self.pick:
                target = self.defs[full][self.pick[full]]
                return self._node(target.raw, "")
        raise ConfigError(
            f"{self.f.path}: unknown type {name!r}; a type from another file must be a record "
            "schema in schemas/ named <namespace>.<name>.v<N>.avsc, referenced by its full name"
        )


def _build(f: SchemaFile, expanded: Any, *, is_current: bool) -> AvroSchema:
    wire = _strip_logical_types(expanded) if f.is_data else expanded
    try:
        parsed = parse_schema(wire, named_schemas={})
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:
        raise ConfigError(f"{f.path}: not a valid Avro schema: {exc}") from None
    if f.is_data:
        _check_json_types(f.path, expanded)
    return AvroSchema(
        name=f.name,
        version=f.version,
        path=f.path,
        expanded=expanded,
        parsed=parsed,
        canonical=canonical,
        fingerprint=rabin_fingerprint(canonical),
        is_data=f.is_data,
        is_current=is_current,
    )


def _strip_logical_types(node: Any) -> Any:
    """Event data is JSON: logical types stay their underlying type on the wire."""
    if isinstance(node, list):
        return [_strip_logical_types(n) for n in node]
    if isinstance(node, dict):
        return {
            k: (
                [{**fld, "type": _strip_logical_types(fld.get("type"))} for fld in v]
                if k == "fields"
                else _strip_logical_types(v)
            )
            for k, v in node.items()
            if k != "logicalType"
        }
    return node


def _check_json_types(path: Path, node: Any) -> None:
    """Data schemas describe JSON: no ``bytes`` or ``fixed`` (JSON has no byte strings)."""
    if isinstance(node, str):
        if node == "bytes":
            raise ConfigError(f"{path}: event data is JSON, so data schemas cannot use bytes")
    elif isinstance(node, list):
        for item in node:
            _check_json_types(path, item)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind == "fixed":
            raise ConfigError(f"{path}: event data is JSON, so data schemas cannot use fixed")
        for fld in node.get("fields", []) if kind in ("record", "error") else []:
            _check_json_types(path, fld.get("type"))
        for key in ("items", "values"):
            if key in node:
                _check_json_types(path, node[key])
        if isinstance(kind, dict | list) or kind == "bytes":
            _check_json_types(path, kind)
