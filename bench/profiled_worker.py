"""Run ``python -m streams.cli ...`` under a profiler; the profile is written at exit.

Usage: python bench/profiled_worker.py OUT worker MODULE:APP [-l info]
(``bench/runs.py --profile`` starts workers this way). Two profilers, chosen by
``BENCH_PROFILE``:

- ``sample`` (default): a statistical profiler. ``setitimer(ITIMER_PROF)`` fires
  SIGPROF every ``BENCH_PROFILE_MS`` ms (default 2) of *CPU time* used by the
  process; the handler runs in the main thread (where the asyncio loop and every
  agent run) and records the Python stack that was executing. Each sample is one
  interval of CPU, so the figures are CPU seconds; idle time (``select``) is not
  sampled. Written to ``OUT.json``: by innermost frame ("self"), by every frame
  on the stack ("inclusive"), by package of the innermost frame, and by the
  outermost steplog frame. Overhead is a few per cent. SIGRTMIN+2 resets the
  counts (bench/runs.py sends it when the measured phases begin).
- ``cprofile``: cProfile on the main thread's CPU clock (``time.thread_time``),
  written to ``OUT`` (pstats). Exact call counts, but it slows Python-heavy code
  several fold: use it for counts and the split, not for rates.
- ``none``: no profiler (to run an experiment below alone).

Experiments (diagnosis only; the engine is not changed): with
``BENCH_PREFETCH_BACKOFF=S`` aiokafka's fetcher waits at most S seconds (default
0.1) before it fetches again from a broker while records of *any* partition it
fetched from that broker are still unconsumed.
"""

from __future__ import annotations

import atexit
import collections
import cProfile
import json
import os
import runpy
import signal
import sys
import time
from typing import Any

out = sys.argv[1]
sys.argv = ["streams.cli", *sys.argv[2:]]
MODE = os.environ.get("BENCH_PROFILE", "sample")
#: mode's worker takes SIGUSR1/SIGUSR2 for itself; a real-time signal is free.
RESET_SIGNAL = signal.SIGRTMIN + 2
THREADS_SIGNAL = signal.SIGRTMIN + 3
INTERVAL = float(os.environ.get("BENCH_PROFILE_MS", "2")) / 1000


def where(code: Any) -> str:
    name = str(code.co_filename)
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in name:
            name = name.split(marker, 1)[1]
            break
    return f"{name}:{code.co_name!s}"


def package(code: Any) -> str:
    name = str(code.co_filename)
    if "site-packages/" in name:
        return name.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/work/main/" in name:
        return "/".join(name.split("/work/main/", 1)[1].split("/")[:2])
    if "/lib/python3.11/" in name:
        return "stdlib:" + name.split("/lib/python3.11/", 1)[1].split("/", 1)[0]
    return name


def thread_cpu() -> list[tuple[str, float]]:
    """CPU seconds of each OS thread of this process, named by its Python thread
    when it is one (OS names of Python threads are just "python")."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        f = raw.rsplit(")", 1)[1].split()
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        name = names.get(int(tid), f"[{comm}]")
        out.append((f"{name} ({tid})", (int(f[11]) + int(f[12])) / tick))
    return sorted(out, key=lambda kv: -kv[1])


def top(counts: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]


class Sampler:
    def __init__(self) -> None:
        self.self_counts: dict[str, float] = collections.defaultdict(float)  # CPU seconds
        self.incl: dict[str, float] = collections.defaultdict(float)
        self.pkg: dict[str, float] = collections.defaultdict(float)
        self.top_steplog: dict[str, float] = collections.defaultdict(float)
        self.samples = 0
        self.stopped = False
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def reset(self, *_: Any) -> None:
        """RESET_SIGNAL: forget what was sampled so far (start-up, warm-up)."""
        for counts in (self.self_counts, self.incl, self.pkg, self.top_steplog):
            counts.clear()
        self.samples = 0
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def snapshot_threads(self, *_: Any) -> None:
        """THREADS_SIGNAL: write each live thread's CPU so far to OUT.threads.json."""
        with open(out + ".threads.json", "w") as fh:
            json.dump(thread_cpu(), fh, indent=1)

    def start(self) -> None:
        signal.signal(RESET_SIGNAL, self.reset)
        signal.signal(THREADS_SIGNAL, self.snapshot_threads)
        signal.signal(signal.SIGPROF, self.on_signal)
        signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)

    def on_signal(self, _signum: int, frame: Any) -> None:
        if frame is None:
            return
        self.samples += 1
        self.self_counts[where(frame.f_code)] += INTERVAL
        self.pkg[package(frame.f_code)] += INTERVAL
        seen = set()
        outermost_steplog = None
        f: Any = frame
        while f is not None:
            w = where(f.f_code)
            if w not in seen:
                seen.add(w)
                self.incl[w] += INTERVAL
            if w.startswith(("agents/", "streams/")) and not w.startswith("streams/cli"):
                outermost_steplog = w
            f = f.f_back
        self.top_steplog[outermost_steplog or "(no steplog frame)"] += INTERVAL

    def dump(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        self.stopped = True
        data = {
            "samples": self.samples,
            "interval_ms": INTERVAL * 1000,
            "wall_s": time.perf_counter() - self.t0,
            "process_cpu_s": time.process_time() - self.cpu0,
            "self": top(self.self_counts, 60),
            "inclusive": top(self.incl, 150),
            "package": top(self.pkg, 40),
            "outermost_steplog": top(self.top_steplog, 40),
            "threads": thread_cpu(),
        }
        with open(out + ".json", "w") as fh:
            json.dump(data, fh, indent=1)


if os.environ.get("BENCH_PREFETCH_BACKOFF"):
    import functools

    from aiokafka.consumer import fetcher as _fetcher

    _init = _fetcher.Fetcher.__init__
    _backoff = float(os.environ["BENCH_PREFETCH_BACKOFF"])

    @functools.wraps(_init)
    def _patched(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["prefetch_backoff"] = _backoff
        _init(self, *args, **kwargs)

    _fetcher.Fetcher.__init__ = _patched

if MODE == "none":

    def _dump() -> None:
        pass

elif MODE == "cprofile":
    profiler = cProfile.Profile(time.thread_time)

    def _dump() -> None:
        profiler.disable()
        profiler.dump_stats(out)

    atexit.register(_dump)
    profiler.enable()
else:
    sampler = Sampler()
    sampler.start()

    def _dump() -> None:
        if not sampler.stopped:
            sampler.dump()

    atexit.register(_dump)

try:
    runpy.run_module("streams.cli", run_name="__main__", alter_sys=True)
finally:
    _dump()
