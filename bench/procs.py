"""What bench/sleeps.py and bench/waits.py share: broker, worker process, CPU, percentiles.

- :func:`broker`: the broker of ``--kafka-data-dir`` (started with
  ``steplog kafka start --data-dir DIR``), or ``--bootstrap``, or one started here
  in a temporary directory and stopped at the end.
- :class:`Worker`: ``python -m streams.cli worker MODULE:app`` in its own data dir,
  with a probe folder for bench/apps/introspect.py.
- :class:`Cpu`: CPU seconds of named processes over a phase, and of everything else
  on the machine (``other``), from /proc.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer  # noqa: E402

from streams.kafka import local  # noqa: E402
from streams.settings import Settings  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


# --- numbers -------------------------------------------------------------------------


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an already sorted list; nan if empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --- CPU accounting ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads; not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


class Cpu:
    """CPU of named processes over a phase, plus ``other`` (the rest of the machine)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {n: p for n, p in pids.items() if p}
        self.t0 = time.perf_counter()
        self.before = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.machine0 = machine_busy()
        self.load0 = loadavg().split()[0]

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        used = {n: cpu_seconds(p) - self.before[n] for n, p in self.pids.items()}
        used["other"] = max(machine_busy() - self.machine0 - sum(used.values()), 0.0)
        return {"wall": wall, "cpu": used, "load": f"{self.load0}->{loadavg().split()[0]}"}


def cpu_text(r: dict[str, Any]) -> str:
    wall = max(r["wall"], 1e-9)
    parts = [f"{n} {s:.1f}s ({100 * s / wall:.0f}%)" for n, s in r["cpu"].items()]
    return f"{r['wall']:.1f}s wall, cpu: " + ", ".join(parts) + f"; load {r['load']}"


# --- broker --------------------------------------------------------------------------


@dataclass
class Broker:
    bootstrap: str
    pid: int | None


@contextmanager
def broker(bootstrap: str | None, kafka_data_dir: str | None, tmp: Path) -> Iterator[Broker]:
    """The broker to use; one started here is stopped on exit."""
    if kafka_data_dir:
        info = local.status(kafka_data_dir)
        if info is None or not info.running:
            raise SystemExit(
                f"no broker runs in {kafka_data_dir}: "
                f".venv/bin/steplog kafka start --data-dir {kafka_data_dir}"
            )
        yield Broker(info.bootstrap, info.pid)
        return
    if bootstrap:
        yield Broker(bootstrap, None)
        return
    info = local.start(tmp / "broker")
    try:
        yield Broker(info.bootstrap, info.pid)
    finally:
        local.stop(tmp / "broker")


# --- worker --------------------------------------------------------------------------


def tail_consumer(settings: Settings, name: str) -> Consumer:
    """A consumer that reads topics from their beginning, quickly, in a fresh group."""
    return Consumer(
        settings.kafka_config(
            **{
                "group.id": f"{name}-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
    )


def worker_env(settings: Settings, app_id: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a bench worker process (``bench.apps.*`` read BENCH_APP_ID)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STEPLOG_BOOTSTRAP_SERVERS": settings.resolved_bootstrap(),
        "STEPLOG_TOPIC_PREFIX": settings.topic_prefix,
        "STEPLOG_PARTITIONS": str(settings.partitions),
        "STEPLOG_DATA_DIR": str(data_dir),
        "BENCH_APP_ID": app_id,
        **extra,
    }


class Worker:
    """One steplog worker process running ``target`` with its own data dir and log."""

    def __init__(
        self, settings: Settings, app_id: str, target: str, data_dir: Path, **env: str
    ) -> None:
        self.data_dir = data_dir
        self.log = data_dir / "worker.log"
        self.probe_dir = data_dir / "probe"
        self.target = target
        self.env = worker_env(
            settings, app_id, data_dir, BENCH_PROBE_DIR=str(self.probe_dir), **env
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        cmd = [sys.executable, "-m", "streams.cli", "worker", self.target, "-l", "info"]
        profile = os.environ.get("BENCH_WORKER_PROFILE")  # see bench/profiled_worker.py
        if profile:
            cmd[1:3] = [str(ROOT / "bench" / "profiled_worker.py"), profile]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while "Ready" not in self.text():
            if self.proc.poll() is not None:
                raise SystemExit(f"worker exited ({self.proc.returncode}); see {self.log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"worker not ready after {timeout:.0f}s; see {self.log}")
            time.sleep(0.2)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


#: Worker log lines that say the worker was overloaded (counted over a phase).
STALL_MARKERS = ("producer buffer full", "Timer commit is overlapping", "flush took")


def stall_counts(worker: Worker, since_chars: int = 0) -> str:
    text = worker.text()[since_chars:]
    return ", ".join(f"{m!r} x{text.count(m)}" for m in STALL_MARKERS)
