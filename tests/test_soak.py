"""The fault soak of bench/soak.py in its quick form, against the session broker.

Three workers under a steady mixed load (3-step runs, sleeps, request-reply waits,
invokes, a step that fails once); five faults, 5-10 s apart: four SIGKILLs and one
rolling SIGTERM restart. Every accepted event must run each of its functions once
and to the end. The timing targets are the bench's to print, not this test's.
It takes about two minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Params, run_soak
from streams.settings import Settings

pytestmark = pytest.mark.kafka


@pytest.mark.timeout(480)
def test_five_faults_lose_no_run_and_start_none_twice(settings: Settings, tmp_path: Path) -> None:
    report = run_soak(settings, tmp_path / "soak", Params.quick())
    print(report.text())  # shown by pytest when the test fails
    assert report.sent > 0 and report.recoveries, "the soak sent nothing or faulted nothing"
    found = {
        "lost": len(report.lost),
        "unfinished": len(report.unfinished),
        "duplicate runs": len(report.duplicate_runs),
        # a record fetched and never processed while later ones were, even if a later
        # rebalance read it again
        "records skipped": len(report.holes),
    }
    assert found == dict.fromkeys(found, 0), "see the soak's report in the captured stdout"
