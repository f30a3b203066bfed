"""Wait matching cost as pending waits grow 1k -> 10k -> 100k (issue 4).

Two parts; both print figures and never fail on a timing.

micro   In-process, no Kafka: ``streams.waits.WaitIndex.matches`` per event with N
        pending waits of the indexed equality form (``async.data.x == event.data.y``),
        for an event that completes one wait (hit) and one that completes none
        (miss), against two linear scans over the same waits measured in the same
        rounds: the cheapest one (compare each wait's hint value) and the naive one
        (``matches_wait``, CEL per wait). Sizes are measured round-robin so machine
        noise falls on all of them alike; the figure is the median round. Also:
        registering and removing a wait at each size, ``RecentEvents.since`` (run for
        each registration that reaches a worker) with R recent events of the awaited
        name, and the memory of a pending wait and of a remembered event.

e2e     On a real worker (``steplog worker bench.apps.wait_probe:app``), one fresh app
        and worker per level N: create N (+300 spare) runs waiting in
        ``wait_for_event``; then
          burst   M ``bench/other`` events (no waits on that name: the router's
                  reference cost) and M ``bench/reply`` events that complete no wait,
                  each sent at once, in the order other, reply, reply, other (means
                  reported); drained when the worker's group committed them;
                  events/s and worker CPU per event
          paced   ``--rate`` reply events/s for ``--duration`` s, 1 in 100 completing
                  a wait: latency from the reply's send to the start of the step after
                  the wait, and the router's backlog
          early/late  1,000 more waiters registered before the bursts, and 1,000 after
                  the replies (each registration is checked against the replies the
                  worker remembers: agents/waits.py ``_check_recent``)
        plus the worker's RSS idle and with N waits pending.

Usage: .venv/bin/python bench/waits.py [--part micro|e2e|both] [--levels 1000,10000,100000]
       [--rate 1000] [--duration 30] [--burst 20000] [--partitions 4]
       [--kafka-data-dir /tmp/bench-kafka | --bootstrap HOST:PORT] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from bench import procs
from bench.apps import introspect
from streams.client import Client
from streams.event import Event, accept
from streams.serde import EventCodec
from streams.settings import Settings
from streams.waits import RecentEvents, Wait, WaitIndex, index_hint, matches_wait

IF_EXP = "async.data.x == event.data.y"
REPLY = "bench/reply"
SPARE = 300  # waits completed by the paced phase's hits
LATE = 1_000  # waiters registered after the replies


# --- micro ---------------------------------------------------------------------------


def make_wait(i: int, now: int) -> Wait:
    trigger = {"name": "bench/waiter", "data": {"y": i}, "id": f"e{i}", "ts": now, "v": None}
    return Wait(
        function="waits-waiter",
        run_id=f"01RUN{i:021d}",
        step_id="a1b2c3d4e5f6a7b8c9d0",
        run_key=f"01RUN{i:021d}",
        event=REPLY,
        if_exp=IF_EXP,
        registered_ms=now - 60_000,
        expires_ms=now + 7_200_000,
        trigger=trigger,
        hint=index_hint(IF_EXP, trigger),
    )


def reply(x: Any, now: int) -> Event:
    return accept(Event(name=REPLY, data={"x": x, "sent_us": now * 1000}), at_ms=now)


def _lookup(index: WaitIndex, at: int) -> Callable[[Event], Any]:
    return lambda e: index.matches(e, at)


def recent_limits() -> tuple[int, int]:
    """(window ms, max events) of the worker's RecentEvents (agents/waits.py)."""
    try:
        from agents import waits
    except ImportError:
        return 5 * 60 * 1000, 100_000
    return waits.RECENT_WINDOW_MS, getattr(waits, "RECENT_MAX_EVENTS", 100_000)


def per_event(fn: Callable[[Event], Any], events: list[Event]) -> float:
    """µs per call of ``fn`` over ``events``."""
    t0 = time.perf_counter()
    for e in events:
        fn(e)
    return (time.perf_counter() - t0) / len(events) * 1e6


