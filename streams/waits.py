"""Which pending waits an event completes: the wait index, free of Kafka and Faust.

A wait is registered by ``step.wait_for_event`` (or by a ``Cancel`` rule when a
run starts). An event completes it when its name is the awaited one, it was
*accepted* (ingest time, the time in its ``internal_id``) at or after the wait's
registration and before its expiry, and the wait's ``if_exp`` holds with
``event`` = the run's triggering event and ``async`` = the candidate.

Matching must not scan every pending wait per event. The common form of
``if_exp`` is an equality between a field of the candidate and a value known
when the wait registers (``async.data.orderId == event.data.orderId``, or a
literal): :func:`index_hint` reads that value once, at registration, and the
index keeps waits in buckets keyed by (name, field path, value). An event then
looks up one bucket per field path in use for its name, and only the waits in
it (plus those with no usable hint) are evaluated with CEL.

:class:`RecentEvents` keeps the last minutes of events by name, so a wait whose
registration reaches the index after the event it waits for (a reply sent by a
run the waiting run triggered a moment before) still gets it.
"""

from __future__ import annotations

import functools
import heapq
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ulid import ULID

from streams.errors import ConfigError, ExpressionError
from streams.event import Event
from streams.expressions import Bindings, Expression, event_vars

#: Variables an ``if_exp`` of a wait or a cancel rule may use.
WAIT_VARIABLES = ("event", "async")

_PATH = r"((?:data|name|id|v)(?:\.[A-Za-z_]\w*)*)"
_LITERAL = r"(\"[^\"\\]*\"|'[^'\\]*'|-?\d+(?:\.\d+)?|true|false)"
_ASYNC_EQ_EVENT = re.compile(rf"^\s*async\.{_PATH}\s*==\s*event\.{_PATH}\s*$")
_EVENT_EQ_ASYNC = re.compile(rf"^\s*event\.{_PATH}\s*==\s*async\.{_PATH}\s*$")
_ASYNC_EQ_LITERAL = re.compile(rf"^\s*async\.{_PATH}\s*==\s*{_LITERAL}\s*$")
_LITERAL_EQ_ASYNC = re.compile(rf"^\s*{_LITERAL}\s*==\s*async\.{_PATH}\s*$")


def compile_if(source: str | None) -> Expression | None:
    """The compiled ``if_exp`` of a wait (ConfigError naming the problem)."""
    if source is None:
        return None
    return Expression(source, variables=WAIT_VARIABLES)


def _lookup(root: dict[str, Any], path: str) -> Any:
    value: Any = root
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _literal(text: str) -> Any:
    if text[0] == "'":
        return text[1:-1]
    return json.loads(text)


def index_hint(if_exp: str | None, trigger: dict[str, Any]) -> tuple[str, str] | None:
    """``(path of async, JSON of the value it must equal)`` when ``if_exp`` allows one.

    Reads the top-level ``&&`` conjuncts of ``if_exp`` for an equality between
    a field of ``async`` and a field of ``event`` (taken from ``trigger``, the
    variables of the run's triggering event) or a literal. An expression with
    ``||`` anywhere gets no hint (it is evaluated for every candidate of its name).
    """
    if not if_exp or "||" in if_exp:
        return None
    for part in _conjuncts(if_exp):
        for pattern, async_first in ((_ASYNC_EQ_EVENT, True), (_EVENT_EQ_ASYNC, False)):
            match = pattern.match(part)
            if match:
                async_path, event_path = match.groups() if async_first else match.groups()[::-1]
                try:
                    return async_path, _key(_lookup(trigger, event_path))
                except KeyError:
                    return None
        for pattern, async_first in ((_ASYNC_EQ_LITERAL, True), (_LITERAL_EQ_ASYNC, False)):
            match = pattern.match(part)
            if match:
                async_path, literal = match.groups() if async_first else match.groups()[::-1]
                return async_path, _key(_literal(literal))
    return None


@functools.lru_cache(maxsize=4096)
def hint_is_whole(if_exp: str | None) -> bool:
    """Whether a hint from ``if_exp`` is the whole condition (one equality, no ``&&``).

    Then a wait found in the hint's bucket matches without evaluating CEL: equal
    JSON values are equal in CEL.
    """
    if not if_exp or "||" in if_exp:
        return False
    parts = _conjuncts(if_exp)
    return len(parts) == 1 and any(
        p.match(parts[0])
        for p in (_ASYNC_EQ_EVENT, _EVENT_EQ_ASYNC, _ASYNC_EQ_LITERAL, _LITERAL_EQ_ASYNC)
    )


