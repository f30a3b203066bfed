"""One activation of a run: the user's handler against the memos known so far.

An activation starts the handler from the top. Each step call is matched by
its id: a memo answers at once (no body runs); a miss runs the body, emits the
outcome as an effect and - this is what keeps the cost per step flat - returns
the output to user code immediately, without waiting for the edge to make it
durable (optimistic continuation). The same activation keeps going until the
handler returns or raises, or a step asks to suspend (a retry backoff). Only a
restart, a rebalance or a wake-up after a suspension starts a new activation,
which replays from the top through the memos.

The driver is pure: time comes from a :class:`Clock`, threads from an
``Executor``, and everything it decides leaves as an ordered stream of effects.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, NoReturn

from streams.clock import Clock, SystemClock
from streams.core import running
from streams.core.context import Context, Group, Step
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
    TerminalEffect,
)
from streams.core.interrupts import Abort, Interrupt, Suspend, exit_error
from streams.core.memo import Memo
from streams.core.outputs import MAX_OUTPUT_BYTES, encode_output
from streams.core.retry import RetryPolicy, retry_after_ms
from streams.core.step_ids import StepId, StepIds
from streams.errors import (
    LimitExceededError,
    NonRetriableError,
    RetryAfterError,
    SerializationError,
    StepError,
    StepMisuseError,
)
from streams.event import Event

log = logging.getLogger(__name__)

#: Inngest's limit on steps per run.
MAX_STEPS = 1000

Handler = Callable[[Context], Awaitable[Any]]
StepBody = Callable[[StepId], Awaitable[Any]]

# The driver and readable id of the step whose body runs in this context (steps cannot
# nest). Sync bodies get a copy of the context in their thread, so it is seen there too.
_current_step: contextvars.ContextVar[tuple[RunDriver, str] | None] = contextvars.ContextVar(
    "steplog_current_step", default=None
)
_END = object()


@dataclass(frozen=True, slots=True)
class RunInput:
    """What starts a run: its id, the function's slug, the event(s), the attempt.

    ``events`` is the batch (empty means ``[event]``); ``attempt`` is the
    function-level attempt, 0 first, raised by one after each ``RunFailed``
    with a retry time.
    """

    run_id: str
    function_id: str
    event: Event
    events: tuple[Event, ...] = ()
    attempt: int = 0


@dataclass(slots=True)
class _SuspendRequest:
    reason: str
    wake_at_ms: int | None
    step: StepId | None


@dataclass(slots=True)
class _Flight:
    """Step bodies running now; the activation ends only when none is left."""

    count: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


class RunDriver:
    """Executes one activation of a run and emits its effects, in order.

    Use::

        driver = RunDriver(handler, RunInput(...), memos, clock=..., retry=...)
        driver.start()
        async for effect in driver.effects():   # ends after the terminal effect
            ...                                 # make it durable, in order

    ``memos`` maps hashed step ids to :class:`Memo`; the driver copies it and
    never writes to it (apply effects with :func:`streams.core.memo.apply_effect`).
    ``stop_after_step`` ends the activation after every step (``RunSuspended``
    with reason ``"replay"``): the always-replay test mode.
    """

    def __init__(
        self,
        handler: Handler,
        run: RunInput,
        memos: Mapping[str, Memo] | None = None,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        executor: Executor | None = None,
        logger: logging.Logger | None = None,
        stop_after_step: bool = False,
        max_steps: int = MAX_STEPS,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self.handler = handler
        self.run = run
        self.memos: dict[str, Memo] = dict(memos or {})
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.executor = executor
        self.log = logger or log
        self.stop_after_step = stop_after_step
        self.max_steps = max_steps
        self.max_output_bytes = max_output_bytes

        self._ids = StepIds()
        self._reached: set[str] = set()
        self._memos_left = len(self.memos)
        self._ran_a_body = False
        self._suspends: list[_SuspendRequest] = []
        self._fatal: ErrorInfo | None = None
        self._closed = False
        self._cancelled = False
        #: The handler returned or raised: no step may start any more.
        self._returned = False
        self._flight = _Flight()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._stream_ended = False
        self._consumed_end = False
        self._task: asyncio.Task[None] | None = None
        self.terminal: TerminalEffect | None = None
        #: Memos no step call reached; filled when the run completes or fails for good.
        self.unreached: list[Memo] = []

        events = list(run.events) or [run.event]
        self.context = Context(
            event=events[0],
            events=events,
            run_id=run.run_id,
            attempt=run.attempt,
            logger=_RunLogger(logging.getLogger(_logger_name(run.function_id)), self),
            step=Step(self),
            group=Group(self),
            function_id=run.function_id,
        )

    # --- Lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the handler as a Task on the running loop (call once)."""
        if self._task is not None:
            raise RuntimeError(f"run {self.run.run_id}: this activation was already started")
        self._task = asyncio.get_running_loop().create_task(
            self._main(), name=f"steplog run {self.run.run_id}"
        )

    def cancel(self) -> None:
        """Stop the activation without a terminal effect (partition revoked, shutdown).

        Sync step bodies already running in threads cannot be stopped; their
        outcome is dropped. The run resumes from its durable memos elsewhere.
        """
        self._cancelled = True
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
        self._end_stream()

    @property
    def done(self) -> bool:
        """True once the terminal effect was emitted (or the activation cancelled)."""
        return self._stream_ended

    @property
    def reached(self) -> frozenset[str]:
        """Hashed ids of the steps this activation has called so far."""
        return frozenset(self._reached)

    @property
    def replaying(self) -> bool:
        """True while user code is still being answered from memos only."""
        return not self._ran_a_body and self._memos_left > 0

    def next_activation(
        self, memos: Mapping[str, Memo], *, attempt: int | None = None
    ) -> RunDriver:
        """A new activation of the same run, from the top, with ``memos``."""
        run = self.run
        if attempt is not None:
            run = RunInput(run.run_id, run.function_id, run.event, run.events, attempt)
        return RunDriver(
            self.handler,
            run,
            memos,
            clock=self.clock,
            retry=self.retry,
            executor=self.executor,
            logger=self.log,
            stop_after_step=self.stop_after_step,
            max_steps=self.max_steps,
            max_output_bytes=self.max_output_bytes,
        )

    # --- Effects ------------------------------------------------------------------

    async def next_effect(self, timeout: float | None = None) -> Effect | None:
        """The next effect; None once the stream ended. Raises TimeoutError on timeout."""
        if self._consumed_end:
            return None
        if timeout is None:
            item = await self._queue.get()
        else:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        if item is _END:
            self._consumed_end = True
            return None
        effect: Effect = item
        return effect

    async def effects(self) -> AsyncIterator[Effect]:
        """Every effect in order; the iteration ends after the terminal effect."""
        while (effect := await self.next_effect()) is not None:
            yield effect

    def drain(self) -> list[Effect]:
        """The effects queued right now, without waiting."""
        out: list[Effect] = []
        while not self._consumed_end and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END:
                self._consumed_end = True
                break
            out.append(item)
        return out

    async def run_to_end(self) -> list[Effect]:
        """Start (if needed) and collect every effect of this activation."""
        if self._task is None:
            self.start()
        return [effect async for effect in self.effects()]

    # --- Called by Step / Group -----------------------------------------------------

    def check_open(self) -> None:
        """Raise the interrupt that ends user code if the activation is stopping."""
        if self._closed or self._fatal is not None:
            raise Abort()
        if self._suspends:
            raise Suspend()

    def track(self, tasks: Iterable[asyncio.Future[Any]]) -> None:
        """Remember branch tasks so that :meth:`cancel` can stop them."""
        for task in tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def make_call(
        self, handler: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[[], Awaitable[Any]]:
        """Wrap a step body: async ones are awaited, sync ones go to the thread pool."""
        if _is_async(handler):
            return lambda: handler(*args, **kwargs)

        async def in_thread() -> Any:
            loop = asyncio.get_running_loop()
            # The thread gets this context, so a step called from inside the body
            # (through a loop of its own, or run_coroutine_threadsafe) is seen as nested.
            value = await loop.run_in_executor(
                self.executor,
                contextvars.copy_context().run,
                functools.partial(handler, *args, **kwargs),
            )
            if inspect.isawaitable(value):  # a sync callable that returned a coroutine
                value = await value
            return value

        return in_thread

    def refuse_after_return(self, what: str) -> None:
        """Raise a clear error for a step started after the handler returned.

        Such a call comes from a coroutine awaited late or a task the user did not
        await: the run is over (or about to be), so nothing it would do is recorded.
        """
        if not self._returned or self._cancelled:
            return
        message = (
            f"{what} was called after the function returned, so it did not run and nothing "
            "was recorded: await every step (and every task or gather that calls steps) "
            "before the function returns"
        )
        self.log.warning("function %s, run %s: %s", self.run.function_id, self.run.run_id, message)
        raise StepMisuseError(message)

    def _step_id(self, user_id: str) -> StepId:
        outer = _current_step.get()
        if outer is not None and outer[0] is self:
            self.fail_run(
                StepMisuseError(
                    f"step {user_id!r} was called inside the body of step {outer[1]!r}: steps "
                    "cannot nest (a step's body is one unit that runs again on retry); call "
                    f"{user_id!r} from the function itself, before or after {outer[1]!r}, or "
                    "do its work inside that body without ctx.step"
                )
            )
        if not isinstance(user_id, str) or not user_id:
            self.fail_run(TypeError(f"a step id must be a non-empty string, got {user_id!r}"))
        sid = self._ids.next(user_id)
        if self._ids.count > self.max_steps:
            self.fail_run(
                LimitExceededError(
                    f"run {self.run.run_id} exceeded the limit of {self.max_steps} steps per "
                    f"run at step {sid.readable!r}; split the work across runs (send_event)"
                )
            )
        return sid

    def _reach(self, sid: StepId, memo: Memo | None) -> None:
        if memo is not None and sid.hashed not in self._reached:
            self._memos_left -= 1
        self._reached.add(sid.hashed)

    async def waiting_step(
        self, user_id: str, op: str, plan: Callable[[int], tuple[int, dict[str, Any]]]
    ) -> Any:
        """A step completed from outside the run (sleep, wait, invoke); see StepWaiting.

        ``plan(now_ms)`` gives the step's due time and spec the first time it is
        reached. Later activations answer from its memo: the output once the edge
        completed it, a suspension until it is due, and the timeout outcome after.
        Unlike ``run_step`` it is allowed while another branch is suspending, so
        that ``group.parallel`` over several waits registers all of them at once.
        """
        self.refuse_after_return(f"step.{op}({user_id!r})")
        if self._closed or self._fatal is not None:
            raise Abort()
        sid = self._step_id(user_id)
        memo = self.memos.get(sid.hashed)
        self._reach(sid, memo)
        now = self.clock.now_ms()
        if memo is not None:
            if memo.status == "completed":
                return memo.output
            if memo.status == "failed":
                error = memo.error or ErrorInfo("Error", f"{op} failed")
                if op == "invoke":
                    raise NonRetriableError(error.message)
                raise StepError(error.message, error.name, error.stack)
            if memo.status == "waiting" and memo.op == op:
                due = int(memo.extra["due_ms"])
                if now < due:
                    self._suspend(op, due, sid)
                return self._timed_out(sid, op, memo, now)
        due, spec = plan(now)
        self._ran_a_body = True
        if op == "sleep" and due <= now:
            self._emit(
                StepCompleted(self.run.run_id, sid.hashed, sid.readable, None, now, now, 0, op)
            )
            return None
        self._emit(StepWaiting(self.run.run_id, sid.hashed, sid.readable, op, now, due, spec))
        self._suspend(op, due, sid)

    def _timed_out(self, sid: StepId, op: str, memo: Memo, now: int) -> Any:
        """A waiting step reached its due time: a sleep ends, a wait gets None."""
        if op != "invoke":
            self._emit(
                StepCompleted(
                    self.run.run_id, sid.hashed, sid.readable, None, memo.started_ms, now, 0, op
                )
            )
            return None
        spec = memo.extra.get("spec") or {}
        message = (
            f"step.invoke({sid.readable!r}): {spec.get('function', 'the function')} did not "
            f"finish within its timeout ({(now - memo.started_ms) / 1000:.1f}s)"
        )
        error = ErrorInfo("InvokeTimeoutError", message)
        self._emit(
            StepFailed(
                self.run.run_id, sid.hashed, sid.readable, error, 0, None, memo.started_ms, now, op
            )
        )
        raise NonRetriableError(message)

    async def run_step(self, user_id: str, op: str, body: StepBody) -> Any:
        """The heart of memoization: answer from the memo, or run ``body`` once."""
        self.refuse_after_return(f"step.{op}({user_id!r})")
        self.check_open()
        sid = self._step_id(user_id)
        memo = self.memos.get(sid.hashed)
        if memo is not None and memo.status == "waiting":
            memo = None  # the code changed: a sleep/wait/invoke became a step.run
        attempt = 0
        self._reach(sid, memo)
        if memo is not None:
            if memo.status == "completed":
                return memo.output
            error = memo.error or ErrorInfo("Error", "step failed")
            if memo.status == "failed":
                raise StepError(error.message, error.name, error.stack)
            attempt = memo.attempts
            if memo.retry_at_ms is not None and memo.retry_at_ms > self.clock.now_ms():
                self._suspend("retry", memo.retry_at_ms, sid)
        self._ran_a_body = True
        return await self._execute(sid, op, body, attempt)

    def events_sent(self, sid: StepId, events: list[Event]) -> None:
        """Emit the events a ``send_event`` step produced (before its completion)."""
        self._emit(EventsSent(self.run.run_id, sid.hashed, sid.readable, tuple(events)))

    def fail_run(self, exc: BaseException) -> NoReturn:
        """Fail the run for good (not retried, not catchable by user code)."""
        if self._fatal is None:
            self._fatal = ErrorInfo.from_exception(exc)
            self.log.warning(
                "function %s, run %s fails for good (not retried): %s: %s",
                self.run.function_id,
                self.run.run_id,
                type(exc).__name__,
                exc,
            )
        raise Abort() from exc

    def not_implemented(self, what: str) -> NoReturn:
        self.fail_run(
            NotImplementedError(f"{what} is not implemented yet in this version of steplog")
        )

    # --- Internals ----------------------------------------------------------------

    async def _execute(self, sid: StepId, op: str, body: StepBody, attempt: int) -> Any:
        started = self.clock.now_ms()
        token = _current_step.set((self, sid.readable))
        noted = running.enter(running.UserCode(self.run.function_id, self.run.run_id, sid.readable))
        self._flight.enter()
        try:
            output = await body(sid)
        except Interrupt:
            raise
        except Exception as exc:
            self._step_failed(sid, op, exc, attempt, started)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit ...
            if self._cancelled:
                raise
            error = exit_error(exc, f"step {sid.readable!r}")
            self._step_failed(sid, op, error, attempt, started)
        finally:
            _current_step.reset(token)
            running.leave(noted)
            self._flight.leave()
        ended = self.clock.now_ms()
        try:
            value, text = encode_output(output, f"step {sid.readable!r}", self.max_output_bytes)
        except (SerializationError, LimitExceededError) as exc:
            self.fail_run(exc)
        self._emit(
            StepCompleted(
                self.run.run_id, sid.hashed, sid.readable, value, started, ended, attempt, op, text
            )
        )
        if self.stop_after_step:
            self._suspend("replay", None, sid)
        self.check_open()  # another branch may have asked to stop meanwhile
        return value

    def _step_failed(
        self, sid: StepId, op: str, exc: Exception, attempt: int, started: int
    ) -> NoReturn:
        ended = self.clock.now_ms()
        info = ErrorInfo.from_exception(exc)
        retry_at = self._retry_at(exc, attempt, ended, f"{self.run.run_id}:{sid.hashed}")
        self._emit(
            StepFailed(
                run_id=self.run.run_id,
                step_id=sid.hashed,
                name=sid.readable,
                error=info,
                attempt=attempt,
                retry_at_ms=retry_at,
                started_ms=started,
                ended_ms=ended,
                op=op,
            )
        )
        if retry_at is not None:
            self.log.info(
                "function %s, run %s: step %r attempt %d failed (%s: %s); retrying in %.1fs",
                self.run.function_id,
                self.run.run_id,
                sid.readable,
                attempt,
                info.name,
                info.message,
                (retry_at - ended) / 1000,
            )
            self._suspend("retry", retry_at, sid)
        self.log.warning(
            "function %s, run %s: step %r failed for good after %d attempt(s): %s: %s",
            self.run.function_id,
            self.run.run_id,
            sid.readable,
            attempt + 1,
            info.name,
            info.message,
        )
        if self.stop_after_step:
            self._suspend("replay", None, sid)
        raise StepError(info.message, info.name, info.stack) from exc

    def _retry_at(self, exc: Exception, attempt: int, now: int, seed: str) -> int | None:
        """When to retry after ``exc`` on ``attempt``, or None for a final failure."""
        if isinstance(exc, NonRetriableError | StepError) or not self.retry.can_retry(attempt):
            return None
        if isinstance(exc, RetryAfterError):
            try:
                return now + retry_after_ms(exc.retry_after, now)
            except ValueError:
                self.log.warning(
                    "run %s: RetryAfterError.retry_after %r is not a duration or time; "
                    "using the backoff table",
                    self.run.run_id,
                    exc.retry_after,
                )
        return self.retry.retry_at_ms(now, attempt, seed)

    def _suspend(self, reason: str, wake_at_ms: int | None, sid: StepId | None) -> NoReturn:
        self._suspends.append(_SuspendRequest(reason, wake_at_ms, sid))
        raise Suspend()

    def _emit(self, effect: Effect) -> None:
        if not self._cancelled and not self._stream_ended:
            self._queue.put_nowait(effect)

    def _end_stream(self) -> None:
        if not self._stream_ended:
            self._stream_ended = True
            self._queue.put_nowait(_END)

    async def _main(self) -> None:
        result: Any = None
        error: Exception | None = None
        noted = running.enter(running.UserCode(self.run.function_id, self.run.run_id))
        try:
            try:
                result = await self.handler(self.context)
                self._returned = True
            except Interrupt:
                pass
            except asyncio.CancelledError:
                if self._cancelled:
                    raise
                self._returned = True
                error = RuntimeError("the function was cancelled from inside its own code")
            except Exception as exc:
                self._returned = True
                error = exc
            except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit ...
                if self._cancelled:
                    raise
                self._returned = True
                error = exit_error(exc, "the function (outside any step)")
            # Steps still in flight (e.g. children of a user's asyncio.gather) finish
            # and emit their outcome before the terminal effect.
            await self._flight.idle.wait()
            self._closed = True
            terminal = self._decide(result, error)
        except asyncio.CancelledError:
            self._end_stream()
            return
        except Exception as exc:  # a bug in the driver: retry the attempt, never hang
            log.exception("run %s: the driver failed", self.run.run_id)
            terminal = self._function_failed(exc)
        finally:
            running.leave(noted)
        self.terminal = terminal
        self._emit(terminal)
        self._end_stream()

    def _decide(self, result: Any, error: Exception | None) -> TerminalEffect:
        run_id = self.run.run_id
        if self._fatal is not None:
            self._report_unreached()
            return RunFailed(run_id, self._fatal, self.run.attempt, None)
        if self._suspends:
            timed = [s for s in self._suspends if s.wake_at_ms is not None]
            first = min(timed, key=lambda s: s.wake_at_ms or 0) if timed else self._suspends[0]
            step = first.step
            return RunSuspended(
                run_id,
                first.reason,
                first.wake_at_ms,
                step.hashed if step else None,
                step.readable if step else None,
            )
        if error is not None:
            return self._function_failed(error)
        try:
            value, text = encode_output(result, "the function", self.max_output_bytes)
        except (SerializationError, LimitExceededError) as exc:
            self._report_unreached()
            return RunFailed(run_id, ErrorInfo.from_exception(exc), self.run.attempt, None)
        self._report_unreached()
        return RunCompleted(run_id, value, text)

    def _function_failed(self, error: Exception) -> RunFailed:
        now = self.clock.now_ms()
        attempt = self.run.attempt
        retry_at = self._retry_at(error, attempt, now, f"{self.run.run_id}:run")
        info = ErrorInfo.from_exception(error)
        if retry_at is None:
            self._report_unreached()
            self.log.warning(
                "function %s, run %s: failed for good on attempt %d: %s: %s",
                self.run.function_id,
                self.run.run_id,
                attempt,
                info.name,
                info.message,
            )
        else:
            self.log.info(
                "function %s, run %s: attempt %d failed (%s: %s); retrying",
                self.run.function_id,
                self.run.run_id,
                attempt,
                info.name,
                info.message,
            )
        return RunFailed(self.run.run_id, info, attempt, retry_at)

    def _report_unreached(self) -> None:
        """Memos the code did not reach this time: the code changed since they were made."""
        self.unreached = [m for k, m in self.memos.items() if k not in self._reached]
        if self.unreached:
            self.log.warning(
                "run %s: %d memoized step(s) were not reached and are ignored (the code "
                "changed since they ran?): %s",
                self.run.run_id,
                len(self.unreached),
                ", ".join(repr(m.name) for m in self.unreached),
            )


def _logger_name(function_id: str) -> str:
    return f"streams.functions.{function_id}" if function_id else "streams.functions"


def _is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async __call__ of an object
    )


class _RunLogger(logging.LoggerAdapter[logging.Logger]):
    """``ctx.logger``: prefixes the run id; silent while the activation replays memos."""

    def __init__(self, logger: logging.Logger, driver: RunDriver) -> None:
        super().__init__(logger, {"run_id": driver.run.run_id})
        self._driver = driver

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"run {self._driver.run.run_id}: {msg}", kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self._driver.replaying:
            super().log(level, msg, *args, **kwargs)
