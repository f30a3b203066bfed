"""Control flow the user's code must not catch: ``BaseException`` subclasses.

When a step asks the run to stop (a retry backoff; later a sleep or a wait),
the driver raises :class:`Suspend` into user code, so ``except Exception``
cannot swallow it. The driver also records the request itself, so even code
that catches ``BaseException`` cannot make a suspended run complete.
"""

from __future__ import annotations


class Interrupt(BaseException):
    """Stop user code: the activation ends here."""


class Suspend(Interrupt):
    """The run waits (durably) and resumes from the top in a later activation."""


class Abort(Interrupt):
    """The run failed for good (a limit, a misuse), or the activation is over."""
