"""Kafka plumbing: the embedded local broker (``local``) and topic administration (``admin``)."""

from __future__ import annotations

from streams.kafka.admin import (
    CORE_TOPICS,
    TopicError,
    TopicsResult,
    create_topics,
    delete_topics,
    ensure_topics,
    topic_config,
    wait_for_broker,
)
from streams.kafka.local import KAFKA_VERSION, BrokerInfo

__all__ = [
    "CORE_TOPICS",
    "KAFKA_VERSION",
    "BrokerInfo",
    "TopicError",
    "TopicsResult",
    "create_topics",
    "delete_topics",
    "ensure_topics",
    "topic_config",
    "wait_for_broker",
]
