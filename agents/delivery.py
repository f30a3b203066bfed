"""Each stream partition's records reach the agents in offset order, once, from its start.

Faust's fetch loop (``Consumer._drain_messages`` in faust-streaming 0.15) keeps a
"read offset" per partition, hands a record to the streams if its offset is not
below it, and treats a jump over several offsets as a *gap* that it counts as
acknowledged (meant for compacted topics and transaction markers). After a
rebalance it seeks every partition back to its committed offset. A batch fetched
before that seek but handed over after it (the fetch runs in the consumer's
thread, the seek is a separate call; faust-streaming #216 is one ordering of it)
starts above the committed offset: Faust takes the difference for a gap and acks
it, sets the read offset past it, and then drops the records the seek fetches
again as already read. The commit passes them and they are never processed: an
accepted event with no run, a wake-up that never comes. Records delivered to a
stream buffer that a rebalance then clears move the read offset in the same way:
Faust empties the streams' queues at every ``flow_control.resume()``, and the last
one of a rebalance comes *after* its seek to the committed offsets, so what was
handed over between that seek and the end of the rebalance is dropped.

:func:`install` replaces that loop with one that keeps, per stream partition, the
offset it must hand over next (:class:`Cursors`, pure and unit-tested):

* a partition's records are handed over only once its start is known: the
  committed offset Faust seeks to after each assignment, or the log start of a
  partition the group never committed (such a partition is sought there, where
  ``auto_offset_reset=earliest`` starts it anyway: aiokafka does not seek a
  partition without a committed offset, so it would keep a position past records
  Faust discarded while the flow was paused);
* a record below the expected offset was handed over already: it is skipped;
* a record above it is a gap: the partition is sought back to the expected
  offset, and the gap is accepted only if the first record read after that seek
  is the same one again (the offsets in between are not in the log: retention,
  compaction or transaction markers);
* a record the streams did not take (the flow stopped for a rebalance while it
  waited) leaves the expected offset where it was;
* no stream record is handed over while the app is rebalancing (Faust's
  ``app.rebalancing``, set when a rebalance starts, cleared after its last
  ``flow_control.resume()``): such records are sought back to and read again after
  it. Changelog records go on flowing: table recovery reads them meanwhile.

Nothing is acknowledged that was not handed over, and a commit never passes a
record that no agent processed: Faust computes the offset to commit from the
acknowledged ones and lets it pass a missing offset right at the committed one (and
any missing offsets when it knows no committed offset); :func:`install` holds such
a commit back instead (and logs it: it would mean a record was not handed over).
Changelog partitions are left to Faust's table recovery, which positions them
itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from agents.restore import TableRestore

log = logging.getLogger(__name__)

#: How often the fetch loop looks again whether a rebalance has ended, while it holds
#: back the stream records it fetched meanwhile.
REBALANCE_POLL_S = 0.02

#: A seek of ours that takes longer than this is given up (the next rebalance or gap
#: check seeks again); the fetch loop must never wait on one for long.
SEEK_TIMEOUT_S = 10.0


class Verdict(Enum):
    DELIVER = "deliver"
    #: Already handed over, not this partition's turn yet, or read before a seek.
    SKIP = "skip"
    #: A gap: seek the partition back to :attr:`Cursors.expected` first.
    SEEK = "seek"


@dataclass
class Cursors:
    """The next offset to hand over per partition, and the gaps being checked.

    ``begin_batch`` starts each fetched batch; after a ``SEEK`` the rest of the
    batch's records of that partition are skipped (they were read before the seek).
    """

    expected: dict[Hashable, int] = field(default_factory=dict)
    #: partition -> first offset seen beyond a gap, before seeking back to check it.
    gap_at: dict[Hashable, int] = field(default_factory=dict)
    sought: set[Hashable] = field(default_factory=set)
    #: The group's committed offset per partition as the last assignment's seek read
    #: it from the broker (None: never committed). The router compares it with its
    #: replay marks.
    committed: dict[Hashable, int | None] = field(default_factory=dict)
    skipped_unpositioned: int = 0
    #: Partitions with records skipped before they were positioned.
    unpositioned: set[Hashable] = field(default_factory=set)
    #: Where each partition was last positioned (below it: committed, or not in the log).
    start: dict[Hashable, int] = field(default_factory=dict)
    #: Gaps accepted since the last :meth:`take_gaps` (offsets not in the log).
    gaps: list[tuple[Hashable, int, int]] = field(default_factory=list)

    def position(self, tp: Hashable, offset: int) -> bool:
        """``tp`` (re)starts at ``offset``: after an assignment's seek, or a seek of ours.

        True if records of ``tp`` were skipped before: the consumer read them after
        its seek and before this call, so it must seek to ``offset`` again (else a
        partition that gets no later record would never read them).
        """
        self.expected[tp] = offset
        self.start[tp] = offset
        self.gap_at.pop(tp, None)
        if tp in self.unpositioned:
            self.unpositioned.discard(tp)
            return True
        return False

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Partitions revoked: their start is unknown until the next assignment's seek."""
        for tp in tps:
            self.expected.pop(tp, None)
            self.gap_at.pop(tp, None)
            self.sought.discard(tp)
            self.committed.pop(tp, None)
            self.unpositioned.discard(tp)
            self.start.pop(tp, None)

    def unposition(self, tps: Iterable[Hashable]) -> None:
        """A seek of the partitions is under way: skip their records until it is done.

        Their commit floor stays: what is acknowledged meanwhile must not be committed
        past a record below it that is not.
        """
        for tp in tps:
            self.expected.pop(tp, None)
            self.gap_at.pop(tp, None)

    def begin_batch(self) -> None:
        self.sought.clear()

    def admit(self, tp: Hashable, offset: int) -> Verdict:
        if tp in self.sought:
            return Verdict.SKIP
        expected = self.expected.get(tp)
        if expected is None:
            self.skipped_unpositioned += 1
            self.unpositioned.add(tp)
            return Verdict.SKIP
        if offset == expected:
            self.gap_at.pop(tp, None)
            return Verdict.DELIVER
        if offset < expected:
            return Verdict.SKIP
        if self.gap_at.get(tp) == offset:
            # Read again right after seeking back: the offsets before it are not in the log.
            log.warning(
                "%s: offsets %d to %d are not in the log (retention, compaction or "
                "transaction markers); going on at %d",
                tp,
                expected,
                offset - 1,
                offset,
            )
            del self.gap_at[tp]
            self.gaps.append((tp, expected, offset))
            self.expected[tp] = offset
            return Verdict.DELIVER
        self.gap_at[tp] = offset
        self.sought.add(tp)
        return Verdict.SEEK

    def delivered(self, tp: Hashable, offset: int) -> None:
        self.expected[tp] = offset + 1

    def commit_floor(self, tp: Hashable, committed: int | None) -> int | None:
        """The lowest offset of ``tp`` a commit must have seen processed first."""
        start = self.start.get(tp)
        if committed is None:
            return start
        return committed if start is None else max(committed, start)