def _conjuncts(source: str) -> list[str]:
    """Top-level ``&&`` parts of ``source`` (outer parentheses ignored)."""
    parts: list[str] = []
    depth = 0
    start = 0
    quote: str | None = None
    i = 0
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and source.startswith("&&", i):
            parts.append(source[start:i])
            start = i + 2
            i += 1
        i += 1
    parts.append(source[start:])
    out = []
    for part in parts:
        text = part.strip()
        while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
            text = text[1:-1].strip()
        out.append(text)
    return out


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def accepted_ms(event: Event) -> int:
    """When steplog accepted ``event`` (the time in its ``internal_id``), else its ``ts``."""
    if event.internal_id:
        try:
            return int(ULID.from_str(event.internal_id).milliseconds)
        except ValueError:
            pass
    return int(event.ts or 0)


@dataclass(frozen=True)
class Wait:
    """One pending wait: which run waits, for what, since when and until when.

    ``kind`` is ``"wait"`` (a ``wait_for_event`` step, ``step_id`` its hashed
    id) or ``"cancel"`` (a ``Cancel`` rule of the function, ``step_id``
    ``"cancel:<i>"``). ``run_key`` is the run's routing key (its journal key).
    """

    function: str
    run_id: str
    step_id: str
    run_key: str
    event: str
    if_exp: str | None
    registered_ms: int
    expires_ms: int
    trigger: dict[str, Any]
    kind: str = "wait"
    hint: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        return f"{self.run_id}|{self.step_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "run_key": self.run_key,
            "event": self.event,
            "if_exp": self.if_exp,
            "registered_ms": self.registered_ms,
            "expires_ms": self.expires_ms,
            "trigger": self.trigger,
            "kind": self.kind,
            "hint": list(self.hint) if self.hint else None,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Wait:
        hint = raw.get("hint")
        return cls(
            function=raw["function"],
            run_id=raw["run_id"],
            step_id=raw["step_id"],
            run_key=raw["run_key"],
            event=raw["event"],
            if_exp=raw.get("if_exp"),
            registered_ms=int(raw["registered_ms"]),
            expires_ms=int(raw["expires_ms"]),
            trigger=dict(raw.get("trigger") or {}),
            kind=raw.get("kind", "wait"),
            hint=(str(hint[0]), str(hint[1])) if hint else None,
        )


@dataclass
class _Bucket:
    waits: dict[str, Wait] = field(default_factory=dict)


class WaitIndex:
    """Pending waits, indexed for matching events without scanning them all."""

    def __init__(self) -> None:
        self._by_key: dict[str, Wait] = {}
        # name -> path -> value -> waits; name -> waits without a hint
        self._indexed: dict[str, dict[str, dict[str, dict[str, Wait]]]] = {}
        self._scan: dict[str, dict[str, Wait]] = {}
        self._expiry: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def get(self, key: str) -> Wait | None:
        return self._by_key.get(key)

    def add(self, wait: Wait) -> None:
        self.remove(wait.key)
        self._by_key[wait.key] = wait
        if wait.hint is not None:
            path, value = wait.hint
            paths = self._indexed.setdefault(wait.event, {})
            paths.setdefault(path, {}).setdefault(value, {})[wait.key] = wait
        else:
            self._scan.setdefault(wait.event, {})[wait.key] = wait
        heapq.heappush(self._expiry, (wait.expires_ms, wait.key))

    def remove(self, key: str) -> Wait | None:
        wait = self._by_key.pop(key, None)
        if wait is None:
            return None
        if wait.hint is not None:
            path, value = wait.hint
            paths = self._indexed[wait.event]
            bucket = paths[path][value]
            bucket.pop(key, None)
            if not bucket:
                del paths[path][value]
                if not paths[path]:
                    del paths[path]
                    if not paths:
                        del self._indexed[wait.event]
        else:
            scan = self._scan[wait.event]
            scan.pop(key, None)
            if not scan:
                del self._scan[wait.event]
        return wait

    def expire(self, now_ms: int) -> list[Wait]:
        """Drop waits whose expiry passed (their runs time out on their own)."""
        out = []
        while self._expiry and self._expiry[0][0] <= now_ms:
            due, key = heapq.heappop(self._expiry)
            wait = self._by_key.get(key)
            if wait is not None and wait.expires_ms == due:
                self.remove(key)
                out.append(wait)
        return out

    def candidates(self, event: Event) -> Iterator[Wait]:
        """Waits for ``event``'s name whose hint (if any) ``event`` satisfies."""
        paths = self._indexed.get(event.name)
        if paths:
            variables = event_vars(event)
            for path, values in paths.items():
                try:
                    value = _key(_lookup(variables, path))
                except (KeyError, TypeError):
                    continue
                bucket = values.get(value)
                if bucket:
                    yield from list(bucket.values())
        scan = self._scan.get(event.name)
        if scan:
            yield from list(scan.values())

    def matches(self, event: Event, at_ms: int | None = None) -> list[Wait]:
        """The pending waits ``event`` completes (see the module docstring).

        ``at_ms`` is when the event entered Kafka (its record's timestamp); by
        default the time in its ``internal_id``. Events sent by steps carry ids
        derived from their run (stable across retries), so the router passes the
        record timestamp.
        """
        if event.name not in self._indexed and event.name not in self._scan:
            return []
        at = accepted_ms(event) if at_ms is None else at_ms
        return [
            wait
            for wait in self.candidates(event)
            if wait.registered_ms <= at < wait.expires_ms
            and (
                wait.if_exp is None
                or (wait.hint is not None and hint_is_whole(wait.if_exp))
                or _holds(wait, event)
            )
        ]


