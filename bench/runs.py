"""Durable runs end to end: the peers' workload, open loop, step sweep, slow steps.

Prints figures (never fails on a timing). Against a local Apache Kafka broker it
starts itself (or ``--bootstrap``), with steplog workers in separate processes
(``python -m streams.cli worker bench.apps.noop:app``) and this process as the
load generator: it sends events with ``streams.Client.send_async`` and a
confluent-kafka consumer thread watches ``inngest.function.finished``; a run's
latency is from the moment its event is handed to the client to the moment its
``function.finished`` record is seen here.

  baseline  raw confluent-kafka produce (acks=all, idempotent) and
            consume -> JSON -> RocksDB get/put -> produce, same broker, same run
  (a)       the peers' workload (../shared/peers/workload.py): 20 warm-up runs,
            200 sequential runs, then 2,000 runs with exactly 50 in flight
  (c)       step-count sweep: 0/1/3/10/100 no-op steps, sequential
  (d)       1,000 runs of a function whose one step awaits 200 ms, sent at once
  (b)       open loop at fixed rates, 1 worker, then 2 workers: started/s,
            finished/s, latency samples; the highest rate sustained
  (a2)      the peers' workload again with 2 worker processes
  cpu       CPU seconds of each process (broker java, workers, load generator,
            and everything else on the machine) for every phase, from /proc

Usage: .venv/bin/python bench/runs.py [--quick] [--phases base,hops,a,c,d,b]
       [--bootstrap HOST:PORT [--broker-pid PID]] [--partitions 8] [--warmup 15] [--profile]
``--profile`` runs the workers under a profiler (bench/profiled_worker.py: a
stack sampler by default, ``BENCH_PROFILE=cprofile`` for cProfile) and prints
where their main thread spent its time at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402

from bench import procs  # noqa: E402
from streams.client import Client  # noqa: E402
from streams.kafka import local  # noqa: E402
from streams.kafka.admin import create_topics, ensure_topics  # noqa: E402
from streams.serde import EventCodec  # noqa: E402
from streams.settings import Settings  # noqa: E402

PEERS = Path(os.environ.get("PEERS_WORKLOAD", "/work/shared/peers/workload.py"))
TICK = os.sysconf("SC_CLK_TCK")
APP_TARGET = "bench.apps.noop:app"


def load_workload() -> Any:
    """The peers' shared workload module, imported by path (not copied here)."""
    spec = importlib.util.spec_from_file_location("peers_workload", PEERS)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {PEERS}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


W = load_workload()
_tree_cpu_seconds = W.cpu_seconds


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants, but of this process alone: the
    broker and the workers are children of the load generator, counted apart."""
    if pid == os.getpid():
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    return float(_tree_cpu_seconds(pid))


W.cpu_seconds = cpu_seconds  # measure_async samples CPU through this name


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of seconds, in ms (the peers' rule)."""
    return float(W.pct(samples, p)) if samples else float("nan")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# --- CPU accounting ------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds (all cores, not idle/iowait) the whole machine used since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle, iowait
    return busy / TICK


class Cpu:
    """CPU seconds of named processes (each with its descendants) over a phase."""

    def __init__(self, comps: dict[str, int]) -> None:
        self.comps = dict(comps)
        self.t0 = time.perf_counter()
        self.before = {n: cpu_seconds(p) for n, p in self.comps.items()}
        self.machine0 = machine_busy()
        self.load0 = loadavg()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        after = {n: cpu_seconds(p) for n, p in self.comps.items()}
        used = {n: after[n] - self.before[n] for n in self.comps}
        machine = machine_busy() - self.machine0
        used["other"] = max(machine - sum(used.values()), 0.0)
        return {"wall": wall, "cpu": used, "load": f"{self.load0}->{loadavg()}"}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, summed by thread name."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        f = raw.rsplit(")", 1)[1].split()
        name = "main" if tid == str(pid) else name
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / TICK
    return out


def threads_text(before: dict[str, float], after: dict[str, float]) -> str:
    used = {n: after[n] - before.get(n, 0.0) for n in after}
    total = sum(used.values())
    parts = [f"{n}={s:.1f}s" for n, s in sorted(used.items(), key=lambda kv: -kv[1]) if s >= 0.05]
    return f"total {total:.1f}s: " + " ".join(parts)


def cpu_text(r: dict[str, Any]) -> str:
    wall = r["wall"]
    parts = [f"{n}={s:.1f}s({100 * s / wall:.0f}%)" for n, s in r["cpu"].items()]
    total = sum(r["cpu"].values()) / wall * 100
    return f"cpu {' '.join(parts)} total={total:.0f}/{100 * (os.cpu_count() or 1)}%"


# --- workers -----------------------------------------------------------------------


