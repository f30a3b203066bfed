"""The app's gate: the slots of env-scoped concurrency limits, free of I/O.

``Concurrency(limit=2, key='"openai"', scope="env")`` counts the executing runs of
every function of the app whose key has the same value. Those runs live on the
journals of different functions, so no function partition can count them: the
gate does. Its topic (``steplog-<app>-gate``) is keyed by the key's value, so all
the asks and frees of one value meet on one partition, whose :class:`EnvGate`
keeps, in that partition's store:

==================================  ===============================================
``H<hash of value>|<run id>``       a run holding a slot: where its grant went
``W<hash>|<score>|<offset>|<run>``  a run waiting for a slot (in score, then
                                    arrival order), with its ask
``N<hash>|<run id>``                the key of a waiting run's ``W`` entry
==================================  ===============================================

A run asks (:class:`~streams.lifecycle.records.SlotAsk`) each time it is about to
execute steps, and frees (:class:`~streams.lifecycle.records.SlotFree`) its slot when
it sleeps, waits, retries or ends. The gate grants
(:class:`~streams.lifecycle.records.SlotGrant`, in the run's journal) while fewer
than the ask's ``limit`` runs hold a slot and nobody waits before it. Each record is
safe to handle twice: a repeated ask of a holder is granted again, one of a waiting
run stays in its place, a repeated free finds nothing. Writes that give a slot go
before those that take the run off the queue, so any prefix of them a crash keeps
is handled again to the same end.
"""

from __future__ import annotations

import hashlib
from typing import Any

from streams.lifecycle.machine import Command, Journal
from streams.lifecycle.records import GATE, Record, SlotAsk, SlotFree, SlotGrant
from streams.lifecycle.store import RunStore

__all__ = ["GATE", "EnvGate"]

HOLDER = b"H"
WAITING = b"W"
INDEX = b"N"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).hexdigest()[:32].encode()


def holder_prefix(value: str) -> bytes:
    return HOLDER + _digest(value) + b"|"


def waiting_prefix(value: str) -> bytes:
    return WAITING + _digest(value) + b"|"


def index_key(value: str, run_id: str) -> bytes:
    return INDEX + _digest(value) + b"|" + run_id.encode()


class EnvGate:
    """The slots of the env-scoped limits whose values hash to one gate partition."""

    def __init__(self, store: RunStore, partition: int = 0) -> None:
        self.store = store
        self.partition = partition

    def handle(self, record: Record, key: str, now: int, offset: int = 0) -> list[Command]:
        """Apply an ask or a free (``offset`` orders asks with the same score)."""
        if isinstance(record, SlotAsk):
            return self._ask(record, offset)
        if isinstance(record, SlotFree):
            return self._free(record.run_id, record.value)
        return []

    def fire_due(self, now: int) -> list[Command]:
        return []  # the gate has no timers

    def holders(self, value: str) -> list[str]:
        prefix = holder_prefix(value)
        return [k[len(prefix) :].decode() for k in self.store.scan_keys(prefix)]

    def _ask(self, ask: SlotAsk, offset: int) -> list[Command]:
        value, run_id = ask.value, ask.run_id
        held = self.store.get(holder_prefix(value) + run_id.encode())
        if held is not None:
            return [_grant(held, run_id, value)]  # asked again: it holds a slot
        if self.store.get(index_key(value, run_id)) is not None:
            return []  # asked again: it keeps its place
        body = {
            "function": ask.function,
            "key": ask.key,
            "partition": ask.partition,
            "limit": ask.limit,
            "run_id": run_id,
        }
        waiting = next(self.store.scan_keys(waiting_prefix(value)), None) is not None
        if not waiting and len(self.holders(value)) < ask.limit:
            return [self._hold(value, run_id, body)]
        qkey = waiting_prefix(value) + b"%016d|%012d|%s" % (
            max(ask.score, 0),
            offset,
            run_id.encode(),
        )
        self.store.put(qkey, "gate-wait", body)
        self.store.put(index_key(value, run_id), "gate-index", {"q": qkey.decode()})
        return []

    def _free(self, run_id: str, value: str) -> list[Command]:
        hkey = holder_prefix(value) + run_id.encode()
        if self.store.get(hkey) is not None:
            self.store.delete(hkey)
        ikey = index_key(value, run_id)
        place = self.store.get(ikey)
        if place is not None:  # it gave up its place (cancelled while it waited)
            self.store.delete(str(place["q"]).encode())
            self.store.delete(ikey)
        return self._drain(value)

    def _drain(self, value: str) -> list[Command]:
        """Grant the waiting runs in order while the head's limit has room."""
        count = len(self.holders(value))
        out: list[Command] = []
        for qkey, body in list(self.store.scan(waiting_prefix(value))):
            run_id = str(body["run_id"])
            if self.store.get(holder_prefix(value) + run_id.encode()) is None:
                if count >= int(body["limit"]):
                    break
                out.append(self._hold(value, run_id, body))
                count += 1
            # else: granted already, and a crash kept the queue entry: it goes now
            self.store.delete(qkey)  # after the slot is given: a crash keeps one or both
            self.store.delete(index_key(value, run_id))
        return out

    def _hold(self, value: str, run_id: str, body: dict[str, Any]) -> Command:
        held = {"function": body["function"], "key": body["key"], "partition": body["partition"]}
        self.store.put(holder_prefix(value) + run_id.encode(), "gate-holder", held)
        return _grant(held, run_id, value)


def _grant(held: dict[str, Any], run_id: str, value: str) -> Journal:
    return Journal(
        str(held["function"]),
        str(held["key"]),
        SlotGrant(run_id, value),
        int(held["partition"]),
    )
