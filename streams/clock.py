"""Time, injected: the system clock in production, a manual one in tests.

Everything in steplog that reads the time reads it here: :func:`now_ms` (the wall
clock in ms since the epoch), or a :class:`Clock` passed in, so tests can move it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


def now_ms() -> int:
    """The wall clock in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class Clock(Protocol):
    """What the core needs of time: a wall clock in ms, and a way to wait."""

    def now_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.time()`` and ``asyncio.sleep``."""

    def now_ms(self) -> int:
        return now_ms()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to, so tests never really wait.

    ``sleep`` advances the clock by the requested time and yields once; set
    ``auto_advance=False`` to make sleepers wait until :meth:`advance` or
    :meth:`set` moves the clock past their deadline.
    """

    def __init__(self, start_ms: int = 1_700_000_000_000, *, auto_advance: bool = True) -> None:
        self._now_ms = start_ms
        self._auto_advance = auto_advance
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def now_ms(self) -> int:
        return self._now_ms

    def set(self, now_ms: int) -> None:
        """Move the clock to ``now_ms`` (never backwards) and wake due sleepers."""
        self._now_ms = max(self._now_ms, now_ms)
        due = [w for w in self._waiters if w[0] <= self._now_ms]
        self._waiters = [w for w in self._waiters if w[0] > self._now_ms]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    def advance(self, seconds: float = 0.0, *, ms: int = 0) -> None:
        """Move the clock forward by ``seconds`` plus ``ms``."""
        self.set(self._now_ms + round(seconds * 1000) + ms)

    async def sleep(self, seconds: float) -> None:
        deadline = self._now_ms + round(seconds * 1000)
        if self._auto_advance:
            self.set(deadline)
            await asyncio.sleep(0)
            return
        if deadline <= self._now_ms:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((deadline, future))
        await future
