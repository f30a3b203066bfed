"""The gate agent: the slots of env-scoped concurrency limits (``scope="env"``).

A thin edge around :class:`streams.lifecycle.gate.EnvGate`: it reads
``steplog-<app>-gate`` (asks and frees, keyed by the limit's key value), hands each
record to the gate of its partition, and writes the grants to the runs' journals.
The gate's state is a RocksDB table backed by ``steplog-<app>-gate-changelog``,
written through an :class:`~agents.store.Outbox` like a function partition's: a
record's writes are held back until the grants it sent are acknowledged. The gate
keeps nothing in memory, so a partition needs no resume marker: whoever holds it
applies the next record to the table as it stands.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from agents.functions import send_journal
from agents.store import Changelog, Outbox, RocksRunStore
from streams.clock import now_ms
from streams.errors import DecodeError
from streams.lifecycle import Journal, records
from streams.lifecycle.gate import EnvGate

log = logging.getLogger(__name__)


class GateRuntime:
    """The gate agent, its table, and the gate of each partition it has read."""

    def __init__(self, faust: Any, *, topic: Any, table: Any, journals: Mapping[str, Any]) -> None:
        self.topic = topic
        self.topic_name: str = topic.get_topic_name()
        self.table = table
        self.journals = journals
        self.outbox = Outbox(Changelog(table))
        self.gates: dict[int, EnvGate] = {}
        faust.agent(topic, name="steplog-gate")(self._agent)

    def gate(self, partition: int) -> EnvGate:
        gate = self.gates.get(partition)
        if gate is None:
            gate = self.gates[partition] = EnvGate(RocksRunStore(partition, self.outbox), partition)
        return gate

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                record = records.decode(event.value)
            except DecodeError:
                log.exception(
                    "%s[%s]@%s: undecodable gate record", msg.topic, msg.partition, msg.offset
                )
                continue
            try:
                key = (msg.key or b"").decode()
                for cmd in self.gate(msg.partition).handle(record, key, now_ms(), msg.offset):
                    if isinstance(cmd, Journal):
                        await self._journal(cmd)
            except Exception:
                log.exception(
                    "%s[%s]@%s: %s record of run %s failed",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    type(record).__name__,
                    records.run_id_of(record),
                )
            finally:
                self.outbox.seal()

    async def _journal(self, cmd: Journal) -> None:
        sent = await send_journal(self.journals, cmd)
        if sent is not None:
            self.outbox.send(sent, f"{type(cmd.record).__name__} to {cmd.function}")