def install(app: Any) -> Cursors:
    """Make ``app``'s consumer hand records to its streams through :class:`Cursors`."""
    consumer: Any = app.consumer  # faust internals below are not typed
    cursors = Cursors()
    restore = TableRestore(app)
    # changelog topic -> table, filled as tables are declared (after this call too)
    changelogs = app.tables._changelogs
    revoked = consumer.on_partitions_revoked

    async def committed_and_seek() -> dict[Any, int | None]:
        """aiokafka's ``seek_to_committed`` in one request: it asks the coordinator for
        each partition's committed offset in turn (1.3 s for 70 partitions here, on
        every rebalance); this fetches them all at once, then seeks as it does."""
        aio = consumer._thread._ensure_consumer()
        partitions = list(aio._subscription.assigned_partitions())
        found = await aio._coordinator.fetch_committed_offsets(partitions)
        out: dict[Any, int | None] = {}
        for tp in partitions:
            meta = found.get(tp)
            offset = meta.offset if meta is not None and meta.offset != -1 else None
            out[tp] = offset
            if offset and offset > 0:
                aio._fetcher.seek_to(tp, offset)
        return out

    async def seek_to_committed() -> Mapping[Any, int | None]:
        result: Mapping[Any, int | None] = await consumer._thread.call_thread(committed_and_seek)
        return result

    positioning = asyncio.Lock()

    async def seek_to_committed_positioned() -> Mapping[Any, int | None]:
        # Faust may seek twice at once (after a rebalance, and from a fetch while the
        # flow is stopped): one positioning at a time, and while it runs the
        # partitions count as unpositioned, so whatever is read meanwhile is skipped
        # and read again after the seek that follows.
        async with positioning:
            cursors.unposition(tp for tp in consumer.assignment() if tp.topic not in changelogs)
            return await position_all()

    async def position_all() -> Mapping[Any, int | None]:
        committed = await seek_to_committed()
        fresh = []
        again: dict[Any, int] = {}
        for tp, offset in committed.items():
            if tp.topic in changelogs:
                continue
            cursors.committed[tp] = offset if offset is not None and offset > 0 else None
            if offset is None or offset <= 0:
                fresh.append(tp)
            elif cursors.position(tp, offset):
                again[tp] = offset
        if fresh:
            starts = await consumer.earliest_offsets(*fresh)
            await seek({tp: int(starts.get(tp) or 0) for tp in fresh})
            for tp in fresh:
                if cursors.position(tp, int(starts.get(tp) or 0)):
                    again[tp] = int(starts.get(tp) or 0)
            log.info("no committed offset: reading %d partition(s) from the start", len(fresh))
        if again:  # read between the seek and now, and skipped: read them again
            await seek(again)
        return committed

    async def seek(positions: dict[Any, int]) -> bool:
        """Seek partitions and wait until the consumer has the positions; a partition a
        rebalance took away meanwhile is passed over (its next owner positions it).
        False if the seek did not complete."""
        assigned = consumer.assignment()
        positions = {tp: offset for tp, offset in positions.items() if tp in assigned}
        if not positions:
            return True
        try:
            await asyncio.wait_for(consumer._thread.seek_wait(positions), SEEK_TIMEOUT_S)
        except Exception as exc:  # a rebalance in between, a stopping consumer
            log.warning("seeking %s did not complete: %r", sorted(positions), exc)
            return False
        return True

    async def on_partitions_revoked(tps: set[Any]) -> None:
        cursors.forget(tps)
        await revoked(tps)

    new_offset = consumer._new_offset
    held_back: dict[Any, tuple[int, int]] = {}

    def commit_offset(tp: Any) -> int | None:
        """Faust's next offset to commit, unless a record below it was not processed."""
        if tp.topic not in changelogs:
            acked = consumer._acked.get(tp)
            floor = cursors.commit_floor(tp, consumer._committed_offset.get(tp))
            if acked and floor is not None:
                lowest = min(acked)
                gap = consumer._gap.get(tp)
                if gap:
                    lowest = min(lowest, gap.begin())
                if lowest > floor:
                    if held_back.get(tp) != (floor, lowest):
                        held_back[tp] = (floor, lowest)
                        log.warning(
                            "%s: not committing past %d: offsets %d to %d were not processed",
                            tp,
                            floor,
                            floor,
                            lowest - 1,
                        )
                    return None
        held_back.pop(tp, None)
        offset: int | None = new_offset(tp)
        return offset

    app_ = consumer.app

    async def fetch(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """One fetched batch, partitions taken in turn; records not handed over are
        sought back to, never left behind the consumer's position.

        Faust's ``getmany`` drops a batch that arrives while the flow is stopped, and
        the records of a partition paused meanwhile, and counts on its seek to the
        committed offsets to read them again; that seek does not cover changelog
        partitions, so a batch dropped while a table recovery reads them lost their
        records and the recovery waited for them forever ("No event received for
        active tp ... since recovery start").
        """
        records, active = await consumer._wait_next_records(timeout)
        if not records or consumer.should_stop:
            return
        generation = app_.consumer_generation_id
        left: dict[Any, int] = {}
        held = False
        if consumer.flow_active:
            buffered = consumer._buffered_partitions
            for tp, record in consumer.scheduler.iterate(records):
                if app_.consumer_generation_id != generation:
                    restore.flush()
                    return  # a rebalance: the assignment positions every partition again
                if not consumer.flow_active or not (
                    active is None or tp in active or tp in buffered
                ):
                    left.setdefault(tp, record.offset)
                    continue
                if app_.rebalancing and tp.topic not in changelogs:
                    # The rebalance ends with a flow_control.resume() that empties
                    # the streams' queues: a record handed over before it is lost.
                    left.setdefault(tp, record.offset)
                    held = True
                    continue
                app_.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
                yield tp, consumer._to_message(tp, record)
        else:
            left = {tp: batch[0].offset for tp, batch in records.items() if batch}
        restore.flush()  # what the loop took, before anything is awaited
        if left:
            await seek(left)
        if held:  # the same records come back at once: wait for the rebalance to end
            await asyncio.sleep(REBALANCE_POLL_S)

    async def drain_messages(fetcher: Any) -> None:
        callback = consumer.callback
        commit_every = consumer._commit_every
        consumer_stopped = consumer._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        read_offset = consumer._read_offset
        suspend_flow = consumer.suspend_flow
        take_changed = restore.take
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                batch = fetch(1.0)
                await consumer.sleep(0)
                if consumer.should_stop:
                    continue
                cursors.begin_batch()
                expected = cursors.expected
                async for tp, message in batch:
                    offset = message.offset
                    if tp.topic in changelogs and take_changed(tp, message):
                        read_offset[tp] = offset
                        continue
                    restore.flush()  # before the next await
                    if tp.topic in changelogs or (
                        expected.get(tp) == offset and tp not in cursors.sought
                    ):
                        verdict = Verdict.DELIVER  # the common case, without a call
                        if cursors.gap_at:
                            cursors.gap_at.pop(tp, None)
                    else:
                        verdict = cursors.admit(tp, offset)
                        while cursors.gaps:  # offsets not in the log count as processed
                            gap_tp, first, end = cursors.gaps.pop()
                            consumer._gap[gap_tp].addi(first, end)
                    if verdict is Verdict.SKIP:
                        continue
                    if verdict is Verdict.SEEK:
                        back = expected[tp]
                        log.info("%s: read %d, expected %d: seeking back", tp, offset, back)
                        if not await seek({tp: back}):
                            cursors.gap_at.pop(tp, None)  # not sought: check the gap again
                        read_offset[tp] = back
                        continue
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    handover = callback(message)
                    result = await consumer.wait_first(handover, suspend_flow.wait())
                    if handover not in result.done:
                        break  # not taken (the flow stopped): the rebalance's seek reads it again
                    read_offset[tp] = offset
                    if tp.topic not in changelogs:
                        expected[tp] = offset + 1
                restore.flush()
        except consumer.consumer_stopped_errors:
            if consumer.transport.app.should_stop:
                return
            raise

    consumer.seek_to_committed = seek_to_committed_positioned
    consumer.on_partitions_revoked = on_partitions_revoked
    consumer._drain_messages = drain_messages
    consumer._new_offset = commit_offset
    return cursors
