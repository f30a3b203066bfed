"""steplog: durable event-driven functions on Apache Kafka."""

from streams.errors import NonRetriableError, RetryAfterError, StepError, StreamsError
from streams.event import Event
from streams.settings import Settings

__all__ = [
    "Event",
    "NonRetriableError",
    "RetryAfterError",
    "Settings",
    "StepError",
    "StreamsError",
]
