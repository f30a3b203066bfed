"""The Faust application of one steplog app: broker, RocksDB store, security.

Every Kafka setting comes from :class:`streams.Settings`; the consumer group (the
Faust app id) is ``steplog-<app_id>``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import faust
import faust.stores
from faust.stores import rocksdb as faust_rocksdb

from streams.settings import Settings
from streams.topics import consumer_group

log = logging.getLogger(__name__)


class HeldWrites(Protocol):
    """State writes held back until what they depend on is delivered."""

    async def drained(self) -> None: ...

    def waiting_for(self) -> str | None: ...


#: RocksDB sized for a 2-core, 24 GiB machine with tens of partitions open:
#: faust's defaults (~2 GiB block cache, 3 x 64 MiB write buffers per partition
#: database) would not fit many partitions.
ROCKSDB_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 0,
    "max_open_files": 256,
}


class RocksStore(faust_rocksdb.Store):
    """Faust's RocksDB store without a full garbage collection per table per rebalance.

    Faust drops a revoked partition's database and runs ``gc.collect()`` so that no
    cycle keeps it (and its lock) alive; it does so for every table on every rebalance
    and again for every table on stop, even when nothing was dropped. On a worker with
    a large heap each collection takes ~80 ms: with eight tables, a SIGTERM waited
    0.6 s before leaving the group and the members taking its partitions over another
    0.6 s before reading them. Here nothing is collected on revoke or stop (the
    databases hold only what their WAL holds: dropping a handle later loses nothing);
    a database still locked by a dropped handle is collected when it is reopened.
    """

    def revoke_partitions(self, table: Any, tps: Any) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                self._dbs.pop(tp.partition, None)

    async def stop(self) -> None:
        self._dbs.clear()

    def _open_for_partition(self, partition: int) -> Any:
        try:
            return super()._open_for_partition(partition)
        except faust_rocksdb.ERRORS_ROCKS_IO_ERROR as exc:
            if "lock" not in repr(exc):
                raise
            gc.collect()  # a dropped handle in a reference cycle still holds the lock
            return super()._open_for_partition(partition)


faust.stores.STORES.aliases["steplog-rocksdb"] = f"{__name__}:RocksStore"


def _credentials(settings: Settings) -> tuple[Any, ssl.SSLContext | None]:
    protocol = settings.security_protocol
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
        if settings.ssl_certfile:
            password = settings.ssl_key_password
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
                password.get_secret_value() if password else None,
            )
    if protocol.startswith("SASL"):
        creds = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
        return creds, context
    if context is not None:
        return faust.SSLCredentials(context), context
    return None, None


def make_faust_app(app_id: str, settings: Settings, *, datadir: Path | None = None) -> faust.App:
    """A Faust app for ``app_id`` on the configured broker, with RocksDB tables."""
    creds, context = _credentials(settings)
    datadir = datadir or settings.data_dir / "worker" / f"{settings.topic_prefix}{app_id}"
    datadir.mkdir(parents=True, exist_ok=True)
    bootstrap = settings.resolved_bootstrap()
    brokers = ";".join(f"kafka://{b.strip()}" for b in bootstrap.split(","))
    app = faust.App(
        consumer_group(app_id),
        broker=brokers,
        broker_credentials=creds,
        ssl_context=context,
        store="steplog-rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_commit_interval=settings.commit_interval_ms / 1000,
        # A worker killed with SIGKILL holds its partitions until its session
        # expires: keep that short so the others take over quickly.
        broker_session_timeout=settings.session_timeout_ms / 1000,
        # Members learn of a rebalance (another worker left) at their next heartbeat.
        broker_heartbeat_interval=0.5,
        broker_commit_every=2_000,
        producer_linger=0.0005,
        producer_max_request_size=settings.max_record_bytes + 65536,
        consumer_max_fetch_size=settings.max_record_bytes + 65536,
        producer_acks=-1,
        stream_buffer_maxsize=8192,
        table_cleanup_interval=3600.0,
        # No standby replicas: with them, faust-streaming 0.15 sometimes keeps a partition
        # it just promoted from standby to active in its standby set after a member
        # leaves, and never resumes that partition's stream (runs on it stall; seen in
        # tests/test_workers.py under load). A new owner recovers from the changelog.
        table_standby_replicas=0,
        logging_config=None,
    )
    shorten_fetch_wait(app)
    return app


#: How long the broker may hold a fetch that has nothing to return. Faust asks for 1.5 s,
#: and the broker answers a connection's requests in order, so every request sent on the
#: fetch connection meanwhile (the start offsets of partitions a rebalance assigned,
#: metadata) waited behind it: a worker taking partitions over spent 1.4 s looking up
#: where to start reading them.
FETCH_MAX_WAIT_MS = 250


def shorten_fetch_wait(app: faust.App) -> None:
    """Have ``app``'s Kafka consumer wait at most FETCH_MAX_WAIT_MS on an idle fetch."""
    thread: Any = app.consumer._thread  # type: ignore[attr-defined]  # faust internals
    create = thread._create_worker_consumer

    def created(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when it starts its fetcher
        return consumer

    thread._create_worker_consumer = created


def complete_flush_before_commit(
    app: faust.App,
    *,
    before: Sequence[HeldWrites] = (),
    timeout: float = 30.0,
) -> None:
    """Make the producer flush Faust does before committing offsets wait for table writes.

    Table writes reach their changelogs through the producer's ``ProducerBuffer`` (a
    queue drained by a task). Faust flushes it before every offset commit, but
    ``ProducerBuffer.flush()`` returns as soon as 0.1 s pass without a send, with
    writes still queued; on a busy event loop the commit then covers records whose
    state changes never reached Kafka, and a SIGKILL loses them (a memoized step runs
    again, a finished run stays "running"). Here the flush first waits until the
    buffer is empty and its task has handed the last write to the Kafka client, whose
    own flush then waits for delivery. Order is kept: the buffer's task still sends.
    ``before`` are awaited first: state writes held back until what they depend on
    is delivered (``agents.store.Outbox``); one that takes long is logged with what
    it waits for.
    """
    producer = app.producer
    buffer: Any = producer.buffer  # faust internals: _send_pending is not typed
    in_flight = 0
    send_pending = buffer._send_pending

    async def tracked_send(fut: Any) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            await send_pending(fut)
        finally:
            in_flight -= 1

    flush = producer.flush

    async def complete_flush() -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        for held in before:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    await asyncio.wait_for(held.drained(), min(max(left, 0), 5.0))
                    break
                except TimeoutError:
                    what = held.waiting_for()
                    if left <= 5.0:
                        log.warning(
                            "state writes still held back after %.0fs, waiting for %s; "
                            "flushing anyway",
                            timeout,
                            what,
                        )
                        break
                    log.warning("state writes held back for 5s more, waiting for %s", what)
        while (buffer.size or in_flight) and buffer.state == "running":
            if asyncio.get_running_loop().time() > deadline:
                log.warning("table writes still buffered after %.0fs; flushing anyway", timeout)
                break
            await asyncio.sleep(0.001)
        await flush()

    buffer._send_pending = tracked_send
    producer.flush = complete_flush  # type: ignore[method-assign]
