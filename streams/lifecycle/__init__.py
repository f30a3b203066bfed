"""The run lifecycle, free of I/O: journal records in, state writes and commands out.

* :mod:`~streams.lifecycle.records`: the journal's record types and their wire form;
* :mod:`~streams.lifecycle.state`: the run state, its status, the state keys;
* :mod:`~streams.lifecycle.store`: the :class:`RunStore` interface and its dict twin;
* :mod:`~streams.lifecycle.timers`: durable timers and the in-memory window of them;
* :mod:`~streams.lifecycle.system`: system events and run-history records;
* :mod:`~streams.lifecycle.machine`: :class:`PartitionLifecycle`, every decision.

The workers' Faust agents (``agents/functions.py``) and ``streams.testing`` drive it.
"""

from streams.lifecycle.machine import (
    Activate,
    Announce,
    Command,
    History,
    Journal,
    Limits,
    LiveRun,
    PartitionLifecycle,
    Register,
    Release,
    SendEvent,
    Unregister,
)
from streams.lifecycle.records import Record
from streams.lifecycle.state import RunState, RunStatus
from streams.lifecycle.store import MemoryRunStore, RunStore

__all__ = [
    "Activate",
    "Announce",
    "Command",
    "History",
    "Journal",
    "Limits",
    "LiveRun",
    "MemoryRunStore",
    "PartitionLifecycle",
    "Record",
    "Register",
    "Release",
    "RunState",
    "RunStatus",
    "RunStore",
    "SendEvent",
    "Unregister",
]