class WorkerProc:
    """``python -m streams.cli worker bench.apps.noop:app`` in its own data dir."""

    def __init__(
        self,
        settings: Settings,
        app_id: str,
        data_dir: Path,
        profile: bool,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log = data_dir / "worker.log"
        self.profile_out = data_dir / "worker.prof" if profile else None
        self.env = procs.worker_env(settings, app_id, data_dir, **(extra_env or {}))
        # experiments (BENCH_* settings of bench/profiled_worker.py) need the wrapper
        self.wrapped = profile or any(k.startswith("BENCH_PREFETCH") for k in extra_env or {})
        if self.wrapped and not profile:
            self.env["BENCH_PROFILE"] = "none"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.wrapped:
            out_file = self.profile_out or self.data_dir / "worker.prof"
            cmd = [sys.executable, str(ROOT / "bench" / "profiled_worker.py"), str(out_file)]
        else:
            cmd = [sys.executable, "-m", "streams.cli"]
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [*cmd, "worker", APP_TARGET, "-l", "info"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "Ready" in text:
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def reset_profile(self) -> None:
        """Drop the samples taken so far (start-up) from the worker's profile."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGRTMIN + 2)  # see bench/profiled_worker.py

    def snapshot_threads(self) -> list[tuple[str, float]]:
        """Each live thread's CPU so far, named (profiled workers only)."""
        if not (self.profile_out and self.proc and self.proc.poll() is None):
            return []
        target = Path(str(self.profile_out) + ".threads.json")
        target.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGRTMIN + 3)  # see bench/profiled_worker.py
        for _ in range(50):
            time.sleep(0.1)
            if target.exists():
                try:
                    return [tuple(x) for x in json.loads(target.read_text())]
                except ValueError:
                    continue
        return []

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --- the load generator's side: send events, see function.finished -----------------


class Runs:
    """Starts runs (one event each) and resolves them when function.finished is seen."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = Client(settings)
        self.codec = EventCodec(settings)
        self.tag = uuid.uuid4().hex[:8]
        self.n = 0
        self.lock = threading.Lock()
        #: event id -> (callback(finished_at, result)); set before the event is sent.
        self.waiting: dict[str, Callable[[float, Any], None]] = {}
        self.seen = 0
        self.stray = 0
        #: event id -> (finished record's timestamp ms, run id, wall time seen), if asked.
        self.record_meta = False
        self.meta: dict[str, tuple[int, str, float]] = {}
        self._stop = threading.Event()
        topic = settings.topic("inngest.function.finished")
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"bench-watch-{self.tag}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 100,
                    "fetch.min.bytes": 1,
                }
            )
        )
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
        )
        self.thread = threading.Thread(target=self._consume, name="bench-watch", daemon=True)
        self.thread.start()

    def new_id(self) -> str:
        with self.lock:
            self.n += 1
            return f"{self.tag}-{self.n}"

    def _consume(self) -> None:
        while not self._stop.is_set():
            # consume(n, timeout) waits for n messages or the whole timeout: poll one
            # (returns as soon as a record is there), then take what else is queued.
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            msgs = [first, *self.consumer.consume(500, 0)]
            now = time.perf_counter()
            for msg in msgs:
                if msg.error():
                    continue
                event = self.codec.decode(msg.value())
                data = event.data
                trigger_id = str((data.get("event") or {}).get("id"))
                with self.lock:
                    cb = self.waiting.pop(trigger_id, None)
                self.seen += 1
                if cb is None:
                    self.stray += 1
                    continue
                if self.record_meta:
                    self.meta[trigger_id] = (
                        msg.timestamp()[1],
                        str(data.get("run_id")),
                        time.time(),
                    )
                status = data.get("_inngest", {}).get("status")
                cb(now, data.get("result") if status == "completed" else data.get("error"))

    def expect(self, event_id: str, cb: Callable[[float, Any], None]) -> None:
        with self.lock:
            self.waiting[event_id] = cb

    async def run_one(self, name: str, data: dict[str, Any]) -> tuple[float, Any]:
        """Start one run and wait for its function.finished: (latency s, result)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[float, Any]] = loop.create_future()
        event_id = self.new_id()

        def done(at: float, result: Any) -> None:
            loop.call_soon_threadsafe(_resolve, fut, (at, result))

        self.expect(event_id, done)
        t0 = time.perf_counter()
        await self.client.send_async({"name": name, "data": data, "id": event_id})
        at, result = await fut
        return at - t0, result

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.consumer.close()
        self.client.close()


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


# --- baseline: raw Kafka on the same broker ----------------------------------------


def baseline(settings: Settings, n: int) -> dict[str, float]:
    """Raw produce rate and consume->JSON->RocksDB get/put->produce rate."""
    from rocksdict import Rdict

    src, dst = settings.topic("bench-raw-in"), settings.topic("bench-raw-out")
    create_topics(settings, [src, dst])
    value = json.dumps({"name": "bench/steps.3", "data": {"x": 1}, "id": "x" * 26}).encode()
    producer = Producer(settings.producer_config())
    producer.produce(src, value, key=b"warm")
    producer.flush(30)  # connection, metadata, idempotent producer id
    t = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(src, value, key=b"%d" % i)
                break
            except BufferError:
                producer.poll(0.005)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    produce = n / (time.perf_counter() - t)
    t1: float | None = None

    tmp = Path(tempfile.mkdtemp(prefix="bench-rdict-"))
    db = Rdict(str(tmp / "db"))
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"bench-base-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
            }
        )
    )
    consumer.subscribe([src])
    seen = 0
    deadline = time.monotonic() + 120
    while seen < n + 1 and time.monotonic() < deadline:
        msgs = consumer.consume(1000, 0.5)
        if t1 is None and msgs:
            t1 = time.perf_counter()
        for msg in msgs:
            if msg.error():
                continue
            body = json.loads(msg.value() or b"{}")
            key = msg.key() or b""
            old = db.get(key)
            body["n"] = 1 if old is None else int(old) + 1
            db[key] = str(body["n"]).encode()
            while True:
                try:
                    producer.produce(dst, json.dumps(body).encode(), key=key)
                    break
                except BufferError:
                    producer.poll(0.005)
            seen += 1
        producer.poll(0)
    producer.flush(60)
    cp = seen / (time.perf_counter() - (t1 or time.perf_counter()))
    consumer.close()
    db.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"produce": produce, "consume_produce": cp}


