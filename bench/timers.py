"""Timer lateness: N pending durable timers due uniformly over a span; p50/p99 lateness.

Each run's step raises RetryAfterError until its due time, so every run holds one
durable timer (RocksDB-indexed, fired through the run journal). Lateness is measured
inside the step that runs after the wake-up (now - due), so it covers the timer
loop, the wake record's trip through Kafka and the run's re-activation.

Usage: .venv/bin/python bench/timers.py [--timers 10000] [--span 600] [--bootstrap H:P]
Prints figures; never fails on a timing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.client import Client  # noqa: E402
from streams.kafka import local  # noqa: E402
from streams.serde import EventCodec  # noqa: E402
from streams.settings import Settings  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument("--span", type=float, default=600.0, help="seconds the dues spread over")
    parser.add_argument("--lead", type=float, default=20.0, help="seconds before the first due")
    parser.add_argument("--bootstrap")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="steplog-timers-"))
    bootstrap = args.bootstrap or local.start(tmp / "broker").bootstrap
    app_id = f"timers{uuid.uuid4().hex[:6]}"
    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=f"{app_id}.", partitions=4)
    env = {
        **os.environ,
        "STEPLOG_BOOTSTRAP_SERVERS": bootstrap,
        "STEPLOG_TOPIC_PREFIX": settings.topic_prefix,
        "STEPLOG_PARTITIONS": "4",
        "STEPLOG_DATA_DIR": str(tmp / "worker"),
        "BENCH_APP_ID": app_id,
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "bench.apps.timer_probe:app", "-l", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    lateness: list[int] = []
    done = threading.Event()

    def watch() -> None:
        codec = EventCodec(settings)
        consumer = Consumer(
            settings.kafka_config(
                **{"group.id": f"bench-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}
            )
        )
        consumer.subscribe([settings.topic("inngest.function.finished")])
        while len(lateness) < args.timers and not done.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            lateness.append(int(codec.decode(msg.value()).data["result"]))
        consumer.close()

    try:
        while "Ready" not in (tmp / "worker.log").read_text(errors="replace"):
            time.sleep(0.2)
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        start = time.time() + args.lead
        step = args.span / args.timers
        events = [
            {"name": "bench/timer", "data": {"due_ms": int((start + i * step) * 1000)}}
            for i in range(args.timers)
        ]
        t0 = time.perf_counter()
        with Client(settings) as client:
            client.send(events)
        print(
            f"{args.timers:,} timers due over {args.span:.0f}s, first in {args.lead:.0f}s "
            f"(sent in {time.perf_counter() - t0:.1f}s)"
        )
        peak_rss = 0.0
        deadline = start + args.span + 120
        while len(lateness) < args.timers and time.time() < deadline:
            peak_rss = max(peak_rss, rss_mb(worker.pid))
            time.sleep(1)
        done.set()
        thread.join(5)
        if not lateness:
            print("no run finished; see", tmp / "worker.log")
            return
        lateness.sort()
        p = lambda q: lateness[min(len(lateness) - 1, int(q * len(lateness)))]  # noqa: E731
        print(
            f"finished {len(lateness):,}/{args.timers:,}; lateness ms: p50 {p(0.5)} "
            f"p90 {p(0.9)} p99 {p(0.99)} max {lateness[-1]} mean "
            f"{statistics.fmean(lateness):.1f}"
        )
        print(
            f"worker peak RSS {peak_rss:.0f} MiB; load generator CPU "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f}s; "
            f"machine {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
        )
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if not args.bootstrap:
            local.stop(tmp / "broker")


if __name__ == "__main__":
    main()
