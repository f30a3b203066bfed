"""steplog's errors: one root, narrow subclasses near the code that raises them."""

from __future__ import annotations

from datetime import timedelta


class StreamsError(Exception):
    """The root of every error steplog raises on purpose."""


class ConfigError(StreamsError):
    """Settings or declarations are wrong; the message says what to change."""


class ArgumentError(ConfigError, TypeError):
    """A declaration was called with arguments it cannot take (too many, or one twice)."""


class EventValidationError(StreamsError, ValueError):
    """An event breaks one of the envelope rules (name, data, id, ts, v, size)."""


class DecodeError(StreamsError):
    """Bytes on a topic are neither steplog Avro (either framing) nor a JSON event."""


class KafkaUnavailableError(StreamsError):
    """The broker did not acknowledge; ``acked_ids`` lists what it did acknowledge."""

    def __init__(self, message: str, acked_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.acked_ids = acked_ids or []


class LocalKafkaError(StreamsError):
    """The embedded broker could not be fetched, started, or found."""


class NonRetriableError(StreamsError):
    """Raised by user code: fail the step (or run) now, without further retries."""


class RetryAfterError(StreamsError):
    """Raised by user code: retry, but not before ``retry_after`` has passed."""

    def __init__(self, message: str, retry_after: timedelta | int | float | str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StepError(StreamsError):
    """Reaches user code when a step exhausted its retries (or failed non-retriably)."""

    def __init__(self, message: str, name: str = "Error", stack: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.stack = stack


class DurationError(ConfigError, ValueError):
    """A duration (``"1h30m"``, seconds, ``timedelta``) or a time could not be read."""


class ExpressionError(StreamsError):
    """A CEL expression failed while being evaluated (a missing field, a type mismatch)."""


class FunctionNotFoundError(StreamsError, LookupError):
    """No function of the app has that slug or ``fn_id``."""


class LimitExceededError(NonRetriableError):
    """A run broke one of steplog's limits (steps per run, output size); not retried."""


class SerializationError(NonRetriableError):
    """A step output or a function result is not JSON-serializable; not retried."""


class UserCodeExitError(StreamsError):
    """User code raised ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit`` (or
    another ``BaseException`` of its own): steplog treats it as an ordinary error of the
    step or function (retried as any error), never as a request to stop the worker."""


class StepMisuseError(StreamsError, RuntimeError):
    """A step was called where it cannot be made durable: inside another step's body,
    or after the function returned."""


class NonDeterminismError(StreamsError):
    """Re-executing a function from the top did not reach the steps it reached before."""
