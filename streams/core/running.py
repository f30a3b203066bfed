"""Whose user code each asyncio task runs now: what a loop watchdog names.

The driver notes, per task, the run whose code the task executes and the step whose
body it is running, if any. A watchdog thread that finds the event loop blocked asks
which task the loop is running (``asyncio.current_task(loop)`` works from another
thread) and looks it up here. Plain bookkeeping: no I/O, no clocks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

_Token = tuple["asyncio.Task[Any] | None", "UserCode | None"]


@dataclass(frozen=True, slots=True)
class UserCode:
    """A run's code: ``step`` is the readable id of the step body running, or None
    for the function's own code between steps."""

    function_id: str
    run_id: str
    step: str | None = None

    def describe(self) -> str:
        where = f"step {self.step!r}" if self.step is not None else "code outside any step"
        return f"{where} of run {self.run_id} (function {self.function_id})"


_by_task: dict[asyncio.Task[Any], UserCode] = {}


def enter(code: UserCode) -> _Token:
    """Note that the current task runs ``code`` (until :func:`leave` with the token)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return None, None
    if task is None:
        return None, None
    previous = _by_task.get(task)
    _by_task[task] = code
    return task, previous


def leave(token: _Token) -> None:
    """Undo the :func:`enter` that returned ``token``."""
    task, previous = token
    if task is None:
        return
    if previous is None:
        _by_task.pop(task, None)
    else:
        _by_task[task] = previous


def running_in(task: asyncio.Task[Any] | None) -> UserCode | None:
    """The user code ``task`` is running, if it runs any (safe from another thread)."""
    if task is None:
        return None
    return _by_task.get(task)