# --- phases ------------------------------------------------------------------------


#: The event of the (a) runs: ``--event`` picks another 3-step function of
#: bench/apps/noop.py (e.g. ``bench/keyed.3``, ``bench/keyless.3``: the same steps under
#: a concurrency limit).
A_EVENT = "bench/steps.3"


async def closed_loop(runs: Runs, comps: dict[str, int]) -> dict[str, Any]:
    """(a) The peers' workload via workload.measure_async (3-step runs)."""

    async def run_one(i: int) -> Any:
        _, result = await runs.run_one(A_EVENT, {"x": i})
        return result

    t0 = time.perf_counter()
    seq, tput, wall, (before, after) = await W.measure_async(run_one, comps)
    note = W.cpu_note(comps, before, after, wall)
    return {
        "seq": seq,
        "tput": tput,
        "wall": wall,
        "note": note,
        "total_wall": time.perf_counter() - t0,
        "cpu": {n: after[n] - before[n] for n in comps},
    }


def print_closed_loop(phase: str, workers: str, peer: str, res: dict[str, Any]) -> None:
    seq, tput = res["seq"], res["tput"]
    print(
        f"{phase} peers' workload, {workers}: seq p50 {pct(seq, 50):.2f} ms p99 "
        f"{pct(seq, 99):.2f} ms ({len(seq)} runs); {len(tput)} runs with "
        f"{W.CONCURRENCY} in flight: {len(tput) / res['wall']:.1f} runs/s p50 "
        f"{pct(tput, 50):.1f} ms p99 {pct(tput, 99):.1f} ms  load {loadavg()}",
        flush=True,
    )
    print("    " + W.summary(peer, seq, tput, res["wall"], res["note"]))


def print_cpu_per_run(res: dict[str, Any]) -> None:
    per_run = {n: 1e3 * c / len(res["tput"]) for n, c in res["cpu"].items()}
    print(
        "    CPU per run with 50 in flight: "
        + " ".join(f"{n}={ms:.2f}ms" for n, ms in per_run.items()),
        flush=True,
    )


async def warm_up(runs: Runs, seconds: float) -> int:
    """Closed-loop 3-step runs, 50 in flight, for ``seconds``; not measured."""
    deadline = time.monotonic() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await runs.run_one("bench/steps.3", {"x": done})
            done += 1

    await asyncio.gather(*(loop() for _ in range(W.CONCURRENCY)))
    return done


#: Unmeasured runs of each function before the sweep measures it: the first records of a
#: function on each partition take ≈ 100 ms longer (once per worker start; BENCHMARKS.md,
#: sitting F), so these reach every partition first.
WARM_RUNS = 60


async def sequential(runs: Runs, name: str, count: int, expect_add: int) -> list[float]:
    lat = []
    for i in range(count):
        dt, result = await runs.run_one(name, {"x": i})
        if result != i + expect_add:
            raise RuntimeError(f"{name} run {i} returned {result!r}, expected {i + expect_add}")
        lat.append(dt)
    return lat


async def sweep(runs: Runs, counts: dict[int, int], comps: dict[str, int]) -> dict[int, Any]:
    """(c) Sequential runs of 0/1/3/10/100 no-op steps."""
    out = {}
    for steps, count in counts.items():
        await sequential(runs, f"bench/steps.{steps}", WARM_RUNS, steps)
        cpu = Cpu(comps)
        lat = await sequential(runs, f"bench/steps.{steps}", count, steps)
        out[steps] = {"lat": lat, **cpu.stop(), "count": count}
    return out


async def step_timing(runs: Runs, counts: dict[int, int]) -> dict[int, dict[str, Any]]:
    """(c) bench/timed.N runs, sequential: time to first step and gaps between steps.

    Step bodies stamp time.time_ns() (same clock as this process): first step =
    event handed to the client -> first step body starts; gap k = end of step k's
    body -> start of step k+1's body; tail = end of the last step -> its
    function.finished seen here.
    """
    out: dict[int, dict[str, Any]] = {}
    loop = asyncio.get_running_loop()
    for n, count in counts.items():
        first: list[float] = []
        tail: list[float] = []
        gaps: list[list[float]] = [[] for _ in range(max(n - 1, 0))]
        for i in range(count + WARM_RUNS):
            event_id = runs.new_id()
            fut: asyncio.Future[Any] = loop.create_future()

            def done(at: float, result: Any, f: asyncio.Future[Any] = fut) -> None:
                loop.call_soon_threadsafe(_resolve, f, (time.time_ns(), result))

            runs.expect(event_id, done)
            sent = time.time_ns()
            await runs.client.send_async(
                {"name": f"bench/timed.{n}", "data": {"x": i}, "id": event_id}
            )
            seen, result = await fut
            if i < WARM_RUNS:
                continue
            spans = result["spans"]
            if result["x"] != i + n or len(spans) != n:
                raise RuntimeError(f"timed.{n} run {i} returned {result!r}")
            first.append((spans[0][0] - sent) / 1e9)
            tail.append((seen - spans[-1][1]) / 1e9)
            for k in range(n - 1):
                gaps[k].append((spans[k + 1][0] - spans[k][1]) / 1e9)
        out[n] = {"first": first, "tail": tail, "gaps": gaps}
    return out


