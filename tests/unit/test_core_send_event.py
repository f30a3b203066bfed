"""step.send_event: memoized like a step, ids derived from run id + step id."""

from __future__ import annotations

from typing import Any

from ulid import ULID

from streams import testing
from streams.core import (
    Context,
    EventsSent,
    ManualClock,
    Memo,
    RunDriver,
    RunInput,
    StepCompleted,
    apply_effect,
)
from streams.core.effects import Effect
from streams.errors import StepError
from streams.event import Event, accept

RUN_ID = "01JBZ5V0000000000000000000"
EVENT = accept(Event(name="app/x"), at_ms=1_700_000_000_000)


async def sender(ctx: Context) -> Any:
    ids = await ctx.step.send_event(
        "notify", [Event(name="app/a", data={"i": 1}), Event(name="app/b", id="my-dedup-key")]
    )
    return ids


async def activation(memos: dict[str, Memo] | None = None) -> list[Effect]:
    driver = RunDriver(sender, RunInput(RUN_ID, "shop-f", EVENT), memos, clock=ManualClock())
    return await driver.run_to_end()


async def test_events_sent_precede_the_step_completion() -> None:
    effects = await activation()
    sent, completed, _ = effects
    assert isinstance(sent, EventsSent) and isinstance(completed, StepCompleted)
    assert completed.op == "send_event"
    assert completed.output == [e.internal_id for e in sent.events]
    assert [e.name for e in sent.events] == ["app/a", "app/b"]
    assert sent.events[0].id == sent.events[0].internal_id  # id defaults to internal_id
    assert sent.events[1].id == "my-dedup-key"  # a user's id is kept
    assert ULID.from_str(completed.output[0]).milliseconds == ULID.from_str(RUN_ID).milliseconds


async def test_ids_are_the_same_when_the_step_runs_again() -> None:
    # A crash before the memo was durable: the step runs again and sends the same ids.
    first = await activation()
    again = await activation()
    assert isinstance(first[0], EventsSent) and isinstance(again[0], EventsSent)
    assert [e.internal_id for e in first[0].events] == [e.internal_id for e in again[0].events]


async def test_a_memoized_send_is_not_sent_again() -> None:
    memos: dict[str, Memo] = {}
    first = await activation(memos)
    for effect in first:
        apply_effect(memos, effect)
    replay = await activation(memos)
    assert not any(isinstance(e, EventsSent) for e in replay)
    assert replay[-1].result == first[1].output  # type: ignore[union-attr]


async def test_ids_are_deterministic_across_replays() -> None:
    normal = await testing.run_async(sender, EVENT, run_id=RUN_ID)
    replayed = await testing.run_async(sender, EVENT, run_id=RUN_ID, always_replay=True)
    assert normal.result == replayed.result
    assert [e.internal_id for e in replayed.events_sent] == normal.result


async def test_invalid_events_fail_the_step_without_retries() -> None:
    async def fn(ctx: Context) -> Any:
        try:
            await ctx.step.send_event("bad", Event(name="inngest/function.failed"))
        except StepError as err:
            return err.message
        return None

    result = await testing.run_async(fn, EVENT)
    assert "reserved prefix" in result.result
    assert result.step("bad").attempts == 1
    assert result.events_sent == []
