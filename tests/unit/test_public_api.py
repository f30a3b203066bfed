"""The public surface is small and fixed (DESIGN.md)."""

from __future__ import annotations

import streams

EXPECTED = {
    "App",
    "Client",
    "Context",
    "Event",
    "Settings",
    "TriggerEvent",
    "TriggerCron",
    "Concurrency",
    "Throttle",
    "RateLimit",
    "Debounce",
    "Priority",
    "Batch",
    "Singleton",
    "Cancel",
    "Timeouts",
    "StreamsError",
    "NonRetriableError",
    "RetryAfterError",
    "StepError",
    "decode",
    "testing",
}


def test_all_is_exactly_the_documented_surface() -> None:
    assert set(streams.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(streams, name) is not None


def test_errors_share_one_root() -> None:
    for err in (streams.NonRetriableError, streams.RetryAfterError, streams.StepError):
        assert issubclass(err, streams.StreamsError)
