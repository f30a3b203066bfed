"""CEL expressions (``expression``, ``if_exp``, ``key``) and trigger name wildcards.

Inngest's expressions are CEL; steplog evaluates them with the
``common-expression-language`` package (never a hand-written parser). Two costs
matter on the router's hot path, so both are paid once:

* compiling: an :class:`Expression` compiles at construction, and compiled
  programs are cached by source, so the same expression on many functions
  compiles once;
* converting variables to CEL values (tens of microseconds for a typical
  event): :class:`Bindings` converts once and can be reused by every expression
  evaluated against the same event (see :func:`event_bindings`).
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import cel

from streams.errors import ConfigError, ExpressionError
from streams.event import Event

#: Variables Inngest expressions may use: the triggering event, the event a
#: wait matched (``async``), and the batch (``events``).
KNOWN_VARIABLES = frozenset({"event", "async", "events"})
# Names bound by comprehension macros (``items.exists(i, i.qty > 1)``) are not
# free variables; Program.variables() lists them all the same.
_MACRO_BINDING = re.compile(r"\b(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> cel.Program:
    return cel.compile(source)


class Bindings:
    """Variables converted to CEL values once, for any number of evaluations."""

    __slots__ = ("_context",)

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self._context = cel.Context(dict(variables))

    @property
    def context(self) -> cel.Context:
        return self._context


class Expression:
    """One compiled CEL expression.

    ``Expression(source)`` raises :class:`ConfigError` naming the expression and
    the compiler's message. ``variables`` (when given) is the set of names the
    expression may use; any other free name is reported at construction, so a
    typo such as ``evnt.data.x`` fails at declaration rather than on every event.
    """

    __slots__ = ("_program", "source")

    def __init__(self, source: str, *, variables: Iterable[str] | None = None) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"expression {source!r} is empty; write a CEL expression")
        self.source = source
        try:
            self._program = _compile(source)
        except Exception as exc:
            raise ConfigError(f"expression {source!r} does not compile: {exc}") from exc
        if variables is not None:
            allowed = set(variables)
            bound = set(_MACRO_BINDING.findall(source))
            unknown = sorted(set(self._program.variables()) - allowed - bound)
            if unknown:
                raise ConfigError(
                    f"expression {source!r} uses unknown variable(s) {', '.join(unknown)}; "
                    f"it may use {', '.join(sorted(allowed))}"
                )

    def evaluate(self, bindings: Bindings | None = None, /, **variables: Any) -> Any:
        """Evaluate against ``bindings`` or keyword variables; returns Python values.

        Raises :class:`ExpressionError` when evaluation fails (a missing map key,
        an undefined variable, a type mismatch ...).
        """
        context: cel.Context | dict[str, Any] = (
            bindings.context if bindings is not None else variables
        )
        try:
            return self._program.execute(context)
        except Exception as exc:
            raise ExpressionError(f"expression {self.source!r} failed: {_describe(exc)}") from exc

    def truthy(self, bindings: Bindings | None = None, /, **variables: Any) -> bool:
        """Evaluate and read the result as a condition (``null`` is false)."""
        value = self.evaluate(bindings, **variables)
        if isinstance(value, bool):
            return value
        return value is not None and bool(value)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key {exc.args[0]!r} (use has(...) to test for optional fields)"
    return str(exc) or type(exc).__name__


def event_vars(event: Event) -> dict[str, Any]:
    """The ``event`` variable of an expression: Inngest's envelope fields."""
    return {"name": event.name, "data": event.data, "id": event.id, "ts": event.ts, "v": event.v}


# The router asks every function whether it matches the same event; converting
# the event once for all of them is the difference between ~5 us and ~80 us per
# expression. One entry is enough (events are routed one at a time); a weak
# reference keeps the cache from holding events alive.
# One tuple, swapped whole, so that a reader in another thread never pairs one
# event with another event's bindings.
_last: tuple[weakref.ref[Event], Bindings] | None = None


def event_bindings(event: Event) -> Bindings:
    """Bindings with ``event`` (and ``events`` = [event]) for one event, cached.

    The cache is keyed by the event object: mutate an event's ``data`` in place
    and evaluate again, and you get the values converted before the mutation.
    """
    global _last
    last = _last
    if last is not None and last[0]() is event:
        return last[1]
    as_dict = event_vars(event)
    bindings = Bindings({"event": as_dict, "events": [as_dict]})
    _last = (weakref.ref(event), bindings)
    return bindings


# --- Trigger name wildcards ------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> tuple[str, bool]:
    """Validate a trigger name pattern; return ``(text, is_prefix)``.

    ``app/user.created`` matches itself; ``app/*`` matches every name under
    ``app/``; ``app/user.*`` every name under ``app/user.``. A ``*`` anywhere
    else is rejected with :class:`ConfigError` ("bad wildcard ...").
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"bad event name {pattern!r}: it is empty")
    star = pattern.find("*")
    if star == -1:
        return pattern, False
    if star != len(pattern) - 1 or len(pattern) < 2 or pattern[-2] not in "/.":
        raise ConfigError(
            f"bad wildcard {pattern!r}: '*' may only be the last segment, after '/' or '.' "
            "(e.g. 'app/*' or 'app/user.*')"
        )
    return pattern[:-1], True


def name_matches(pattern: str, name: str) -> bool:
    """Whether event ``name`` matches trigger ``pattern`` (exact or a wildcard)."""
    text, is_prefix = compile_pattern(pattern)
    if is_prefix:
        return len(name) > len(text) and name.startswith(text)
    return name == text
