"""Declaring functions: ``App`` and ``@app.function(...)``, as in inngest-py.

Everything a declaration gets wrong fails here, at import time, with a message
that names the function (its slug) and the field: a CEL expression that does
not compile, a bad wildcard, a duplicate ``fn_id``, an option this version does
not implement yet. Nothing is silently ignored.

A :class:`Function` also answers the router's questions about an event
(:meth:`Function.matches`, :meth:`Function.run_key`,
:meth:`Function.idempotency_key`) and builds the core's
:class:`~streams.core.execution.RunDriver` for one activation of a run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from streams.clock import Clock, SystemClock
from streams.core.context import Context
from streams.core.execution import RunDriver, RunInput
from streams.core.memo import Memo
from streams.core.retry import RetryPolicy
from streams.durations import to_ms
from streams.errors import ConfigError, ExpressionError, FunctionNotFoundError
from streams.event import Event
from streams.expressions import Expression, compile_pattern, event_bindings
from streams.lifecycle.limits import Gcra
from streams.options import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Duration,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
)
from streams.settings import Settings
from streams.waits import compile_if

log = logging.getLogger(__name__)

Handler = Callable[[Context], Awaitable[Any]]
Trigger = TriggerEvent | TriggerCron
EventsArg = Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]]


class _Sender(Protocol):
    """What ``App.send`` needs of ``streams.client.Client``."""

    def send(self, events: EventsArg) -> list[str]: ...

    async def send_async(self, events: EventsArg) -> list[str]: ...


MAX_TRIGGERS = 10
MAX_RETRIES = 20
MAX_CONCURRENCY_ENTRIES = 2
#: A priority moves a queued run ahead by at most this many seconds (as Inngest).
MAX_PRIORITY_S = 600
#: The system event ``on_failure`` handlers trigger on.
FUNCTION_FAILED = "inngest/function.failed"
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,126}[a-z0-9])?$")
_SLUG_HELP = "use lowercase letters, digits, '-' and '_' (e.g. 'process-order')"
# Variables a trigger expression or a key may use.
_EVENT_VARS = ("event",)


class Function:
    """A declared function: its handler (``.handler``), triggers and options.

    Build it with ``@app.function(...)``, not directly. ``slug`` is Inngest's
    function id, ``f"{app_id}-{fn_id}"``, used everywhere outside Python.
    """

    def __init__(
        self,
        *,
        app_id: str,
        fn_id: str,
        handler: Handler,
        triggers: Sequence[Trigger],
        retries: int = 4,
        concurrency: Sequence[Concurrency] = (),
        idempotency: str | None = None,
        name: str | None = None,
        failure_of: str | None = None,
        cancel: Sequence[Cancel] = (),
        timeouts: Timeouts | None = None,
        priority: Priority | None = None,
        rate_limit: RateLimit | None = None,
        singleton: Singleton | None = None,
        throttle: Throttle | None = None,
        debounce: Debounce | None = None,
        batch: Batch | None = None,
    ) -> None:
        self.app_id = app_id
        self.fn_id = fn_id
        self.slug = f"{app_id}-{fn_id}"
        self.name = name or fn_id
        self.handler = handler
        self.triggers: tuple[Trigger, ...] = tuple(triggers)
        self.retries = retries
        self.concurrency: tuple[Concurrency, ...] = tuple(concurrency)
        self.idempotency = idempotency
        #: The slug of the function this one handles failures of (``on_failure``).
        self.failure_of = failure_of
        #: The ``on_failure`` handler registered for this function, if any.
        self.on_failure: Function | None = None
        self.retry_policy = RetryPolicy(retries=retries)
        #: Events that cancel a run (each rule is listened for from the run's start).
        self.cancel: tuple[Cancel, ...] = tuple(cancel)
        self.timeouts = timeouts

        self._matchers: list[tuple[str, bool, Expression | None]] = []
        for i, trigger in enumerate(self.triggers):
            if isinstance(trigger, TriggerEvent):
                text, is_prefix = self._check(f"trigger[{i}].event", compile_pattern, trigger.event)
                expr = self._expression(f"trigger[{i}].expression", trigger.expression)
                self._matchers.append((text, is_prefix, expr))
        keys = [self._expression(f"concurrency[{i}].key", c.key) for i, c in enumerate(concurrency)]
        counted = [(c, k) for c, k in zip(concurrency, keys, strict=True) if c.limit > 0]
        limited = [(c, k) for c, k in counted if c.scope == "fn"]
        #: An env-scoped limit (``scope="env"``): at most ``limit`` runs of any function
        #: of the app with the same key value execute at once (the app's gate counts).
        self.env_limit: tuple[int, Expression] | None = next(
            ((c.limit, k) for c, k in counted if c.scope == "env" and k is not None), None
        )
        #: The limits steplog enforces (``limit`` 0 is none), one per slot key.
        self.slot_limits: tuple[int, ...] = tuple(c.limit for c, _ in limited)
        self._slot_exprs = [k for _, k in limited]
        self.slots_keyless = any(c.key is None for c, _ in limited)
        #: ``rate_limit``: at most ``limit`` runs start per ``period`` per key; the
        #: events over it start no run (a ``skipped`` run says so).
        self.rate_limit = rate_limit
        #: The GCRA of ``rate_limit``: ``limit`` starts at once, then one every
        #: ``period / limit``; of ``throttle``: evenly spread, ``burst`` more at once.
        self.rate_gcra = _gcra(rate_limit.limit, rate_limit.period, None) if rate_limit else None
        self.throttle_gcra = (
            _gcra(throttle.limit, throttle.period, throttle.burst or 0) if throttle else None
        )
        self._rate_expr = self._expression(
            "rate_limit.key", rate_limit.key if rate_limit is not None else None
        )
        #: ``singleton``: at most one run per key is not finished.
        self.singleton = singleton
        self._singleton_expr = self._expression(
            "singleton.key", singleton.key if singleton is not None else None
        )
        #: ``throttle``: at most ``limit`` (+ ``burst``) starts per ``period`` per key;
        #: the runs over it wait, in order, and start as the throttle allows.
        self.throttle = throttle
        self._throttle_expr = self._expression(
            "throttle.key", throttle.key if throttle is not None else None
        )
        #: ``debounce``: a run starts ``period`` after the last event of its key (at
        #: most ``timeout`` after the first), with that last event.
        self.debounce = debounce
        self._debounce_expr = self._expression(
            "debounce.key", debounce.key if debounce is not None else None
        )
        #: ``batch_events``: one run gets up to ``max_size`` events of a key, when the
        #: batch is full or ``timeout`` after its first event.
        self.batch = batch
        self._batch_expr = self._expression("batch_events.key", batch.key if batch else None)
        # The runs a limit, a rate limit or a singleton counts together must meet on
        # one partition, where one lifecycle decides for all of them: by their key, or
        # all on one partition when one has no key or two have different keys.
        together: list[tuple[str | None, Expression | None]] = [(c.key, k) for c, k in limited]
        if rate_limit is not None:
            together.append((rate_limit.key, self._rate_expr))
        if singleton is not None:
            together.append((singleton.key, self._singleton_expr))
        if throttle is not None:
            together.append((throttle.key, self._throttle_expr))
        if debounce is not None:
            together.append((debounce.key, self._debounce_expr))
        if batch is not None:
            together.append((batch.key, self._batch_expr))
        sources = {text for text, _ in together}
        #: Every run of the function goes to one partition (see :meth:`run_key`).
        self.one_partition: bool = None in sources or len(sources) > 1
        #: Whether a run's partition is fixed by what counts runs together.
        self._counted = bool(together)
        if together and not self.one_partition:
            self._key_expr = together[0][1]
        else:
            self._key_expr = next((k for k in keys if k is not None), None)
        self._idempotency_expr = self._expression("idempotency", idempotency)
        self.priority = priority
        self._priority_expr = self._expression(
            "priority.run", priority.run if priority is not None else None
        )

    # --- Questions the router asks ---------------------------------------------------

    @property
    def event_patterns(self) -> list[str]:
        """The event names (and wildcards) this function triggers on."""
        return [t.event for t in self.triggers if isinstance(t, TriggerEvent)]

    def matches(self, event: Event) -> bool:
        """Whether ``event`` starts a run: a trigger's name matches and its expression holds.

        Several matching triggers still mean one run. An expression that fails
        to evaluate (e.g. a missing field) counts as false.
        """
        name = event.name
        for text, is_prefix, expr in self._matchers:
            if is_prefix:
                if len(name) <= len(text) or not name.startswith(text):
                    continue
            elif name != text:
                continue
            if expr is None:
                return True
            try:
                if expr.truthy(event_bindings(event)):
                    return True
            except ExpressionError as exc:
                log.debug(
                    "%s: trigger expression is false for event %s: %s", self.slug, event.id, exc
                )
        return False

    def run_key(self, event: Event) -> str | None:
        """The key that picks the partition of the run for ``event``, else None.

        Without a limit it is the value of the first concurrency key (a string);
        when that cannot be evaluated (a missing field) the result is None: the run
        is keyed by its run id. With a limit, every run the limit counts together
        must meet on one partition: the value of the limit's key, or the
        function's slug when the key is missing or empty, when a limit has no key,
        or when two limits have different keys.
        """
        if self.one_partition:
            return self.slug
        value = self._key(self._key_expr, "concurrency key", event)
        if not value and self._counted:
            return self.slug
        return value

    def rate_key(self, event: Event) -> str:
        """The run's key under ``rate_limit`` (``""``: none, or not evaluated)."""
        return self._key(self._rate_expr, "rate_limit key", event) or ""

    def throttle_key(self, event: Event) -> str:
        """The run's key under ``throttle`` (``""``: none, or not evaluated)."""
        return self._key(self._throttle_expr, "throttle key", event) or ""

    def debounce_key(self, event: Event) -> str:
        """The run's key under ``debounce`` (``""``: none, or not evaluated)."""
        return self._key(self._debounce_expr, "debounce key", event) or ""

    def batch_key(self, event: Event) -> str:
        """The run's key under ``batch_events`` (``""``: none, or not evaluated)."""
        return self._key(self._batch_expr, "batch_events key", event) or ""

    def singleton_key(self, event: Event) -> str:
        """The run's key under ``singleton`` (``""``: none, or not evaluated)."""
        return self._key(self._singleton_expr, "singleton key", event) or ""

    def slot_keys(self, event: Event) -> tuple[str, ...]:
        """The run's key under each limit of :attr:`slot_limits` (``""``: no key, or a
        key that cannot be evaluated)."""
        return tuple(
            (self._key(expr, "concurrency key", event) or "") if expr is not None else ""
            for expr in self._slot_exprs
        )

    def env_key(self, event: Event) -> str:
        """The run's key value under its env-scoped limit (``""``: not evaluated)."""
        expr = self.env_limit[1] if self.env_limit is not None else None
        return self._key(expr, "concurrency key (scope env)", event) or ""

    def priority_s(self, event: Event) -> int:
        """The run's priority in seconds (-600..600): how far ahead of the runs queued
        before it it goes. An expression that fails, or is not a number, gives 0."""
        expr = self._priority_expr
        if expr is None:
            return 0
        try:
            value = expr.evaluate(event_bindings(event))
        except ExpressionError as exc:
            log.warning("%s: priority not evaluated for event %s: %s", self.slug, event.id, exc)
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            log.warning(
                "%s: priority for event %s is %r, not a number of seconds; using 0",
                self.slug,
                event.id,
                value,
            )
            return 0
        return max(-MAX_PRIORITY_S, min(MAX_PRIORITY_S, int(value)))

    def idempotency_key(self, event: Event) -> str | None:
        """The value of the ``idempotency`` expression for ``event``, else None."""
        return self._key(self._idempotency_expr, "idempotency key", event)

    # --- Running ---------------------------------------------------------------------

    def driver(
        self,
        run: RunInput,
        memos: Mapping[str, Memo] | None = None,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        executor: Executor | None = None,
        logger: logging.Logger | None = None,
        stop_after_step: bool = False,
    ) -> RunDriver:
        """A :class:`RunDriver` for one activation of a run of this function."""
        return RunDriver(
            self.handler,
            run,
            memos,
            clock=clock,
            retry=retry or self.retry_policy,
            executor=executor,
            logger=logger,
            stop_after_step=stop_after_step,
        )

    def __repr__(self) -> str:
        return f"Function({self.slug!r}, triggers={self.event_patterns!r})"

    # --- Internals -------------------------------------------------------------------

    def _check(self, field: str, check: Callable[[str], Any], value: str) -> Any:
        try:
            return check(value)
        except ConfigError as exc:
            raise ConfigError(f"{self.slug}: {field}: {exc}") from None

    def _expression(self, field: str, source: str | None) -> Expression | None:
        if source is None:
            return None
        expr: Expression = self._check(
            field, lambda s: Expression(s, variables=_EVENT_VARS), source
        )
        return expr

    def _key(self, expr: Expression | None, what: str, event: Event) -> str | None:
        if expr is None:
            return None
        try:
            value = expr.evaluate(event_bindings(event))
        except ExpressionError as exc:
            log.warning("%s: %s not evaluated for event %s: %s", self.slug, what, event.id, exc)
            return None
        return _key_string(value)