def matches_wait(wait: Wait, event: Event, at_ms: int | None = None) -> bool:
    """Whether ``event`` completes ``wait`` (name, acceptance time, ``if_exp``)."""
    if event.name != wait.event:
        return False
    at = accepted_ms(event) if at_ms is None else at_ms
    if not wait.registered_ms <= at < wait.expires_ms:
        return False
    if wait.if_exp is None:
        return True
    if wait.hint is not None and hint_is_whole(wait.if_exp):
        path, value = wait.hint
        try:
            return _key(_lookup(event_vars(event), path)) == value
        except (KeyError, TypeError):
            return False
    return _holds(wait, event)


def trigger_for(if_exp: str | None, trigger: dict[str, Any]) -> dict[str, Any]:
    """What a wait keeps of its run's triggering event: nothing when the hint says it all.

    Every worker holds every pending wait; the hint of a whole equality already
    holds the one value the condition reads from ``event``.
    """
    if if_exp is None or (hint_is_whole(if_exp) and index_hint(if_exp, trigger) is not None):
        return {}
    return trigger


def _holds(wait: Wait, event: Event) -> bool:
    try:
        expr = compile_if(wait.if_exp)
    except ConfigError:
        return False
    if expr is None:
        return True
    try:
        return expr.truthy(Bindings({"event": wait.trigger, "async": event_vars(event)}))
    except ExpressionError:
        return False


class RecentEvents:
    """Events routed in the last ``window_ms`` (at most ``max_events``), by name, in memory.

    Kept by the time they were routed (so a router that lags still remembers what it
    just routed); each carries its acceptance time for the matching rule.
    """

    #: Clock differences allowed between the hosts that accept and route events.
    SKEW_MS = 10_000

    def __init__(self, window_ms: int, max_events: int = 100_000) -> None:
        self.window_ms = window_ms
        self.max_events = max_events
        self._order: deque[tuple[int, int, Event]] = deque()
        self._by_name: dict[str, deque[tuple[int, int, Event]]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def add(self, event: Event, now_ms: int, at_ms: int | None = None) -> None:
        at = accepted_ms(event) if at_ms is None else at_ms
        item = (now_ms, at, event)
        self._order.append(item)
        self._by_name.setdefault(event.name, deque()).append(item)
        self.trim(now_ms)

    def trim(self, now_ms: int) -> None:
        """Forget events routed before the window (or beyond the size limit)."""
        horizon = now_ms - self.window_ms
        while self._order and (self._order[0][0] < horizon or len(self._order) > self.max_events):
            _, _, event = self._order.popleft()
            named = self._by_name.get(event.name)
            if named:
                named.popleft()
                if not named:
                    del self._by_name[event.name]

    def since(self, name: str, ms: int) -> list[tuple[int, Event]]:
        """``(accepted ms, event)`` named ``name`` accepted at or after ``ms``, oldest first.

        An event accepted at or after ``ms`` was routed after ``ms`` too, so the walk
        goes from the last routed event back and stops at events routed before ``ms``
        (less the clock skew): its cost is the events routed since, not all kept.
        """
        out = []
        for routed, at, event in reversed(self._by_name.get(name, ())):
            if routed < ms - self.SKEW_MS:
                break
            if at >= ms:
                out.append((at, event))
        out.reverse()
        return out
