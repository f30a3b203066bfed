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
from tests.worker_harness import ROOT, Watch, finished

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dev_runs_broker_worker_and_api_with_the_example_app(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLOG_")}
    env.update(
        {"STEPLOG_DATA_DIR": str(tmp_path), "STEPLOG_PARTITIONS": "2", "PYTHONPATH": str(ROOT)}
    )
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "dev", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    watch = None
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.2)
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
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        local.stop(tmp_path)
