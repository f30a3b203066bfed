"""The execution core, the run lifecycle and the declaration API import no Kafka, Faust,
RocksDB or HTTP code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE_MODULES = [
    "streams.core",
    "streams.clock",
    "streams.core.context",
    "streams.core.effects",
    "streams.core.execution",
    "streams.core.interrupts",
    "streams.core.memo",
    "streams.core.outputs",
    "streams.core.retry",
    "streams.core.running",
    "streams.core.step_ids",
    "streams.app",
    "streams.cron",
    "streams.waits",
    "streams.options",
    "streams.durations",
    "streams.expressions",
    "streams.testing",
    "streams.testing.engine",
    "streams.lifecycle",
    "streams.lifecycle.gate",
    "streams.lifecycle.limits",
    "streams.lifecycle.machine",
    "streams.lifecycle.records",
    "streams.lifecycle.state",
    "streams.lifecycle.store",
    "streams.lifecycle.system",
    "streams.lifecycle.timers",
    "streams.routing",
    "streams.topics",
    "streams.ids",
]
FORBIDDEN = [
    "faust",
    "mode",
    "aiokafka",
    "confluent_kafka",
    "rocksdict",
    "fastapi",
    "starlette",
    "httpx",
    "uvicorn",
]

# The `streams` package is stubbed so that its __init__ (owned by the public API,
# which may import the Kafka client) does not hide what these modules import.
PROBE = """
import importlib, json, sys, types
pkg = types.ModuleType("streams")
pkg.__path__ = [sys.argv[1]]
pkg.__file__ = sys.argv[1] + "/__init__.py"
sys.modules["streams"] = pkg
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def test_pure_modules_import_no_io_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "streams"), *PURE_MODULES],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    loaded = set(json.loads(out.stdout))
    assert set(PURE_MODULES) <= loaded
    offenders = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert offenders == []
