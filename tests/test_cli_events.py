"""`steplog send` and `steplog events tail` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams.settings import Settings

pytestmark = pytest.mark.kafka


def steplog(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STEPLOG_BOOTSTRAP_SERVERS": settings.resolved_bootstrap(),
        "STEPLOG_TOPIC_PREFIX": settings.topic_prefix,
        "STEPLOG_PARTITIONS": str(settings.partitions),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_send_then_tail_shows_the_decoded_event(settings: Settings) -> None:
    created = steplog(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    sent = steplog(settings, "send", "app/order.created", "--data", '{"total": 12}', "--id", "o-1")
    assert sent.returncode == 0, sent.stderr
    event_id = sent.stdout.strip()
    assert len(event_id) == 26  # a ULID
    steplog(settings, "send", "app/other", "--data", "{}")
    tail = steplog(
        settings, "events", "tail", "--from-beginning", "--name", "app/order.*", "--max", "1"
    )
    assert tail.returncode == 0, tail.stderr
    assert "app/order.created" in tail.stdout and "id=o-1" in tail.stdout
    assert '{"total":12}' in tail.stdout and "app/other" not in tail.stdout


def test_send_with_bad_json_says_so_in_one_line(settings: Settings) -> None:
    result = steplog(settings, "send", "app/a", "--data", "{nope")
    assert result.returncode == 1
    assert "--data is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
