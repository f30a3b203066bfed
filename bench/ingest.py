"""Ingest throughput: Client.send and the HTTP API against baselines, on the real broker.

Prints (never fails on timing):
  raw confluent-kafka producer (1 KB values, acks=all, idempotent)  -> baseline
  Client.send, batches of 5,000 1 KB events                         -> ratio to raw
  HTTP no-op FastAPI endpoint served the same way (uvicorn, 1 proc)  -> baseline
  HTTP, single-event requests, C concurrent connections              -> ratio to no-op
  HTTP, 100-event batches                                            -> events/s

Each round measures every figure once, the baseline right before what is compared
with it; with several rounds the summary gives the median of each figure and of
each round's ratio (other work on a shared machine moves absolute numbers a lot).

Usage: .venv/bin/python bench/ingest.py [--bootstrap HOST:PORT [--broker-pid PID]]
       [--rounds 3] [--warmup 6] [--seconds 3] [--events 60000] [--profile]
Without --bootstrap it starts a broker of its own (steplog's embedded Kafka) in a
temporary directory. The API servers (uvicorn with uvloop and httptools, one
process each) run beside this load generator (aiohttp). Beside every figure: the
load average and the CPU of each process (broker java, API server, this process,
everything else) over that measurement. ``--profile`` runs the API server under
cProfile (main thread) and prints its top functions (its figures are then not
comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from streams.client import Client
from streams.kafka import local
from streams.kafka.admin import ensure_topics
from streams.settings import Settings


def payload(i: int) -> dict[str, str]:
    """A ~1 KB event body that does not compress away (lz4 is on, as in steplog)."""
    return {"user": f"u-{i}", "blob": os.urandom(450).hex()}


NOOP_APP = """
import json
from fastapi import FastAPI, Request
from fastapi.responses import Response
app = FastAPI()
@app.post("/e/{key}")
async def noop(key: str, request: Request) -> Response:
    body = await request.body()
    json.loads(body)
    return Response(json.dumps({"ids": ["x"], "status": 200}), media_type="application/json")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Cpu:
    """CPU of named processes over one measurement, plus everything else on the box."""

    def __init__(self, comps: dict[str, int]) -> None:
        self.comps = comps
        self.t0 = time.perf_counter()
        self.load0 = os.getloadavg()[0]
        self.before = {n: procs.cpu_seconds(p) for n, p in comps.items()}
        self.m0 = procs.machine_busy()

    def used(self) -> dict[str, float]:
        """Seconds of CPU per process (and ``other``) since the start."""
        used = {n: procs.cpu_seconds(p) - self.before[n] for n, p in self.comps.items()}
        used["other"] = max(procs.machine_busy() - self.m0 - sum(used.values()), 0.0)
        return used

    def text(self) -> str:
        wall = time.perf_counter() - self.t0
        parts = " ".join(f"{n}={100 * s / wall:.0f}%" for n, s in self.used().items())
        return f"[load {self.load0:.2f}->{os.getloadavg()[0]:.2f}; cpu %of1core {parts}]"


def bench_raw(settings: Settings, n: int) -> float:
    producer = Producer(settings.producer_config())
    topic = settings.topic("events")
    values = [json.dumps({"name": "bench/raw", "data": payload(i)}).encode() for i in range(n)]
    for i in range(1000):  # warm up: connection, metadata, idempotent producer id
        producer.produce(topic, values[i], key=str(i).encode())
    producer.flush(60)
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, values[i], key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.005)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    return n / (time.perf_counter() - start)


def bench_client(client: Client, events: list[dict[str, object]]) -> float:
    start = time.perf_counter()
    for i in range(0, len(events), 5000):
        client.send(events[i : i + 5000])
    return len(events) / (time.perf_counter() - start)


