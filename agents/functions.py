"""One Faust agent per user function: the edge between its journal and its lifecycle.

The function's topic is its runs' journal (``streams.lifecycle.records``): starts
from the router, cron and invokes, wake-ups from timers, resolutions of waits and
invokes, cancellations, effects of runs that went on outside the agent loop, and a
``resume`` marker after each assignment. The agent decodes each record, hands it to
the partition's :class:`~streams.lifecycle.PartitionLifecycle` - which makes every
decision - and carries out the commands it answers with. The state the lifecycle
writes goes to the partition's RocksDB database at once and to the changelog once
the record's sends are acknowledged (``agents.store.Outbox``).

Execution is a hybrid (docs/runtime.md): an ``Activate`` command starts the user
function as a task and its effects are applied *inline* for a short budget; a run
that finishes within it costs one state write. A run still busy when the budget
ends is detached: a forwarder task sends its later effects through the journal,
so a slow step never blocks the partition. The run's coroutine stays in memory
between steps; it is re-executed from the top only after a restart, a rebalance
or a timer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol

from agents.store import Changelog, Outbox, RocksRunStore
from agents.watchdog import dump_tasks
from streams.app import Function
from streams.clock import now_ms
from streams.core import RetryPolicy, RunInput
from streams.errors import DecodeError
from streams.event import Event
from streams.lifecycle import (
    Activate,
    Announce,
    Command,
    History,
    Journal,
    Limits,
    LiveRun,
    PartitionLifecycle,
    Register,
    Release,
    SendEvent,
    Unregister,
    records,
)
from streams.waits import Wait

log = logging.getLogger(__name__)

#: A partition whose resume marker was not read this long after it was sent gets it
#: again (its timers fire and its runs resume only once it is read).
RESUME_AGAIN_S = 5.0
#: Below this share of activations ending within the inline budget, the budget is
#: skipped (the run detaches at once) except for one activation in INLINE_PROBE_EVERY,
#: whose outcome keeps the share up to date (a mean over about INLINE_WINDOW of them).
INLINE_RARE = 0.05
INLINE_PROBE_EVERY = 16
INLINE_WINDOW = 20


class Emitter(Protocol):
    """Where runs' events go (agents.worker.Emitter)."""

    async def send_event(self, event: Event) -> asyncio.Future[Any]: ...

    async def announce(self, event: Event) -> asyncio.Future[Any]: ...

    def history(self, record: dict[str, Any]) -> None: ...


class Waits(Protocol):
    """Wait registrations (agents.waits.WaitRegistry)."""

    async def register(self, wait: Wait) -> asyncio.Future[Any]: ...

    async def unregister(self, key: str) -> asyncio.Future[Any]: ...


async def send_journal(journals: Mapping[str, Any], cmd: Journal) -> asyncio.Future[Any] | None:
    """Send ``cmd``'s record to its journal (a function's, or the gate's); the future of
    the send, or None when the app has no such journal (logged)."""
    topic = journals.get(cmd.function)
    if topic is None:
        log.warning("no function %s in this app: dropping a %s record", cmd.function, cmd)
        return None
    fut: asyncio.Future[Any] = await topic.send(
        key=cmd.key.encode(),
        value=records.encode(cmd.record, now_ms()),
        partition=cmd.partition,
        force=True,
    )
    return fut


