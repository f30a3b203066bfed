"""A wheel of steplog works on its own: the Avro schemas travel inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info")

ROUND_TRIP = """
import streams
from streams import Event, decode
from streams.event import accept
from streams.serde import schemas_dir
from streams.serde.codec import EventCodec

assert streams.__file__.startswith({target!r}), streams.__file__
assert str(schemas_dir()).startswith({target!r}), schemas_dir()
event = accept(Event(name="app/order.created", data={{"n": 1}}), at_ms=1_700_000_000_000)
back = decode(EventCodec().encode(event))
assert back.name == "app/order.created" and back.data == {{"n": 1}}, back
print("ok", schemas_dir())
"""


def test_a_wheel_carries_the_schemas_and_encodes_events(tmp_path: Path) -> None:
    # built from a copy: setuptools leaves a build/ directory beside the sources
    src = tmp_path / "src"
    for name in ("streams", "agents", "connectors", "schemas"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("steplog-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:  # installing a pure wheel = unpacking it
        names = archive.namelist()
        archive.extractall(site)
    assert "streams/schemas/steplog.Event.v1.avsc" in names
    assert "streams/kafka/pom.xml" in names
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP.format(target=str(site))],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,  # not the source tree
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
