"""How fast a worker rebuilds its tables from their changelogs (the cost of a hand-over).

A worker given a partition reads the changes of its tables' changelog partitions
since its own copy (all of them, with an empty data dir) before any stream of the
app resumes; a SIGTERM or SIGKILL hand-over waits for that read. Phases, one worker
process at a time (``steplog worker bench.apps.noop:app``), this process as load
generator:

  fill      N runs of ``bench/steps.3`` (200 in flight): their writes to the state and
            router-dedup tables are the changelog records read below
  raw       the baseline: one confluent-kafka consumer reads every changelog
            partition from its start (records/s; the fastest any reader here can get
            them off the broker)
  restore   R times: a worker started on an empty data dir recovers every table;
            time from its ``Restoring state from changelog topics`` log line to
            ``Done reading from changelog topics``, records/s, and its CPU

Usage: .venv/bin/python bench/recovery.py [--runs 20000] [--rounds 3]
       [--kafka-data-dir DIR | --bootstrap HOST:PORT] [--partitions 8] [--quick]
Prints figures; never fails on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
import runs as R
from confluent_kafka import Consumer, TopicPartition

from streams.kafka.admin import ensure_topics
from streams.settings import Settings

RESTORING = "Restoring state from changelog topics"
DONE = "Done reading from changelog topics"
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def fill(settings: Settings, app_id: str, workdir: Path, n: int) -> float:
    """Run ``n`` 3-step runs on one worker; the seconds they took."""
    worker = R.WorkerProc(settings, app_id, workdir / "fill", False).start()
    worker.wait_ready()
    runs = R.Runs(settings)

    async def load() -> None:
        in_flight = asyncio.Semaphore(200)

        async def one(i: int) -> None:
            async with in_flight:
                await runs.run_one("bench/steps.3", {"x": i})

        await asyncio.gather(*(one(i) for i in range(n)))

    t0 = time.perf_counter()
    try:
        asyncio.run(load())
    finally:
        runs.close()
        worker.stop()
    return time.perf_counter() - t0


def changelogs(settings: Settings) -> dict[str, int]:
    """Records in each changelog topic of the sitting (full names)."""
    return {
        settings.topic_prefix + name: count
        for name, count in R.topic_offsets(settings).items()
        if name.endswith("-changelog") and count
    }


def raw_read(settings: Settings, topics: dict[str, int]) -> float:
    """Seconds one confluent-kafka consumer takes to read ``topics``, from its first
    record to its last (connecting and the first fetch's wait are left out)."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
    )
    total, seen = sum(topics.values()), 0
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(settings.partitions)])
    t0: float | None = None
    deadline = time.perf_counter() + 300
    try:
        while seen < total and time.perf_counter() < deadline:
            batch = consumer.consume(min(1000, total - seen), 1.0)  # waits for that many
            got = sum(1 for m in batch if not m.error())
            if got and t0 is None:
                t0 = time.perf_counter()
            seen += got
    finally:
        consumer.close()
    return time.perf_counter() - (t0 or deadline)


def stamp(line: str) -> float:
    found = STAMP.match(line)
    assert found, line
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def restore(settings: Settings, app_id: str, data_dir: Path) -> tuple[float, float]:
    """Start a worker on an empty data dir; (seconds its recovery read, its CPU s)."""
    worker = R.WorkerProc(settings, app_id, data_dir, False).start()
    try:
        worker.wait_ready(600)
        cpu = procs.cpu_seconds(worker.pid)
    finally:
        worker.stop()
    lines = worker.log.read_text(errors="replace").splitlines()
    began = next(stamp(line) for line in lines if RESTORING in line)
    ended = next(stamp(line) for line in lines if DONE in line)
    return ended - began, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2,000 runs, one round")
    parser.add_argument("--kafka-data-dir")
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds = 2_000, 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    print(f"machine: {R.machine()}; load {procs.loadavg()}; python {sys.version.split()[0]}")
    try:
        with procs.broker(args.bootstrap, args.kafka_data_dir, tmp) as broker:
            app_id = f"bench{uuid.uuid4().hex[:6]}"
            settings = Settings(
                bootstrap_servers=broker.bootstrap,
                topic_prefix=f"{app_id}.",
                partitions=args.partitions,
                data_dir=tmp / "loadgen",
            )
            ensure_topics(settings)
            took = fill(settings, app_id, tmp, args.runs)
            topics = changelogs(settings)
            total = sum(topics.values())
            print(
                f"fill: {args.runs:,} runs in {took:.1f} s; {total:,} changelog records in "
                f"{len(topics)} topics x {args.partitions} partitions",
                flush=True,
            )
            raw = raw_read(settings, topics)
            print(f"raw confluent-kafka read: {raw:.2f} s = {total / raw:,.0f} records/s")
            for n in range(1, args.rounds + 1):
                read, cpu = restore(settings, app_id, tmp / f"restore{n}")
                print(
                    f"restore #{n} (empty data dir): read {read:.2f} s = "
                    f"{total / max(read, 1e-3):,.0f} records/s "
                    f"({total / max(read, 1e-3) / (total / raw):.2f}x raw); "
                    f"worker CPU {cpu:.1f} s from its start",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
