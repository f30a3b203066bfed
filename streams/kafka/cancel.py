"""Asking for a run to be cancelled: a record on ``steplog.cancellations``.

``steplog runs cancel RUN_ID`` and ``DELETE /v1/runs/{run_id}`` write
``{"run_id": ..., "reason": ...}`` (JSON, keyed by the run id). The router of
every app reads that topic and hands the request to each of its functions'
partitions; only the partition that holds the run acts on it, between steps,
and the run ends with ``inngest/function.cancelled``. Cancelling a run that
already ended, or that no app knows, does nothing.
"""

from __future__ import annotations

import json
import re

from confluent_kafka import KafkaException, Producer

from streams.errors import KafkaUnavailableError, StreamsError
from streams.settings import Settings
from streams.topics import CANCELLATIONS

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


class BadRunIdError(StreamsError, ValueError):
    """The text given is not a run id (a 26-character ULID)."""


def check_run_id(run_id: str) -> str:
    text = run_id.strip().upper()
    if not _ULID.match(text):
        raise BadRunIdError(
            f"{run_id!r} is not a run id: run ids are 26-character ULIDs such as "
            "01JD3X8R2Q4T6V8W0Y2A4C6E8G (see `steplog runs list`)"
        )
    return text


def request_cancel(
    settings: Settings, run_id: str, reason: str = "cancelled by request", *, timeout: float = 10
) -> str:
    """Write a cancellation request for ``run_id``; return the checked run id."""
    run = check_run_id(run_id)
    producer = Producer(settings.producer_config())
    value = json.dumps({"run_id": run, "reason": reason}).encode()
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        topic = settings.topic(CANCELLATIONS)
        producer.produce(topic, value, key=run.encode(), on_delivery=delivered)
        left = producer.flush(timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"could not write the cancellation of {run}: {exc}") from exc
    if left or errors:
        raise KafkaUnavailableError(
            f"Kafka did not acknowledge the cancellation of {run} within {timeout}s"
            + (f": {errors[0]}" if errors else "")
        )
    return run
