"""Flow control: Pitfall #2's fan-out under a concurrency limit, beside no limit.

One ``bench/campaign`` event fans out to N sends (bench/apps/fanout.py), each one
step awaiting ``--step`` seconds and noting its start and end in a ledger. One
worker process (``steplog worker bench.apps.fanout:app``); this process sends the
campaign and follows ``inngest.function.finished``. Phases, same sitting, same worker:

  free       N sends of a function with no limit: the pace of the worker and one
             campaign's events (the baseline)
  limited    N sends, ``Concurrency(limit=50)`` (key-less: every run on one partition);
             ideal wall time N x step / 50
  keyed-N    N sends, ``Concurrency(limit=50, key="event.data.key")`` with a key per
             send (never contended)
  keyed-1000 / keyed-1   the same with 1,000 keys, then one key
  rows-single / rows-batched   N events of a function whose one step only counts
             its events: one run per event, then ``Batch(max_size=100,
             timeout="1s")`` (events/s and runs)

For each: wall time (campaign sent -> last send finished), sends/s, latency of a send
(its event's ts -> its run's end) p50/p99, the most sends at once and the mean overlap
/ limit while sends were waiting (first start -> last start), the worker's peak RSS and
CPU.

Usage: .venv/bin/python bench/flow.py [--sends 10000] [--step 0.05] [--phases ...]
       [--kafka-data-dir DIR | --bootstrap HOST:PORT] [--partitions 8] [--quick]
Prints figures; never fails on a timing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from streams.client import Client
from streams.kafka.admin import ensure_topics
from streams.serde import EventCodec
from streams.settings import Settings

TARGET = "bench.apps.fanout:app"
LIMIT = 50
#: phase -> (event name of the sends, number of distinct keys; None: one per send)
PHASES: dict[str, tuple[str, int | None]] = {
    "free": ("bench/email.free", None),
    "limited": ("bench/email.limited", None),
    "keyed-N": ("bench/email.keyed", None),
    "keyed-1000": ("bench/email.keyed", 1000),
    "keyed-1": ("bench/email.keyed", 1),
    "rows-single": ("bench/row.single", None),
    "rows-batched": ("bench/row.batched", None),
}


class Finished(threading.Thread):
    """Follows ``inngest.function.finished``: per function, run id -> latency (ms)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.codec = EventCodec(settings)
        self.consumer = procs.tail_consumer(settings, "bench-flow")
        self.consumer.subscribe([settings.topic("inngest.function.finished")])
        self.seen: dict[str, dict[str, int]] = {}
        #: per function, the events its finished runs had (a batch counts them all)
        self.events: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for msg in self.consumer.consume(500, 0.1):
                if msg.error():
                    continue
                e = self.codec.decode(msg.value())
                fn, run_id = e.data["function_id"], e.data["run_id"]
                with self.lock:
                    self.seen.setdefault(fn, {})[run_id] = int(e.ts or 0) - int(
                        e.data["event"].get("ts") or 0
                    )
                    self.events[fn] = self.events.get(fn, 0) + len(e.data.get("events") or [1])
                    self.last[fn] = time.perf_counter()
        self.consumer.close()

    def count(self, fn: str) -> int:
        with self.lock:
            return len(self.seen.get(fn, {}))

    def count_events(self, fn: str) -> int:
        with self.lock:
            return self.events.get(fn, 0)

    def take(self, fn: str) -> dict[str, int]:
        """The runs of ``fn`` seen so far, forgotten here (the next phase counts anew)."""
        with self.lock:
            self.events.pop(fn, None)
            return self.seen.pop(fn, {})


def overlap(ledger: Path) -> tuple[int, float, int]:
    """The most sends at once, the time-weighted mean count between the first and the
    last start, and the number of step executions."""
    changes: list[tuple[int, int]] = []
    starts: list[int] = []
    for line in ledger.read_text().splitlines():
        _, what, at = line.split()
        changes.append((int(at), 1 if what == "start" else -1))
        if what == "start":
            starts.append(int(at))
    changes.sort()
    running = most = 0
    begin, end = min(starts), max(starts)
    area, last_at = 0.0, begin
    for at, delta in changes:
        if begin < at <= end:
            area += running * (at - last_at)
            last_at = at
        running += delta
        most = max(most, running)
    return most, area / max(end - begin, 1), len(starts)