def serve(
    app_code: str, port: int, settings: Settings, profile: str | None = None
) -> subprocess.Popen[bytes]:
    if profile:
        app_code = (
            "import atexit, cProfile, signal, sys\n"
            "_prof = cProfile.Profile()\n"
            f"atexit.register(lambda: (_prof.disable(), _prof.dump_stats({profile!r})))\n"
            # uvicorn re-raises SIGTERM after its shutdown: exit normally so atexit runs
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
            "_prof.enable()\n" + app_code
        )
    env = {
        **os.environ,
        "STEPLOG_BOOTSTRAP_SERVERS": settings.resolved_bootstrap(),
        "STEPLOG_TOPIC_PREFIX": settings.topic_prefix,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"{app_code}\nimport uvicorn\n"
            f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', "
            "access_log=False, loop='uvloop', http='httptools')",
        ],
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[int, int]:
    """Send requests for ``seconds`` with ``concurrency`` in flight; (requests, errors)."""
    done = errors = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(w: int) -> None:
            nonlocal done, errors
            i = w
            while time.perf_counter() < stop:
                body = bodies[i % len(bodies)]
                i += concurrency
                async with session.post(
                    url, data=body, headers={"content-type": "application/json"}
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                done += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done, errors


def bench_http(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[float, int]:
    asyncio.run(load(url, [body], concurrency, 1.0))  # warm-up
    start = time.perf_counter()
    done, errors = asyncio.run(load(url, [body], concurrency, seconds))
    return done / (time.perf_counter() - start), errors


def median_line(label: str, values: list[float], unit: str, ratios: list[float] | None) -> str:
    text = f"  {label:34s} median {statistics.median(values):>10,.0f} {unit}"
    text += f"  (rounds: {', '.join(f'{v:,.0f}' for v in values)})"
    if ratios:
        text += (
            f"; ratio median {statistics.median(ratios):.0%}"
            f" (rounds: {', '.join(f'{r:.0%}' for r in ratios)})"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--broker-pid", type=int, help="with --bootstrap: the broker's pid")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup", type=float, default=6.0, help="seconds of unmeasured load first (0: none)"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="API server under cProfile")
    args = parser.parse_args()

    tmp = None
    bootstrap = args.bootstrap
    broker_pid = args.broker_pid
    if not bootstrap:
        tmp = tempfile.mkdtemp(prefix="steplog-bench-")
        info = local.start(Path(tmp))
        bootstrap, broker_pid = info.bootstrap, info.pid
    try:
        settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.", partitions=8
        )
        ensure_topics(settings)
        comps = {"broker": broker_pid} if broker_pid else {}
        comps["loadgen"] = os.getpid()
        print(
            f"broker {bootstrap}; machine: {os.cpu_count()} cores; 1 KB events (random, lz4); "
            f"{args.rounds} round(s)"
        )
        events = [{"name": "bench/client", "data": payload(i)} for i in range(args.events)]
        single = json.dumps({"name": "bench/http", "data": payload(0)}).encode()
        batch = json.dumps(
            [{"name": "bench/http", "data": payload(i)} for i in range(100)]
        ).encode()
        noop_port, api_port = free_port(), free_port()
        prof = str(Path(tempfile.gettempdir()) / f"ingest-api-{os.getpid()}.prof")
        noop = serve(NOOP_APP, noop_port, settings)
        api = serve(
            "from connectors.api import create_app\napp = create_app()",
            api_port,
            settings,
            profile=prof if args.profile else None,
        )
        c = args.concurrency
        noop_url = f"http://127.0.0.1:{noop_port}/e/k"
        api_url = f"http://127.0.0.1:{api_port}/e/k"
        figures: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}

        def note(name: str, value: float, ratio: float | None = None) -> None:
            figures.setdefault(name, []).append(value)
            if ratio is not None:
                ratios.setdefault(name, []).append(ratio)

        client = Client(settings)
        client.send(events[:100])  # warm up: connection, metadata, idempotent producer id
        try:
            if args.warmup > 0:
                # A fresh broker's JVM has not compiled its hot paths yet: its first
                # seconds of load are slow for whatever is measured first.
                print(f"--- warm-up: about {args.warmup:.0f} s of the same loads, not measured")
                bench_raw(settings, args.events)
                bench_client(client, events)
                bench_http(api_url, single, c, args.warmup / 2)
                bench_http(api_url, batch, 8, args.warmup / 2)
            for r in range(args.rounds):
                print(f"--- round {r + 1}")
                cpu = Cpu(comps)
                raw = bench_raw(settings, args.events * 3)
                print(
                    f"raw confluent-kafka producer       {raw:>10,.0f} events/s   (baseline)"
                    f"  {cpu.text()}"
                )
                cpu = Cpu(comps)
                cli = bench_client(client, events)
                print(
                    f"Client.send (batches of 5,000)    {cli:>10,.0f} events/s   "
                    f"{cli / raw:5.0%} of raw  {cpu.text()}"
                )
                note("raw", raw)
                note("client", cli, cli / raw)

                cpu = Cpu({**comps, "server": noop.pid})
                base, _ = bench_http(noop_url, single, c, args.seconds)
                print(
                    f"HTTP no-op endpoint (c={c})        {base:>10,.0f} req/s      (baseline)"
                    f"  {cpu.text()}"
                )
                cpu = Cpu({**comps, "server": api.pid})
                one, err1 = bench_http(api_url, single, c, args.seconds)
                server_us = 1e6 * cpu.used()["server"] / (one * (time.perf_counter() - cpu.t0))
                print(
                    f"HTTP single-event requests (c={c}) {one:>10,.0f} events/s   "
                    f"{one / base:5.0%} of no-op  errors={err1}  {cpu.text()}"
                    f"  server {server_us:.0f} µs CPU/request"
                )
                note("noop", base)
                note("single", one, one / base)
                if r == 0:
                    lat = {}
                    for name, url in (("no-op", noop_url), ("steplog", api_url)):
                        rate1, _ = bench_http(url, single, 1, 2.0)
                        lat[name] = 1e3 / rate1
                    print(
                        f"  one request at a time (c=1), mean latency: no-op {lat['no-op']:.2f} "
                        f"ms, steplog {lat['steplog']:.2f} ms (the difference ≈ the wait for "
                        "the broker's ack)"
                    )
                cpu = Cpu({**comps, "server": api.pid})
                many, err2 = bench_http(api_url, batch, 8, args.seconds)
                server_us = (
                    1e6 * cpu.used()["server"] / (many * 100 * (time.perf_counter() - cpu.t0))
                )
                print(
                    f"HTTP 100-event batches (c=8)      {many * 100:>10,.0f} events/s   "
                    f"({many:,.0f} req/s) errors={err2}  {cpu.text()}"
                    f"  server {server_us:.1f} µs CPU/event"
                )
                note("batch", many * 100)
        finally:
            client.close()
            noop.terminate()
            api.terminate()
            noop.wait()
            api.wait()
        if args.rounds > 1:
            print(f"--- summary over {args.rounds} rounds")
            print(median_line("raw confluent-kafka producer", figures["raw"], "events/s", None))
            print(median_line("Client.send", figures["client"], "events/s", ratios["client"]))
            print(median_line("HTTP no-op endpoint", figures["noop"], "req/s", None))
            print(
                median_line(
                    "HTTP single-event requests", figures["single"], "events/s", ratios["single"]
                )
            )
            print(median_line("HTTP 100-event batches", figures["batch"], "events/s", None))
        if args.profile and Path(prof).exists():
            import pstats

            print("--- API server, cProfile (main thread), by tottime ---")
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            print("--- API server, cProfile (main thread), by cumulative ---")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        print(
            f"load generator CPU: {cpu_seconds():.1f} s; processes: broker (java), "
            "2 API servers (uvicorn + uvloop + httptools, 1 process each; one serves at a "
            "time), this load generator"
        )
    finally:
        if tmp:
            local.stop(Path(tmp))
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