def micro(sizes: list[int], rounds: int) -> None:
    now = int(time.time() * 1000)
    at = now
    print(f"\n== micro: WaitIndex.matches per event, {rounds} rounds, load {procs.loadavg()}")
    built: dict[int, tuple[WaitIndex, list[Wait]]] = {}
    for n in sizes:
        index = WaitIndex()
        waits = [make_wait(i, now) for i in range(n)]
        for w in waits:
            index.add(w)
        built[n] = (index, waits)
    events = 2_000
    hits = {n: [reply(i * 7919 % n, at) for i in range(events)] for n in sizes}
    misses = [reply(-1 - i, at) for i in range(events)]
    for n in sizes:  # each hit completes exactly one wait, each miss none
        index = built[n][0]
        assert len(index.matches(hits[n][0], at)) == 1 and not index.matches(misses[0], at)

    def scan_hint(waits: list[Wait]) -> Callable[[Event], Any]:
        def fn(e: Event) -> list[Wait]:
            value = json.dumps(e.data["x"])  # the index's key of the candidate's value
            return [w for w in waits if w.hint is not None and w.hint[1] == value]

        return fn

    def scan_cel(waits: list[Wait]) -> Callable[[Event], Any]:
        return lambda e: [w for w in waits if matches_wait(w, e, at)]

    # where a hit's time goes: the CEL check of the one candidate (matches_wait)
    one = built[sizes[0]][1][0]
    one_hit = [reply(0, at) for _ in range(events)]
    cel = statistics.median(
        per_event(lambda e: matches_wait(one, e, at), one_hit) for _ in range(rounds)
    )

    samples: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for n in sizes:
            index, waits = built[n]
            lookup = _lookup(index, at)
            row = {
                "index hit": per_event(lookup, hits[n]),
                "index miss": per_event(lookup, misses),
                "scan hint": per_event(scan_hint(waits), misses[: max(5, 200_000 // n)]),
            }
            if r < 3:  # the naive scan costs ~10 µs per wait: few events, few rounds
                row["scan CEL"] = per_event(scan_cel(waits), misses[: max(2, 20_000 // n)])
            for name, us in row.items():
                samples.setdefault((name, n), []).append(us)
    cols = ("index hit", "index miss", "scan hint", "scan CEL")
    print("pending waits | " + " | ".join(f"{c} µs/event (min-max)" for c in cols))
    med = {k: statistics.median(v) for k, v in samples.items()}
    for n in sizes:
        cells = []
        for c in cols:
            v = samples.get((c, n))
            cells.append(f"{med[(c, n)]:,.2f} ({min(v):,.2f}-{max(v):,.2f})" if v else "-")
        print(f"{n:>13,} | " + " | ".join(cells))
    small, big = sizes[0], sizes[-1]

    print(
        f"of a hit, the CEL check of its one candidate (matches_wait) takes {cel:.2f} µs; "
        "median of rounds (min-max over rounds)"
    )

    def grows(col: str, pick: Callable[[list[float]], float] = statistics.median) -> float:
        return pick(samples[(col, big)]) / pick(samples[(col, small)])

    print(
        f"flatness {big:,} vs {small:,} pending (median rounds; fastest rounds): "
        f"index hit x{grows('index hit'):.2f} (x{grows('index hit', min):.2f}), "
        f"index miss x{grows('index miss'):.2f} (x{grows('index miss', min):.2f}); "
        f"cheapest scan x{grows('scan hint'):.0f}"
    )
    for n in sizes:
        print(
            f"  at {n:,}: the index is {med[('scan hint', n)] / med[('index miss', n)]:,.0f}x "
            f"faster than the cheapest scan, "
            f"{med[('scan CEL', n)] / med[('index hit', n)]:,.0f}x faster than the naive scan"
        )
    print(
        "SUMMARY waits-micro "
        + " ".join(
            f"n{n}_hit_us={med[('index hit', n)]:.2f} n{n}_miss_us={med[('index miss', n)]:.2f} "
            f"n{n}_scan_us={med[('scan hint', n)]:.1f}"
            for n in sizes
        )
    )

    # registration: add + remove one wait at each size
    print("\nregistering a wait (add + remove) with N pending, median of 5 rounds:")
    extra = [make_wait(10_000_000 + i, now) for i in range(5_000)]
    reg: dict[int, list[float]] = {}
    for _ in range(5):
        for n in sizes:
            index = built[n][0]
            t0 = time.perf_counter()
            for w in extra:
                index.add(w)
            for w in extra:
                index.remove(w.key)
            reg.setdefault(n, []).append((time.perf_counter() - t0) / len(extra) * 1e6)
    for n in sizes:
        print(f"  {n:>9,}: {statistics.median(reg[n]):.2f} µs")

    # what a late registration costs: RecentEvents.since over the awaited name
    window_ms, max_events = recent_limits()
    print(
        "\nRecentEvents.since(name, registered_ms) per registration (agents/waits.py "
        "_check_recent), R remembered events of that name, none newer than the wait "
        f"(the worker keeps at most {max_events:,} events of {window_ms / 1000:.0f} s):"
    )
    for r in sorted({1_000, 10_000, max_events, 100_000}):
        recent = RecentEvents(window_ms, max(r, max_events))
        for i in range(r):
            recent.add(reply(-1 - i, now - 10_000 + i % 1000), now)
        t0 = time.perf_counter()
        reps = max(3, 200_000 // r)
        for _ in range(reps):
            recent.since(REPLY, now)
        print(f"  R={r:>7,}: {(time.perf_counter() - t0) / reps * 1e6:,.1f} µs")

    # memory
    del built, hits
    gc.collect()
    n = sizes[-1]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = WaitIndex()
    for i in range(n):
        index.add(make_wait(i, now))
    used = tracemalloc.get_traced_memory()[0] - base
    recent = RecentEvents(window_ms, n)
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        recent.add(reply(-1 - i, now), now)
    used_recent = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(
        f"\nmemory (tracemalloc): {used / n:,.0f} bytes per pending wait in WaitIndex "
        f"(incl. its trigger dict), {used_recent / n:,.0f} bytes per event kept by "
        f"RecentEvents ({n:,} of each; a reply's data is 2 small fields)"
    )
    del index, recent


# --- e2e -----------------------------------------------------------------------------


class Finished(threading.Thread):
    """Collects the waiters' results from inngest.function.finished."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.codec = EventCodec(settings)
        self.results: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.consumer = procs.tail_consumer(settings, "bench-waits")
        self.consumer.subscribe([settings.topic("inngest.function.finished")])

    def run(self) -> None:
        while not self.stopping.is_set():
            for msg in self.consumer.consume(1000, 0.1):
                if msg.error():
                    continue
                data = self.codec.decode(msg.value()).data
                with self.lock:
                    self.results.setdefault(data["run_id"], data["result"])
        self.consumer.close()

    def count(self) -> int:
        with self.lock:
            return len(self.results)


class Lag:
    """The worker group's backlog on the events topic (end offsets - committed)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.topic = settings.topic("events")
        self.group = group
        self.admin = AdminClient(settings.kafka_config())
        self.consumer = Consumer(settings.kafka_config(**{"group.id": f"lag-{uuid.uuid4().hex}"}))
        meta = self.admin.list_topics(self.topic, timeout=10).topics[self.topic]
        self.parts = sorted(meta.partitions)

    def ends(self) -> dict[int, int]:
        return {
            p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self.parts
        }

    def committed(self) -> dict[int, int]:
        req = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(self.topic, p) for p in self.parts]
        )
        res = self.admin.list_consumer_group_offsets([req])[self.group].result(timeout=10)
        return {tp.partition: tp.offset for tp in res.topic_partitions}

    def backlog(self, ends: dict[int, int] | None = None) -> int:
        ends = ends or self.ends()
        done = self.committed()
        return sum(max(end - max(done.get(p, 0), 0), 0) for p, end in ends.items())

    def wait_drained(self, ends: dict[int, int], timeout: float) -> float | None:
        """Seconds until every record before ``ends`` was committed (None: timeout)."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.backlog(ends) == 0:
                return time.perf_counter() - t0
            time.sleep(0.1)
        return None

    def close(self) -> None:
        self.consumer.close()


def send_all(client: Client, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 5000):
        client.send(events[i : i + 5000])


def e2e_level(n: int, args: argparse.Namespace, broker: procs.Broker, tmp: Path) -> dict[str, Any]:
    app_id = f"waits{uuid.uuid4().hex[:6]}"
    settings = Settings(
        bootstrap_servers=broker.bootstrap, topic_prefix=f"{app_id}.", partitions=args.partitions
    )
    worker = procs.Worker(settings, app_id, "bench.apps.wait_probe:app", tmp / app_id)
    out: dict[str, Any] = {"n": n}
    print(f"\n== e2e, {n:,} pending waits (app {app_id}), load {procs.loadavg()}", flush=True)
    worker.start()
    pids = {"worker": worker.pid, "broker": broker.pid}
    finished = Finished(settings)
    finished.start()
    client = Client(settings)
    lag = Lag(settings, f"steplog-{app_id}")
    try:
        # warm-up: 20 waiters and their replies; then the idle worker
        warm = [{"name": "bench/waiter", "data": {"y": f"w{i}"}} for i in range(20)]
        send_all(client, warm)
        _wait_pending(worker, 20, 120)
        now = int(time.time() * 1000)
        send_all(
            client, [{"name": REPLY, "data": {"x": f"w{i}", "sent_us": now}} for i in range(20)]
        )
        deadline = time.monotonic() + 120
        while finished.count() < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        idle = introspect.ask(worker.probe_dir)
        print(f"idle: RSS {idle['rss'] / 2**20:.1f} MiB, pending {idle.get('pending_waits')}")

        # create n + SPARE waiters
        total = n + SPARE
        cpu = procs.Cpu(pids)
        t0 = time.perf_counter()
        send_all(client, [{"name": "bench/waiter", "data": {"y": i}} for i in range(total)])
        took = _wait_pending(worker, total, 3600, progress=True)
        c = cpu.stop()
        out["create_rate"] = total / took
        print(
            f"create: {total:,} waiting runs registered in the index in {took:.1f}s = "
            f"{total / took:,.0f} runs/s; {procs.cpu_text(c)}"
        )
        time.sleep(3)
        held = introspect.ask(worker.probe_dir)
        grown = held["rss"] - idle["rss"]
        out["bytes_per_wait"] = grown / total
        print(
            f"memory: RSS {held['rss'] / 2**20:.1f} MiB with {held.get('pending_waits'):,} "
            f"pending = +{grown / 2**20:.1f} MiB, {grown / total:,.0f} bytes per waiting run; "
            f"objects {held.get('objects')}, free slots {held.get('free_slots')}, "
            f"active {held.get('active_runs')}"
        )

        # registrations with no replies remembered yet (compare with "late" below)
        out["early_rate"] = _register_more(worker, client, "early")

        # bursts: reference (no waits on the name) and replies completing nothing, in
        # the order A B B A so that a drift over the phase falls on both alike
        bursts: dict[str, list[tuple[float, float]]] = {}
        other, miss = ("bench/other", "other"), (REPLY, "reply-miss")
        for i, (name, label) in enumerate((other, miss, miss, other)):
            before = lag.ends()
            events = [
                {"name": name, "data": {"x": -1 - i * args.burst - j, "sent_us": 0}}
                for j in range(args.burst)
            ]
            cpu = procs.Cpu(pids)
            t0 = time.perf_counter()
            send_all(client, events)
            ends = lag.ends()
            assert sum(ends.values()) - sum(before.values()) >= args.burst
            drained = lag.wait_drained(ends, 600)
            c = cpu.stop()
            took = time.perf_counter() - t0
            w = c["cpu"]["worker"]
            bursts.setdefault(label, []).append((args.burst / took, 1000 * w / args.burst))
            print(
                f"burst {label:10}: {args.burst:,} events drained in {took:.1f}s = "
                f"{args.burst / took:,.0f} events/s; worker CPU {1000 * w / args.burst:.3f} "
                f"ms/event; {procs.cpu_text(c)}"
                + ("" if drained is not None else " (NOT drained)"),
                flush=True,
            )
        for label, got in bursts.items():
            out[f"burst_{label}"] = statistics.fmean(r for r, _ in got)
            out[f"cpu_{label}"] = statistics.fmean(c for _, c in got)

        # paced replies with hits
        out.update(_paced(n, args, client, lag, finished, pids))

        # late registrations (checked against the remembered replies)
        out["late_rate"] = _register_more(worker, client, "late")
        print(f"worker log: {procs.stall_counts(worker)}")
    finally:
        lag.close()
        client.close()
        finished.stopping.set()
        finished.join(10)
        worker.stop()
    return out


def _register_more(worker: procs.Worker, client: Client, label: str) -> float:
    """Register LATE more waiters; runs/s until all are in the index."""
    rep = introspect.ask(worker.probe_dir, lite=True)
    before = rep.get("pending_waits", 0)
    send_all(
        client,
        [{"name": "bench/waiter", "data": {"y": f"{label}{i}"}} for i in range(LATE)],
    )
    took = _wait_pending(worker, before + LATE, 600, poll=0.1)
    print(
        f"{label}: {LATE:,} more waiters registered in {took:.1f}s = {LATE / took:,.0f} runs/s "
        f"with {rep.get('recent_events'):,} events remembered by the worker",
        flush=True,
    )
    return LATE / took


def _wait_pending(
    worker: procs.Worker, count: int, timeout: float, progress: bool = False, poll: float = 1.0
) -> float:
    """Seconds until the worker's wait index holds ``count`` waits."""
    t0 = time.perf_counter()
    last = t0
    while time.perf_counter() - t0 < timeout:
        rep = introspect.ask(worker.probe_dir, lite=True)
        pending = rep.get("pending_waits", 0)
        if pending >= count:
            return time.perf_counter() - t0
        if progress and time.perf_counter() - last >= 30:
            last = time.perf_counter()
            print(
                f"  {time.perf_counter() - t0:5.0f}s: {pending:,} pending, RSS "
                f"{rep.get('rss', 0) / 2**20:.0f} MiB, load {procs.loadavg()}",
                flush=True,
            )
        time.sleep(poll)
    return float("nan")


def _paced(
    n: int,
    args: argparse.Namespace,
    client: Client,
    lag: Lag,
    finished: Finished,
    pids: dict[str, int | None],
) -> dict[str, Any]:
    hit_every = 100
    with finished.lock:
        seen = set(finished.results)
    cpu = procs.Cpu(pids)
    t0 = time.time()
    sent = hits = 0
    max_backlog = 0
    next_lag = t0 + 5
    while (now := time.time()) < t0 + args.duration:
        due = int((now - t0) * args.rate) - sent
        if due > 0:
            sent_us = time.time_ns() // 1000
            batch = []
            for _ in range(due):
                if sent % hit_every == hit_every - 1 and hits < SPARE:
                    batch.append({"name": REPLY, "data": {"x": n + hits, "sent_us": sent_us}})
                    hits += 1
                else:
                    batch.append({"name": REPLY, "data": {"x": -1 - sent, "sent_us": sent_us}})
                sent += 1
            client.send(batch)
        if now >= next_lag:
            next_lag = now + 5
            max_backlog = max(max_backlog, lag.backlog())
        time.sleep(0.005)
    wall = time.time() - t0
    end_backlog = lag.backlog()
    drained = lag.wait_drained(lag.ends(), 600)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with finished.lock:
            got = [v for r, v in finished.results.items() if r not in seen and v]
        if len(got) >= hits:
            break
        time.sleep(0.2)
    c = cpu.stop()
    lat = sorted((woke - s) / 1000 for _, s, woke in got)
    print(
        f"paced: {sent:,} replies in {wall:.1f}s = {sent / wall:,.0f}/s ({hits} completing a "
        f"wait); router backlog max {max_backlog:,} (sampled every 5 s), {end_backlog:,} at the "
        f"end, drained {drained:.1f}s later; {procs.cpu_text(c)}"
        if drained is not None
        else f"paced: {sent:,} replies, backlog NOT drained in 600 s"
    )
    out: dict[str, Any] = {"paced_rate": sent / wall, "paced_backlog": max_backlog}
    if lat:
        print(
            f"paced: reply sent -> step after the wait started: n={len(lat)} p50 "
            f"{procs.pct(lat, 0.5):.1f} p90 {procs.pct(lat, 0.9):.1f} p99 "
            f"{procs.pct(lat, 0.99):.1f} max {lat[-1]:.1f} ms"
        )
        out.update(p50=procs.pct(lat, 0.5), p99=procs.pct(lat, 0.99))
    return out


def e2e(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="steplog-waits-"))
    rows = []
    with procs.broker(args.bootstrap, args.kafka_data_dir, tmp) as broker:
        for n in args.levels:
            rows.append(e2e_level(n, args, broker, tmp))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n== e2e summary")
    print(
        "pending | create runs/s | burst other ev/s | burst reply-miss ev/s | worker ms/event "
        "(other, reply) | paced ev/s | max backlog | hit p50 / p99 ms | early / late runs/s"
    )
    for r in rows:
        print(
            f"{r['n']:>7,} | {r['create_rate']:,.0f} | {r['burst_other']:,.0f} | "
            f"{r['burst_reply-miss']:,.0f} | {r['cpu_other']:.3f}, {r['cpu_reply-miss']:.3f} | "
            f"{r.get('paced_rate', 0):,.0f} | {r.get('paced_backlog', 0):,} | "
            f"{r.get('p50', float('nan')):.1f} / {r.get('p99', float('nan')):.1f} | "
            f"{r['early_rate']:,.0f} / {r['late_rate']:,.0f}"
        )
        print(
            f"SUMMARY waits-e2e n={r['n']} reply_over_other="
            f"{r['burst_reply-miss'] / r['burst_other']:.2f} "
            f"cpu_reply_over_other={r['cpu_reply-miss'] / r['cpu_other']:.2f} "
            f"hit_p50_ms={r.get('p50', float('nan')):.1f} "
            f"hit_p99_ms={r.get('p99', float('nan')):.1f} "
            f"late_over_early={r['late_rate'] / r['early_rate']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("micro", "e2e", "both"), default="both")
    parser.add_argument("--sizes", default="1000,10000,100000", help="micro: pending waits")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--levels", default="1000,10000,100000", help="e2e: pending waits")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced replies per second")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--bootstrap")
    parser.add_argument("--kafka-data-dir")
    parser.add_argument("--quick", action="store_true", help="levels 1k,5k; short phases")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (worker logs)")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.duration, args.burst, args.rounds = "1000,5000", 10.0, 5000, 3
    args.levels = [int(x) for x in args.levels.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"waits: machine {procs.loadavg()} (load), 2 cores shared with other work")
    if args.part in ("micro", "both"):
        micro(sizes, args.rounds)
    if args.part in ("e2e", "both"):
        e2e(args)


if __name__ == "__main__":
    main()
