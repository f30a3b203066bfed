"""Sleep wake-up lateness and the memory of sleeping runs (issue 4).

N runs of bench/apps/sleep_probe.py each call ``step.sleep_until(due)`` with dues
spread uniformly over ``--span`` seconds, the first ``--lead`` seconds after the
events are sent. Lateness = when the step after the sleep started (stamped in its
body, on the worker's clock) minus the due time; it covers the timer loop, the
``wake`` record's trip through the run journal, the run's re-activation (replay of
its memos) and the scheduling of the step.

Phases, one worker process (``steplog worker bench.apps.sleep_probe:app``), this
process as load generator and watcher:

  warm-up   50 runs sleeping 3 s (so the idle figures are of a worker that ran runs)
  idle      the worker's RSS and objects (bench/apps/introspect.py)
  create    N events sent at once; creation rate from the runs' ``sleeping`` records
            in the run-history topic; CPU per run created
  asleep    RSS and objects with N runs asleep: bytes per sleeping run, coroutines,
            LiveRuns, free slots (a sleeping run should hold none)
  wake      lateness p50/p90/p99/max overall and per minute of the window, CPU; and
            where it goes: due -> the timer loop wrote the ``wake`` record (its Kafka
            timestamp, read from the function's journal topic) -> the step started

Only runs seen asleep (a ``sleeping`` record) count for lateness; a run created after
its due time never sleeps and is reported apart.

Usage: .venv/bin/python bench/sleeps.py [--runs 10000] [--span 600] [--lead auto]
       [--kafka-data-dir /tmp/bench-kafka | --bootstrap HOST:PORT] [--partitions 4]
       [--quick]   (1,000 runs over 30 s: a smoke run of ~1.5 min)
Prints figures; never fails on a timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from bench.apps import introspect
from streams.client import Client
from streams.serde import EventCodec
from streams.serde.internal import JsonBodyCodec, RecordCodec
from streams.settings import Settings

WARMUP = 50


class Watch(threading.Thread):
    """Follows the run-history topic (who is asleep) and function.finished (results)."""

    def __init__(self, settings: Settings, app_id: str) -> None:
        super().__init__(daemon=True)
        self.codec = EventCodec(settings)
        self.history = RecordCodec("steplog.RunHistory")
        self.journal = JsonBodyCodec("steplog.RunRecord")
        self.finished_topic = settings.topic("inngest.function.finished")
        self.journal_topic = settings.topic(f"steplog-{app_id}-fn-sleeper")
        self.history_topic = settings.topic(f"steplog-{app_id}-runs")
        self.lock = threading.Lock()
        self.asleep: dict[str, int] = {}  # run id -> ms its sleeping record was written
        self.results: dict[str, tuple[int, int, int]] = {}  # run id -> (due ms, woke µs, seen ms)
        self.fired: dict[str, int] = {}  # run id -> timestamp of its (first) wake record
        self.stopping = threading.Event()
        self.consumer = procs.tail_consumer(settings, "bench-sleeps")
        self.consumer.subscribe([self.finished_topic, self.history_topic, self.journal_topic])

    def run(self) -> None:
        while not self.stopping.is_set():
            for msg in self.consumer.consume(2000, 0.1):
                if msg.error():
                    continue
                seen = time.time_ns() // 1_000_000
                value = msg.value() or b""
                if msg.topic() == self.finished_topic:
                    data = self.codec.decode(value).data
                    due, woke = data["result"]
                    with self.lock:
                        self.results.setdefault(data["run_id"], (int(due), int(woke), seen))
                elif msg.topic() == self.history_topic:
                    rec = self.history.decode(value)
                    if rec["status"] == "sleeping":
                        with self.lock:
                            self.asleep.setdefault(rec["run_id"], msg.timestamp()[1])
                else:
                    kind, _, rec = self.journal.decode(value)
                    if kind == "wake":
                        with self.lock:
                            self.fired.setdefault(rec["run_id"], msg.timestamp()[1])
        self.consumer.close()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.asleep), len(self.results)


def mib(value: float) -> str:
    return f"{value:,.1f} MiB"


def objects_text(rep: dict[str, Any]) -> str:
    if not rep:
        return "(no report)"
    objs = rep.get("objects", {})
    return (
        f"RSS {mib(rep['rss'] / 2**20)}, python blocks {rep['allocated_blocks']:,}, "
        f"coroutines {objs.get('coroutine')}, tasks {objs.get('Task')}, "
        f"RunDrivers {objs.get('RunDriver')}, LiveRuns {objs.get('LiveRun')}, "
        f"Events {objs.get('Event')} (recent events kept {rep.get('recent_events')}), "
        f"free slots {rep.get('free_slots')}/{rep.get('max_active_runs')}, "
        f"active runs {rep.get('active_runs')}, timers in heaps {rep.get('timer_heap')}, "
        f"rocksdb {_rocks(rep)} "
        f"(gc.collect() freed {rep.get('gc_collected')}; walk {rep.get('gc_walk_s')}s)"
    )


def _rocks(rep: dict[str, Any]) -> str:
    r = rep.get("rocksdb") or {}
    return (
        f"[memtables {mib(r.get('memtables', 0) / 2**20)}, block cache "
        f"{mib(r.get('block_cache', 0) / 2**20)}, ~{r.get('keys', 0):,} keys]"
    )


def lateness_text(values: list[float]) -> str:
    s = sorted(values)
    return (
        f"n={len(s):,} p50 {procs.pct(s, 0.5):.1f} p90 {procs.pct(s, 0.9):.1f} "
        f"p99 {procs.pct(s, 0.99):.1f} p99.9 {procs.pct(s, 0.999):.1f} max {s[-1]:.1f} "
        f"mean {statistics.fmean(s):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--span", type=float, default=600.0, help="seconds the dues spread over")
    parser.add_argument(
        "--lead",
        type=float,
        help="seconds from sending to the first due (default: 30 + runs / --create-rate)",
    )
    parser.add_argument(
        "--create-rate", type=float, default=120.0, help="runs/s assumed for the default lead"
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--bootstrap")
    parser.add_argument("--kafka-data-dir", help="use the broker `steplog kafka start` runs there")
    parser.add_argument("--quick", action="store_true", help="1,000 runs over 30 s")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (worker log)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.span = 1_000, 30.0
    if args.lead is None:
        args.lead = 30 + args.runs / args.create_rate

    tmp = Path(tempfile.mkdtemp(prefix="steplog-sleeps-"))
    with procs.broker(args.bootstrap, args.kafka_data_dir, tmp) as broker:
        app_id = f"sleeps{uuid.uuid4().hex[:6]}"
        settings = Settings(
            bootstrap_servers=broker.bootstrap,
            topic_prefix=f"{app_id}.",
            partitions=args.partitions,
        )
        worker = procs.Worker(settings, app_id, "bench.apps.sleep_probe:app", tmp / "worker")
        print(
            f"sleeps: {args.runs:,} runs, dues over {args.span:.0f}s, first due "
            f"{args.lead:.0f}s after sending; {args.partitions} partitions; broker "
            f"{broker.bootstrap}; temp {tmp}; load {procs.loadavg()}",
            flush=True,
        )
        try:
            worker.start()
            bench(args, settings, app_id, worker, broker)
        finally:
            worker.stop()
            if args.keep:
                print(f"worker log: {worker.log}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(
    args: argparse.Namespace,
    settings: Settings,
    app_id: str,
    worker: procs.Worker,
    broker: procs.Broker,
) -> None:
    pids = {"worker": worker.pid, "broker": broker.pid, "loadgen": os.getpid()}
    watch = Watch(settings, app_id)
    watch.start()
    client = Client(settings)
    try:
        # --- warm-up, then the idle worker -------------------------------------------
        due0 = int(time.time() * 1000) + 3000
        client.send(
            [{"name": "bench/sleeper", "data": {"due_ms": due0 + i}} for i in range(WARMUP)]
        )
        deadline = time.monotonic() + 180
        while watch.counts()[1] < WARMUP and time.monotonic() < deadline:
            time.sleep(0.2)
        with watch.lock:
            warm = set(watch.results)
        warm_late = [w / 1000 - d for d, w, _ in watch.results.values()]
        print(f"warm-up: {len(warm)}/{WARMUP} finished; lateness {lateness_text(warm_late)}")
        idle_meter = procs.Cpu(pids)
        time.sleep(10)
        idle_cpu = idle_meter.stop()
        idle_rate = idle_cpu["cpu"]["worker"] / idle_cpu["wall"]
        print(f"idle worker: {procs.cpu_text(idle_cpu)}")
        idle_rss = procs.rss_mib(worker.pid)
        idle = introspect.ask(worker.probe_dir)
        print(f"idle worker: {objects_text(idle)}", flush=True)

        # --- create N sleeping runs ----------------------------------------------------
        start_ms = int((time.time() + args.lead) * 1000)
        step_ms = args.span * 1000 / args.runs
        events = [
            {"name": "bench/sleeper", "data": {"due_ms": start_ms + int(i * step_ms)}}
            for i in range(args.runs)
        ]
        cpu = procs.Cpu(pids)
        t_send = time.time()
        for i in range(0, len(events), 5000):
            client.send(events[i : i + 5000])
        sent_s = time.time() - t_send
        print(f"create: sent {args.runs:,} events in {sent_s:.1f}s", flush=True)
        timeline: list[tuple[float, int]] = []
        last_print = time.time()
        asleep_all_at = None
        while time.time() * 1000 < start_ms:
            asleep = watch.counts()[0] - len(warm)
            timeline.append((time.time() - t_send, asleep))
            if asleep >= args.runs:
                asleep_all_at = time.time()
                break
            if time.time() - last_print >= 30:
                last_print = time.time()
                print(
                    f"  {time.time() - t_send:5.0f}s: {asleep:,} asleep, worker RSS "
                    f"{mib(procs.rss_mib(worker.pid))}, load {procs.loadavg()}",
                    flush=True,
                )
            time.sleep(1)
        create_cpu = cpu.stop()
        asleep = watch.counts()[0] - len(warm)
        if asleep_all_at is not None:
            took = asleep_all_at - t_send
            print(
                f"create: all {args.runs:,} asleep {took:.1f}s after the first send = "
                f"{args.runs / took:,.0f} runs/s; {(start_ms / 1000 - asleep_all_at):.0f}s "
                f"before the first due"
            )
        else:
            print(f"create: only {asleep:,}/{args.runs:,} asleep when the first run was due")
        print(f"create: {procs.cpu_text(create_cpu)}")
        per_run = {n: 1000 * s / max(asleep, 1) for n, s in create_cpu["cpu"].items()}
        print(
            "create: CPU per run created (ms): "
            + ", ".join(f"{n} {v:.2f}" for n, v in per_run.items() if n != "other")
        )
        rates = _rates(timeline)
        if rates:
            print(f"create: runs/s per 30 s: {rates}")

        # --- the worker holding N sleeping runs ------------------------------------
        if time.time() * 1000 < start_ms - 8000:
            time.sleep(3)
            asleep_rss = procs.rss_mib(worker.pid)
            held = introspect.ask(worker.probe_dir)
            print(f"asleep worker: {objects_text(held)}")
            grown = asleep_rss - idle_rss
            print(
                f"memory: idle RSS {mib(idle_rss)}, with {asleep:,} runs asleep "
                f"{mib(asleep_rss)}: +{mib(grown)} = {grown * 2**20 / max(asleep, 1):,.0f} "
                f"bytes per sleeping run; python blocks "
                f"+{held.get('allocated_blocks', 0) - idle.get('allocated_blocks', 0):,}"
            )
        else:
            print("memory: no quiet moment before the first due; not measured")

        # --- the wake-up window -----------------------------------------------------
        log_mark = len(worker.text())
        while time.time() * 1000 < start_ms:
            time.sleep(0.2)
        cpu = procs.Cpu(pids)
        peak_rss = 0.0
        end_by = start_ms / 1000 + args.span + 180
        last_print = time.time()
        while watch.counts()[1] < args.runs + len(warm) and time.time() < end_by:
            peak_rss = max(peak_rss, procs.rss_mib(worker.pid))
            if time.time() - last_print >= 60:
                last_print = time.time()
                print(
                    f"  wake {time.time() - start_ms / 1000:5.0f}s: "
                    f"{watch.counts()[1] - len(warm):,} finished, load {procs.loadavg()}",
                    flush=True,
                )
            time.sleep(1)
        wake_cpu = cpu.stop()
        report_results(args, watch, warm, start_ms, wake_cpu, peak_rss, idle_rate)
        print(f"wake: worker log over the window: {procs.stall_counts(worker, log_mark)}")
        done = introspect.ask(worker.probe_dir)
        print(f"after: {objects_text(done)}")
    finally:
        client.close()
        watch.stopping.set()
        watch.join(10)


def report_results(
    args: argparse.Namespace,
    watch: Watch,
    warm: set[str],
    start_ms: int,
    wake_cpu: dict[str, Any],
    peak_rss: float,
    idle_rate: float,
) -> None:
    with watch.lock:
        results = {r: v for r, v in watch.results.items() if r not in warm}
        asleep = {r for r in watch.asleep if r not in warm}
    slept = {r: v for r, v in results.items() if r in asleep}
    never = len(results) - len(slept)
    print(
        f"wake: finished {len(results):,}/{args.runs:,} ({never:,} never slept: created after "
        f"their due time); {procs.cpu_text(wake_cpu)}; worker peak RSS {mib(peak_rss)}"
    )
    if not slept:
        return
    late = [w / 1000 - d for d, w, _ in slept.values()]
    print(f"wake: lateness {lateness_text(late)}")
    over = sum(1 for x in late if x > 100)
    print(
        f"wake: {over:,} ({100 * over / len(late):.2f}%) later than 100 ms, "
        f"{sum(1 for x in late if x > 1000):,} later than 1 s, "
        f"{sum(1 for x in late if x < 0):,} early"
    )
    # where the lateness goes: due -> the timer loop wrote the wake record (its Kafka
    # timestamp) -> the agent read it and the step after the sleep started
    with watch.lock:
        fired = {r: watch.fired[r] for r in slept if r in watch.fired}
    minutes: dict[int, list[tuple[float, float, float]]] = {}
    for run, (d, w, _) in slept.items():
        f = fired.get(run)
        fire, journal = (f - d, w / 1000 - f) if f is not None else (float("nan"),) * 2
        minutes.setdefault(int((d - start_ms) // 60_000), []).append((w / 1000 - d, fire, journal))
    print(
        "wake: by minute of the window (due time), ms: lateness p50 p99 max | timer fired "
        "(wake record written - due) p50 p99 | wake record -> step started p50 p99"
    )
    for m in sorted(minutes):
        cols = [sorted(x[i] for x in minutes[m] if x[i] == x[i]) for i in range(3)]
        s, fs, js = cols
        print(
            f"  {m:3d} n={len(s):6,} {procs.pct(s, 0.5):8.1f} {procs.pct(s, 0.99):8.1f} "
            f"{s[-1]:9.1f} | {procs.pct(fs, 0.5):6.1f} {procs.pct(fs, 0.99):7.1f} | "
            f"{procs.pct(js, 0.5):8.1f} {procs.pct(js, 0.99):8.1f}"
        )
    all_fire = sorted(x[1] for v in minutes.values() for x in v if x[1] == x[1])
    all_journal = sorted(x[2] for v in minutes.values() for x in v if x[2] == x[2])
    if all_fire:
        print(
            f"wake: timer fired (wake record written - due): p50 {procs.pct(all_fire, 0.5):.1f} "
            f"p99 {procs.pct(all_fire, 0.99):.1f} max {all_fire[-1]:.1f} ms; wake record -> "
            f"step started: p50 {procs.pct(all_journal, 0.5):.1f} p99 "
            f"{procs.pct(all_journal, 0.99):.1f} max {all_journal[-1]:.1f} ms"
        )
    wall = wake_cpu["wall"]
    w = wake_cpu["cpu"].get("worker", 0.0)
    busy = w - idle_rate * wall  # minus what the idle worker spends (timer loop, commits)
    print(
        f"wake: worker CPU per woken run {1000 * w / max(len(results), 1):.2f} ms, "
        f"{1000 * busy / max(len(results), 1):.2f} ms above the idle worker's "
        f"{100 * idle_rate:.1f}% of a core; {len(results) / wall:.0f} runs/s woke over the window"
    )
    s = sorted(late)
    print(
        f"SUMMARY sleeps runs={args.runs} span_s={args.span:.0f} p50_ms={procs.pct(s, 0.5):.1f} "
        f"p90_ms={procs.pct(s, 0.9):.1f} p99_ms={procs.pct(s, 0.99):.1f} max_ms={s[-1]:.1f} "
        f"never_slept={never}"
    )


def _rates(timeline: list[tuple[float, int]]) -> str:
    out = []
    mark_t, mark_n = 0.0, 0
    for t, n in timeline:
        if t - mark_t >= 30:
            out.append(f"{(n - mark_n) / (t - mark_t):.0f}")
            mark_t, mark_n = t, n
    return " ".join(out)


if __name__ == "__main__":
    main()