def _gcra(limit: int, period: Duration, burst: int | None) -> Gcra:
    """``burst`` None: ``limit`` may start at once; else ``1 + burst`` at once."""
    interval = to_ms(period) / limit
    return Gcra(interval, to_ms(period) if burst is None else interval * (1 + burst))


def _key_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class App:
    """A set of functions deployed together; ``app_id`` names it everywhere.

    ``clock`` is the time cron schedules follow (the system clock by default; a
    test may pass one that runs faster).
    """

    def __init__(
        self, app_id: str, *, settings: Settings | None = None, clock: Clock | None = None
    ) -> None:
        if not isinstance(app_id, str) or not _SLUG.match(app_id):
            raise ConfigError(f"app id {app_id!r} is not a slug: {_SLUG_HELP}")
        self.app_id = app_id
        self.clock: Clock = clock or SystemClock()
        self._settings = settings
        self.functions: dict[str, Function] = {}
        self._client: _Sender | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings()
        return self._settings

    def function(
        self,
        *,
        fn_id: str,
        trigger: Trigger | Sequence[Trigger],
        retries: int = 4,
        concurrency: Concurrency | Sequence[Concurrency] | None = None,
        idempotency: str | None = None,
        on_failure: Handler | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        priority: Priority | None = None,
        batch_events: Batch | None = None,
        cancel: Cancel | Sequence[Cancel] | None = None,
        singleton: Singleton | None = None,
        timeouts: Timeouts | None = None,
        name: str | None = None,
    ) -> Callable[[Handler], Function]:
        """Declare a function: ``@app.function(fn_id=..., trigger=TriggerEvent(...))``."""
        if not isinstance(fn_id, str) or not _SLUG.match(fn_id):
            raise ConfigError(f"{self.app_id}-{fn_id}: fn_id {fn_id!r} is not a slug: {_SLUG_HELP}")
        slug = f"{self.app_id}-{fn_id}"
        triggers = _triggers(slug, trigger)
        _check_retries(slug, retries)
        limits = _concurrency(slug, concurrency)
        cancel_rules = _cancel_rules(slug, cancel)
        if timeouts is not None and not isinstance(timeouts, Timeouts):
            raise ConfigError(f"{slug}: timeouts must be Timeouts(start=..., finish=...)")
        if idempotency is not None and not isinstance(idempotency, str):
            raise ConfigError(f"{slug}: idempotency must be a CEL expression string")
        if priority is not None and not isinstance(priority, Priority):
            raise ConfigError(f"{slug}: priority must be Priority(run='<CEL expression>')")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigError(f"{slug}: rate_limit must be RateLimit(limit=..., period=...)")
        if debounce is not None and not isinstance(debounce, Debounce):
            raise ConfigError(
                f"{slug}: debounce must be Debounce(period=..., key=..., timeout=...)"
            )
        if throttle is not None and not isinstance(throttle, Throttle):
            raise ConfigError(f"{slug}: throttle must be Throttle(limit=..., period=...)")
        if singleton is not None and not isinstance(singleton, Singleton):
            raise ConfigError(f"{slug}: singleton must be Singleton(key=..., mode=...)")
        if batch_events is not None:
            _check_batch(
                slug,
                batch_events,
                cancel=cancel_rules or None,
                debounce=debounce,
                singleton=singleton,
                priority=priority,
                idempotency=idempotency,
                rate_limit=rate_limit,
            )

        def register(handler: Handler) -> Function:
            _check_handler(slug, "handler", handler)
            self._check_free(slug, fn_id)
            fn = Function(
                app_id=self.app_id,
                fn_id=fn_id,
                handler=handler,
                triggers=triggers,
                retries=retries,
                concurrency=limits,
                idempotency=idempotency,
                name=name,
                cancel=cancel_rules,
                timeouts=timeouts,
                priority=priority,
                rate_limit=rate_limit,
                singleton=singleton,
                throttle=throttle,
                debounce=debounce,
                batch=batch_events,
            )
            failure = None
            if on_failure is not None:
                _check_handler(slug, "on_failure", on_failure)
                self._check_free(f"{slug}-failure", f"{fn_id}-failure")
                failure = Function(
                    app_id=self.app_id,
                    fn_id=f"{fn_id}-failure",
                    handler=on_failure,
                    triggers=[
                        TriggerEvent(
                            event=FUNCTION_FAILED,
                            expression=f"event.data.function_id == '{slug}'",
                        )
                    ],
                    retries=retries,
                    name=f"{fn.name} (on failure)",
                    failure_of=slug,
                )
                fn.on_failure = failure
            self.functions[fn.slug] = fn
            if failure is not None:
                self.functions[failure.slug] = failure
            return fn

        return register

    def function_by_id(self, slug_or_fn_id: str) -> Function:
        """The function with this slug (``shop-process-order``) or bare ``fn_id``."""
        fn = self.functions.get(slug_or_fn_id) or self.functions.get(
            f"{self.app_id}-{slug_or_fn_id}"
        )
        if fn is None:
            known = ", ".join(sorted(self.functions)) or "none"
            raise FunctionNotFoundError(
                f"app {self.app_id!r} has no function {slug_or_fn_id!r} (known: {known})"
            )
        return fn

    def functions_for(self, event: Event) -> list[Function]:
        """The functions ``event`` starts a run of (fan-out: one run each)."""
        return [fn for fn in self.functions.values() if fn.matches(event)]

    def send(
        self, events: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]]
    ) -> list[str]:
        """Send events to this app's Kafka cluster; return their ids (see ``streams.Client``)."""
        return list(self._get_client().send(events))

    async def send_async(self, events: EventsArg) -> list[str]:
        """:meth:`send` for asyncio code."""
        return list(await self._get_client().send_async(events))

    def _get_client(self) -> _Sender:
        if self._client is None:
            # Imported on first use, so that declaring functions (and the pure core
            # and its type checking) never pull in the Kafka client libraries.
            client_module = importlib.import_module("streams.client")
            self._client = client_module.Client(self.settings)
        return self._client

    def _check_free(self, slug: str, fn_id: str) -> None:
        if slug in self.functions:
            raise ConfigError(
                f"{slug}: fn_id {fn_id!r} is already declared in app {self.app_id!r}; "
                "function ids must be unique"
            )

    def __repr__(self) -> str:
        return f"App({self.app_id!r}, functions={list(self.functions)!r})"


