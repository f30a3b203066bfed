"""The lifecycle of a function's runs on one partition: every decision about a run.

:class:`PartitionLifecycle` is a state machine without I/O. It is fed the records
of the function's journal (:mod:`streams.lifecycle.records`), the effects of the
run activations the edge executes (:mod:`streams.core.effects`), and the time;
it reads and writes the partition's state through a
:class:`~streams.lifecycle.store.RunStore` and answers with :data:`Command` s for
the edge to carry out (start an activation, send an event, announce a run's end,
write to a journal, register a wait ...). The edge - a Faust agent in the
workers, an in-memory loop in ``streams.testing`` - decodes, hands over and
applies; it decides nothing.

The edge's one obligation, which makes crashes safe: the state writes made while
one record is handled (with the inline work it triggers) become durable only
after every command that record produced has been delivered. Then a crash before
that leaves the record to be handled again (its offset was not committed) against
the state from before it, and whatever it announced is announced again with the
same ids, never lost. See docs/runtime.md "Guarantees".
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.core.effects import (
    Effect,
    ErrorInfo,
    EventsSent,
    RunCompleted,
    RunFailed,
    RunSuspended,
    StepCompleted,
    StepFailed,
    StepWaiting,
)
from streams.core.memo import Memo, apply_effect, completion
from streams.core.step_ids import sent_event_id
from streams.durations import to_ms
from streams.event import Event, accept
from streams.expressions import event_vars
from streams.ids import time_prefix
from streams.lifecycle import state as keys
from streams.lifecycle.limits import QUEUE, Gate, Gcra, Queued
from streams.lifecycle.records import (
    GATE,
    Cancel,
    EffectRecord,
    Invoker,
    Record,
    Resolve,
    Resume,
    SlotAsk,
    SlotFree,
    SlotGrant,
    Start,
    Sweep,
    Tick,
    Wake,
)
from streams.lifecycle.state import SUSPENDED_AS, RunState, RunStatus
from streams.lifecycle.store import RunStore
from streams.lifecycle.system import CANCELLED_ERROR, history_record, system_events
from streams.lifecycle.timers import PREFIX as TIMER_PREFIX
from streams.lifecycle.timers import PartitionTimers, TimerKind, due_prefix, timer_key
from streams.serde.internal import compact_json
from streams.waits import Wait, accepted_ms, index_hint, trigger_for

if TYPE_CHECKING:
    from streams.app import Function

log = logging.getLogger(__name__)

#: How long a Cancel rule without a timeout listens (its run ends it sooner).
CANCEL_HORIZON_MS = 366 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Limits:
    """The lifecycle's settings (``streams.Settings`` gives them in the workers)."""

    #: Finished runs are forgotten this long after they ended.
    retention_ms: int = 7 * 24 * 3600 * 1000
    #: An idempotency key holds for this long.
    dedup_window_ms: int = 24 * 3600 * 1000
    #: Run states looked at per ``sweep`` record (the rest in another record).
    sweep_batch: int = 500
    #: Timers due within this window are kept in memory.
    timer_window_ms: int = 60_000
    #: The largest record steplog writes (a run-history record over it is trimmed).
    max_record_bytes: int = 8 * 1024 * 1024

    @property
    def sweep_every_ms(self) -> int:
        """How often a partition is swept: an eighth of the retention, at most a minute."""
        return min(max(self.retention_ms // 8, 100), 60_000)


@dataclass(eq=False)
class LiveRun:
    """A run this partition is executing (in :attr:`PartitionLifecycle.active`), or
    a stand-in for one that is not in memory, to apply a record to it.

    ``unwritten`` holds memos made inline and not written yet: a run that ends
    within its inline burst never writes them. ``driver`` and ``forwarder`` are the
    edge's handles on the activation; the lifecycle only stores them.
    """

    run_id: str
    state: RunState
    memos: dict[str, Memo] = field(default_factory=dict)
    unwritten: list[Memo] = field(default_factory=list)
    detached: bool = False
    #: A waiting step completed from outside while this activation ran: when it
    #: suspends, it wakes again at once instead of at its timer.
    woken: bool = False
    #: Keys to delete once this activation's first burst is written (the timer that
    #: woke it: a crash before then must leave it to fire again).
    after_burst: list[bytes] = field(default_factory=list)
    driver: Any = None
    forwarder: Any = None


@dataclass(eq=False)
class OpenBatch:
    """A batch still collecting events: its header (``b<hash of the key>``: its run id,
    routing key and timer) and what its entries add up to."""

    header: dict[str, Any]
    size: int = 0
    bytes: int = 0
    #: The run id of its last event (a start handled again after a crash finds it).
    last: str | None = None
    #: Where its next entry goes (past any written twice across a crash).
    seq: int = 0

    @property
    def run_id(self) -> str:
        return str(self.header["run_id"])

    def add(self, run_id: str, size: int) -> None:
        self.size += 1
        self.bytes += size
        self.last = run_id
        self.seq += 1


# --- Commands: what the edge carries out ----------------------------------------------


@dataclass(frozen=True, eq=False)
class Activate:
    """Execute ``run`` (from the top, against ``run.memos``) and feed its effects back."""

    run: LiveRun


@dataclass(frozen=True, eq=False)
class Release:
    """``run`` left memory; ``stop``: its activation is still going, stop it."""

    run: LiveRun
    stop: bool


@dataclass(frozen=True)
class SendEvent:
    """Write an event a step sent to ``events``."""

    event: Event


@dataclass(frozen=True)
class Announce:
    """Write a system event to its topic."""

    event: Event


@dataclass(frozen=True)
class Journal:
    """Write ``record`` to ``function``'s journal, keyed ``key`` (on ``partition``)."""

    function: str
    key: str
    record: Record
    partition: int | None = None


@dataclass(frozen=True)
class Register:
    wait: Wait


@dataclass(frozen=True)
class Unregister:
    key: str


@dataclass(frozen=True)
class History:
    """Publish the run's latest state to the run history."""

    record: dict[str, Any]


Command = Activate | Release | SendEvent | Announce | Journal | Register | Unregister | History


class PartitionLifecycle:
    """The runs of one function on one partition (see the module docstring).

    ``functions`` are the app's functions by slug (what ``step.invoke`` may start).
    """

    def __init__(
        self,
        fn: Function,
        partition: int,
        store: RunStore,
        *,
        functions: Mapping[str, Function],
        limits: Limits | None = None,
        resume_token: str | None = None,
    ) -> None:
        self.fn = fn
        self.slug = fn.slug
        self.partition = partition
        self.store = store
        self.functions = functions
        self.limits = limits or Limits()
        self.active: dict[str, LiveRun] = {}
        self.timers = PartitionTimers()
        #: Set by this assignment's ``resume`` record (``resume_token``; None: any):
        #: every earlier record of the partition is applied, its timers may fire.
        self.ready = False
        self.resume_token = resume_token
        #: The concurrency limits' slots and queue on this partition (None: no limit).
        self.gate = Gate(fn.slot_limits, keyless=fn.slots_keyless) if fn.slot_limits else None
        #: The journal offset of the record being handled (orders a queue's ties).
        self.offset = 0
        #: Events that started no run here, by why (rate limit, singleton).
        self.skipped: Counter[str] = Counter()
        #: The open batches met so far, by key value (a cache of their store keys).
        self.batches: dict[str, OpenBatch] = {}

    # --- inputs ---------------------------------------------------------------------

    def handle(self, record: Record, key: str, now: int, offset: int = 0) -> list[Command]:
        """Apply one journal record (``key``: its Kafka key, the run's routing key;
        ``offset``: its offset, which orders runs queued with the same score)."""
        self.offset = offset
        if isinstance(record, Start):
            return self._start(record, key, now)
        if isinstance(record, EffectRecord):
            run = self.active.get(record.run_id) or self._stub(record.run_id)
            if run is None:
                return []  # the run ended already (a repeated effect)
            return self.apply(run, record.effect, now, journaled=True)
        if isinstance(record, Wake):
            return self._wake(record, now)
        if isinstance(record, Resolve):
            return self._resolve(record, now)
        if isinstance(record, Cancel):
            return self._cancel(record.run_id, record.reason, now)
        if isinstance(record, Resume):
            if self.resume_token is not None and record.token != self.resume_token:
                return []  # an earlier assignment's marker, read again after a crash
            return self._resume(now)
        if isinstance(record, Sweep):
            return self._sweep(record.start, now)
        if isinstance(record, SlotGrant):
            return self._granted(record, now)
        if isinstance(record, Tick):
            log.warning("%s[%s]: a cron tick on a function journal", self.slug, self.partition)
        return []

    def apply(
        self, run: LiveRun, effect: Effect, now: int, *, journaled: bool = False
    ) -> list[Command]:
        """Apply an effect of ``run``'s activation: inline, or read back from the journal."""
        if not journaled and not self.is_live(run):
            return []  # the activation was cancelled or revoked; its effects are void
        out: list[Command] = []
        if isinstance(effect, StepCompleted | StepFailed | StepWaiting):
            memo = apply_effect(run.memos, effect)
            if memo is not None:
                if journaled:
                    self._write_memo(run.run_id, memo)
                else:
                    run.unwritten.append(memo)
            if isinstance(effect, StepWaiting):
                out += self._set_up_waiting(run, effect)
            elif effect.op == "wait":
                out.append(Unregister(f"{run.run_id}|{effect.step_id}"))
        elif isinstance(effect, EventsSent):
            out += [SendEvent(sent) for sent in effect.events]
        elif isinstance(effect, RunCompleted):
            out += self._finish(run, RunStatus.COMPLETED, now, result=effect.result)
        elif isinstance(effect, RunFailed):
            if effect.retry_at_ms is None:
                out += self._finish(run, RunStatus.FAILED, now, error=effect.error.to_dict())
            else:
                run.state.attempt = effect.attempt + 1
                out += self._suspend(run, effect.retry_at_ms, "retry", now)
        elif isinstance(effect, RunSuspended):
            wake = now if effect.reason == "replay" else effect.wake_at_ms
            out += self._suspend(run, wake, effect.reason, now)
        return out

    def detach(self, run: LiveRun) -> None:
        """``run`` outlives its inline burst: persist it; later effects come by journal."""
        self._persist(run, active=True)
        self._burst_written(run)
        run.detached = True

    def abandon(self, run: LiveRun, now: int) -> list[Command]:
        """``run``'s activation stopped without an outcome: persist it as active, so the
        next resume of the partition runs it again from its memos, and let it go."""
        self._persist(run, active=True)
        self._burst_written(run)
        return self._release(run, now, stop=True)

    def fire_due(self, now: int) -> list[Command]:
        """Wake-ups (and a retention sweep) that are due: records for the journal."""
        timers = self.timers
        if not self.ready or (
            now < timers.next_sweep_ms
            and not timers.fired
            and (not timers.heap or timers.heap[0][0] > now)
            and timers.loaded_until_ms >= now + self.limits.timer_window_ms // 2
        ):
            return []  # nothing due (checked every few ms: kept cheap)
        window = self.limits.timer_window_ms
        if timers.needs_loading(now, window):
            until = now + window
            found = self.store.scan_keys(
                TIMER_PREFIX, due_prefix(until + 1), start=due_prefix(timers.loaded_until_ms + 1)
            )
            timers.load(list(found), until)
        out: list[Command] = []
        if now >= timers.next_sweep_ms:
            timers.next_sweep_ms = now + self.limits.sweep_every_ms
            out.append(Journal(self.slug, "", Sweep(), self.partition))
        for tkey in timers.pop_due(now):
            body = self.store.get(tkey)
            if body is None:
                timers.applied(tkey)
                continue
            wake = Wake(str(body["run_id"]), tkey.decode())
            out.append(Journal(self.slug, str(body["key"]), wake, self.partition))
        return out

    def revoke(self) -> list[Command]:
        """The partition went to another worker (or this one stops): drop its runs."""
        out: list[Command] = [Release(run, stop=True) for run in self.active.values()]
        self.active.clear()
        if self.gate is not None:
            self.gate.clear()
        return out

    def is_live(self, run: LiveRun) -> bool:
        return self.active.get(run.run_id) is run

    # --- starting and activating runs -----------------------------------------------

    def _start(self, rec: Start, key: str, now: int) -> list[Command]:
        run_id = rec.run_id
        if run_id in self.active:
            return []  # a repeated start: the run exists already
        held = self.store.get(keys.run_key(run_id))
        if held is not None:
            if held["status"] == RunStatus.BATCHED and self.fn.batch is not None:
                return self._batch_again(run_id, Event.model_validate(rec.event), now)
            return []
        if rec.idempotency is not None and not self._claim(run_id, rec.idempotency, key, now):
            return []
        state = RunState(
            function_id=self.slug,
            key=key,
            status=RunStatus.RUNNING,
            started_ms=now,
            event=rec.event,
            invoker=rec.invoker,
        )
        parsed: list[Event] = []

        def event() -> Event:  # validated only when an option needs it (a cost per run)
            if not parsed:
                parsed.append(Event.model_validate(rec.event))
            return parsed[0]

        out: list[Command] = []
        if self.fn.debounce is None:  # else they count the run its debounce starts
            out, refused = self._limit_starts(run_id, event(), now)
            if refused is not None:
                return self._skip(LiveRun(run_id, state), now, refused)
        self._place(state, event)
        not_before = rec.not_before or 0
        timeouts = self.fn.timeouts
        if timeouts is not None and timeouts.start is not None:
            waited = now - max(accepted_ms(event()), not_before)
            if waited > to_ms(timeouts.start):
                log.info("run %s of %s: not started within its start timeout", run_id, self.slug)
                return out + self._finish(
                    LiveRun(run_id, state), RunStatus.CANCELLED, now, error=CANCELLED_ERROR
                )
        if self.fn.batch is not None and rec.invoker is None and not_before <= now:
            return out + self._batch_add(run_id, state, event(), now)
        if self.fn.cancel:
            out += self._listen_for_cancels(run_id, key, event(), now)
        if timeouts is not None and timeouts.finish is not None:
            due = max(now, not_before) + to_ms(timeouts.finish)
            self._set_timer(due, run_id, TimerKind.TIMEOUT, key)
        if self.fn.debounce is not None:
            return out + self._debounce(LiveRun(run_id, state), event(), now)
        if not_before > now:
            # An event with a future ts: the run exists now (dedup) and starts then.
            self._set_timer(not_before, run_id, TimerKind.WAKE, key)
            state.status = RunStatus.SCHEDULED
            state.persisted = True
            self.store.put(keys.run_key(run_id), "run", state.to_dict())
            return [*out, self._history(LiveRun(run_id, state), now)]
        # Memos without a state: a crash kept only the first writes of the record that
        # persisted this run; go on from them. Such a record was not committed, so it
        # is read again before this assignment's resume marker: only then is there
        # anything to look for.
        memos: dict[str, Memo] = {}
        if not self.ready and next(self.store.scan_keys(keys.memo_prefix(run_id)), None):
            memos = self._memos(run_id)
        if self.fn.throttle is not None:
            return out + self._throttle(LiveRun(run_id, state, memos), now)
        return out + self._admit(LiveRun(run_id, state, memos), now)

    def _place(self, state: RunState, event: Callable[[], Event]) -> None:
        """Fix the run's slot keys and its place in its queues, as its limits need."""
        if self.gate is not None:
            state.slots = self.fn.slot_keys(event())
        if self.gate is not None or self.fn.throttle is not None or self.fn.env_limit:
            state.score = int(event().ts or 0) - 1000 * self.fn.priority_s(event())
        if self.fn.env_limit is not None:
            state.env = self.fn.env_key(event())

    # --- rate limits and singletons -----------------------------------------------------

    def _limit_starts(
        self, run_id: str, event: Event, now: int
    ) -> tuple[list[Command], str | None]:
        """Take the run's place under its rate limit and its singleton key: what taking
        them commands (a singleton in ``cancel`` mode cancels the run that held the key),
        and why the run may not start (None: it may)."""
        if self.fn.rate_limit is not None and not self._take(
            self.fn.rate_gcra, keys.rate_key(self.fn.rate_key(event)), run_id, now
        ):
            return [], "over its rate limit"
        if self.fn.singleton is not None:
            held = self._singleton(run_id, event, now)
            if held is None:
                return [], "its singleton key is held"
            return held, None
        return [], None

    def _take(self, gcra: Gcra | None, gkey: bytes, run_id: str, now: int) -> bool:
        """Take a start of a rate limit's or a throttle's key for ``run_id``, if it may."""
        assert gcra is not None
        stored = self.store.get(gkey)
        entry = gcra.take(stored, run_id, now)
        if entry is None:
            return False
        if entry is not stored:
            self.store.put(gkey, "gcra", entry)
        return True

    def _singleton(self, run_id: str, event: Event, now: int) -> list[Command] | None:
        """Claim the run's singleton key: None if another run holds it and the mode is
        ``skip``; else the commands that cancel the holder (mode ``cancel``)."""
        singleton = self.fn.singleton
        assert singleton is not None
        skey = keys.singleton_key(self.fn.singleton_key(event))
        out: list[Command] = []
        claim = self.store.get(skey)
        holder = str(claim["run_id"]) if claim is not None else None
        if holder is not None and holder != run_id and self._unfinished(holder):
            if singleton.mode == "skip":
                return None
            out = self._cancel(holder, "a newer run took its singleton key", now)
        self.store.put(skey, "singleton", {"run_id": run_id})
        return out

    # --- debounce --------------------------------------------------------------------------

    def _debounce(self, run: LiveRun, event: Event, now: int) -> list[Command]:
        """Hold ``run`` until ``period`` after its key's last event: it takes the place
        of the run held so far (skipped: a later event took its place), unless its
        event is older than that one's (then it is skipped itself)."""
        debounce = self.fn.debounce
        assert debounce is not None
        dkey = keys.debounce_key(self.fn.debounce_key(event))
        held = self.store.get(dkey)
        first = now
        superseded: LiveRun | None = None
        if held is not None and held["run_id"] != run.run_id:
            prev = self._stub(str(held["run_id"]))
            if prev is not None and prev.state.status is RunStatus.SCHEDULED:
                if int(event.ts or 0) < int(held["ts"]):
                    return self._skip(
                        run, now, "its event is older than the one its debounce holds"
                    )
                first, superseded = int(held["first_ms"]), prev
        elif held is not None:  # this start, read again after a crash: redo all of it
            first = int(held["first_ms"])
            prev = self._stub(str(held["replaces"])) if held.get("replaces") else None
            if prev is not None and prev.state.status is RunStatus.SCHEDULED:
                superseded = prev
        due = now + to_ms(debounce.period)
        if debounce.timeout is not None:
            due = min(due, first + to_ms(debounce.timeout))
        # The timer, then the hold naming the run, then its state; the run it replaces last.
        self._set_timer(due, run.run_id, TimerKind.DEBOUNCE, run.state.key)
        hold = {"run_id": run.run_id, "ts": int(event.ts or 0), "first_ms": first}
        if superseded is not None:
            hold["replaces"] = superseded.run_id
        self.store.put(dkey, "debounce", hold)
        run.state.status = RunStatus.SCHEDULED
        run.state.persisted = True
        self.store.put(keys.run_key(run.run_id), "run", run.state.to_dict())
        out: list[Command] = [self._history(run, now)]
        if superseded is not None:
            out += self._skip(superseded, now, REPLACED)
        return out

    def _debounced(self, state: RunState, run_id: str, tkey: bytes, now: int) -> list[Command]:
        """The debounce of a run is over: it starts (through its throttle and limits)."""
        dkey = keys.debounce_key(self.fn.debounce_key(Event.model_validate(state.event)))
        held = self.store.get(dkey)
        if held is not None and held["run_id"] != run_id:
            # Superseded, but a crash lost that write (it comes after the new hold's).
            skipped = self._skip(LiveRun(run_id, state), now, REPLACED)
            self.store.delete(tkey)
            return skipped
        out: list[Command] = []
        if held is not None:
            prev = self._stub(str(held["replaces"])) if held.get("replaces") else None
            if prev is not None and prev.state.status is RunStatus.SCHEDULED:
                out += self._skip(prev, now, REPLACED)
            self.store.delete(dkey)  # a later event opens a new debounce
        admitted, refused = self._limit_starts(run_id, Event.model_validate(state.event), now)
        if refused is not None:  # the run the debounce held is over its rate limit or singleton
            out += self._skip(LiveRun(run_id, state), now, refused)
            self.store.delete(tkey)
            return out
        out += admitted
        state.status = RunStatus.RUNNING
        run = LiveRun(run_id, state, self._memos(run_id), after_burst=[tkey])
        if self.fn.throttle is not None:
            return out + self._throttle(run, now)
        return out + self._admit(run, now)  # the timer goes once the burst is written

    # --- batches --------------------------------------------------------------------------

    def _batch_add(self, run_id: str, state: RunState, event: Event, now: int) -> list[Command]:
        """Add the event of ``run_id`` to its key's open batch (opening one: its header,
        with a timer for its timeout); a batch that is full starts its run now.

        The writes go in an order whose every prefix is safe to handle the start again
        against: a new batch's timer and header, the event at the batch's next place,
        and last the marker ``r<run id>`` (``batched``) that makes the start a repeat.
        Handled again after a crash, an event already at the batch's last place is not
        added twice. The header is written once: a batch's size and bytes are counted
        in memory (:class:`OpenBatch`), from its entries after a restart.
        """
        batch = self.fn.batch
        assert batch is not None
        value = self.fn.batch_key(event)
        open_ = self._open_batch(value)
        if open_ is None:
            due = now + to_ms(batch.timeout)
            tkey = timer_key(due, run_id, TimerKind.BATCH.value).decode()
            self._set_timer(due, run_id, TimerKind.BATCH, state.key, batch=value)
            header = {"run_id": run_id, "key": state.key, "timer": tkey}
            self.store.put(keys.batch_key(value), "batch", header)
            open_ = self.batches[value] = OpenBatch(header)
        if open_.last != run_id:
            entry = {"run_id": run_id, "event": state.event}
            self.store.put(keys.batched_key(value, open_.seq), "batched", entry)
            open_.add(run_id, len(compact_json(state.event)))
        self._batched(run_id, state.key, open_.run_id, now)
        return self._batch_start(value, open_, now) if self._batch_full(open_) else []

    def _batched(self, run_id: str, key: str, batch: str, now: int) -> None:
        """Mark the event of ``run_id`` as in the batch ``batch``: its start is done."""
        marker = {
            "status": RunStatus.BATCHED.value,
            "function_id": self.slug,
            "key": key,
            "started_ms": now,
            "ended_ms": now,
            "batch": batch,
        }
        self.store.put(keys.run_key(run_id), "run", marker)

    def _batch_again(self, run_id: str, event: Event, now: int) -> list[Command]:
        """A repeated start of an event in a batch: a crash may have kept every write of
        the first but the batch's start, when the event filled it; start it now."""
        value = self.fn.batch_key(event)
        open_ = self._open_batch(value)
        if open_ is None or not self._batch_full(open_):
            return []
        return self._batch_start(value, open_, now)

    def _open_batch(self, value: str) -> OpenBatch | None:
        """The open batch of ``value``: from memory, else read from its header and
        entries (a header whose run started already is a crash's leftover: dropped)."""
        open_ = self.batches.get(value)
        if open_ is not None:
            return open_
        header = self.store.get(keys.batch_key(value))
        if header is None:
            return None
        raw = self.store.get(keys.run_key(str(header["run_id"])))
        if raw is not None and raw["status"] != RunStatus.BATCHED:
            self._batch_drop(value)  # its run started: a crash kept these keys
            return None
        open_ = OpenBatch(header)
        entries = self._batch_entries(value)
        for member, event in _distinct(entries).items():
            open_.add(member, len(compact_json(event)))
        open_.seq = len(entries)  # past an entry written twice across a crash
        open_.last = entries[-1][0] if entries else None
        self.batches[value] = open_
        return open_

    def _batch_entries(self, value: str) -> list[tuple[str, dict[str, Any]]]:
        """The batch's entries, (run id, event), in arrival order."""
        scan = self.store.scan(keys.batched_prefix(value))
        return [(str(body["run_id"]), body["event"]) for _, body in scan]

    def _batch_full(self, open_: OpenBatch) -> bool:
        assert self.fn.batch is not None
        full = open_.size >= self.fn.batch.max_size
        return full or open_.bytes >= self.limits.max_record_bytes // BATCH_BYTES_SHARE

    def _batch_start(self, value: str, open_: OpenBatch, now: int) -> list[Command]:
        """The batch of ``value`` is full or its timeout is over: its run starts with its
        events (the run id of its first event is the batch's). The run's state goes
        first, then the batch's keys: a crash between leaves the run to resume."""
        run_id, key = open_.run_id, str(open_.header["key"])
        members = _distinct(self._batch_entries(value))
        events = list(members.values())
        for member in members:
            if self.store.get(keys.run_key(member)) is None:  # a crash lost its marker
                self._batched(member, key, run_id, now)
        first = Event.model_validate(events[0])
        state = RunState(
            function_id=self.slug,
            key=key,
            status=RunStatus.RUNNING,
            started_ms=now,
            event=events[0],
            events=events,
        )
        self._place(state, lambda: first)
        timeouts = self.fn.timeouts
        if timeouts is not None and timeouts.finish is not None:
            self._set_timer(now + to_ms(timeouts.finish), run_id, TimerKind.TIMEOUT, state.key)
        run = LiveRun(run_id, state)
        self._persist(run, active=True)
        self._batch_drop(value)
        tkey = str(open_.header["timer"]).encode()
        self.store.delete(tkey)
        self.timers.applied(tkey)
        log.debug("%s: batch %s starts with %d event(s)", self.slug, run_id, len(events))
        if self.fn.throttle is not None:
            return self._throttle(run, now)
        return self._admit(run, now)

    def _batch_drop(self, value: str) -> None:
        self.batches.pop(value, None)
        for ekey in list(self.store.scan_keys(keys.batched_prefix(value))):
            self.store.delete(ekey)
        self.store.delete(keys.batch_key(value))

    def _batch_due(self, value: str, run_id: str, now: int) -> list[Command]:
        """A batch's timer: its run starts, if the batch is still the one it was set for."""
        open_ = self._open_batch(value)
        if open_ is None or open_.run_id != run_id:
            return []
        return self._batch_start(value, open_, now)

    # --- throttles ----------------------------------------------------------------------

    def _throttle(self, run: LiveRun, now: int) -> list[Command]:
        """Start ``run`` if its throttle allows it and no run of its key waits for the
        throttle; else queue it behind them (a timer starts the queue's head)."""
        value = self.fn.throttle_key(Event.model_validate(run.state.event))
        waiting = next(self._throttled(value), None) is not None
        if not waiting and self._throttle_takes(run.run_id, value, now):
            return self._admit(run, now)
        if not waiting:  # the timer first: a crash after it leaves no queue without one
            self._throttle_timer(run, value, now)
        qkey = keys.throttled_key(value, run.state.score, self.offset, run.run_id)
        self.store.put(qkey, "throttled", {"run_id": run.run_id})
        run.state.status = RunStatus.QUEUED
        run.state.queued = qkey.decode()
        self._persist(run, active=False)
        self._burst_written(run)
        return [self._history(run, now)]

    def _throttle_tick(self, value: str, tkey: bytes, now: int) -> list[Command]:
        """The timer ``tkey`` of the throttle of ``value`` is due: start the queue's head
        if the throttle allows it, and set the timer for the next one.

        One run per timer: the next timer is written before the head's state, and this
        timer is deleted after it (with the head's queue entry), so a crash anywhere
        leaves a timer that moves the queue on (read again, the head keeps its place).
        """
        for qkey, run_id, state in self._throttled(value):
            run = LiveRun(run_id, state, self._memos(run_id), after_burst=[qkey, tkey])
            if not self._throttle_takes(run_id, value, now):
                self._throttle_timer(run, value, now)
                break
            after = next((r for r in self._throttled(value) if r[1] != run_id), None)
            if after is not None:
                self._throttle_timer(LiveRun(after[1], after[2]), value, now)
            state.status = RunStatus.RUNNING
            state.queued = None
            if self._start_timed_out(run, now):
                return self._finish(run, RunStatus.CANCELLED, now, error=CANCELLED_ERROR)
            return self._admit(run, now)  # entry and timer go once its burst is written
        self.store.delete(tkey)
        return []

    def _throttled(self, value: str) -> Iterator[tuple[bytes, str, RunState]]:
        """The runs waiting for the throttle of ``value``, in order. Entries of runs
        that went on another way are dropped; those of runs started from the queue
        and still in their first burst (the entry goes with it) are passed over."""
        for qkey, body in list(self.store.scan(keys.throttled_prefix(value))):
            run_id = str(body["run_id"])
            if run_id in self.active:
                continue
            raw = self.store.get(keys.run_key(run_id))
            state = RunState.from_dict(raw) if raw is not None else None
            if state is None or state.queued != qkey.decode():
                self.store.delete(qkey)
                continue
            yield qkey, run_id, state

    def _throttle_takes(self, run_id: str, value: str, now: int) -> bool:
        return self._take(self.fn.throttle_gcra, keys.throttle_key(value), run_id, now)

    def _throttle_timer(self, head: LiveRun, value: str, now: int) -> None:
        assert self.fn.throttle_gcra is not None
        due = self.fn.throttle_gcra.due(self.store.get(keys.throttle_key(value)), now)
        self._set_timer(due, head.run_id, TimerKind.THROTTLE, head.state.key, throttle=value)

    def _unfinished(self, run_id: str) -> bool:
        if run_id in self.active:
            return True
        raw = self.store.get(keys.run_key(run_id))
        return raw is not None and not RunStatus(raw["status"]).terminal

    def _skip(self, run: LiveRun, now: int, why: str) -> list[Command]:
        """The event starts no run: the run is stored (and shown) as ``skipped``, so a
        repeated start stays a no-op and ``steplog runs list --status skipped`` counts it."""
        state = run.state
        state.status = RunStatus.SKIPPED
        state.ended_ms = now
        state.persisted = True
        self.store.put(keys.run_key(run.run_id), "run", state.to_dict())
        self.skipped[why] += 1
        log.info(
            "run %s of %s: skipped, %s (event %s)",
            run.run_id,
            self.slug,
            why,
            state.event.get("id"),
        )
        error = {"name": "Skipped", "message": f"{self.slug}: {why}", "stack": None}
        out: list[Command] = [self._history(run, now, error=error)]
        if state.invoker is not None:
            out.append(self._answer_invoker(state.invoker, RunStatus.SKIPPED, None, error))
        return out

    def _listen_for_cancels(self, run_id: str, key: str, event: Event, now: int) -> list[Command]:
        """Register the function's Cancel rules for this run."""
        trigger = event_vars(event)
        since = accepted_ms(event)
        out: list[Command] = []
        for i, rule in enumerate(self.fn.cancel):
            horizon = to_ms(rule.timeout) if rule.timeout is not None else CANCEL_HORIZON_MS
            wait = Wait(
                function=self.slug,
                run_id=run_id,
                step_id=f"cancel:{i}",
                run_key=key,
                event=rule.event,
                if_exp=rule.if_exp,
                registered_ms=since,
                expires_ms=max(now, since) + horizon,
                trigger=trigger_for(rule.if_exp, trigger),
                kind="cancel",
                hint=index_hint(rule.if_exp, trigger),
            )
            out.append(Register(wait))
        return out

    def _activate(self, run: LiveRun) -> list[Command]:
        self.active[run.run_id] = run
        if self.gate is not None:
            self.gate.hold(run.state.slots)
        return [Activate(run)]

    # --- concurrency limits -------------------------------------------------------------

    def _admit(self, run: LiveRun, now: int) -> list[Command]:
        """Activate ``run`` if its limits have room and nothing is queued before it;
        else queue it. Until the partition resumed, the runs that held slots before
        a restart are not counted yet: every run queues. A run under an env-scoped
        limit first asks the app's gate for a slot, and comes back here with it."""
        state = run.state
        if state.env is not None and not state.env_held:
            return self._ask_gate(run, now)
        gate = self.gate
        if gate is None:
            return self._activate(run)
        self._load_queue(gate)
        slots = run.state.slots
        if self.ready and gate.has_room(slots) and not gate.waiting(slots):
            return self._activate(run)
        entry = Queued(run.state.score, self.offset, run.run_id, slots)
        qkey = entry.key
        # The entry before the state that names it; a timer that woke the run goes
        # after both (a crash in between leaves a stale entry, dropped when met).
        self.store.put(qkey, "queue", _queued_body(entry))
        run.state.status = RunStatus.QUEUED
        run.state.queued = qkey.decode()
        self._persist(run, active=False)
        self._burst_written(run)
        gate.push(entry)
        return [self._history(run, now)]

    def _ask_gate(self, run: LiveRun, now: int) -> list[Command]:
        """``run`` waits (``queued``) for the gate's grant of a slot of its env limit."""
        state = run.state
        assert self.fn.env_limit is not None and state.env is not None
        state.status = RunStatus.QUEUED
        state.env_wait = True
        self._persist(run, active=False)
        self._burst_written(run)
        ask = SlotAsk(
            run.run_id,
            state.env,
            self.fn.env_limit[0],
            self.slug,
            state.key,
            self.partition,
            state.score,
        )
        return [Journal(GATE, state.env, ask), self._history(run, now)]

    def _granted(self, rec: SlotGrant, now: int) -> list[Command]:
        """The gate gave a run its slot: it goes on (through its function's own limits).
        A grant for a run that no longer waits for one is given back."""
        run = self.active.get(rec.run_id) or self._stub(rec.run_id)
        state = run.state if run is not None else None
        if state is not None and state.env_held and not state.env_wait:
            return []  # a repeated grant
        if run is None or state is None or not state.env_wait:
            return [Journal(GATE, rec.value, SlotFree(rec.run_id, rec.value))]
        state.env_wait = False
        state.env_held = True
        state.status = RunStatus.RUNNING
        return self._admit(run, now)

    def _let_go_of_gate(self, run: LiveRun) -> list[Command]:
        """The run stops executing (or ends): free its env slot, or its place in line."""
        state = run.state
        if state.env is None or not (state.env_held or state.env_wait):
            return []
        state.env_held = state.env_wait = False
        return [Journal(GATE, state.env, SlotFree(run.run_id, state.env))]

    def _drain(self, freed: tuple[str, ...] | None, now: int) -> list[Command]:
        """Start the queued runs that have room now (``freed``: the slot keys just let
        go; None: look at every queue)."""
        gate = self.gate
        if gate is None or not self.ready:
            return []
        self._load_queue(gate)
        out: list[Command] = []
        while (entry := gate.next(freed)) is not None:
            qkey = entry.key
            raw = self.store.get(keys.run_key(entry.run_id))
            state = RunState.from_dict(raw) if raw is not None else None
            if state is None or state.queued != qkey.decode():
                self.store.delete(qkey)  # stale: the run went on or ended another way
                continue
            state.status = RunStatus.RUNNING
            state.queued = None
            run = LiveRun(entry.run_id, state, self._memos(entry.run_id), after_burst=[qkey])
            if self._start_timed_out(run, now):
                out += self._finish(run, RunStatus.CANCELLED, now, error=CANCELLED_ERROR)
                continue
            out += self._activate(run)  # the entry goes once the run's burst is written
        return out

    def _start_timed_out(self, run: LiveRun, now: int) -> bool:
        """A run that never started waited in the queue past its start timeout."""
        timeouts = self.fn.timeouts
        if timeouts is None or timeouts.start is None or run.memos or run.state.attempt:
            return False
        waited = now - accepted_ms(Event.model_validate(run.state.event))
        if waited <= to_ms(timeouts.start):
            return False
        log.info("run %s of %s: not started within its start timeout", run.run_id, self.slug)
        return True

    def _load_queue(self, gate: Gate) -> None:
        if not gate.loaded:
            gate.load(
                Queued(int(b["score"]), int(b["offset"]), str(b["run_id"]), tuple(b["slots"]))
                for _, b in self.store.scan(QUEUE)
            )

    def _stub(self, run_id: str) -> LiveRun | None:
        """A stand-in for a run not in memory (None if it is unknown or ended)."""
        raw = self.store.get(keys.run_key(run_id))
        if raw is None:
            return None
        state = RunState.from_dict(raw)
        if state.status.terminal:
            return None
        return LiveRun(run_id, state, self._memos(run_id))

    def _memos(self, run_id: str) -> dict[str, Memo]:
        prefix = keys.memo_prefix(run_id)
        return {
            key[len(prefix) :].decode(): Memo.from_dict(body)
            for key, body in self.store.scan(prefix)
        }

    # --- effects ----------------------------------------------------------------------

    def _set_up_waiting(self, run: LiveRun, effect: StepWaiting) -> list[Command]:
        """Register a wait, or start an invoked run (a sleep needs only its timer)."""
        spec = effect.spec
        if effect.op == "wait":
            hint = spec.get("hint")
            wait = Wait(
                function=self.slug,
                run_id=run.run_id,
                step_id=effect.step_id,
                run_key=run.state.key,
                event=spec["event"],
                if_exp=spec.get("if_exp"),
                registered_ms=int(spec.get("registered_ms", effect.started_ms)),
                expires_ms=effect.due_ms,
                trigger=trigger_for(spec.get("if_exp"), spec.get("trigger") or {}),
                hint=(str(hint[0]), str(hint[1])) if hint else None,
            )
            return [Register(wait)]
        if effect.op == "invoke":
            return self._invoke(run, effect)
        return []

    def _invoke(self, run: LiveRun, effect: StepWaiting) -> list[Command]:
        wanted = str(effect.spec.get("function"))
        target = self.functions.get(wanted)
        if target is None:
            known = ", ".join(sorted(self.functions)) or "none"
            error = ErrorInfo(
                "FunctionNotFoundError",
                f"step.invoke({effect.name!r}): no function {wanted!r} in app "
                f"{self.fn.app_id!r} (functions: {known})",
            )
            answer = Resolve(run.run_id, effect.step_id, error=error)
            return [Journal(self.slug, run.state.key, answer, self.partition)]
        child_event = accept(
            Event(name="inngest/function.invoked", data=effect.spec.get("data") or {}),
            at_ms=effect.started_ms,
            internal_id=sent_event_id(run.run_id, effect.step_id, 0),
            allow_reserved=True,
        )
        child_run = sent_event_id(run.run_id, effect.step_id, 1)
        invoker = Invoker(self.slug, run.run_id, effect.step_id, run.state.key)
        start = Start(child_run, child_event.model_dump(), invoker=invoker)
        return [Journal(target.slug, target.run_key(child_event) or child_run, start)]

    def _write_memo(self, run_id: str, memo: Memo) -> None:
        self.store.put(keys.memo_key(run_id, memo.step_id), "memo", memo.to_dict())

    def _persist(self, run: LiveRun, *, active: bool) -> None:
        """Write the run's state and its unwritten memos (it outlives this burst).

        A crash may keep any prefix of one record's writes, so they go in an order
        where every prefix is safe: memos and whatever will move the run (its active
        marker; the caller's timer) before the state that refers to them, and the
        active marker's deletion after it.
        """
        for memo in run.unwritten:
            self._write_memo(run.run_id, memo)
        run.unwritten.clear()
        was_persisted = run.state.persisted
        run.state.persisted = True
        if active:
            self.store.put(keys.active_key(run.run_id), "run", {"key": run.state.key})
        self.store.put(keys.run_key(run.run_id), "run", run.state.to_dict())
        if not active and was_persisted:
            self.store.delete(keys.active_key(run.run_id))

    def _suspend(
        self, run: LiveRun, wake_at_ms: int | None, reason: str, now: int
    ) -> list[Command]:
        run.state.status = SUSPENDED_AS.get(reason, RunStatus.WAITING)
        if run.woken:
            wake_at_ms = now  # a waiting step completed meanwhile: go on now
        if wake_at_ms is not None:  # the timer before the state that needs it
            self._set_timer(wake_at_ms, run.run_id, TimerKind.WAKE, run.state.key)
        freed = self._let_go_of_gate(run)
        self._persist(run, active=False)
        return [*freed, *self._release(run, now, stop=False), self._history(run, now)]

    def _finish(
        self,
        run: LiveRun,
        status: RunStatus,
        now: int,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        stop: bool = False,
    ) -> list[Command]:
        state = run.state
        state.status = status
        state.ended_ms = now
        out: list[Command] = [
            Announce(event)
            for event in system_events(
                function_id=self.slug,
                run_id=run.run_id,
                status=status,
                trigger=state.event,
                events=state.events,
                ended_ms=now,
                result=result,
                error=error,
            )
        ]
        if state.invoker is not None:
            out.append(self._answer_invoker(state.invoker, status, result, error))
        out += self._let_go_of_gate(run)
        for memo in run.memos.values():
            if memo.status == "waiting" and memo.op == "wait":
                out.append(Unregister(f"{run.run_id}|{memo.step_id}"))
        out += [Unregister(f"{run.run_id}|cancel:{i}") for i in range(len(self.fn.cancel))]
        # The final state first (kept until the retention sweep: it makes a repeated
        # start a no-op), then what it no longer needs: a crash between leaves
        # leftovers for the sweep, never a run without its end.
        was_persisted = state.persisted
        self.store.put(keys.run_key(run.run_id), "run", state.to_dict())
        if was_persisted:
            for key in list(self.store.scan_keys(keys.memo_prefix(run.run_id))):
                self.store.delete(key)
            self.store.delete(keys.active_key(run.run_id))
        if self.fn.singleton is not None:
            skey = keys.singleton_key(self.fn.singleton_key(Event.model_validate(state.event)))
            claim = self.store.get(skey)
            if claim is not None and claim["run_id"] == run.run_id:
                self.store.delete(skey)
        if state.queued is not None:  # cancelled while it waited for a slot
            self.store.delete(state.queued.encode())
            if self.gate is not None:
                self.gate.discard(run.run_id)
            state.queued = None
        run.unwritten.clear()
        out += self._release(run, now, stop=stop)
        out.append(self._history(run, now, result=result, error=error))
        return out

    def _answer_invoker(
        self, invoker: Invoker, status: RunStatus, result: Any, error: dict[str, Any] | None
    ) -> Journal:
        """Complete the ``step.invoke`` that started this run, in its caller's journal."""
        if status is RunStatus.COMPLETED:
            answer = Resolve(invoker.run_id, invoker.step_id, output=result)
        else:
            detail = (error or {}).get("message", status.value)
            failure = ErrorInfo(
                "InvokedFunctionError",
                f"invoked function {self.slug} {status.value}: {detail}",
                (error or {}).get("stack"),
            )
            answer = Resolve(invoker.run_id, invoker.step_id, error=failure)
        return Journal(invoker.function, invoker.key, answer)

    def _burst_written(self, run: LiveRun) -> None:
        for key in run.after_burst:
            self.store.delete(key)
        run.after_burst.clear()

    def _release(self, run: LiveRun, now: int, *, stop: bool) -> list[Command]:
        self._burst_written(run)
        if self.active.get(run.run_id) is run:
            del self.active[run.run_id]
            if self.gate is None:
                return [Release(run, stop)]
            self.gate.free(run.state.slots)
            return [Release(run, stop), *self._drain(run.state.slots, now)]
        return []

    def _history(
        self, run: LiveRun, now: int, *, result: Any = None, error: dict[str, Any] | None = None
    ) -> History:
        state = run.state
        return History(
            history_record(
                run_id=run.run_id,
                function_id=self.slug,
                status=state.status,
                event=state.event,
                attempt=state.attempt,
                started_ms=state.started_ms,
                ended_ms=state.ended_ms,
                memos=run.memos.values(),
                updated_ms=now,
                result=result,
                error=error,
                max_bytes=self.limits.max_record_bytes,
                events=state.events,
            )
        )

    # --- completing waiting steps and cancelling runs from outside ---------------------

    def _resolve(self, rec: Resolve, now: int) -> list[Command]:
        """A waiting step's event arrived, or its invoked run ended: complete it."""
        run = self.active.get(rec.run_id) or self._stub(rec.run_id)
        if run is None:
            return []  # the run ended (e.g. cancelled) before the event came
        memo = run.memos.get(rec.step_id)
        if memo is None:
            return []
        if memo.status != "waiting":
            # Completed already (a timeout, another matching event). If the run still
            # waits for it, the crash kept the memo of this resolve but not what its
            # activation wrote: activate it again.
            if not self.is_live(run) and run.state.status is RunStatus.WAITING:
                run.state.status = RunStatus.RUNNING
                return self._admit(run, now)
            return []
        done = completion(rec.run_id, memo, now, output=rec.output, error=rec.error)
        new = apply_effect(run.memos, done)
        if new is not None:
            self._write_memo(rec.run_id, new)
        out: list[Command] = []
        if memo.op == "wait":
            out.append(Unregister(f"{rec.run_id}|{rec.step_id}"))
        if self.is_live(run):
            run.woken = True  # its activation learns of it when it suspends
            return out
        run.state.status = RunStatus.RUNNING
        return out + self._admit(run, now)

    def _cancel(self, run_id: str, reason: str, now: int) -> list[Command]:
        """Cancel a run between steps: a Cancel rule, a timeout, the API or the CLI."""
        run = self.active.get(run_id)
        stop = run is not None
        if run is None:
            run = self._stub(run_id)  # requests by run id reach every partition
            if run is None:
                return []  # not here, or ended already
        log.info("run %s of %s: cancelled (%s)", run_id, self.slug, reason)
        return self._finish(run, RunStatus.CANCELLED, now, error=CANCELLED_ERROR, stop=stop)

    # --- timers -------------------------------------------------------------------------

    def _set_timer(self, due_ms: int, run_id: str, kind: TimerKind, key: str, **extra: str) -> None:
        tkey = timer_key(due_ms, run_id, kind.value)
        body = {"run_id": run_id, "kind": kind.value, "key": key, **extra}
        self.store.put(tkey, "timer", body)
        self.timers.add(tkey)
        run = self.active.get(run_id)
        if run is not None and tkey in run.after_burst:  # set again (due at the same ms)
            run.after_burst.remove(tkey)

    def _wake(self, rec: Wake, now: int) -> list[Command]:
        tkey = rec.timer.encode()
        timer = self.store.get(tkey)
        self.timers.applied(tkey)
        if timer is None:
            return []  # fired twice (a restart between firing and applying)
        run_id = str(timer["run_id"])
        kind = timer["kind"]
        out: list[Command] = []
        if kind == TimerKind.IDEMPOTENCY:
            self.store.delete(str(timer["ikey"]).encode())
        elif kind == TimerKind.TIMEOUT:
            out = self._cancel(run_id, "finish timeout", now)
        elif kind == TimerKind.WAKE:
            raw = self.store.get(keys.run_key(run_id))
            if raw is not None and run_id not in self.active:
                state = RunState.from_dict(raw)
                if not state.status.terminal and state.status is not RunStatus.QUEUED:
                    scheduled = state.status is RunStatus.SCHEDULED
                    state.status = RunStatus.RUNNING
                    run = LiveRun(run_id, state, self._memos(run_id), after_burst=[tkey])
                    if scheduled and self.fn.batch is not None and state.invoker is None:
                        # A future-dated event joins a batch now (its timer goes after).
                        event = Event.model_validate(state.event)
                        out = self._batch_add(run_id, state, event, now)
                        self.store.delete(tkey)
                        return out
                    if scheduled and self.fn.throttle is not None:
                        return self._throttle(run, now)  # a future-dated start: throttled now
                    return self._admit(run, now)  # the timer goes once the burst is written
        elif kind == TimerKind.DEBOUNCE:
            raw = self.store.get(keys.run_key(run_id))
            if raw is not None and run_id not in self.active and raw["status"] == "scheduled":
                return self._debounced(RunState.from_dict(raw), run_id, tkey, now)
        elif kind == TimerKind.THROTTLE:
            return self._throttle_tick(str(timer["throttle"]), tkey, now)
        elif kind == TimerKind.BATCH:
            out = self._batch_due(str(timer["batch"]), run_id, now)
        else:
            log.warning("%s: dropping a timer of unknown kind %r (%s)", self.slug, kind, rec.timer)
        self.store.delete(tkey)
        return out

    def _claim(self, run_id: str, value: str, key: str, now: int) -> bool:
        """Claim an idempotency key for ``run_id``; False if a run holds it already."""
        ikey = keys.idempotency_key(value)
        held = self.store.get(ikey)
        if held is not None and held["run_id"] != run_id:
            log.info(
                "%s: idempotency key %r already started run %s; skipping run %s",
                self.slug,
                value,
                held["run_id"],
                run_id,
            )
            return False
        self.store.put(ikey, "idem", {"run_id": run_id, "at_ms": now})
        due = now + self.limits.dedup_window_ms
        self._set_timer(due, run_id, TimerKind.IDEMPOTENCY, key, ikey=ikey.decode())
        return True

    # --- rebalances and retention -------------------------------------------------------

    def _resume(self, now: int) -> list[Command]:
        """Every earlier record of the partition is applied: fire timers, resume runs."""
        self.ready = True
        out: list[Command] = []
        marked = list(self.store.scan(keys.ACTIVE))
        log.info(
            "%s[%s]: resuming the partition (%d run(s) were active)",
            self.slug,
            self.partition,
            len(marked),
        )
        for key, _ in marked:
            run_id = key[len(keys.ACTIVE) :].decode()
            if run_id in self.active:
                continue
            raw = self.store.get(keys.run_key(run_id))
            if raw is None or raw["status"] != RunStatus.RUNNING:
                self.store.delete(key)
                continue
            log.info("run %s: resuming on %s[%s] from its memos", run_id, self.slug, self.partition)
            out += self._activate(LiveRun(run_id, RunState.from_dict(raw), self._memos(run_id)))
        # The runs that held slots hold them again: the queued ones may take the rest.
        return out + self._drain(None, now)

    def _sweep(self, start: str | None, now: int) -> list[Command]:
        """Forget finished runs whose retention is over, a batch at a time.

        Run ids are ULIDs whose time is at or before the run's start, so only keys
        older than the retention can be due: the scan stops at that time prefix.
        Runs still going (or ended lately) are passed over and met again next time.
        """
        if start is None:  # a rate limit's or throttle's key whose next start is past is as new
            for prefix in (keys.RATE, keys.THROTTLE):
                spent = [k for k, body in self.store.scan(prefix) if float(body["tat"]) <= now]
                for gkey in spent[: self.limits.sweep_batch]:
                    self.store.delete(gkey)
        cutoff = now - self.limits.retention_ms
        upto = keys.RUN + time_prefix(max(cutoff + 1, 0)).encode()
        begin = keys.RUN + start.encode() if start else None
        runs = self.store.scan(keys.RUN, upto, start=begin)
        for seen, (key, raw) in enumerate(runs):
            if seen == self.limits.sweep_batch:  # more to look at: go on in another record
                more = Sweep(key[len(keys.RUN) :].decode())
                return [Journal(self.slug, "", more, self.partition)]
            ended = raw.get("ended_ms")
            if RunStatus(raw["status"]).terminal and ended is not None and ended <= cutoff:
                self._forget(key[len(keys.RUN) :].decode())
        return []

    def _forget(self, run_id: str) -> None:
        """Retention is over: delete everything about a finished run."""
        for key in list(self.store.scan_keys(keys.memo_prefix(run_id))):
            self.store.delete(key)
        self.store.delete(keys.active_key(run_id))
        self.store.delete(keys.run_key(run_id))


def _distinct(entries: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """A batch's events by run id, in arrival order: one a crash wrote twice counts once."""
    members: dict[str, dict[str, Any]] = {}
    for run_id, event in entries:
        members.setdefault(run_id, event)
    return members


#: A batch starts once its events take this share of a record (its run's state holds
#: them all, and must fit one with room for its steps' memos beside).
BATCH_BYTES_SHARE = 2

#: Why a run held by a debounce starts no run.
REPLACED = "debounced: a later event took its place"


def _queued_body(entry: Queued) -> dict[str, Any]:
    return {
        "run_id": entry.run_id,
        "slots": list(entry.slots),
        "score": entry.score,
        "offset": entry.offset,
    }