def phase(
    settings: Settings,
    app_id: str,
    worker: procs.Worker,
    watch: Finished,
    ledger: Path,
    name: str,
    sends: int,
    step_s: float,
) -> None:
    target, keys = PHASES[name]
    fn = f"{app_id}-{target.split('/', 1)[1].replace('.', '-')}"
    ledger.write_text("")
    cpu = procs.Cpu({"worker": worker.pid, "broker": None})
    t0 = time.perf_counter()
    data = {"emails": sends, "target": target, **({"keys": keys} if keys else {})}
    with Client(settings) as client:
        client.send({"name": "bench/campaign", "data": data})
    rss = 0.0
    deadline = t0 + max(120.0, 4 * sends * step_s / LIMIT)
    while watch.count_events(fn) < sends and time.perf_counter() < deadline:
        rss = max(rss, procs.rss_mib(worker.pid))
        time.sleep(0.25)
    done = watch.count_events(fn)
    if name.startswith("rows-"):
        rows_phase(name, watch, fn, t0, sends, done, cpu, rss)
        return
    wall = watch.last.get(fn, time.perf_counter()) - t0
    usage = cpu.stop()
    lat = sorted(watch.take(fn).values())
    if done == 0:
        raise RuntimeError(f"{name}: no send finished within {deadline - t0:.0f} s")
    most, mean, execs = overlap(ledger)
    limited = name != "free"
    ideal = sends * step_s / LIMIT if limited else step_s
    print(
        f"{name:<10} {done}/{sends} sends in {wall:6.1f} s (ideal {ideal:.1f} s), "
        f"{done / wall:6.0f} sends/s, latency p50 {procs.pct(lat, 0.5) / 1000:.2f} s "
        f"p99 {procs.pct(lat, 0.99) / 1000:.2f} s, max at once {most}"
        + (f", mean overlap / limit {mean / LIMIT:.2f}" if limited else f", mean {mean:.0f}")
        + f", {execs} step executions, worker peak RSS {rss:.0f} MiB, "
        f"worker CPU {usage['cpu']['worker']:.1f} s",
        flush=True,
    )


def rows_phase(
    name: str,
    watch: Finished,
    fn: str,
    t0: float,
    sends: int,
    done: int,
    cpu: procs.Cpu,
    rss: float,
) -> None:
    wall = watch.last.get(fn, time.perf_counter()) - t0
    usage = cpu.stop()
    runs = len(watch.take(fn))
    print(
        f"{name:<12} {done}/{sends} events in {runs} runs in {wall:6.1f} s, "
        f"{done / wall:6.0f} events/s, worker peak RSS {rss:.0f} MiB, "
        f"worker CPU {usage['cpu']['worker']:.1f} s ({usage['cpu']['worker'] / done * 1e3:.2f} ms "
        "per event)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=10_000)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--bootstrap")
    parser.add_argument("--kafka-data-dir")
    parser.add_argument("--quick", action="store_true", help="1,000 sends")
    args = parser.parse_args()
    sends = 1000 if args.quick else args.sends
    tmp = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    try:
        with procs.broker(args.bootstrap, args.kafka_data_dir, tmp) as broker:
            settings = Settings(
                bootstrap_servers=broker.bootstrap,
                topic_prefix=f"bf{uuid.uuid4().hex[:6]}.",
                partitions=args.partitions,
                data_dir=tmp,
            )
            ensure_topics(settings)
            app_id = f"bf{uuid.uuid4().hex[:6]}"
            ledger = tmp / "ledger.txt"
            env = {"BENCH_LEDGER": str(ledger), "BENCH_STEP_S": str(args.step)}
            worker = procs.Worker(settings, app_id, TARGET, tmp / "w1", **env).start()
            watch = Finished(settings)
            watch.start()
            print(
                f"{sends} sends of one {args.step * 1000:.0f} ms step, limit {LIMIT}, "
                f"1 worker, {args.partitions} partitions; load {procs.loadavg()}",
                flush=True,
            )
            try:
                for name in args.phases.split(","):
                    phase(settings, app_id, worker, watch, ledger, name, sends, args.step)
            except Exception:
                print("worker log tail:\n" + "\n".join(worker.text().splitlines()[-40:]))
                raise
            finally:
                watch.stopping.set()
                worker.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