class FunctionRuntime:
    """The agent, state and timers of one user function.

    ``journals`` maps every function's slug to its journal topic (for invokes and
    their answers); ``slots`` bounds the activations in memory across functions.
    """

    def __init__(
        self,
        fn: Function,
        *,
        faust: Any,
        topic: Any,
        table: Any,
        emitter: Emitter,
        waits: Waits,
        journals: Mapping[str, Any],
        functions: Mapping[str, Function],
        slots: asyncio.Semaphore,
        executor: Executor,
        retry: RetryPolicy,
        limits: Limits,
        inline_budget_s: float,
        inline_adaptive: bool = True,
    ) -> None:
        self.fn = fn
        self.slug = fn.slug
        self.topic = topic
        self.table = table
        self.emitter = emitter
        self.waits = waits
        self.journals = journals
        self.functions = functions
        self.slots = slots
        self.executor = executor
        self.retry = retry
        self.limits = limits
        self.inline_budget = inline_budget_s
        self.outbox = Outbox(Changelog(table))
        self.parts: dict[int, PartitionLifecycle] = {}
        #: partition -> (token, monotonic time first sent, times sent) of resume markers
        #: not applied yet.
        self.resuming: dict[int, tuple[str, float, int]] = {}
        #: Activations asked for while another one is applying its effects inline (a
        #: run that ends frees a concurrency slot for a queued one): started after it,
        #: not inside it, so that a queue of short runs does not nest one per run.
        self.pumping = False
        #: How often an activation given the budget ended within it (a moving mean),
        #: and activations so far; ``inline_adaptive``: skip the budget when rare.
        self.inline_rate = 1.0
        self.activations = 0
        self.inline_adaptive = inline_adaptive
        self.deferred: collections.deque[tuple[PartitionLifecycle, LiveRun]] = collections.deque()
        faust.agent(topic, name=f"steplog-fn-{fn.fn_id}")(self._agent)

    def lifecycle(self, partition: int, resume_token: str | None = None) -> PartitionLifecycle:
        life = self.parts.get(partition)
        if life is None:
            store = RocksRunStore(partition, self.outbox)
            life = PartitionLifecycle(
                self.fn,
                partition,
                store,
                functions=self.functions,
                limits=self.limits,
                resume_token=resume_token,
            )
            self.parts[partition] = life
        return life

    # --- the agent loop -----------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                record = records.decode(event.value)
            except DecodeError:
                log.exception(
                    "%s[%s]@%s: undecodable journal record", msg.topic, msg.partition, msg.offset
                )
                continue
            life = self.lifecycle(msg.partition)
            try:
                key = (msg.key or b"").decode()
                await self._carry_out(life, life.handle(record, key, now_ms(), msg.offset))
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

    async def _carry_out(self, life: PartitionLifecycle, commands: Iterable[Command]) -> None:
        outbox = self.outbox
        for cmd in commands:
            if isinstance(cmd, Activate):
                if self.pumping:
                    self.deferred.append((life, cmd.run))
                    continue
                await self._activate(life, cmd.run)
                while self.deferred:
                    await self._activate(*self.deferred.popleft())
            elif isinstance(cmd, Release):
                self._release(cmd.run, stop=cmd.stop)
            elif isinstance(cmd, Announce):
                outbox.send(await self.emitter.announce(cmd.event), cmd.event.name)
            elif isinstance(cmd, SendEvent):
                outbox.send(await self.emitter.send_event(cmd.event), cmd.event.name)
            elif isinstance(cmd, Journal):
                sent = await self._journal(cmd)
                if sent is not None:
                    outbox.send(sent, f"{type(cmd.record).__name__} to {cmd.function}")
            elif isinstance(cmd, Register):
                outbox.send(await self.waits.register(cmd.wait), f"wait {cmd.wait.key}")
            elif isinstance(cmd, Unregister):
                outbox.send(await self.waits.unregister(cmd.key), f"wait {cmd.key} removal")
            elif isinstance(cmd, History):
                self.emitter.history(cmd.record)

    async def _journal(self, cmd: Journal) -> asyncio.Future[Any] | None:
        return await send_journal(self.journals, cmd)

    # --- executing runs -------------------------------------------------------------

    async def _activate(self, life: PartitionLifecycle, run: LiveRun) -> None:
        await self.slots.acquire()
        if not life.is_live(run):  # cancelled or revoked while it waited for a slot
            self.slots.release()
            return
        state = run.state
        run.driver = self.fn.driver(
            RunInput(
                run.run_id,
                self.slug,
                Event.model_validate(state.event),
                state.batch(),
                state.attempt,
            ),
            run.memos,
            retry=self.retry,
            executor=self.executor,
        )
        run.driver.start()
        await self._pump(life, run)

    async def _pump(self, life: PartitionLifecycle, run: LiveRun) -> None:
        """Apply the run's effects inline for up to the budget, then detach it."""
        loop = asyncio.get_running_loop()
        budget = self.inline_budget
        # When this function's runs (almost) never end within the budget, waiting it out
        # only holds up the partition: detach at once, but try the budget now and then.
        self.activations += 1
        probing = self.inline_rate >= INLINE_RARE or self.activations % INLINE_PROBE_EVERY == 0
        if not probing and self.inline_adaptive:
            budget = 0.0
        deadline = loop.time() + budget
        driver = run.driver
        self.pumping = True
        try:
            while life.is_live(run):
                try:
                    effect = await driver.next_effect(max(deadline - loop.time(), 0.0))
                except TimeoutError:
                    break
                if effect is None:  # ended without a terminal effect: only a bug does that
                    log.error("run %s: its activation ended without an outcome", run.run_id)
                    await self._carry_out(life, life.abandon(run, now_ms()))
                    return
                await self._carry_out(life, life.apply(run, effect, now_ms()))
        finally:
            self.pumping = False
        if budget:
            ended = 0.0 if life.is_live(run) else 1.0
            self.inline_rate += (ended - self.inline_rate) / INLINE_WINDOW
        if life.is_live(run):
            life.detach(run)
            written = self.outbox.written()
            run.forwarder = asyncio.ensure_future(self._forward(life.partition, run, written))

    async def _forward(self, partition: int, run: LiveRun, written: asyncio.Event) -> None:
        """Send a detached run's effects through the journal, in order, once the state
        that detached it is on its way to the changelog."""
        try:
            await written.wait()
            async for effect in run.driver.effects():
                await self.topic.send(
                    key=run.state.key.encode(),
                    value=records.encode(records.EffectRecord(run.run_id, effect), now_ms()),
                    partition=partition,
                    force=True,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "run %s: could not forward its effects; it resumes on restart", run.run_id
            )

    def _release(self, run: LiveRun, *, stop: bool) -> None:
        if stop:
            if run.forwarder is not None:
                run.forwarder.cancel()
            if run.driver is not None:
                run.driver.cancel()
        if run.driver is not None:  # the activation held a slot
            self.slots.release()

    # --- timers and rebalances --------------------------------------------------------

    async def fire_due(self, now: int) -> None:
        """Send the wake-ups (and sweeps) that are due in this worker's partitions; send
        a resume marker again that was not applied within :data:`RESUME_AGAIN_S`."""
        for life in list(self.parts.values()):
            for cmd in life.fire_due(now):
                if isinstance(cmd, Journal):
                    await self._journal(cmd)
        if self.resuming:
            mono = time.monotonic()
            for p, (token, first, times) in list(self.resuming.items()):
                waiting = self.parts.get(p)
                if waiting is None or waiting.ready or waiting.resume_token != token:
                    del self.resuming[p]
                elif mono - first > RESUME_AGAIN_S * times:
                    log.warning(
                        "%s[%s]: resume marker not read after %.0fs; sending it again",
                        self.slug,
                        p,
                        mono - first,
                    )
                    if times == 3:
                        dump_tasks(f"{self.slug}[{p}] has not resumed for {mono - first:.0f}s")
                    await self._send_resume(p, token, first, times + 1)

    async def send_resume(self, partitions: set[int]) -> None:
        """Ask the agent to resume partitions once it has read up to this point."""
        log.info("%s: assigned %s", self.topic.get_topic_name(), sorted(partitions))
        for p in partitions:
            token = uuid.uuid4().hex
            self.parts.pop(p, None)
            self.lifecycle(p, resume_token=token)
            await self._send_resume(p, token)

    async def _send_resume(
        self, partition: int, token: str, first: float | None = None, times: int = 1
    ) -> None:
        self.resuming[partition] = (token, time.monotonic() if first is None else first, times)
        marker = records.encode(records.Resume(token), now_ms())
        await self.topic.send(key=b"", value=marker, partition=partition, force=True)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Stop runs of partitions this worker lost; their new owner resumes them."""
        for p in partitions:
            life = self.parts.pop(p, None)
            if life is not None:
                for cmd in life.revoke():
                    if isinstance(cmd, Release):
                        self._release(cmd.run, stop=True)

    async def stop(self) -> None:
        forwarders = [
            run.forwarder
            for life in self.parts.values()
            for run in life.active.values()
            if run.forwarder is not None
        ]
        self.revoke(list(self.parts))
        for task in forwarders:
            with contextlib.suppress(BaseException):
                await task