async def slow_burst(runs: Runs, count: int, comps: dict[str, int]) -> dict[str, Any]:
    """(d) ``count`` runs of the 200 ms-step function, all sent at once."""
    loop = asyncio.get_running_loop()
    pending = count
    all_done = loop.create_future()
    latencies: list[float] = []
    starts: dict[str, float] = {}
    last = [0.0]

    def make_cb(event_id: str) -> Callable[[float, Any], None]:
        def cb(at: float, _result: Any) -> None:
            nonlocal pending
            latencies.append(at - starts[event_id])
            last[0] = max(last[0], at)
            pending -= 1
            if pending == 0:
                loop.call_soon_threadsafe(_resolve, all_done, None)

        return cb

    events = []
    for i in range(count):
        event_id = runs.new_id()
        events.append({"name": "bench/sleep", "data": {"x": i, "seconds": 0.2}, "id": event_id})
        runs.expect(event_id, make_cb(event_id))
    cpu = Cpu(comps)
    t0 = time.perf_counter()
    for e in events:
        starts[str(e["id"])] = t0
    await runs.client.send_async(events)
    sent = time.perf_counter() - t0
    with suppress(TimeoutError):
        await asyncio.wait_for(all_done, 120)
    r = cpu.stop()
    return {
        "count": count,
        "finished": count - pending,
        "send_s": sent,
        "total_s": (last[0] - t0) if last[0] else float("nan"),
        "lat": latencies,
        **r,
    }


async def open_loop(
    runs: Runs, rate: float, seconds: float, comps: dict[str, int], drain_s: float = 30.0
) -> dict[str, Any]:
    """(b) Start runs at ``rate``/s for ``seconds`` (batches every 10 ms), then drain."""
    loop = asyncio.get_running_loop()
    starts: dict[str, float] = {}
    finishes: list[tuple[float, float]] = []  # (finished at, latency)
    lock = threading.Lock()
    tick = 0.01
    cpu = Cpu(comps)
    t0 = time.perf_counter()
    end = t0 + seconds
    started = 0
    sends: list[asyncio.Task[Any]] = []

    def cb_for(event_id: str) -> Callable[[float, Any], None]:
        def cb(at: float, _r: Any) -> None:
            with lock:
                finishes.append((at, at - starts[event_id]))

        return cb

    k = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = min(int((now - t0) * rate) + 1, int(seconds * rate))
        batch = []
        while started < due:
            event_id = runs.new_id()
            starts[event_id] = now
            runs.expect(event_id, cb_for(event_id))
            batch.append({"name": "bench/steps.3", "data": {"x": started}, "id": event_id})
            started += 1
        if batch:
            sends.append(asyncio.ensure_future(runs.client.send_async(batch)))
        k += 1
        await asyncio.sleep(max(t0 + k * tick - time.perf_counter(), 0))
    send_end = time.perf_counter()
    await asyncio.gather(*sends)
    deadline = time.perf_counter() + drain_s
    while time.perf_counter() < deadline:
        with lock:
            if len(finishes) >= started:
                break
        await asyncio.sleep(0.02)
    r = cpu.stop()
    with lock:
        done = list(finishes)
    window = send_end - t0
    in_window = sum(1 for at, _ in done if at <= send_end)
    last = max((at for at, _ in done), default=t0)
    lat = [x for _, x in done]
    # latency by second of start: is it growing (falling behind) or flat?
    first_half = [x for at, x in done if at - x < t0 + window / 2]
    second_half = [x for at, x in done if at - x >= t0 + window / 2]
    _ = loop
    return {
        "rate": rate,
        "started": started,
        "finished": len(done),
        "started_s": started / window,
        "finished_s_window": in_window / window,
        "finished_s_total": len(done) / max(last - t0, 1e-9),
        "drain_s": max(last - send_end, 0.0),
        "lat": lat,
        "p50_first": pct(first_half, 50),
        "p50_second": pct(second_half, 50),
        **r,
    }


def sustained(r: dict[str, Any]) -> bool:
    """Kept up: every run finished, finishes kept pace, latency did not grow."""
    return (
        r["finished"] == r["started"]
        and r["finished_s_window"] >= 0.9 * r["started_s"]
        and r["drain_s"] < 2.0
        and pct(r["lat"], 99) < 2000
    )