def _triggers(slug: str, trigger: Trigger | Sequence[Trigger]) -> list[Trigger]:
    items = [trigger] if isinstance(trigger, TriggerEvent | TriggerCron) else list(trigger)
    if not 1 <= len(items) <= MAX_TRIGGERS:
        raise ConfigError(
            f"{slug}: trigger: {len(items)} triggers given; a function has 1 to {MAX_TRIGGERS}"
        )
    for i, item in enumerate(items):
        if not isinstance(item, TriggerEvent | TriggerCron):
            raise ConfigError(
                f"{slug}: trigger[{i}]: expected TriggerEvent or TriggerCron, got {item!r}"
            )
    return items


#: Inngest's limit on cancellation rules per function.
MAX_CANCEL_RULES = 5


def _cancel_rules(slug: str, value: Cancel | Sequence[Cancel] | None) -> list[Cancel]:
    rules = [] if value is None else [value] if isinstance(value, Cancel) else list(value)
    if len(rules) > MAX_CANCEL_RULES:
        raise ConfigError(
            f"{slug}: cancel: {len(rules)} rules given; a function has at most {MAX_CANCEL_RULES}"
        )
    for i, rule in enumerate(rules):
        if not isinstance(rule, Cancel):
            raise ConfigError(f"{slug}: cancel[{i}]: expected Cancel(event=...), got {rule!r}")
        if "*" in rule.event or not rule.event.strip():
            raise ConfigError(
                f"{slug}: cancel[{i}].event: {rule.event!r} must be one event name (no wildcard)"
            )
        try:
            compile_if(rule.if_exp)
        except ConfigError as exc:
            raise ConfigError(f"{slug}: cancel[{i}].if_exp: {exc}") from None
    return rules


