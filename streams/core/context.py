"""What user code sees: ``ctx`` with ``ctx.step`` and ``ctx.group``.

These objects are thin: each call goes to the :class:`~streams.core.execution.RunDriver`
of the activation, which decides between returning a memo and running the body.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from streams.core import running
from streams.core.interrupts import Interrupt, exit_error
from streams.core.outputs import MAX_OUTPUT_BYTES
from streams.core.step_ids import StepId, sent_event_id
from streams.durations import to_datetime, to_ms
from streams.errors import ConfigError, DurationError, EventValidationError, NonRetriableError
from streams.event import Event, accept, encode_data
from streams.expressions import event_vars
from streams.waits import compile_if, index_hint

if TYPE_CHECKING:
    from streams.core.execution import RunDriver

P = ParamSpec("P")
T = TypeVar("T")

#: Largest event a step may send (name + data JSON), as the HTTP API's default; and the
#: most a ``send_event`` step may send in all, as a step output: one journal record
#: carries them, and it must fit in Kafka.
MAX_SENT_EVENT_BYTES = 512 * 1024
MAX_SENT_BYTES_PER_STEP = MAX_OUTPUT_BYTES


class Step:
    """Durable steps: each call is memoized under its step id."""

    __slots__ = ("_driver",)

    def __init__(self, driver: RunDriver) -> None:
        self._driver = driver

    @overload
    async def run(
        self,
        step_id: str,
        handler: Callable[P, Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    @overload
    async def run(
        self,
        step_id: str,
        handler: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    async def run(
        self, step_id: str, handler: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run ``handler(*args, **kwargs)`` once per run; return its (JSON) output.

        Async handlers are awaited; sync ones run in a thread pool, never on the
        event loop. On replay the memoized output is returned without running
        the handler. After the last retry the error reaches you as ``StepError``.
        """
        if not callable(handler):
            self._driver.fail_run(
                TypeError(f"step.run({step_id!r}, ...) needs a callable, got {handler!r}")
            )
        call = self._driver.make_call(handler, args, kwargs)
        return await self._driver.run_step(step_id, "run", lambda _sid: call())

    async def send_event(
        self, step_id: str, events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]]
    ) -> list[str]:
        """Send one or more events as a step; return their ids.

        The ids are derived from the run id and step id, so a retried or
        replayed step sends no duplicates (the router drops repeated ids).
        """
        items: list[Event | Mapping[str, Any]] = (
            [events] if isinstance(events, Event | Mapping) else list(events)
        )
        driver = self._driver

        async def send(sid: StepId) -> list[str]:
            now = driver.clock.now_ms()
            what = f"step.send_event({sid.readable!r})"
            accepted: list[Event] = []
            total = 0
            for index, item in enumerate(items):
                try:
                    event = item if isinstance(item, Event) else Event.model_validate(dict(item))
                    accepted.append(
                        accept(
                            event,
                            at_ms=now,
                            internal_id=sent_event_id(driver.run.run_id, sid.hashed, index),
                            max_bytes=MAX_SENT_EVENT_BYTES,
                        )
                    )
                except (EventValidationError, ValueError) as exc:
                    raise NonRetriableError(f"{what}: event {index} is invalid: {exc}") from exc
                total += len(encode_data(event.data)) + len(event.name)
                if total > MAX_SENT_BYTES_PER_STEP:
                    raise NonRetriableError(
                        f"{what}: events 0..{index} are {total} bytes together; one step sends "
                        f"at most {MAX_SENT_BYTES_PER_STEP // (1024 * 1024)} MiB: send them in "
                        "several steps"
                    )
            driver.events_sent(sid, accepted)
            return [e.internal_id or "" for e in accepted]

        output: list[str] = await driver.run_step(step_id, "send_event", send)
        return output

    async def sleep(self, step_id: str, duration: timedelta | str | int | float) -> None:
        """Pause the run for ``duration`` (``"30s"``, ``timedelta``; at most 366 days).

        The run holds no worker slot while it sleeps: it suspends, and a durable
        timer starts it again (from the top, through its memos) when it is due.
        """
        try:
            delay = to_ms(duration)
        except DurationError as exc:
            raise NonRetriableError(f"step.sleep({step_id!r}): {exc}") from None
        _check_horizon(f"step.sleep({step_id!r})", delay)
        await self._driver.waiting_step(step_id, "sleep", lambda now: (now + delay, {}))

    async def sleep_until(self, step_id: str, until: datetime | str) -> None:
        """Pause the run until ``until`` (a ``datetime`` or ISO 8601 string, UTC if naive)."""
        try:
            moment = to_datetime(until)
        except DurationError as exc:
            raise NonRetriableError(f"step.sleep_until({step_id!r}): {exc}") from None
        due = int(moment.timestamp() * 1000)

        def plan(now: int) -> tuple[int, dict[str, Any]]:
            _check_horizon(f"step.sleep_until({step_id!r})", due - now)
            return due, {}

        await self._driver.waiting_step(step_id, "sleep", plan)

    async def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        timeout: timedelta | str | int | float,
        if_exp: str | None = None,
    ) -> Event | None:
        """Wait for an event named ``event``; return it, or ``None`` after ``timeout``.

        Only events accepted after this step is first reached count. ``if_exp``
        is a CEL condition where ``event`` is this run's triggering event and
        ``async`` the candidate, e.g. ``"async.data.orderId == event.data.orderId"``
        (that equality form is indexed: matching stays cheap with many waits).
        """
        what = f"step.wait_for_event({step_id!r})"
        if not isinstance(event, str) or not event or "*" in event:
            raise NonRetriableError(f"{what}: event must be an event name, got {event!r}")
        try:
            delay = to_ms(timeout)
            compile_if(if_exp)
        except (DurationError, ConfigError) as exc:
            raise NonRetriableError(f"{what}: {exc}") from None
        _check_horizon(what, delay)
        trigger = event_vars(self._driver.run.event)
        spec = {
            "event": event,
            "if_exp": if_exp,
            "trigger": trigger,
            "hint": index_hint(if_exp, trigger),
        }
        output = await self._driver.waiting_step(
            step_id, "wait", lambda now: (now + delay, {**spec, "registered_ms": now})
        )
        return None if output is None else Event.model_validate(output)

    async def invoke(
        self,
        step_id: str,
        *,
        function: Any,
        data: Mapping[str, Any] | None = None,
        timeout: timedelta | str | int | float | None = None,
    ) -> Any:
        """Start ``function`` (of this app) with ``data`` and return its result.

        The invoked run gets the event ``inngest/function.invoked``. Its failure,
        a missing function or the ``timeout`` raise ``NonRetriableError`` here.
        """
        what = f"step.invoke({step_id!r})"
        slug = function if isinstance(function, str) else getattr(function, "slug", None)
        if not isinstance(slug, str) or not slug:
            raise NonRetriableError(f"{what}: function must be a function of this app or its slug")
        if data is not None and not isinstance(data, Mapping):
            raise NonRetriableError(f"{what}: data must be a JSON object (a dict)")
        try:
            size = len(encode_data(dict(data or {})))
        except EventValidationError as exc:
            raise NonRetriableError(f"{what}: {exc}") from None
        if size > MAX_SENT_EVENT_BYTES:
            raise NonRetriableError(
                f"{what}: data is {size} bytes; the invoked run's event may have at most "
                f"{MAX_SENT_EVENT_BYTES} bytes: pass a reference to large data instead"
            )
        try:
            delay = to_ms(timeout) if timeout is not None else MAX_WAIT_MS
        except DurationError as exc:
            raise NonRetriableError(f"{what}: {exc}") from None
        _check_horizon(what, delay)
        spec = {"function": slug, "data": dict(data or {})}
        return await self._driver.waiting_step(step_id, "invoke", lambda now: (now + delay, spec))