def ol_text(r: dict[str, Any]) -> str:
    lat = r["lat"]
    return (
        f"rate {r['rate']:>6.0f}/s: started {r['started_s']:7.1f}/s finished "
        f"{r['finished_s_window']:7.1f}/s (in window) {r['finished']}/{r['started']} "
        f"drain {r['drain_s']:5.2f}s  p50 {pct(lat, 50):7.1f} p90 {pct(lat, 90):7.1f} "
        f"p99 {pct(lat, 99):7.1f} max {pct(lat, 100):7.1f} ms  p50 1st/2nd half "
        f"{r['p50_first']:.1f}/{r['p50_second']:.1f}  {'OK ' if sustained(r) else 'BEHIND'} "
        f"load {r['load']}\n      {cpu_text(r)}"
    )


async def find_max_rate(
    runs: Runs, rates: list[float], seconds: float, comps: dict[str, int], label: str
) -> tuple[float, list[dict[str, Any]]]:
    best = 0.0
    results = []
    failures = 0
    for rate in rates:
        r = await open_loop(runs, rate, seconds, comps)
        results.append(r)
        print(f"  [{label}] {ol_text(r)}", flush=True)
        if sustained(r):
            best = max(best, rate)
            failures = 0
        else:
            failures += 1
            if failures >= 2:
                break
        await asyncio.sleep(1.0)  # let the tail drain fully
    return best, results


async def settle(runs: Runs, count: int = 100) -> None:
    """Runs until everything flows (after a worker joins and partitions move)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        t = time.perf_counter()
        await asyncio.gather(*(runs.run_one("bench/steps.3", {"x": i}) for i in range(count)))
        if time.perf_counter() - t < 2.0:
            return
    print("  (workers did not settle in 120 s)")


def topic_offsets(settings: Settings) -> dict[str, int]:
    """Records in each of this sitting's topics (sum of high watermarks)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_config())
    topics = [
        (name, len(meta.partitions))
        for name, meta in admin.list_topics(timeout=10).topics.items()
        if name.startswith(settings.topic_prefix)
    ]
    consumer = Consumer(settings.kafka_config(**{"group.id": f"bench-off-{uuid.uuid4().hex[:6]}"}))
    out = {}
    try:
        for name, parts in topics:
            out[name[len(settings.topic_prefix) :]] = sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in range(parts)
            )
    finally:
        consumer.close()
    return out


def records_text(before: dict[str, int], after: dict[str, int], runs: int) -> str:
    rows = sorted(
        ((after[t] - before.get(t, 0)) / runs, t) for t in after if after[t] != before.get(t, 0)
    )
    total = sum(r for r, _ in rows)
    body = "\n".join(f"      {r:6.2f}  {t}" for r, t in reversed(rows))
    return f"    records written per run: {total:.2f}\n{body}"


