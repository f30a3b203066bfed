"""Control flow the user's code must not catch: ``BaseException`` subclasses.

When a step asks the run to stop (a retry backoff; later a sleep or a wait),
the driver raises :class:`Suspend` into user code, so ``except Exception``
cannot swallow it. The driver also records the request itself, so even code
that catches ``BaseException`` cannot make a suspended run complete.

The other way round, a ``BaseException`` that user code raises (``SystemExit``,
``KeyboardInterrupt``, ``GeneratorExit``) must not leave the run: :func:`exit_error`
turns it into an ordinary error.
"""

from __future__ import annotations

from streams.errors import UserCodeExitError


class Interrupt(BaseException):
    """Stop user code: the activation ends here."""


class Suspend(Interrupt):
    """The run waits (durably) and resumes from the top in a later activation."""


class Abort(Interrupt):
    """The run failed for good (a limit, a misuse), or the activation is over."""


def exit_error(exc: BaseException, where: str) -> UserCodeExitError:
    """The error that stands for a ``SystemExit`` (or other BaseException) from user code.

    Left alone, asyncio would hand SystemExit and KeyboardInterrupt to the event loop,
    which stops the worker, and a GeneratorExit would end the run's task without an
    outcome. ``where`` names the code, e.g. ``"step 'charge'"``.
    """
    detail = f"{type(exc).__name__}({exc})" if str(exc) else type(exc).__name__
    error = UserCodeExitError(
        f"{where} raised {detail}; steplog treats it as an error (retried as any error "
        "is), not as a request to stop the worker: raise an Exception instead "
        "(NonRetriableError to fail without retries)"
    )
    error.__cause__ = exc
    return error
