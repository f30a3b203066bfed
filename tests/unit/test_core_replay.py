"""Replays from the top: code changes between activations, always-replay mode, mocks."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from streams import testing
from streams.core import (
    Context,
    ErrorInfo,
    ManualClock,
    Memo,
    RunCompleted,
    RunDriver,
    RunInput,
    StepFailed,
    apply_effect,
)
from streams.core.effects import RunSuspended, effect_from_dict, effect_to_dict
from streams.core.step_ids import StepIds, hash_id
from streams.errors import NonDeterminismError, StepError
from streams.event import Event, accept

RUN_ID = "01JBZ5V0000000000000000000"
EVENT = accept(Event(name="app/x", data={"n": 1}), at_ms=1_700_000_000_000)


def test_step_ids_follow_inngest() -> None:
    ids = StepIds()
    got = [ids.next(x) for x in ["a", "b", "a", "a"]]
    assert [s.readable for s in got] == ["a", "b", "a:1", "a:2"]
    assert got[2].hashed == hash_id("a:1") and len(got[2].hashed) == 40
    assert ids.count == 4


async def test_code_change_between_activations(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def record(call: str, output: str) -> str:
        calls.append(call)
        return output

    async def v1(ctx: Context) -> Any:
        await ctx.step.run("old", record, "old", "")
        await ctx.step.run("kept", record, "kept", "kept")
        return None

    async def v2(ctx: Context) -> Any:  # deployed while the run was in flight
        kept = await ctx.step.run("kept", record, "kept-again", "new")
        new = await ctx.step.run("new", record, "new", "N")
        return [kept, new]

    memos: dict[str, Memo] = {}
    first = RunDriver(v1, RunInput(RUN_ID, "f", EVENT), clock=ManualClock())
    for effect in await first.run_to_end():
        apply_effect(memos, effect)
    second = RunDriver(v2, RunInput(RUN_ID, "f", EVENT), memos, clock=ManualClock())
    with caplog.at_level(logging.WARNING):
        effects = await second.run_to_end()
    assert effects[-1] == RunCompleted(RUN_ID, ["kept", "N"])
    assert calls == ["old", "kept", "new"]  # "kept" matched by id, "new" ran
    assert [m.name for m in second.unreached] == ["old"]
    assert "'old'" in caplog.text and "not reached" in caplog.text


async def test_always_replay_mode_on_a_multi_step_function() -> None:
    bodies = {"a": 0, "b": 0, "c": 0}
    starts = 0

    def body(name: str) -> Any:
        bodies[name] += 1
        return name.upper()

    async def fn(ctx: Context) -> Any:
        nonlocal starts
        starts += 1
        a = await ctx.step.run("a", body, "a")
        b = await ctx.step.run("b", body, "b")
        c = await ctx.step.run("c", body, "c")
        return a + b + c

    result = await testing.run_async(fn, EVENT, always_replay=True)
    assert result.result == "ABC"
    assert bodies == {"a": 1, "b": 1, "c": 1}  # each body once, however many replays
    assert starts == result.activations == 4  # one execution per step, plus the last
    replays = [e for e in result.effects if isinstance(e, RunSuspended)]
    assert [r.reason for r in replays] == ["replay"] * 3


async def test_always_replay_with_retries_and_caught_errors() -> None:
    attempts = {"n": 0}

    def flaky() -> str:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ValueError("again")
        return "ok"

    def broken() -> None:
        raise ValueError("always")

    async def fn(ctx: Context) -> Any:
        ok = await ctx.step.run("flaky", flaky)
        try:
            await ctx.step.run("broken", broken)
        except StepError:
            return [ok, "caught"]
        return None

    result = await testing.run_async(fn, EVENT, always_replay=True)
    assert result.result == ["ok", "caught"]
    assert result.step("broken").attempts == 5


async def test_always_replay_catches_non_deterministic_step_ids() -> None:
    async def fn(ctx: Context) -> Any:
        await ctx.step.run(f"pick-{random.random()}", lambda: 1)
        await ctx.step.run("then", lambda: 2)

    with pytest.raises(NonDeterminismError, match="pick-"):
        await testing.run_async(fn, EVENT, always_replay=True)


def test_mocked_steps_never_run() -> None:
    async def charge() -> dict[str, bool]:
        raise AssertionError("the real charge must not run in tests")

    async def fn(ctx: Context) -> Any:
        paid = await ctx.step.run("charge", charge)
        try:
            await ctx.step.run("refund", charge)
        except StepError as err:
            return [paid, err.message]
        return None

    result = testing.run(
        fn, {"name": "app/x"}, steps={"charge": {"ok": True}, "refund": ValueError("mocked")}
    )
    assert result.result == [{"ok": True}, "mocked"]


async def test_sync_runner_refuses_a_running_loop() -> None:
    async def fn(ctx: Context) -> Any:
        return 1

    with pytest.raises(RuntimeError, match="run_async"):
        testing.run(fn, EVENT)


def test_memos_and_effects_round_trip_as_json_dicts() -> None:
    memo = Memo(hash_id("a"), "a", "retrying", error=ErrorInfo("E", "m", "s"), retry_at_ms=5)
    assert Memo.from_dict(memo.to_dict()) == memo
    failed = StepFailed(RUN_ID, hash_id("a"), "a", ErrorInfo("E", "m"), 0, 123, 1, 2)
    assert effect_from_dict(effect_to_dict(failed)) == failed
    assert effect_to_dict(failed)["type"] == "step.failed"