async def hops(runs: Runs, settings: Settings, app_id: str, count: int) -> dict[str, list[float]]:
    """Where a sequential 3-step run's time goes, from record timestamps (ms resolution).

    send->ack: Client.send_async until the broker acknowledged the event;
    send->start: until the router wrote the run's start record (broker append,
    worker fetch, route); start->finished: until the agent wrote function.finished
    (fetch of the start record, run, system event); finished->seen: until this
    process's consumer had that record.
    """
    from streams.serde.internal import JsonBodyCodec

    journal = settings.topic(f"steplog-{app_id}-fn-steps-3")
    codec = JsonBodyCodec("steplog.RunRecord")
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"bench-hops-{uuid.uuid4().hex[:6]}", "fetch.wait.max.ms": 100}
        )
    )
    consumer.assign(
        [TopicPartition(journal, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
    )
    starts: dict[str, int] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            kind, _, rec = codec.decode(msg.value() or b"")
            if kind == "start":
                starts[rec["run_id"]] = msg.timestamp()[1]

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    out: dict[str, list[float]] = {
        k: [] for k in ("send->ack", "send->start", "start->finished", "finished->seen", "total")
    }
    runs.record_meta = True
    try:
        loop = asyncio.get_running_loop()
        for i in range(count):
            event_id = runs.new_id()
            fut: asyncio.Future[Any] = loop.create_future()

            def done(at: float, _r: Any, f: asyncio.Future[Any] = fut) -> None:
                loop.call_soon_threadsafe(_resolve, f, at)

            runs.expect(event_id, done)
            wall0, t0 = time.time(), time.perf_counter()
            await runs.client.send_async(
                {"name": "bench/steps.3", "data": {"x": i}, "id": event_id}
            )
            acked = time.perf_counter()
            at = await fut
            fin_ts, run_id, wall_seen = runs.meta.pop(event_id)
            for _ in range(100):
                if run_id in starts:
                    break
                await asyncio.sleep(0.01)
            start_ts = starts.get(run_id)
            if start_ts is None:
                continue
            out["send->ack"].append(acked - t0)
            out["send->start"].append(start_ts / 1e3 - wall0)
            out["start->finished"].append((fin_ts - start_ts) / 1e3)
            out["finished->seen"].append(wall_seen - fin_ts / 1e3)
            out["total"].append(at - t0)
    finally:
        runs.record_meta = False
        stop.set()
        thread.join(5)
        consumer.close()
    return out


def log_batches(data_dir: Path, prefix: str) -> dict[str, tuple[int, int]]:
    """{topic: (record batches, records)} from the broker's log segments.

    Every produce request writes at least one batch per partition, so records
    per batch says how well the writers batch (Kafka's DumpLogSegments tool).
    """
    java = local.find_java()
    libs = local.cache_dir_for() / "libs"
    logs = [
        p
        for d in (data_dir / "kafka" / "data").iterdir()
        if d.is_dir() and d.name.startswith(prefix)
        for p in d.glob("*.log")
    ]
    if not logs:
        return {}
    proc = subprocess.run(
        [
            java,
            "-cp",
            str(libs / "*"),
            "kafka.tools.DumpLogSegments",
            "--files",
            ",".join(str(p) for p in logs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out: dict[str, tuple[int, int]] = {}
    topic = ""
    for line in proc.stdout.splitlines():
        if line.startswith("Dumping "):
            topic = Path(line.split(" ", 1)[1]).parent.name.rsplit("-", 1)[0][len(prefix) :]
        elif line.startswith("baseOffset:") and " count: " in line:
            count = int(line.split(" count: ", 1)[1].split()[0])
            batches, records = out.get(topic, (0, 0))
            out[topic] = (batches + 1, records + count)
    return out


def print_profile(w: WorkerProc) -> None:
    """Summarize a worker's profile (bench/profiled_worker.py)."""
    if w.profile_out is None:
        return
    sampled = Path(str(w.profile_out) + ".json")
    if sampled.exists():
        d = json.loads(sampled.read_text())
        wall = d["wall_s"]
        total = max(d["samples"] * d["interval_ms"] / 1e3, 1e-9)
        print(
            f"--- sampled CPU profile of {w.data_dir.name}: {d['samples']} samples of "
            f"{d['interval_ms']:.0f} ms CPU = {d['samples'] * d['interval_ms'] / 1e3:.1f} s; "
            f"process CPU {d['process_cpu_s']:.1f} s over {wall:.0f} s ---"
        )
        print("  CPU by thread over the worker's life:")
        for name, secs in d.get("threads", [])[:12]:
            print(f"    {secs:8.2f} s  {name}")
        for title, key, n in (
            ("by package of the innermost frame", "package", 25),
            ("by outermost steplog frame on the stack", "outermost_steplog", 25),
            ("by innermost frame (self)", "self", 40),
            ("inclusive (frame anywhere on the stack)", "inclusive", 80),
        ):
            print(f"  {title}:")
            for name, secs in d[key][:n]:
                print(f"    {secs:8.2f} s {100 * secs / total:5.1f}%  {name}")
    elif w.profile_out.exists():
        import pstats

        print(f"--- cProfile of {w.data_dir.name} (tottime) ---")
        pstats.Stats(str(w.profile_out)).sort_stats("tottime").print_stats(40)
        print(f"--- cProfile of {w.data_dir.name} (cumulative) ---")
        pstats.Stats(str(w.profile_out)).sort_stats("cumulative").print_stats(60)


# --- main ----------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return f"{os.cpu_count()} cores, {int(mem) / 1024 / 1024:.1f} GiB, {model}"


@contextmanager
def broker(
    bootstrap: str | None, pid: int | None = None
) -> Iterator[tuple[str, int | None, Path | None]]:
    if bootstrap:
        yield bootstrap, pid, None
        return
    tmp = Path(tempfile.mkdtemp(prefix="steplog-bench-"))
    info = local.start(tmp, timeout=120)
    try:
        yield info.bootstrap, info.pid, tmp
    finally:
        local.stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


async def amain(args: argparse.Namespace) -> None:
    phases = set(args.phases.split(","))
    extra_env = dict(kv.split("=", 1) for kv in args.worker_env)
    if extra_env:
        print(f"EXPERIMENT: workers run with {extra_env} (bench/profiled_worker.py)")
    quick = args.quick
    if quick:
        W.WARMUP_RUNS, W.SEQ_RUNS, W.TPUT_RUNS = 5, 30, 200
    print(f"machine: {machine()}; load {loadavg()}; python {sys.version.split()[0]}")
    with broker(args.bootstrap, args.broker_pid) as (bootstrap, broker_pid, broker_dir):
        app_id = f"bench{uuid.uuid4().hex[:6]}"
        settings = Settings(
            bootstrap_servers=bootstrap,
            topic_prefix=f"{app_id}.",
            partitions=args.partitions,
            data_dir=Path(tempfile.mkdtemp(prefix="bench-loadgen-")),
        )
        ensure_topics(settings)
        print(
            f"broker {bootstrap} (pid {broker_pid or 'external'}); partitions "
            f"{settings.partitions}; app {app_id}; workers: separate processes"
        )
        if "base" in phases:
            cpu = Cpu({"loadgen": os.getpid(), **({"broker": broker_pid} if broker_pid else {})})
            n = 20_000 if quick else 200_000
            base = baseline(settings, n)
            r = cpu.stop()
            print(
                f"baseline (1 process, {n:,} msgs of ~100 B, load {r['load']}): raw produce "
                f"{base['produce']:,.0f} msg/s; consume->JSON->RocksDB get/put->produce "
                f"{base['consume_produce']:,.0f} msg/s",
                flush=True,
            )
            if broker_pid:
                # n records produced, n read, n written again: 2n writes + n reads
                print(
                    f"    broker CPU over the baseline: {r['cpu']['broker']:.1f} s = "
                    f"{1e6 * r['cpu']['broker'] / (3 * n):.1f} µs per record written or read "
                    f"(batched); {cpu_text(r)}",
                    flush=True,
                )
        workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
        workers = [WorkerProc(settings, app_id, workdir / "w1", args.profile, extra_env).start()]
        workers[0].wait_ready()
        runs = Runs(settings)
        comps: dict[str, int] = {"loadgen": os.getpid()}
        if broker_pid:
            comps["broker"] = broker_pid
        comps["worker1"] = workers[0].pid

        async def add_second_worker() -> None:
            if len(workers) > 1:
                return
            workers.append(
                WorkerProc(settings, app_id, workdir / "w2", args.profile, extra_env).start()
            )
            workers[1].wait_ready()
            comps["worker2"] = workers[1].pid
            await settle(runs)
            if args.profile:
                workers[1].reset_profile()

        try:
            await settle(runs, 20)
            if args.warmup > 0:
                # A fresh broker's JVM compiles its hot paths during its first seconds of
                # load; the figures below are of a warm broker, as a running one is.
                n = await warm_up(runs, args.warmup)
                print(f"warm-up: {n} runs in {args.warmup:.0f} s, not measured", flush=True)
            await asyncio.sleep(2)
            idle = Cpu(comps)
            await asyncio.sleep(3)
            r = idle.stop()
            idle_worker = float(r["cpu"]["worker1"]) / float(r["wall"])
            print(f"idle (3 s, no runs): {cpu_text(r)}  load {r['load']}", flush=True)
            if args.profile:
                for w in workers:
                    w.reset_profile()
            if "hops" in phases:
                n = 30 if quick else 200
                h = await hops(runs, settings, app_id, n)
                print(
                    f"hops: {n} sequential 3-step runs, p50 / p90 / p99 ms of each leg "
                    f"(load {loadavg()})"
                )
                for leg, xs in h.items():
                    print(
                        f"    {leg:<16} p50 {pct(xs, 50):7.2f}  p90 {pct(xs, 90):7.2f}  "
                        f"p99 {pct(xs, 99):7.2f}"
                    )
            if "a" in phases:
                off0 = topic_offsets(settings)
                th0 = thread_cpu(workers[0].pid)
                res = await closed_loop(runs, comps)
                th1 = thread_cpu(workers[0].pid)
                print_closed_loop("(a)", "1 worker", "steplog", res)
                print(f"    worker1 CPU by thread over phase (a): {threads_text(th0, th1)}")
                if args.profile:
                    named = workers[0].snapshot_threads()
                    print(
                        "    worker1 threads (CPU over its life, named): "
                        + ", ".join(f"{n}={c:.1f}s" for n, c in named[:10])
                    )
                nruns = W.WARMUP_RUNS + W.SEQ_RUNS + W.TPUT_RUNS
                print(records_text(off0, topic_offsets(settings), nruns), flush=True)
                print_cpu_per_run(res)
            if "c" in phases:
                counts = (
                    {0: 10, 1: 10, 3: 10, 10: 10, 100: 5}
                    if quick
                    else {0: 100, 1: 100, 3: 100, 10: 100, 100: 50}
                )
                sw = await sweep(runs, counts, comps)
                print("(c) step-count sweep, sequential, 1 worker:")
                p0 = pct(sw[0]["lat"], 50)

                def busy_ms(r: dict[str, Any]) -> float:
                    # worker CPU per run above its idle rate (timers, heartbeats, polls)
                    busy = float(r["cpu"]["worker1"]) - idle_worker * float(r["wall"])
                    return 1e3 * busy / int(r["count"])

                c0 = busy_ms(sw[0]) / 1e3
                for steps, r in sw.items():
                    lat = r["lat"]
                    cpu_run = busy_ms(r)
                    per_step = (pct(lat, 50) - p0) / steps if steps else float("nan")
                    cpu_step = (cpu_run - c0 * 1e3) / steps if steps else float("nan")
                    print(
                        f"    {steps:>3} steps: p50 {pct(lat, 50):7.2f} ms p99 {pct(lat, 99):7.2f}"
                        f" ms  (p50 - p50[0]) / steps = {per_step:6.3f} ms/step  worker CPU "
                        f"{cpu_run:6.2f} ms/run ({cpu_step:6.3f} ms/step)  load {r['load']}"
                    )
                steps_list: list[int] = list(sw)
                ys = [pct(sw[n_]["lat"], 50) for n_ in steps_list]
                mx, my = statistics.fmean(steps_list), statistics.fmean(ys)
                slope = sum((x - mx) * (y - my) for x, y in zip(steps_list, ys, strict=True)) / sum(
                    (x - mx) ** 2 for x in steps_list
                )
                print(f"    least-squares slope of p50 over steps: {slope:.3f} ms/step")
                if 3 in sw and 100 in sw:
                    s3 = (pct(sw[3]["lat"], 50) - p0) / 3
                    s100 = (pct(sw[100]["lat"], 50) - p0) / 100
                    print(
                        f"    per-step latency at 100 vs 3 steps: {s100:.3f} vs {s3:.3f} ms "
                        + (
                            f"(ratio {s100 / s3:.2f})"
                            if s3 > 0.05
                            else "(the 3-step difference is below the noise of the hops: "
                            "see the step timing below)"
                        ),
                        flush=True,
                    )
            if "c" in phases:
                counts = (
                    {1: 10, 3: 10, 10: 10, 100: 5} if quick else {1: 50, 3: 50, 10: 50, 100: 30}
                )
                st = await step_timing(runs, counts)
                print(
                    "(c) step timing (bench/timed.N, sequential, 1 worker; p50 ms): time to "
                    "first step, step-to-step gap by step index, last step -> finished seen  "
                    f"load {loadavg()}"
                )
                for n, t in st.items():
                    gaps = t["gaps"]
                    buckets = [(0, 1), (1, 10), (10, 50), (50, 99)]
                    parts = []
                    for lo, hi in buckets:
                        xs = [g for k in range(lo, min(hi, len(gaps))) for g in gaps[k]]
                        if xs:
                            parts.append(f"gaps[{lo}:{hi}] {pct(xs, 50):.3f}")
                    print(
                        f"    {n:>3} steps: first step {pct(t['first'], 50):6.2f} (p99 "
                        f"{pct(t['first'], 99):6.2f})  {'  '.join(parts) or 'no gaps'}  tail "
                        f"{pct(t['tail'], 50):6.2f}"
                    )
                if 100 in st and 3 in st:
                    g100 = [g for k in range(len(st[100]["gaps"])) for g in st[100]["gaps"][k]]
                    g3 = [g for k in range(len(st[3]["gaps"])) for g in st[3]["gaps"][k]]
                    late = [g for k in range(90, 99) for g in st[100]["gaps"][k]]
                    print(
                        f"    step-to-step overhead p50: 3-step runs {pct(g3, 50) * 1e3:.1f} µs, "
                        f"100-step runs {pct(g100, 50) * 1e3:.1f} µs (steps 90-99: "
                        f"{pct(late, 50) * 1e3:.1f} µs); ratio 100/3 = "
                        f"{pct(g100, 50) / pct(g3, 50):.2f} (target <= 1.5)",
                        flush=True,
                    )
            if "d" in phases:
                count = 200 if quick else 1000
                r = await slow_burst(runs, count, comps)
                print(
                    f"(d) {r['count']} runs of a 200 ms step, sent at once (send took "
                    f"{r['send_s']:.2f} s): {r['finished']} finished, all done in "
                    f"{r['total_s']:.2f} s; latency p50 {pct(r['lat'], 50):.0f} p99 "
                    f"{pct(r['lat'], 99):.0f} ms  load {r['load']}\n    {cpu_text(r)}",
                    flush=True,
                )
            if "b" in phases:
                seconds = 3.0 if quick else 10.0
                rates: list[float] = (
                    [100, 300] if quick else [100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500]
                )
                if args.rates:
                    rates = [float(x) for x in args.rates.split(",")]
                print(f"(b) open loop, {seconds:.0f} s per rate, 3-step runs, then drain:")
                best1, _ = await find_max_rate(runs, rates, seconds, comps, "1 worker")
                await add_second_worker()
                best2, _ = await find_max_rate(runs, rates, seconds, comps, "2 workers")
                print(
                    f"    highest sustained rate: 1 worker {best1:.0f} runs/s; "
                    f"2 workers {best2:.0f} runs/s",
                    flush=True,
                )
            if "a2" in phases:
                await add_second_worker()
                res = await closed_loop(runs, comps)
                print_closed_loop("(a2)", "2 workers", "steplog-2w", res)
                print_cpu_per_run(res)
            print(f"finished records seen {runs.seen}, not ours/late {runs.stray}")
            if broker_dir is not None and not args.no_batches:
                batches = log_batches(broker_dir, settings.topic_prefix)
                print("records per batch written to the broker over the whole sitting:")
                for topic, (nb, nr) in sorted(batches.items(), key=lambda kv: -kv[1][0]):
                    print(
                        f"    {nr / nb:7.2f} records/batch  {nb:>8,} batches  "
                        f"{nr:>8,} records  {topic}"
                    )
        finally:
            runs.close()
            for w in workers:
                w.stop()
            if args.profile:
                for w in workers:
                    print_profile(w)
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
                shutil.rmtree(settings.data_dir, ignore_errors=True)
            else:
                print(f"worker dirs kept in {workdir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--phases", default="base,hops,a,c,d,b,a2")
    parser.add_argument(
        "--event",
        default=A_EVENT,
        help="the 3-step function of phase (a): bench/steps.3, bench/keyed.3 (a concurrency "
        "limit of 50 keyed per run), bench/keyless.3 (a key-less limit of 50)",
    )
    parser.add_argument("--bootstrap", help="use a running broker (e.g. `steplog kafka start`)")
    parser.add_argument(
        "--broker-pid", type=int, help="with --bootstrap: that broker's pid, to measure its CPU"
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="seconds of unmeasured runs first (0: none)"
    )
    parser.add_argument("--rates", help="open-loop rates, comma-separated")
    parser.add_argument("--profile", action="store_true", help="workers under cProfile")
    parser.add_argument("--keep", action="store_true", help="keep worker dirs and logs")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="K=V",
        help="an experiment setting for the workers, e.g. BENCH_PREFETCH_BACKOFF=0.005",
    )
    parser.add_argument(
        "--no-batches", action="store_true", help="skip counting record batches in the log"
    )
    args = parser.parse_args()
    globals()["A_EVENT"] = args.event
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
