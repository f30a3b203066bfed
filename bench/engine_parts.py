"""What steplog's own code costs per run, without Kafka, Faust or RocksDB.

Times, in this process, each piece of work the worker's router and function agent
do for one 3-step no-op run (bench/apps/noop.py, ``bench/steps.3``), with the
same codecs and data shapes, and adds them up. Compare the sum with the worker
CPU per run that bench/runs.py measures: the rest is Faust, aiokafka, asyncio
and RocksDB. Prints figures; never fails on a timing.

Usage: .venv/bin/python bench/engine_parts.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.store import STATE  # noqa: E402
from agents.worker import HISTORY  # noqa: E402
from bench.apps.noop import app  # noqa: E402
from streams.client import Client  # noqa: E402
from streams.clock import now_ms  # noqa: E402
from streams.core import RunInput  # noqa: E402
from streams.event import Event  # noqa: E402
from streams.lifecycle import records  # noqa: E402
from streams.lifecycle.state import RunStatus  # noqa: E402
from streams.lifecycle.system import history_record, system_events  # noqa: E402
from streams.routing import DedupEntry, route  # noqa: E402
from streams.serde import EventCodec, ensure_accepted  # noqa: E402
from streams.settings import Settings  # noqa: E402


def timeit(fn: Callable[[], Any], n: int) -> float:
    """µs per call (best of 3 rounds of n)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


async def drive(fn: Any, event: Event, run_id: str) -> Any:
    driver = fn.driver(RunInput(run_id, fn.slug, event, (), 0), {})
    driver.start()
    last = None
    while (effect := await driver.next_effect()) is not None:
        last = effect
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    n = args.n
    settings = Settings(bootstrap_servers="127.0.0.1:9", topic_prefix="parts.")
    codec = EventCodec(settings)
    client = Client(settings)
    fn = app.functions["bench-steps-3"]
    functions = list(app.functions.values())
    rows: list[tuple[str, str, float]] = []

    # --- what the load generator sends; what the router reads ---------------------
    accepted = client.prepare({"name": "bench/steps.3", "data": {"x": 1}, "id": "abc-1"})[0]
    raw = codec.encode(accepted, topic="parts.events")
    event = codec.decode(raw, topic="parts.events")
    rows.append(
        (
            "router",
            "EventCodec.decode (Avro) of the event",
            timeit(lambda: codec.decode(raw, topic="e"), n),
        )
    )

    def accept() -> Event:
        return ensure_accepted(
            event, key=b"abc-1", topic="e", partition=0, offset=1, timestamp_ms=now_ms()
        )

    rows.append(("router", "ensure_accepted", timeit(accept, n)))
    now = now_ms()
    rows.append(
        (
            "router",
            f"route() over the app's {len(functions)} functions",
            timeit(
                lambda: route(event, functions, None, epoch=0, now_ms=now, window_ms=86_400_000), n
            ),
        )
    )
    decision = route(event, functions, None, epoch=0, now_ms=now, window_ms=86_400_000)
    start = decision.starts[0]
    rows.append(("router", "event.model_dump() for the start record", timeit(event.model_dump, n)))
    start_record = records.Start(start.run_id, event.model_dump())
    rows.append(
        (
            "router",
            "records.encode(Start)",
            timeit(lambda: records.encode(start_record, now), n),
        )
    )
    assert decision.dedup is not None
    dedup = decision.dedup.to_dict()
    rows.append(
        (
            "router",
            "2 x STATE.encode (dedup entry + expiry)",
            2 * timeit(lambda: STATE.encode("dedup", dedup), n),
        )
    )

    # --- the function agent -------------------------------------------------------
    start_rec = records.encode(start_record, now)
    rows.append(("agent", "records.decode(Start)", timeit(lambda: records.decode(start_rec), n)))
    dumped = start_record.event
    rows.append(
        (
            "agent",
            "Event.model_validate(state['event'])",
            timeit(lambda: Event.model_validate(dumped), n),
        )
    )

    async def many_runs(k: int) -> float:
        t = time.perf_counter()
        for i in range(k):
            await drive(fn, event, f"run-{i}")
        return (time.perf_counter() - t) / k * 1e6

    loop = asyncio.new_event_loop()
    loop.run_until_complete(many_runs(200))
    per_run = min(loop.run_until_complete(many_runs(n // 4)) for _ in range(3))
    rows.append(("agent", "RunDriver: 3 no-op steps to RunCompleted (own loop)", per_run))
    final = {
        "status": "completed",
        "function_id": fn.slug,
        "key": start.run_id,
        "started_ms": now,
        "ended_ms": now,
        "attempt": 0,
    }
    rows.append(
        (
            "agent",
            "2 x STATE.encode (final run state + expiry timer)",
            2 * timeit(lambda: STATE.encode("run", final), n),
        )
    )

    def system_event() -> bytes:
        (ev,) = system_events(
            function_id=fn.slug,
            run_id=start.run_id,
            status=RunStatus.COMPLETED,
            trigger=dumped,
            ended_ms=now,
            result=4,
        )
        return codec.encode(ev)

    rows.append(
        ("agent", "function.finished: ids + Event(...) + encode", timeit(system_event, n // 2))
    )

    def history() -> bytes:
        record = history_record(
            run_id=start.run_id,
            function_id=fn.slug,
            status=RunStatus.COMPLETED,
            event=dumped,
            attempt=0,
            started_ms=now,
            ended_ms=now,
            memos=[],
            updated_ms=now,
            result=4,
        )
        return HISTORY.encode(record)

    rows.append(("agent", "run history record: json + Avro", timeit(history, n // 2)))

    # The router reads every function.finished too (it is an event functions may
    # trigger on): decode + accept + route + 2 dedup writes again.
    raw_fin = system_event()
    fin = codec.decode(raw_fin)
    rows.append(
        (
            "router",
            "EventCodec.decode of function.finished (2nd routed record)",
            timeit(lambda: codec.decode(raw_fin), n),
        )
    )
    rows.append(
        (
            "router",
            "route() of function.finished (matches nothing)",
            timeit(
                lambda: route(fin, functions, None, epoch=0, now_ms=now, window_ms=86_400_000), n
            ),
        )
    )
    rows.append(
        (
            "router",
            "2 x STATE.encode (dedup of function.finished)",
            2 * timeit(lambda: STATE.encode("dedup", DedupEntry("x", 0, now, []).to_dict()), n),
        )
    )

    # --- load generator side (for reference) ----------------------------------------
    def send_side() -> bytes:
        ev = client.prepare({"name": "bench/steps.3", "data": {"x": 1}, "id": "abc-2"})[0]
        return codec.encode(ev, topic="parts.events")

    rows.append(
        (
            "client",
            "Client.prepare + encode of one event (load generator)",
            timeit(send_side, n // 2),
        )
    )

    print(
        f"steplog's own code per 3-step run, in-process (µs; best of 3 x {n:,}); "
        f"load {os.getloadavg()[0]:.2f}"
    )
    totals: dict[str, float] = {}
    for part, what, us in rows:
        totals[part] = totals.get(part, 0.0) + us
        print(f"  {part:<7} {us:8.1f}  {what}")
    for part, us in totals.items():
        print(f"  total {part:<7} {us:8.1f} µs per run")
    print(
        f"  router + agent: {totals['router'] + totals['agent']:.0f} µs per run of steplog code; "
        "compare with the worker CPU per run from bench/runs.py"
    )


if __name__ == "__main__":
    main()
