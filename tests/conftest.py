"""Shared fixtures: one real local Kafka broker per test session, started lazily.

- ``kafka_broker``: a ``KafkaBroker`` (``.bootstrap``, ``.data_dir``) for the session,
  started with ``streams.kafka.local`` in a temporary data dir the first time a test
  asks for it (pure unit tests never start Java), stopped at the end. With
  ``STEPLOG_TEST_BOOTSTRAP=host:port`` set, that broker is used instead (handy when
  iterating: ``steplog kafka start --data-dir /tmp/k`` once, then point tests at it).
- ``settings``: ``Settings`` for that broker with a topic prefix unique to the test,
  ``data_dir=tmp_path`` and 2 partitions.
- ``unique_name``: ``unique_name("group")`` → ``"group-1a2b3c4d"``.

Tests that need the broker are marked ``@pytest.mark.kafka``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.kafka import local
from streams.settings import Settings
from tests.worker_harness import SYSTEM, Watch, WorkerProc


@dataclass(frozen=True)
class KafkaBroker:
    """The broker tests talk to; ``data_dir`` is None for an external one."""

    bootstrap: str
    data_dir: Path | None = None


def _watchdog(data_dir: Path) -> subprocess.Popen[bytes]:
    """A tiny process that stops the session broker if pytest dies without cleaning up."""
    code = (
        "import os, sys, time\n"
        "from streams.kafka import local\n"
        "parent = int(sys.argv[1])\n"
        "while True:\n"
        "    try:\n"
        "        os.kill(parent, 0)\n"
        "    except ProcessLookupError:\n"
        "        break\n"
        "    time.sleep(1)\n"
        "local.stop(sys.argv[2], grace=10)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid()), str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's real Kafka broker (started on first use, stopped at the end)."""
    external = os.environ.get("STEPLOG_TEST_BOOTSTRAP")
    if external:
        yield KafkaBroker(bootstrap=external)
        return
    data_dir = tmp_path_factory.mktemp("kafka-broker")
    info = local.start(data_dir, timeout=90)
    watchdog = _watchdog(data_dir)
    try:
        yield KafkaBroker(bootstrap=info.bootstrap, data_dir=info.data_dir)
    finally:
        local.stop(data_dir)
        watchdog.kill()
        watchdog.wait()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """A function making names (topics, groups, app ids) unique to this test run."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def settings(kafka_broker: KafkaBroker, tmp_path: Path) -> Settings:
    """Settings for the session broker, with a topic prefix unique to this test."""
    return Settings(
        bootstrap_servers=kafka_broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=tmp_path,
        partitions=2,
    )


# --- Shared by the tests that run real workers (tests/worker_harness.py) -------------
@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """The file test apps' step bodies append to (counts executions across processes)."""
    return tmp_path / "ledger.txt"


@pytest.fixture
def watch(settings: Settings) -> Iterator[Watch]:
    """Decoded records of the system topics, collected in a thread."""
    w = Watch(settings, *SYSTEM)
    yield w
    w.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def workers(request: pytest.FixtureRequest) -> Iterator[list[WorkerProc]]:
    """Workers a test started; all killed at the end, whatever happened.

    When the test failed, the end of each worker's log is printed (pytest shows
    it under "Captured stdout teardown").
    """
    procs: list[WorkerProc] = []
    yield procs
    for proc in procs:
        proc.kill()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for i, proc in enumerate(procs):
            print(f"----- worker {i} ({proc.data_dir.name}) log tail -----")
            print(proc.tail(120))