def _check_retries(slug: str, retries: int) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise ConfigError(f"{slug}: retries must be an integer, got {retries!r}")
    if not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"{slug}: retries is {retries}; it must be 0 to {MAX_RETRIES}")


def _concurrency(slug: str, value: Concurrency | Sequence[Concurrency] | None) -> list[Concurrency]:
    if value is None:
        return []
    items = [value] if isinstance(value, Concurrency) else list(value)
    if len(items) > MAX_CONCURRENCY_ENTRIES:
        raise ConfigError(
            f"{slug}: concurrency: {len(items)} entries given; at most "
            f"{MAX_CONCURRENCY_ENTRIES} are allowed"
        )
    for i, item in enumerate(items):
        if not isinstance(item, Concurrency):
            raise ConfigError(f"{slug}: concurrency[{i}]: expected Concurrency, got {item!r}")
        if item.scope == "account":
            raise ConfigError(
                f"{slug}: concurrency[{i}]: scope 'account' counts runs of other apps, "
                "which one steplog app cannot see; use scope 'fn' (this function) or "
                "'env' (every function of this app, with a key)"
            )
        if item.scope == "env" and item.key is None:
            raise ConfigError(
                f"{slug}: concurrency[{i}]: scope 'env' needs a key: the runs of every "
                "function with the same key value share the limit (e.g. key='\"openai\"')"
            )
    if sum(1 for item in items if item.scope == "env") > 1:
        raise ConfigError(
            f"{slug}: concurrency: two limits with scope 'env' given; a function has at "
            "most one (and one with scope 'fn' beside it)"
        )
    return items


def _check_batch(slug: str, batch: Batch, **others: Any) -> None:
    """``batch_events`` is a Batch, and none of the options Inngest refuses beside it
    is given (a run of many events has no one event to key, cancel or dedup by)."""
    if not isinstance(batch, Batch):
        raise ConfigError(f"{slug}: batch_events must be Batch(max_size=..., timeout=...)")
    if to_ms(batch.timeout) <= 0:
        raise ConfigError(
            f"{slug}: batch_events.timeout is {batch.timeout}; give how long a batch waits "
            "for more events, e.g. timeout='5s'"
        )
    for option, value in others.items():
        if value is not None:
            raise ConfigError(
                f"{slug}: batch_events cannot be combined with {option}: a batch's run has "
                f"many events, and {option} works on one event per run; drop one of the two"
            )


def _check_handler(slug: str, field: str, handler: Any) -> None:
    if not callable(handler):
        raise ConfigError(f"{slug}: {field}: {handler!r} is not callable")
    if not inspect.iscoroutinefunction(handler):
        raise ConfigError(
            f"{slug}: {field}: {getattr(handler, '__name__', handler)!r} must be an "
            "'async def' function taking ctx"
        )