#: The longest sleep, wait or invoke timeout (Inngest's limit).
MAX_WAIT_MS = 366 * 24 * 3600 * 1000


def _check_horizon(what: str, delay_ms: int) -> None:
    if delay_ms > MAX_WAIT_MS:
        raise NonRetriableError(
            f"{what}: {delay_ms / 86_400_000:.1f} days is longer than the 366 days a run may "
            "pause; split the pause (e.g. sleep again after waking) or schedule with a cron"
        )


class Group:
    """Steps that run concurrently."""

    __slots__ = ("_driver",)

    def __init__(self, driver: RunDriver) -> None:
        self._driver = driver

    async def parallel(self, callables: Sequence[Callable[[], Awaitable[T]]]) -> tuple[T, ...]:
        """Run ``callables`` concurrently; return their results in order.

        Each callable starts in order, so their first steps get ids in order;
        steps a branch calls later get ids in the order they are reached.
        Give steps inside branches distinct ids (a repeated id inside two
        branches is numbered by timing). All branches finish before this
        returns or raises (the first error, in branch order, is raised).
        """
        self._driver.refuse_after_return("group.parallel(...)")
        self._driver.check_open()
        tasks = [asyncio.ensure_future(_branch(c, self._driver)) for c in callables]
        if not tasks:
            return ()
        self._driver.track(tasks)
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        interrupt: BaseException | None = None
        error: BaseException | None = None
        for task in tasks:
            exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
            if isinstance(exc, Interrupt) and interrupt is None:
                interrupt = exc
            elif exc is not None and error is None:
                error = exc
        if interrupt is not None:
            raise interrupt
        if error is not None:
            raise error
        return tuple(task.result() for task in tasks)


async def _branch(function: Callable[[], Awaitable[T]], driver: RunDriver) -> T:
    """One branch of ``parallel``, as a task of its own."""
    noted = running.enter(running.UserCode(driver.run.function_id, driver.run.run_id))
    try:
        value: Any = function()
        if inspect.isawaitable(value):
            value = await value
    except (Interrupt, asyncio.CancelledError, Exception):
        raise
    except BaseException as exc:  # asyncio would hand SystemExit to the loop: the worker stops
        raise exit_error(exc, "a group.parallel branch (outside any step)") from exc
    finally:
        running.leave(noted)
    result: T = value
    return result


@dataclass(frozen=True, slots=True)
class Context:
    """What a function receives: the event(s), the run, a logger, steps and groups.

    ``attempt`` is the function-level attempt (0 first); ``logger`` drops
    records while the activation replays memoized steps, so each line is
    logged once per run.
    """

    event: Event
    events: list[Event]
    run_id: str
    attempt: int
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    step: Step
    group: Group
    function_id: str = ""
