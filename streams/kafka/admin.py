"""Topic administration with confluent-kafka's AdminClient.

- ``ensure_topics(settings)`` creates steplog's fixed topics (``CORE_TOPICS``, with
  ``settings.topic_prefix``) idempotently;
- ``create_topics(settings, full_names, ...)`` creates any topics (internal ones,
  compacted changelogs ...) with steplog's record size limit unless told otherwise;
- ``wait_for_broker(settings, timeout)`` waits until the cluster answers.

Every topic steplog creates gets ``max.message.bytes`` = ``settings.max_record_bytes``
plus 64 KiB of batch overhead, so that 4 MiB step outputs fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import ClusterMetadata
from confluent_kafka.cimpl import NewTopic

from streams import topics
from streams.errors import ConfigError, KafkaUnavailableError, StreamsError
from streams.settings import Settings

log = logging.getLogger(__name__)

#: steplog's fixed topics, before ``settings.topic_prefix`` (see DESIGN "Kafka layout").
CORE_TOPICS: tuple[str, ...] = topics.CORE
#: Room for the record batch header and headers on top of the largest record.
RECORD_OVERHEAD_BYTES = 64 * 1024

_CONFIG_ERRORS = frozenset(
    {
        KafkaError.INVALID_REPLICATION_FACTOR,
        KafkaError.INVALID_PARTITIONS,
        KafkaError.INVALID_CONFIG,
        KafkaError.INVALID_REPLICA_ASSIGNMENT,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
    }
)
_UNAVAILABLE_ERRORS = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.NOT_CONTROLLER,
    }
)


class TopicError(StreamsError):
    """Kafka refused to create or delete a topic for a reason other than configuration."""


@dataclass(frozen=True)
class TopicsResult:
    """What ``ensure_topics``/``create_topics`` did, by full topic name."""

    created: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every topic asked for (created or already there)."""
        return (*self.created, *self.existing)


def topic_config(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The topic configs steplog sets on every topic it creates, then ``extra``."""
    conf = {"max.message.bytes": str(settings.max_record_bytes + RECORD_OVERHEAD_BYTES)}
    if extra:
        conf.update({key: str(value) for key, value in extra.items()})
    return conf


def admin_client(settings: Settings, **extra: Any) -> AdminClient:
    """An AdminClient for ``settings`` (bootstrap, security); librdkafka's own log
    lines go to the ``streams.kafka.librdkafka`` logger instead of stderr."""
    conf = settings.kafka_config(logger=logging.getLogger("streams.kafka.librdkafka"), **extra)
    return AdminClient(conf)


def wait_for_broker(settings: Settings, timeout: float = 30.0) -> ClusterMetadata:
    """Wait until the cluster answers a metadata request with at least one broker.

    Raises ``KafkaUnavailableError`` naming the address when it does not within
    ``timeout`` seconds.
    """
    bootstrap = settings.resolved_bootstrap()
    admin = admin_client(settings)
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        try:
            metadata = admin.list_topics(timeout=max(0.5, min(remaining, 5.0)))
            if metadata.brokers:
                return metadata
            last = "no brokers in the metadata"
        except KafkaException as exc:
            last = _describe(exc)
        if time.monotonic() >= deadline:
            raise KafkaUnavailableError(
                f"Kafka at {bootstrap} did not answer within {timeout:g}s ({last}); "
                "is the broker running? (`steplog kafka start` runs a local one)"
            )
        time.sleep(0.2)


def _describe(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(exc)


def _code(exc: BaseException) -> int | None:
    err = exc.args[0] if exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


def create_topics(
    settings: Settings,
    names: Iterable[str],
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> TopicsResult:
    """Create topics named exactly ``names`` (apply ``settings.topic()`` yourself).

    Partitions and replication default to ``settings.partitions`` /
    ``settings.replication_factor``; ``config`` is merged over ``topic_config(settings)``
    (e.g. ``{"cleanup.policy": "compact"}``). A topic that already exists is left as
    it is and reported in ``existing``. Other failures raise ``ConfigError`` (bad
    partition count, replication factor or config), ``KafkaUnavailableError`` (the
    cluster did not answer) or ``TopicError``.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return TopicsResult()
    partitions = settings.partitions if partitions is None else partitions
    replication = settings.replication_factor if replication_factor is None else replication_factor
    conf = topic_config(settings, config)
    wait_for_broker(settings, timeout=timeout)
    admin = admin_client(settings)
    futures: dict[str, Future[Any]] = admin.create_topics(
        [NewTopic(name, partitions, replication, config=conf) for name in wanted],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created: list[str] = []
    existing: list[str] = []
    problems: list[tuple[str, BaseException]] = []
    for name in wanted:
        try:
            futures[name].result(timeout=timeout + 5)
        except KafkaException as exc:
            if _code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                existing.append(name)
            else:
                problems.append((name, exc))
        except Exception as exc:  # a future that never resolved
            problems.append((name, exc))
        else:
            created.append(name)
    if created:
        log.info("created topics %s", ", ".join(created))
        _wait_for_leaders(admin, created, timeout)
    if problems:
        _raise_for(settings, problems, partitions, replication)
    return TopicsResult(tuple(created), tuple(existing))


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Return once every partition of ``names`` has a leader (clients can use them)."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout)
        for name in list(pending):
            topic = meta.topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and topic.partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                pending.discard(name)
        if pending:
            time.sleep(0.05)


def _raise_for(
    settings: Settings,
    problems: list[tuple[str, BaseException]],
    partitions: int,
    replication: int,
) -> None:
    name, exc = problems[0]
    code = _code(exc)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    what = f"cannot create topic {name!r}{more}: {_describe(exc)}"
    if code in _CONFIG_ERRORS:
        raise ConfigError(
            f"{what} (partitions={partitions}, replication_factor={replication}; check "
            "STEPLOG_PARTITIONS / STEPLOG_REPLICATION_FACTOR against the cluster)"
        )
    if code in _UNAVAILABLE_ERRORS or code is None:
        raise KafkaUnavailableError(f"{what} (Kafka at {settings.resolved_bootstrap()})")
    raise TopicError(what)


def ensure_topics(
    settings: Settings,
    names: Iterable[str] | None = None,
    partitions: int | None = None,
    config: Mapping[str, str] | None = None,
    *,
    replication_factor: int | None = None,
    timeout: float = 30.0,
) -> TopicsResult:
    """Create steplog's topics if missing: ``names`` (default ``CORE_TOPICS``) are base
    names, prefixed with ``settings.topic_prefix``. Idempotent; see ``create_topics``."""
    base = CORE_TOPICS if names is None else tuple(names)
    return create_topics(
        settings,
        [settings.topic(name) for name in base],
        partitions=partitions,
        replication_factor=replication_factor,
        config=config,
        timeout=timeout,
    )


def delete_topics(settings: Settings, names: Iterable[str], *, timeout: float = 30.0) -> None:
    """Delete topics named exactly ``names``; a topic that does not exist is fine."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = admin_client(settings)
    futures = admin.delete_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    for name in wanted:
        try:
            futures[name].result(timeout=timeout + 5)
        except KafkaException as exc:
            if _code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicError(f"cannot delete topic {name!r}: {_describe(exc)}") from None
