"""An in-memory steplog: one App's router, run lifecycles, timers and waits, on a manual clock.

:class:`Engine` makes the same decisions as the workers - it drives the same
:class:`~streams.lifecycle.PartitionLifecycle`, :func:`~streams.routing.route` and
:class:`~streams.waits.WaitIndex` - with Kafka's topics replaced by lists and time
by a :class:`~streams.clock.ManualClock`. Events go in with :meth:`Engine.send`;
sleeps, retries and timeouts happen when the clock moves (:meth:`Engine.advance`,
:meth:`Engine.settle`); a wait completes when the test sends the awaited event;
invokes start the invoked function; :meth:`Engine.cancel` cancels a run::

    engine = Engine(app)
    engine.send({"name": "app/order.created", "data": {"orderId": "o1"}})
    engine.send({"name": "app/payment.received", "data": {"orderId": "o1"}})
    engine.settle()                        # run every due timer until all runs ended
    assert engine.run("process-order").status == "completed"

Everything Kafka would hold durably is appended to :attr:`Engine.log`, in the order
a worker makes it durable: what handling a record sent, then the state it wrote,
then its offset committed. :meth:`Engine.recover` builds the engine a new worker
would find after a crash at any point of that log: the lifecycle's crash-point
tests (tests/unit/test_lifecycle_crashes.py) use it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from streams.app import App, Function
from streams.clock import ManualClock
from streams.core.effects import StepCompleted, StepFailed
from streams.core.execution import RunInput
from streams.core.retry import RetryPolicy
from streams.durations import to_ms
from streams.errors import ConfigError
from streams.event import Event, accept
from streams.lifecycle import (
    Activate,
    Announce,
    Command,
    History,
    Journal,
    Limits,
    LiveRun,
    MemoryRunStore,
    PartitionLifecycle,
    Register,
    Release,
    SendEvent,
    Unregister,
)
from streams.lifecycle import records as rec
from streams.lifecycle.gate import GATE, EnvGate
from streams.lifecycle.state import TIMER, RunStatus, run_key
from streams.lifecycle.timers import TimerKind, due_of
from streams.routing import DedupEntry, remembers, route
from streams.waits import Wait, WaitIndex

EVENTS = "events"
#: The run history (compacted in Kafka; here the latest record per run counts).
RUNS = "runs"


def journal_topic(slug: str) -> str:
    return f"journal:{slug}"


# --- What Kafka would hold: the durable log ----------------------------------------------


@dataclass(frozen=True)
class Appended:
    """A record appended to a topic (``events`` or ``journal:<slug>``)."""

    topic: str
    key: str
    item: Any  # an Event on ``events``, a journal Record on a journal
    at_ms: int


@dataclass(frozen=True)
class Wrote:
    """A state write of a function's lifecycle (``kind`` None: a delete)."""

    function: str
    key: bytes
    kind: str | None
    body: Any


@dataclass(frozen=True)
class WaitWrote:
    """A wait registered (``wait``) or removed (None) on the waits topic."""

    key: str
    wait: Wait | None


@dataclass(frozen=True)
class Deduped:
    """The router's dedup entry for an event id."""

    key: str
    entry: dict[str, Any]


@dataclass(frozen=True)
class Committed:
    """The offsets of ``topic`` below ``offset`` are committed."""

    topic: str
    offset: int


Durable = Appended | Wrote | WaitWrote | Deduped | Committed


@dataclass(frozen=True)
class Execution:
    """A step body ran (a ``StepCompleted``/``StepFailed`` of op ``run``)."""

    run_id: str
    step: str
    outcome: str
    #: How long :attr:`Engine.log` was when the body's outcome was emitted.
    at_log: int


@dataclass
class RunView:
    """A run as the engine saw it last (from its run-history records)."""

    run_id: str
    function_id: str
    status: str
    event: dict[str, Any]
    attempt: int
    result: Any = None
    error: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str) -> dict[str, Any]:
        """A step by its readable id (``"charge"``, ``"charge:1"``): its memo as a dict."""
        for item in self.steps:
            if item["name"] == name:
                return item
        known = ", ".join(repr(s["name"]) for s in self.steps) or "none"
        raise KeyError(f"no step {name!r} in run {self.run_id} (steps: {known})")


