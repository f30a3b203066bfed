"""One Faust agent per user function: runs its runs, durably.

The function's topic is the runs' journal: ``start`` records (from the router),
``effect`` records (effects of a run that finished outside the agent loop),
``wake`` records (timers) and ``resume`` markers (after a rebalance). Every
record of a run is keyed by its routing key (the concurrency key, or the run
id), so one run lives on one partition and the table writes it causes land in
that partition's RocksDB database and changelog.

Execution is a hybrid (see docs/runtime.md): when a record activates a run, the
agent pumps the run's effects *inline* for a short budget, applying them to the
table inside the stream iteration. A run that finishes within the budget costs
one table write (its final state) plus its system events. A run still busy when
the budget ends is detached: a forwarder task sends its later effects through
the journal, and the agent applies them when it reads them back. Either way the
run's coroutine stays in memory between steps, so a run never re-executes from
the top except after a restart, a rebalance or a timer (retry backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.store import TableState
from agents.timers import PREFIX as TIMER_PREFIX
from agents.timers import PartitionTimers, timer_key
from streams.app import Function
from streams.core import (
    Effect,
    ErrorInfo,
    EventsSent,
    Memo,
    RunCompleted,
    RunDriver,
    RunFailed,
    RunInput,
    RunSuspended,
    StepCompleted,
    StepFailed,
    StepWaiting,
    apply_effect,
    effect_from_dict,
    effect_to_dict,
)
from streams.core.memo import completion
from streams.core.step_ids import sent_event_id
from streams.durations import to_ms
from streams.event import Event, accept
from streams.expressions import event_vars
from streams.ids import time_prefix
from streams.serde.internal import JsonBodyCodec
from streams.waits import Wait, accepted_ms, index_hint, trigger_for

if TYPE_CHECKING:
    from agents.worker import Worker

log = logging.getLogger(__name__)

RUN_RECORDS = JsonBodyCodec("steplog.RunRecord")

RUN = b"r"  # r<run id>            -> run state
ACTIVE = b"a"  # a<run id>         -> marker: running when last persisted (resume it)
MEMO = b"m"  # m<run id>|<step>    -> memo
IDEMPOTENCY = b"i"  # i<hash of value> -> the run that holds an idempotency key


def memo_prefix(run_id: str) -> bytes:
    return MEMO + run_id.encode() + b"|"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


#: The error of a cancelled run (Inngest's message).
CANCELLED = {"name": "FunctionCancelledError", "message": "function cancelled", "stack": None}
#: How long a Cancel rule without a timeout listens (its run ends it sooner).
CANCEL_HORIZON_MS = 366 * 24 * 3600 * 1000
TERMINAL = ("completed", "failed", "cancelled")
#: Finished runs are deleted by a sweep of their partition at most this often ...
SWEEP_EVERY_MS = 60_000
#: ... looking at up to this many run states per sweep record.
SWEEP_BATCH = 500


@dataclass
class ActiveRun:
    """A run whose coroutine lives in this worker."""

    run_id: str
    key: bytes
    partition: int
    state: dict[str, Any]
    driver: RunDriver
    memos: dict[str, Memo] = field(default_factory=dict)
    #: Memos produced inline and not yet written (skipped if the run ends in the pump).
    unwritten: list[Memo] = field(default_factory=list)
    persisted: bool = False
    detached: bool = False
    forwarder: asyncio.Task[None] | None = None
    #: A waiting step was completed from outside while this activation ran: when it
    #: suspends, wake it again at once instead of at its timer.
    woken: bool = False


class FunctionRuntime:
    """The agent, table and timers of one user function."""

    def __init__(self, worker: Worker, fn: Function) -> None:
        self.worker = worker
        self.fn = fn
        self.slug = fn.slug
        app = worker.faust
        settings = worker.settings
        base = f"steplog-{worker.app.app_id}-fn-{fn.fn_id}"
        self.topic = app.topic(
            settings.topic(base),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            config=worker.topic_config,
        )
        self.table = worker.state_table(
            f"{fn.fn_id}-state", f"{base}-state-changelog", config=worker.topic_config
        )
        self.state = TableState(self.table)
        self.active: dict[str, ActiveRun] = {}
        self.timers: dict[int, PartitionTimers] = {}
        self.retention_ms = int(settings.run_retention.total_seconds() * 1000)
        #: How often each partition is swept for runs past their retention.
        self.sweep_every_ms = min(max(self.retention_ms // 8, 100), SWEEP_EVERY_MS)
        app.agent(self.topic, name=f"steplog-fn-{fn.fn_id}")(self._agent)

    # --- the agent loop -----------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                kind, body, rec = RUN_RECORDS.decode(event.value)
            except Exception:
                log.exception(
                    "%s[%s]@%s: undecodable journal record", msg.topic, msg.partition, msg.offset
                )
                continue
            try:
                await self._handle(kind, rec["run_id"], body, msg.partition, msg.key or b"")
            except Exception:
                log.exception(
                    "%s[%s]@%s: %s record of run %s failed",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    kind,
                    rec["run_id"],
                )

    async def _handle(self, kind: str, run_id: str, body: Any, partition: int, key: bytes) -> None:
        if kind == "start":
            await self._start(run_id, body, partition, key)
        elif kind == "effect":
            await self._journaled_effect(run_id, body, partition)
        elif kind == "wake":
            await self._wake(body, partition)
        elif kind == "resume":
            await self._resume(partition)
        elif kind == "sweep":
            await self._sweep(partition, body.get("from"))
        elif kind == "resolve":
            await self._resolve(run_id, body, partition)
        elif kind == "cancel":
            await self._cancel(run_id, body.get("reason", "cancelled"), partition)
        else:
            log.warning("run %s: unknown journal record kind %r", run_id, kind)

    # --- starting and activating runs ---------------------------------------------

    async def _start(self, run_id: str, body: Any, partition: int, key: bytes) -> None:
        if self.state.get(RUN + run_id.encode()) is not None or run_id in self.active:
            return  # a re-delivered start: the run exists already
        if body.get("idempotency") is not None and not self._first_for_key(
            run_id, body["idempotency"], partition, key
        ):
            return
        now = now_ms()
        state: dict[str, Any] = {
            "status": "running",
            "function_id": self.slug,
            "key": key.decode(),
            "event": body["event"],
            "attempt": 0,
            "started_ms": now,
        }
        if body.get("invoker"):
            state["invoker"] = body["invoker"]
        event = Event.model_validate(body["event"])
        not_before = int(body.get("not_before") or 0)
        timeouts = self.fn.timeouts
        if timeouts is not None and timeouts.start is not None:
            waited = now - max(accepted_ms(event), not_before)
            if waited > to_ms(timeouts.start):
                run = ActiveRun(run_id, key, partition, state, driver=None)  # type: ignore[arg-type]
                await self._finish(run, "cancelled", error=CANCELLED)
                return
        await self._listen_for_cancels(run_id, key.decode(), event, now)
        if timeouts is not None and timeouts.finish is not None:
            due = max(now, not_before) + to_ms(timeouts.finish)
            self._set_timer(partition, due, run_id, "timeout", key.decode())
        if not_before > now:
            # An event with a future ts: the run exists now (dedup) and starts then.
            state.update({"status": "scheduled", "persisted": True})
            self.state.put(RUN + run_id.encode(), "run", state)
            self._set_timer(partition, not_before, run_id, "wake", key.decode())
            return
        await self._activate(run_id, state, {}, partition, key)

    async def _listen_for_cancels(self, run_id: str, key: str, event: Event, now: int) -> None:
        """Register the function's Cancel rules for this run (see agents/waits.py)."""
        trigger = event_vars(event)
        since = accepted_ms(event)
        for i, rule in enumerate(self.fn.cancel):
            horizon = to_ms(rule.timeout) if rule.timeout is not None else CANCEL_HORIZON_MS
            await self.worker.waits.register(
                Wait(
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
            )

    async def _activate(
        self,
        run_id: str,
        state: dict[str, Any],
        memos: dict[str, Memo],
        partition: int,
        key: bytes,
    ) -> None:
        await self.worker.slots.acquire()
        event = Event.model_validate(state["event"])
        driver = self.fn.driver(
            RunInput(run_id, self.slug, event, (), int(state.get("attempt", 0))),
            memos,
            retry=self.worker.retry_policy(self.fn),
            executor=self.worker.executor,
        )
        run = ActiveRun(
            run_id, key, partition, state, driver, dict(memos), persisted="persisted" in state
        )
        self.active[run_id] = run
        driver.start()
        await self._pump(run)

    async def _pump(self, run: ActiveRun) -> None:
        """Apply the run's effects inline for up to the budget, then detach it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.worker.inline_budget
        while run.run_id in self.active:
            try:
                effect = await run.driver.next_effect(max(deadline - loop.time(), 0.0))
            except TimeoutError:
                break
            if effect is None:
                self._release(run)
                return
            await self._apply(run, effect)
        if run.run_id not in self.active:
            return
        # Still busy: make what it did so far durable, then forward the rest.
        self._persist(run, active=True)
        run.detached = True
        run.forwarder = asyncio.ensure_future(self._forward(run))

    async def _forward(self, run: ActiveRun) -> None:
        """Send a detached run's effects through the journal, in order."""
        try:
            async for effect in run.driver.effects():
                await self._journal(
                    run.key, run.partition, "effect", run.run_id, effect_to_dict(effect)
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "run %s: could not forward its effects; it resumes on restart", run.run_id
            )

    async def _journal(self, key: bytes, partition: int, kind: str, run_id: str, body: Any) -> None:
        value = RUN_RECORDS.encode(kind, body, run_id=run_id, at_ms=now_ms())
        await self.topic.send(key=key, value=value, partition=partition)

    # --- applying effects -----------------------------------------------------------

    async def _journaled_effect(self, run_id: str, body: Any, partition: int) -> None:
        run = self.active.get(run_id)
        if run is None:
            run = self._stub(run_id, partition)
            if run is None:
                return  # the run ended already (a duplicate effect)
        await self._apply(run, effect_from_dict(body), journaled=True)

    def _stub(self, run_id: str, partition: int) -> ActiveRun | None:
        """An ActiveRun without a coroutine, to apply effects of a run gone from memory."""
        state = self.state.get(RUN + run_id.encode())
        if state is None or state["status"] in TERMINAL:
            return None
        memos = self._load_memos(partition, run_id)
        return ActiveRun(
            run_id,
            state["key"].encode(),
            partition,
            state,
            driver=None,  # type: ignore[arg-type]
            memos=memos,
            persisted=True,
        )

    async def _apply(self, run: ActiveRun, effect: Effect, *, journaled: bool = False) -> None:
        if isinstance(effect, StepCompleted | StepFailed | StepWaiting):
            memo = apply_effect(run.memos, effect)
            if memo is not None:
                if journaled:
                    self._write_memo(run, memo)
                else:
                    run.unwritten.append(memo)
            if isinstance(effect, StepWaiting):
                await self._set_up_waiting(run, effect)
            elif effect.op == "wait":
                await self.worker.waits.unregister(f"{run.run_id}|{effect.step_id}")
        elif isinstance(effect, EventsSent):
            for sent in effect.events:
                await self.worker.send_event(sent)
        elif isinstance(effect, RunCompleted):
            await self._finish(run, "completed", result=effect.result)
        elif isinstance(effect, RunFailed):
            if effect.retry_at_ms is None:
                await self._finish(run, "failed", error=effect.error.to_dict())
            else:
                run.state["attempt"] = effect.attempt + 1
                self._suspend(run, effect.retry_at_ms, "retry")
        elif isinstance(effect, RunSuspended):
            self._suspend(run, effect.wake_at_ms, effect.reason)

    async def _set_up_waiting(self, run: ActiveRun, effect: StepWaiting) -> None:
        """Register a wait, or start an invoked run (a sleep needs only its timer)."""
        spec = effect.spec
        if effect.op == "wait":
            hint = spec.get("hint")
            await self.worker.waits.register(
                Wait(
                    function=self.slug,
                    run_id=run.run_id,
                    step_id=effect.step_id,
                    run_key=run.state["key"],
                    event=spec["event"],
                    if_exp=spec.get("if_exp"),
                    registered_ms=int(spec.get("registered_ms", effect.started_ms)),
                    expires_ms=effect.due_ms,
                    trigger=trigger_for(spec.get("if_exp"), spec.get("trigger") or {}),
                    hint=(str(hint[0]), str(hint[1])) if hint else None,
                )
            )
        elif effect.op == "invoke":
            await self._invoke(run, effect)

    async def _invoke(self, run: ActiveRun, effect: StepWaiting) -> None:
        target = self.worker.runtimes.get(str(effect.spec.get("function")))
        invoker = {
            "function": self.slug,
            "run_id": run.run_id,
            "step_id": effect.step_id,
            "key": run.state["key"],
        }
        if target is None:
            known = ", ".join(sorted(self.worker.runtimes)) or "none"
            error = {
                "name": "FunctionNotFoundError",
                "message": f"step.invoke({effect.name!r}): no function "
                f"{effect.spec.get('function')!r} in app {self.worker.app.app_id!r} "
                f"(functions: {known})",
                "stack": None,
            }
            await self._journal(
                run.key,
                run.partition,
                "resolve",
                run.run_id,
                {"step_id": effect.step_id, "error": error},
            )
            return
        event_id = sent_event_id(run.run_id, effect.step_id, 0)
        child_event = accept(
            Event(name="inngest/function.invoked", data=effect.spec.get("data") or {}),
            at_ms=effect.started_ms,
            internal_id=event_id,
            allow_reserved=True,
        )
        child_run = sent_event_id(run.run_id, effect.step_id, 1)
        key = target.fn.run_key(child_event) or child_run
        body = {"event": child_event.model_dump(), "invoker": invoker, "idempotency": None}
        await target.topic.send(
            key=key.encode(),
            value=RUN_RECORDS.encode("start", body, run_id=child_run, at_ms=now_ms()),
        )

    def _write_memo(self, run: ActiveRun, memo: Memo) -> None:
        self.state.put(memo_prefix(run.run_id) + memo.step_id.encode(), "memo", memo.to_dict())

    def _persist(self, run: ActiveRun, *, active: bool) -> None:
        """Write the run's state and its unwritten memos (it outlives this pump)."""
        for memo in run.unwritten:
            self._write_memo(run, memo)
        run.unwritten.clear()
        run.state["persisted"] = True
        self.state.put(RUN + run.run_id.encode(), "run", run.state)
        if active:
            self.state.put(ACTIVE + run.run_id.encode(), "run", {"key": run.state["key"]})
        elif run.persisted:
            self.state.delete(ACTIVE + run.run_id.encode())
        run.persisted = True

    def _suspend(self, run: ActiveRun, wake_at_ms: int | None, reason: str) -> None:
        run.state["status"] = {"retry": "retrying", "sleep": "sleeping"}.get(reason, "waiting")
        self._persist(run, active=False)
        if run.woken:
            wake_at_ms = now_ms()  # a waiting step completed meanwhile: go on now
        if wake_at_ms is not None:
            self._set_timer(run.partition, wake_at_ms, run.run_id, "wake", run.state["key"])
        self._release(run)
        self.worker.history(run, self.slug)

    # --- completing waiting steps and cancelling runs from outside -------------------

    async def _resolve(self, run_id: str, body: Any, partition: int) -> None:
        """A waiting step's event arrived, or its invoked run ended: complete it."""
        step_id = body["step_id"]
        error = ErrorInfo.from_dict(body["error"]) if body.get("error") else None
        run = self.active.get(run_id)
        if run is None:
            run = self._stub(run_id, partition)
            if run is None:
                return  # the run ended (e.g. cancelled) before the event came
        memo = run.memos.get(step_id)
        if memo is None or memo.status != "waiting":
            return  # completed already (a timeout, or another matching event)
        done = completion(run_id, memo, now_ms(), output=body.get("output"), error=error)
        new = apply_effect(run.memos, done)
        if new is not None:
            self._write_memo(run, new)
        if memo.op == "wait":
            await self.worker.waits.unregister(f"{run_id}|{step_id}")
        if run.driver is not None:
            run.woken = True  # its activation learns of it when it suspends
            return
        run.state["status"] = "running"
        await self._activate(run_id, run.state, run.memos, partition, run.key)

    async def _cancel(self, run_id: str, reason: str, partition: int) -> None:
        """Cancel a run between steps: a Cancel rule, a timeout, the API or the CLI."""
        run = self.active.get(run_id)
        if run is None or run.partition != partition:
            # Requests by run id reach every partition: only the run's own acts.
            if self.state.get_in(partition, RUN + run_id.encode()) is None:
                return
            run = self._stub(run_id, partition)
            if run is None:
                return  # ended already
        else:
            if run.forwarder is not None:
                run.forwarder.cancel()
            run.driver.cancel()
        log.info("run %s of %s: cancelled (%s)", run_id, self.slug, reason)
        await self._finish(run, "cancelled", error=CANCELLED)

    async def _finish(
        self,
        run: ActiveRun,
        status: str,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        ended = now_ms()
        run.state.update({"status": status, "ended_ms": ended})
        # What others wait for goes to the producer first; the final state follows
        # through Faust's table buffer, so it reaches Kafka later: a crash leaves the end
        # to be announced again (the same event ids) rather than a finished run whose
        # function.finished was lost.
        await self.worker.system_events(self.slug, run, status, result=result, error=error)
        invoker = run.state.get("invoker")
        if invoker:
            await self._answer_invoker(run, invoker, status, result, error)
        for memo in run.memos.values():
            if memo.status == "waiting" and memo.op == "wait":
                await self.worker.waits.unregister(f"{run.run_id}|{memo.step_id}")
        for i in range(len(self.fn.cancel)):
            await self.worker.waits.unregister(f"{run.run_id}|cancel:{i}")
        if run.persisted:
            for key, _ in list(self.state.scan(run.partition, memo_prefix(run.run_id))):
                self.state.delete(key)
            self.state.delete(ACTIVE + run.run_id.encode())
        run.unwritten.clear()
        final = {
            k: run.state[k]
            for k in ("status", "function_id", "key", "started_ms", "ended_ms", "attempt")
        }
        # Deleted after the retention period by a sweep of the partition (no timer).
        self.state.put(RUN + run.run_id.encode(), "run", final)
        self._release(run)
        self.worker.history(run, self.slug, result=result, error=error)

    async def _answer_invoker(
        self,
        run: ActiveRun,
        invoker: dict[str, Any],
        status: str,
        result: Any,
        error: dict[str, Any] | None,
    ) -> None:
        """Complete the ``step.invoke`` that started this run, in its caller's journal."""
        caller = self.worker.runtimes.get(invoker["function"])
        if caller is None:
            return
        body: dict[str, Any] = {"step_id": invoker["step_id"]}
        if status == "completed":
            body["output"] = result
        else:
            detail = (error or {}).get("message", status)
            body["error"] = {
                "name": "InvokedFunctionError",
                "message": f"invoked function {self.slug} {status}: {detail}",
                "stack": (error or {}).get("stack"),
            }
        await caller.topic.send(
            key=str(invoker["key"]).encode(),
            value=RUN_RECORDS.encode("resolve", body, run_id=invoker["run_id"], at_ms=now_ms()),
            force=True,
        )

    def _release(self, run: ActiveRun) -> None:
        if self.active.get(run.run_id) is run:
            del self.active[run.run_id]
            self.worker.slots.release()

    def _first_for_key(self, run_id: str, value: str, partition: int, key: bytes) -> bool:
        """Claim an idempotency key for ``run_id``; False if a run holds it already."""
        ikey = IDEMPOTENCY + hashlib.sha256(value.encode()).hexdigest()[:32].encode()
        held = self.state.get(ikey)
        if held is not None and held["run_id"] != run_id:
            log.info(
                "%s: idempotency key %r already started run %s; skipping run %s",
                self.slug,
                value,
                held["run_id"],
                run_id,
            )
            return False
        window = int(self.worker.settings.dedup_window.total_seconds() * 1000)
        self.state.put(ikey, "idem", {"run_id": run_id, "at_ms": now_ms()})
        self._set_timer(
            partition, now_ms() + window, run_id, "idempotency", key.decode(), ikey=ikey.decode()
        )
        return True

    # --- timers ---------------------------------------------------------------------

    def _set_timer(
        self, partition: int, due_ms: int, run_id: str, kind: str, key: str, **extra: str
    ) -> None:
        tkey = timer_key(due_ms, run_id, kind)
        self.state.put(tkey, "timer", {"run_id": run_id, "kind": kind, "key": key, **extra})
        self.timers.setdefault(partition, PartitionTimers()).add(tkey)

    async def fire_due(self, now: int, window_ms: int) -> None:
        """Send wake records for due timers; slide each partition's loaded window."""
        for partition, timers in list(self.timers.items()):
            if not timers.ready:
                continue
            if timers.loaded_until_ms < now + window_ms // 2:
                until = now + window_ms
                start = TIMER_PREFIX + b"%013d" % (timers.loaded_until_ms + 1)
                upto = TIMER_PREFIX + b"%013d" % (until + 1)
                keys = list(self.state.scan_keys(partition, TIMER_PREFIX, upto, start=start))
                timers.load(keys, until)
            if now >= timers.next_sweep_ms:
                timers.next_sweep_ms = now + self.sweep_every_ms
                await self._journal(b"", partition, "sweep", "", {})
            for tkey in timers.pop_due(now):
                body = self.state.get(tkey)
                if body is None:
                    timers.discard(tkey)
                    continue
                await self._journal(
                    body["key"].encode(),
                    partition,
                    "wake",
                    body["run_id"],
                    {"timer": tkey.decode()},
                )

    async def _wake(self, body: Any, partition: int) -> None:
        tkey = body["timer"].encode()
        timer = self.state.get(tkey)
        self.timers.setdefault(partition, PartitionTimers()).discard(tkey)
        if timer is None:
            return  # fired twice (a restart between firing and applying)
        run_id = timer["run_id"]
        if timer["kind"] == "expire":  # written by versions before the sweep
            self._expire(partition, run_id)
        elif timer["kind"] == "idempotency":
            self.state.delete(timer["ikey"].encode())
        elif timer["kind"] == "timeout":
            await self._cancel(run_id, "finish timeout", partition)
        else:
            state = self.state.get(RUN + run_id.encode())
            if not (state is None or run_id in self.active or state["status"] in TERMINAL):
                state["status"] = "running"
                await self._activate(
                    run_id,
                    state,
                    self._load_memos(partition, run_id),
                    partition,
                    state["key"].encode(),
                )
        # Deleted last: changelog writes reach Kafka in order, so after a crash either
        # the activation's writes (run state, active marker) are durable or the timer
        # still is, and the re-read wake activates the run again.
        self.state.delete(tkey)

    async def _sweep(self, partition: int, start: str | None) -> None:
        """Forget finished runs whose retention is over, a batch at a time.

        Run ids are ULIDs whose time is at or before the run's start, so only keys
        older than the retention can be due: the scan stops at that time prefix.
        Runs still going (or ended lately) are passed over and met again next time.
        """
        now = now_ms()
        cutoff = now - self.retention_ms
        upto = RUN + time_prefix(max(cutoff + 1, 0)).encode()
        begin = RUN + start.encode() if start else None
        runs = self.state.scan(partition, RUN, upto, start=begin)
        for seen, (key, state) in enumerate(runs):
            if seen == SWEEP_BATCH:  # more to look at: go on in another record
                await self._journal(b"", partition, "sweep", "", {"from": key[1:].decode()})
                return
            ended = state.get("ended_ms")
            if state["status"] in TERMINAL and ended is not None and ended <= cutoff:
                self._expire(partition, key[1:].decode())

    def _expire(self, partition: int, run_id: str) -> None:
        """Retention is over: forget everything about a finished run."""
        for key, _ in list(self.state.scan(partition, memo_prefix(run_id))):
            self.state.delete(key)
        self.state.delete(ACTIVE + run_id.encode())
        self.state.delete(RUN + run_id.encode())

    def _load_memos(self, partition: int, run_id: str) -> dict[str, Memo]:
        prefix = memo_prefix(run_id)
        return {
            key[len(prefix) :].decode(): Memo.from_dict(body)
            for key, body in self.state.scan(partition, prefix)
        }

    # --- rebalances -----------------------------------------------------------------

    async def send_resume(self, partitions: set[int]) -> None:
        """Ask the agent to resume partitions once it has read up to this point."""
        log.info("%s: assigned %s", self.topic.get_topic_name(), sorted(partitions))
        for p in partitions:
            await self._journal(b"", p, "resume", "", {})

    async def _resume(self, partition: int) -> None:
        timers = self.timers.setdefault(partition, PartitionTimers())
        if not timers.ready:
            timers.heap.clear()
            timers.loaded_until_ms = -1
            timers.ready = True
        marked = list(self.state.scan(partition, ACTIVE))
        log.info(
            "%s[%s]: resuming the partition (%d run(s) were active)",
            self.topic.get_topic_name(),
            partition,
            len(marked),
        )
        for key, body in marked:
            run_id = key[1:].decode()
            if run_id in self.active:
                continue
            state = self.state.get(RUN + run_id.encode())
            if state is None or state["status"] != "running":
                self.state.delete(key)
                continue
            log.info(
                "run %s: resuming on %s[%s] from its memos",
                run_id,
                self.topic.get_topic_name(),
                partition,
            )
            await self._activate(
                run_id, state, self._load_memos(partition, run_id), partition, body["key"].encode()
            )

    def revoke(self, partitions: set[int]) -> None:
        """Stop runs of partitions this worker lost; their new owner resumes them."""
        for run in list(self.active.values()):
            if run.partition in partitions:
                if run.forwarder is not None:
                    run.forwarder.cancel()
                run.driver.cancel()
                self._release(run)
        for p in partitions:
            self.timers.pop(p, None)

    async def stop(self) -> None:
        for run in list(self.active.values()):
            if run.forwarder is not None:
                run.forwarder.cancel()
                with contextlib.suppress(BaseException):
                    await run.forwarder
            run.driver.cancel()
        self.active.clear()
