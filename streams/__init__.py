"""steplog: durable event-driven functions (Inngest's model) on Apache Kafka.

Users import only this package::

    from streams import App, Context, Event, TriggerEvent
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.app import App
from streams.core import Context
from streams.errors import NonRetriableError, RetryAfterError, StepError, StreamsError
from streams.event import Event
from streams.options import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
)
from streams.settings import Settings

if TYPE_CHECKING:
    from streams import testing
    from streams.client import Client
    from streams.serde import decode

__all__ = [
    "App",
    "Batch",
    "Cancel",
    "Client",
    "Concurrency",
    "Context",
    "Debounce",
    "Event",
    "NonRetriableError",
    "Priority",
    "RateLimit",
    "RetryAfterError",
    "Settings",
    "Singleton",
    "StepError",
    "StreamsError",
    "Throttle",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "decode",
    "testing",
]


def __getattr__(name: str) -> Any:
    # Kafka clients load only when used, so `import streams` stays light.
    if name == "Client":
        from streams.client import Client

        return Client
    if name == "decode":
        from streams.serde import decode

        return decode
    if name == "testing":
        import streams.testing as testing

        return testing
    raise AttributeError(f"module 'streams' has no attribute {name!r}")
