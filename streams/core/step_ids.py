"""Inngest's step ids: deterministic names for the steps of one run.

A step is found again on replay by its id, so ids must not depend on timing.
Within one run the n-th call with user id ``x`` gets ``x``, then ``x:1``,
``x:2`` ... (so a loop calling ``step.run("x", ...)`` works); the memo key is
the SHA-1 hex of that readable id, as Inngest hashes it. The readable id is
kept alongside for the run history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from streams.ids import derived_ulid, ulid_millis


@dataclass(frozen=True, slots=True)
class StepId:
    """One step's identity: the memo key (``hashed``) and what people read."""

    hashed: str
    readable: str
    user_id: str
    index: int


def hash_id(readable: str) -> str:
    """The memo key of a readable step id (``"x"``, ``"x:1"``)."""
    return hashlib.sha1(readable.encode("utf-8")).hexdigest()


def readable_id(user_id: str, index: int) -> str:
    """The readable id of the ``index``-th (0-based) call with ``user_id``."""
    return user_id if index == 0 else f"{user_id}:{index}"


class StepIds:
    """Hands out step ids in call order for one activation of a run."""

    __slots__ = ("_seen", "count")

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        #: How many step ids were handed out so far (the steps-per-run limit).
        self.count = 0

    def next(self, user_id: str) -> StepId:
        index = self._seen.get(user_id, 0)
        self._seen[user_id] = index + 1
        self.count += 1
        readable = readable_id(user_id, index)
        return StepId(hash_id(readable), readable, user_id, index)


def sent_event_id(run_id: str, step_id: str, index: int) -> str:
    """The id of the ``index``-th event a ``send_event`` step sends (a ULID).

    Derived, not drawn: a retried or replayed step produces the same ids, so
    the router drops the duplicates. The time part is the run id's (run ids are
    ULIDs); the rest is a hash of run id, step id and index.
    """
    return derived_ulid(ulid_millis(run_id), run_id, step_id, str(index))