class Engine:
    """An in-memory steplog for ``app`` (see the module docstring).

    ``retry_scale`` multiplies retry backoffs (0: due at once; the clock is
    manual either way). ``detach_after``: after this many effects an activation
    goes on detached and its later effects come back through the journal, as a
    slow step's do in a worker (None: every activation runs inline to its end).
    ``lag_writes``: a record's state writes become durable only after the next
    record's sends (the outbox releases them late), another order of the log.
    """

    def __init__(
        self,
        app: App,
        *,
        clock: ManualClock | None = None,
        retry_scale: float = 0.0,
        limits: Limits | None = None,
        detach_after: int | None = None,
        lag_writes: bool = False,
        commit_every: int = 1,
    ) -> None:
        self.app = app
        self.functions: Mapping[str, Function] = app.functions
        self.clock = clock or ManualClock()
        self.retry_scale = retry_scale
        self.limits = limits or Limits()
        self.detach_after = detach_after
        self.lag_writes = lag_writes
        self.commit_every = commit_every
        self.log: list[Durable] = []
        self.topics: dict[str, list[tuple[str, Any, int]]] = {EVENTS: [], RUNS: []}
        self.positions: dict[str, int] = {EVENTS: 0, RUNS: 0}
        self.committed: dict[str, int] = {EVENTS: 0, RUNS: 0}
        self.stores: dict[str, MemoryRunStore] = {}
        self.lifecycles: dict[str, PartitionLifecycle] = {}
        self.waits = WaitIndex()
        self.dedup: dict[str, DedupEntry] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.announced: list[Event] = []
        self.executions: list[Execution] = []
        self._held: list[Durable] = []
        #: Detached runs whose forwarders wait for the unit's writes to be durable.
        self._forwards: list[tuple[str, LiveRun]] = []
        self._held_forwards: list[tuple[str, LiveRun]] = []
        self._since_commit: dict[str, int] = {}
        self._pumping = False
        self._deferred: list[tuple[str, LiveRun]] = []
        #: Counts assignments (each names its resume markers).
        self.generation = 0
        for fn in self.functions.values():
            topic = journal_topic(fn.slug)
            self.topics[topic] = []
            self.positions[topic] = 0
            self.committed[topic] = 0
            self.stores[fn.slug] = MemoryRunStore()
        for topic in (journal_topic(GATE),):
            self.topics[topic] = []
            self.positions[topic] = 0
            self.committed[topic] = 0
        self.stores[GATE] = MemoryRunStore()
        self._start_lifecycles()

    # --- the public API ---------------------------------------------------------------

    def send(
        self, events: Event | Mapping[str, Any] | Iterable[Any], *, process: bool = True
    ) -> list[str]:
        """Accept events (as the event API would) and process them; return their ids.

        ``process=False`` only accepts them, as while no worker runs: the next call
        that processes (:meth:`advance`, :meth:`settle`) handles them, late.
        """
        ids: list[str] = _sync(self.send_async(events, process=process))
        return ids

    async def send_async(
        self, events: Event | Mapping[str, Any] | Iterable[Any], *, process: bool = True
    ) -> list[str]:
        items = [events] if isinstance(events, Event | Mapping) else list(events)
        ids = []
        for item in items:
            event = item if isinstance(item, Event) else Event.model_validate(dict(item))
            accepted = accept(event, at_ms=self.clock.now_ms())
            self._append(EVENTS, accepted.key, accepted)
            ids.append(str(accepted.internal_id))
        if process:
            await self.run_until_idle()
        return ids

    def advance(self, duration: timedelta | str | float, *, process: bool = True) -> None:
        """Move the clock forward, then fire what is due and process it (unless not ``process``)."""
        _sync(self.advance_async(duration, process=process))

    async def advance_async(
        self, duration: timedelta | str | float, *, process: bool = True
    ) -> None:
        self.clock.advance(ms=to_ms(duration))
        if process:
            await self.run_until_idle()

    def settle(self, *, max_steps: int = 10_000) -> None:
        """Jump the clock from one due timer to the next until every run has ended."""
        _sync(self.settle_async(max_steps=max_steps))

    async def settle_async(self, *, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            await self.run_until_idle()
            due = self.next_due()
            if due is None:
                return
            self.clock.set(max(due, self.clock.now_ms()))
        raise RuntimeError(f"runs still going after {max_steps} timer jumps (a loop?)")

    def cancel(self, run_id: str, reason: str = "cancel requested") -> None:
        """Cancel a run, as ``steplog runs cancel`` does."""
        _sync(self.cancel_async(run_id, reason))

    async def cancel_async(self, run_id: str, reason: str = "cancel requested") -> None:
        for slug in self.functions:
            self._append(journal_topic(slug), run_id, rec.Cancel(run_id, reason))
        await self.run_until_idle()

    def runs(self, function: str | None = None) -> list[RunView]:
        """The runs seen so far (of one function: its slug or ``fn_id``), oldest first."""
        slug = None if function is None else self.app.function_by_id(function).slug
        out = []
        for run_id in sorted(self.history):
            record = self.history[run_id]
            if slug is not None and record["function_id"] != slug:
                continue
            body = json.loads(record["body"])
            steps = []
            for item in body.get("steps", []):
                step = dict(item)
                text = step.get("output")
                if isinstance(text, str) and not text.endswith("…"):
                    step["output"] = json.loads(text)
                steps.append(step)
            out.append(
                RunView(
                    run_id=run_id,
                    function_id=record["function_id"],
                    status=record["status"],
                    event=body.get("event") or {},
                    attempt=int(body.get("attempt") or 0),
                    result=body.get("result"),
                    error=body.get("error"),
                    steps=steps,
                )
            )
        return out

    def run(self, function: str) -> RunView:
        """The one run of ``function`` (an error if there is none or more than one)."""
        found = self.runs(function)
        if len(found) != 1:
            raise AssertionError(f"{function}: {len(found)} runs, expected exactly one")
        return found[0]

    @property
    def events(self) -> list[Event]:
        """Every event on ``events``: sent, sent by steps, and system events."""
        return [item for _, item, _ in self.topics[EVENTS]]

    def next_due(self) -> int | None:
        """When the next wake-up or timeout of a run that has not ended is due."""
        due = None
        for store in self.stores.values():
            for key in store.scan_keys(TIMER):
                body = store.get(key)
                if body is None or body["kind"] == TimerKind.IDEMPOTENCY:
                    continue
                state = store.get(run_key(str(body["run_id"])))
                batching = body["kind"] == TimerKind.BATCH  # its run is a "batched" marker
                if not batching and (state is None or RunStatus(state["status"]).terminal):
                    continue
                at = due_of(key)
                due = at if due is None else min(due, at)
        return due

    # --- recovery ---------------------------------------------------------------------

    @classmethod
    def recover(cls, app: App, log: list[Durable], *, now_ms: int, **options: Any) -> Engine:
        """The engine a new worker finds when the last one died after ``log``.

        Topics, state and waits are what ``log`` made durable; each journal and
        ``events`` are read again from their committed offsets, and each function
        partition gets a ``resume`` record, as after a reassignment.
        """
        engine = cls(app, clock=ManualClock(now_ms), **options)
        engine.generation = sum(
            1 for e in log if isinstance(e, Appended) and isinstance(e.item, rec.Resume)
        )
        engine.log.clear()
        for topic in engine.topics.values():
            topic.clear()
        writes: dict[str, list[tuple[bytes, str | None, Any]]] = {s: [] for s in engine.stores}
        for item in log:
            if isinstance(item, Appended):
                engine.topics[item.topic].append((item.key, item.item, item.at_ms))
                if item.topic == RUNS:
                    engine.history[item.key] = item.item
            elif isinstance(item, Wrote):
                writes[item.function].append((item.key, item.kind, item.body))
            elif isinstance(item, WaitWrote):
                if item.wait is None:
                    engine.waits.remove(item.key)
                else:
                    engine.waits.add(item.wait)
            elif isinstance(item, Deduped):
                engine.dedup[item.key] = DedupEntry.from_dict(item.entry)
            else:
                engine.committed[item.topic] = item.offset
        engine.log.extend(log)
        for slug, done in writes.items():
            engine.stores[slug] = MemoryRunStore.from_writes(done)
        engine.positions = dict(engine.committed)
        engine._start_lifecycles()
        return engine

    def _start_lifecycles(self) -> None:
        self.generation += 1
        for fn in self.functions.values():
            token = f"{fn.slug}-{self.generation}"
            life = PartitionLifecycle(
                fn,
                0,
                self.stores[fn.slug],
                functions=self.functions,
                limits=self.limits,
                resume_token=token,
            )
            self.lifecycles[fn.slug] = life
            self._append(journal_topic(fn.slug), "", rec.Resume(token))
        #: The app's gate (env-scoped limits), on the topic ``journal:~gate``.
        self.gate = EnvGate(self.stores[GATE])

    # --- processing -------------------------------------------------------------------

    async def run_until_idle(self) -> None:
        """Process every record, and every timer due now, until nothing is left."""
        while True:
            if await self._step():
                continue
            if self._held or self._held_forwards:
                await self._flush_held()  # nothing else to wait for: acks come
                continue
            if not self._fire_due():
                return

    async def _step(self) -> bool:
        for topic, items in self.topics.items():
            if topic == RUNS:
                continue  # nobody reads it but `runs()`
            offset = self.positions[topic]
            if offset < len(items):
                self.positions[topic] = offset + 1
                key, item, at_ms = items[offset]
                if topic == EVENTS:
                    self._route(item, at_ms)
                    await self._end_unit(topic, offset, [])
                else:
                    slug = topic.split(":", 1)[1]
                    store = self.stores[slug]
                    mark = len(store.writes)
                    life = self.gate if slug == GATE else self.lifecycles[slug]
                    now = self.clock.now_ms()
                    await self._carry_out(slug, life.handle(item, key, now, offset))
                    writes: list[Durable] = [
                        Wrote(slug, k, kind, body) for k, kind, body in store.writes[mark:]
                    ]
                    await self._end_unit(topic, offset, writes)
                return True
        return False

    async def _end_unit(self, topic: str, offset: int, writes: list[Durable]) -> None:
        """The unit's writes become durable (now, or after the next unit's sends), then
        its offset is committed (every ``commit_every`` records); detached runs'
        forwarders go on once the writes that detached them are durable."""
        done = self._since_commit.get(topic, 0) + 1
        commit: list[Durable] = []
        if done >= self.commit_every:
            commit = [Committed(topic, offset + 1)]
            done = 0
        self._since_commit[topic] = done
        forwards, self._forwards = self._forwards, []
        if self.lag_writes:
            await self._flush_held()
            self._held, self._held_forwards = writes + commit, forwards
        else:
            self.log.extend(writes + commit)
            for slug, run in forwards:
                await self._forward(slug, run)

    async def _flush_held(self) -> None:
        held, forwards = self._held, self._held_forwards
        self._held, self._held_forwards = [], []
        self.log.extend(held)
        for slug, run in forwards:
            await self._forward(slug, run)

    def _fire_due(self) -> bool:
        fired = False
        for life in self.lifecycles.values():
            for cmd in life.fire_due(self.clock.now_ms()):
                if isinstance(cmd, Journal):
                    self._journal(cmd)
                    fired = True
        return fired

    def _route(self, event: Event, at_ms: int) -> None:
        now = self.clock.now_ms()
        functions = list(self.functions.values())
        if event.name.startswith("inngest/"):
            functions = [fn for fn in functions if fn.matches(event)]
        entry = self.dedup.get(event.key) if remembers(event) else None
        window = self.limits.dedup_window_ms
        decision = route(event, functions, entry, epoch=0, now_ms=now, window_ms=window)
        not_before = event.ts if event.ts and event.ts > now + 1000 else None
        for start in decision.starts:
            begin = rec.Start(start.run_id, event.model_dump(), start.idempotency, not_before)
            self._append(journal_topic(start.function), start.key, begin)
        if not decision.duplicate_of:
            for wait in self.waits.matches(event, at_ms):
                self.waits.remove(wait.key)
                if wait.kind == "cancel":
                    record: rec.Record = rec.Cancel(
                        wait.run_id, f"event {event.name} ({event.internal_id})"
                    )
                else:
                    record = rec.Resolve(wait.run_id, wait.step_id, output=event.model_dump())
                self._append(journal_topic(wait.function), wait.run_key, record)
        if decision.dedup is not None:
            # The router's writes depend on no send: durable with its unit.
            self.dedup[event.key] = decision.dedup
            self.log.append(Deduped(event.key, decision.dedup.to_dict()))

    async def _carry_out(self, slug: str, commands: Iterable[Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, Activate):
                # One that a run ending inline let start goes after that run, not
                # inside it (as in the workers: a queue of runs does not nest).
                if self._pumping:
                    self._deferred.append((slug, cmd.run))
                    continue
                await self._activate(slug, cmd.run)
                while self._deferred:
                    await self._activate(*self._deferred.pop(0))
            elif isinstance(cmd, Release):
                if cmd.stop and cmd.run.driver is not None:
                    cmd.run.driver.cancel()
            elif isinstance(cmd, Announce):
                self.announced.append(cmd.event)
                self._append(EVENTS, cmd.event.key, cmd.event)
            elif isinstance(cmd, SendEvent):
                self._append(EVENTS, cmd.event.key, cmd.event)
            elif isinstance(cmd, Journal):
                self._journal(cmd)
            elif isinstance(cmd, Register):
                self.waits.add(cmd.wait)
                self.log.append(WaitWrote(cmd.wait.key, cmd.wait))
            elif isinstance(cmd, Unregister):
                self.waits.remove(cmd.key)
                self.log.append(WaitWrote(cmd.key, None))
            elif isinstance(cmd, History):
                run_id = str(cmd.record["run_id"])
                self.history[run_id] = cmd.record
                self._append(RUNS, run_id, cmd.record)

    def _journal(self, cmd: Journal) -> None:
        topic = journal_topic(cmd.function)
        if topic not in self.topics:
            raise ConfigError(f"no function {cmd.function!r} in app {self.app.app_id!r}")
        self._append(topic, cmd.key, cmd.record)

    def _append(self, topic: str, key: str, item: Any) -> None:
        at = self.clock.now_ms()
        self.topics[topic].append((key, item, at))
        self.log.append(Appended(topic, key, item, at))

    async def _activate(self, slug: str, run: LiveRun) -> None:
        fn = self.functions[slug]
        life = self.lifecycles[slug]
        state = run.state
        run.driver = fn.driver(
            RunInput(
                run.run_id, slug, Event.model_validate(state.event), state.batch(), state.attempt
            ),
            run.memos,
            clock=self.clock,
            retry=RetryPolicy(retries=fn.retries, scale=self.retry_scale),
        )
        run.driver.start()
        inline = 0
        self._pumping = True
        try:
            while life.is_live(run):
                if self.detach_after is not None and inline >= self.detach_after:
                    life.detach(run)
                    self._forwards.append((slug, run))
                    return
                effect = await run.driver.next_effect()
                if effect is None:
                    await self._carry_out(slug, life.abandon(run, self.clock.now_ms()))
                    return
                inline += 1
                self._count(effect)
                await self._carry_out(slug, life.apply(run, effect, self.clock.now_ms()))
        finally:
            self._pumping = False

    async def _forward(self, slug: str, run: LiveRun) -> None:
        if not self.lifecycles[slug].is_live(run):
            return  # cancelled or revoked meanwhile
        async for effect in run.driver.effects():
            self._count(effect)
            self._append(journal_topic(slug), run.state.key, rec.EffectRecord(run.run_id, effect))

    def _count(self, effect: Any) -> None:
        if isinstance(effect, StepCompleted | StepFailed) and effect.op == "run":
            outcome = "completed" if isinstance(effect, StepCompleted) else "failed"
            self.executions.append(Execution(effect.run_id, effect.name, outcome, len(self.log)))


def _sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("call the *_async methods of Engine from async code")
