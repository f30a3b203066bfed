"""Ingest throughput: Client.send and the HTTP API against baselines, on the real broker.

Prints (never fails on timing):
  raw confluent-kafka producer (1 KB values, acks=all, idempotent)  -> baseline
  Client.send, batches of 5,000 1 KB events                         -> ratio to raw
  HTTP, single-event requests, C concurrent connections              -> ratio to no-op
  HTTP no-op FastAPI endpoint served the same way (uvicorn, 1 proc)  -> baseline
  HTTP, 100-event batches                                            -> events/s

Usage: .venv/bin/python bench/ingest.py [--bootstrap HOST:PORT] [--seconds 5]
Without --bootstrap it starts a broker of its own (steplog's embedded Kafka) in a
temporary directory. The API server runs in its own process; the load generator
(aiohttp) in this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.client import Client
from streams.kafka import local
from streams.kafka.admin import ensure_topics
from streams.settings import Settings

PAYLOAD = {"user": "u-123", "blob": "x" * 900}
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


def bench_raw(settings: Settings, n: int) -> float:
    producer = Producer(settings.producer_config())
    topic = settings.topic("events")
    value = json.dumps({"name": "bench/raw", "data": PAYLOAD}).encode()
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.005)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    return n / (time.perf_counter() - start)


def bench_client(settings: Settings, n: int) -> float:
    events = [{"name": "bench/client", "data": PAYLOAD} for _ in range(n)]
    with Client(settings) as client:
        client.send(events[:100])  # warm up: connection, metadata
        start = time.perf_counter()
        for i in range(0, n, 5000):
            client.send(events[i : i + 5000])
        return n / (time.perf_counter() - start)


def serve(app_code: str, port: int, settings: Settings) -> subprocess.Popen[bytes]:
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
            "access_log=False)",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    tmp = None
    bootstrap = args.bootstrap
    if not bootstrap:
        tmp = tempfile.mkdtemp(prefix="steplog-bench-")
        bootstrap = local.start(Path(tmp)).bootstrap
    try:
        settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.", partitions=8
        )
        ensure_topics(settings)
        print(f"broker {bootstrap}; machine: {os.cpu_count()} cores; 1 KB events")
        raw = bench_raw(settings, args.events)
        print(f"raw confluent-kafka producer      {raw:>10,.0f} events/s   (baseline)")
        cli = bench_client(settings, args.events)
        print(f"Client.send (batches of 5,000)    {cli:>10,.0f} events/s   {cli / raw:5.0%} of raw")

        single = json.dumps({"name": "bench/http", "data": PAYLOAD}).encode()
        batch = json.dumps([{"name": "bench/http", "data": PAYLOAD}] * 100).encode()
        noop_port, api_port = free_port(), free_port()
        noop = serve(NOOP_APP, noop_port, settings)
        api = serve("from connectors.api import create_app\napp = create_app()", api_port, settings)
        try:
            c = args.concurrency
            base, _ = bench_http(f"http://127.0.0.1:{noop_port}/e/k", single, c, args.seconds)
            print(f"HTTP no-op endpoint (c={c})        {base:>10,.0f} req/s      (baseline)")
            one, err1 = bench_http(f"http://127.0.0.1:{api_port}/e/k", single, c, args.seconds)
            print(
                f"HTTP single-event requests (c={c}) {one:>10,.0f} events/s   "
                f"{one / base:5.0%} of no-op  errors={err1}"
            )
            many, err2 = bench_http(f"http://127.0.0.1:{api_port}/e/k", batch, 8, args.seconds)
            print(
                f"HTTP 100-event batches (c=8)      {many * 100:>10,.0f} events/s   "
                f"({many:,.0f} req/s) errors={err2}"
            )
        finally:
            noop.terminate()
            api.terminate()
            noop.wait()
            api.wait()
        print(
            f"load generator CPU: {cpu_seconds():.1f} s; processes: broker (java), "
            "API server (uvicorn, 1 process), this load generator"
        )
    finally:
        if tmp:
            local.stop(Path(tmp))


if __name__ == "__main__":
    main()
