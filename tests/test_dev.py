"""`steplog dev`: the README's main command, end to end (its own local broker)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streams.kafka import local
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.worker_harness import ROOT, Watch, finished

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dev(tmp_path: Path, port: int, **env_vars: str) -> subprocess.Popen[bytes]:
    """``steplog dev`` in a session of its own (a terminal's process group), once its
    API answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLOG_")}
    env.update(
        {"STEPLOG_DATA_DIR": str(tmp_path), "STEPLOG_PARTITIONS": "2", "PYTHONPATH": str(ROOT)}
    )
    env.update(env_vars)
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "dev", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (tmp_path / "dev.log").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def assert_all_end(pids: list[int], timeout: float, log: Path) -> None:
    """Wait for every process in ``pids`` to exit (SIGKILL them and fail after ``timeout``)."""
    t0 = time.monotonic()
    while any(alive(p) for p in pids):
        if time.monotonic() - t0 > timeout:
            left = [p for p in pids if alive(p)]
            for p in left:
                os.kill(p, signal.SIGKILL)
            raise AssertionError(f"steplog dev's processes {left} outlived it:\n{log.read_text()}")
        time.sleep(0.1)


def dev_children(proc: subprocess.Popen[bytes]) -> list[int]:
    """``dev``'s worker and API (not the broker it may start, which outlives it)."""
    kids = [
        pid
        for pid in children(proc.pid)
        if b"streams.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(kids) == 2, kids
    return kids


def test_dev_runs_broker_worker_and_api_with_the_example_app(tmp_path: Path) -> None:
    port = free_port()
    proc = start_dev(tmp_path, port)
    kids = dev_children(proc)
    watch = None
    try:
        settings = Settings(data_dir=tmp_path)  # finds the broker `dev` recorded
        watch = Watch(settings, "inngest.function.finished")
        r = httpx.post(
            f"http://127.0.0.1:{port}/e/dev",
            json={"name": "app/order.created", "data": {"orderId": "o1", "total": 5}},
        )
        assert r.status_code == 200, r.text
        [done] = watch.wait_for(finished("shop-process-order"), timeout=90)
        assert done.data["result"]["status"] == "completed"
        watch.wait_for(finished("shop-send-receipt"), timeout=60)
    finally:
        if watch is not None:
            watch.close()
        try:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
            proc.wait(40)
            assert_all_end(kids, 5, tmp_path / "dev.log")
        finally:
            local.stop(tmp_path)
    assert proc.returncode == 0, (tmp_path / "dev.log").read_text()


def test_a_killed_dev_takes_its_worker_and_api_with_it(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    port = free_port()
    proc = start_dev(tmp_path, port, STEPLOG_BOOTSTRAP_SERVERS=kafka_broker.bootstrap)
    kids = dev_children(proc)
    proc.kill()  # no chance to stop its children
    proc.wait(10)
    assert_all_end(kids, 40, tmp_path / "dev.log")
