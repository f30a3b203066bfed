"""Local tables that do not belong to the broker's changelogs: found, and rebuilt.

A worker's RocksDB tables live in its data dir (``~/.steplog/worker/<app>``), which
outlives the Kafka cluster they were built from: a new local broker, a cluster whose
topics were deleted, another ``STEPLOG_BOOTSTRAP_SERVERS``. Faust keeps in each
partition's database the offset of the last changelog record it holds; when that
offset is at or past the end of the changelog partition on the broker, the local
state cannot have come from this changelog, and Faust's recovery stops the worker
(``ConsistencyError: persisted offset ... (3 > -1)``). The changelogs are the truth,
so the local tables are deleted and Faust rebuilds them from Kafka.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import AccessType, Rdict

from streams.settings import Settings

if TYPE_CHECKING:
    from agents.worker import Worker

log = logging.getLogger(__name__)

#: How long the check waits for the broker's answers (topics just created on a new
#: broker answer NOT_LEADER_FOR_PARTITION for a moment).
PATIENCE_SECONDS = 20.0
#: Where Faust's RocksDB store keeps a partition database's persisted changelog offset.
OFFSET_KEY = b"__faust\0offset__"
_NO_SUCH_PARTITION = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
}
_DB_NAME = re.compile(r"^(?P<table>.+)-(?P<partition>\d+)\.db$")


def persisted_offsets(tabledir: Path) -> dict[tuple[str, int], int]:
    """``(table, partition) -> persisted changelog offset`` of the databases in ``tabledir``.

    Databases without an offset (nothing applied yet) or that cannot be opened are left out.
    """
    found: dict[tuple[str, int], int] = {}
    if not tabledir.is_dir():
        return found
    for path in sorted(tabledir.iterdir()):
        match = _DB_NAME.match(path.name)
        if match is None or not path.is_dir():
            continue
        try:
            db = Rdict(str(path), access_type=AccessType.read_only())
        except Exception as exc:  # left to Faust, which opens it for real
            log.debug("could not read %s: %s", path, exc)
            continue
        try:
            raw = db.get(OFFSET_KEY)
        finally:
            db.close()
        if raw is not None:
            found[(match["table"], int(match["partition"]))] = int(raw)
    return found


def stale_partitions(
    settings: Settings, tabledir: Path, changelogs: Mapping[str, str]
) -> list[str]:
    """The partition databases in ``tabledir`` that are ahead of their changelog.

    ``changelogs`` maps table names to their changelog topics; each item says which
    partition and by how much. Databases of other tables are not looked at.
    """
    offsets = {
        key: offset for key, offset in persisted_offsets(tabledir).items() if key[0] in changelogs
    }
    if not offsets:
        return []
    group = f"steplog-state-check-{uuid.uuid4().hex[:8]}"  # never joined: no group is made
    consumer = Consumer(settings.kafka_config(**{"group.id": group}))
    stale: list[str] = []
    deadline = time.monotonic() + PATIENCE_SECONDS
    try:
        for (table, partition), offset in offsets.items():
            topic = changelogs[table]
            end = _end_offset(consumer, TopicPartition(topic, partition), deadline)
            if end is None:
                log.warning(
                    "could not check the local state of %s[%d] against Kafka: Faust's "
                    "recovery will",
                    topic,
                    partition,
                )
            elif offset >= end:
                stale.append(f"{topic}[{partition}]: local offset {offset}, changelog end {end}")
    finally:
        consumer.close()
    return stale


def discard_stale_local_state(worker: Worker) -> bool:
    """Delete the local tables if any is ahead of its changelog on the broker; True if so."""
    tabledir = Path(worker.faust.conf.tabledir)
    changelogs = {
        name: table.changelog_topic.get_topic_name() for name, table in worker.faust.tables.items()
    }
    stale = stale_partitions(worker.settings, tabledir, changelogs)
    if not stale:
        return False
    more = f"; {len(stale) - 1} more partition(s) like it" if len(stale) > 1 else ""
    log.warning(
        "the local state in %s is ahead of what the Kafka changelogs hold (%s%s): it was "
        "built against another broker, or the topics were deleted since; deleting the "
        "local tables and rebuilding them from the changelogs",
        tabledir,
        stale[0],
        more,
    )
    shutil.rmtree(tabledir, ignore_errors=True)
    return True


def _end_offset(consumer: Consumer, tp: TopicPartition, deadline: float) -> int | None:
    """The end offset of ``tp`` (0 if the broker has no such partition); None: no answer
    before ``deadline`` (``time.monotonic()``)."""
    while True:
        try:
            _, end = consumer.get_watermark_offsets(tp, timeout=5)
            return int(end)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code in _NO_SUCH_PARTITION:
                return 0
            # e.g. NOT_LEADER_FOR_PARTITION for topics just created on a new broker
            if time.monotonic() > deadline:
                log.info("no end offset for %s[%d]: %s", tp.topic, tp.partition, exc)
                return None
            time.sleep(0.2)
