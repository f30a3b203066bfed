"""Declaring functions: bad config fails at declaration, naming function and field."""

from __future__ import annotations

from typing import Any

import pytest

from streams.app import App, Function
from streams.core.context import Context
from streams.errors import ConfigError, FunctionNotFoundError
from streams.event import Event
from streams.options import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
)


async def handler(ctx: Context) -> Any:
    return None


def declare(app: App, **kwargs: Any) -> Function:
    kwargs.setdefault("fn_id", "f")
    kwargs.setdefault("trigger", TriggerEvent(event="app/x"))
    return app.function(**kwargs)(handler)


def test_slug_handler_and_registry() -> None:
    app = App("shop")
    fn = declare(app, fn_id="process-order", name="Process order")
    assert fn.slug == "shop-process-order"
    assert fn.handler is handler
    assert fn.name == "Process order"
    assert app.functions == {"shop-process-order": fn}
    assert app.function_by_id("shop-process-order") is fn
    assert app.function_by_id("process-order") is fn
    with pytest.raises(FunctionNotFoundError, match="nope"):
        app.function_by_id("nope")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"trigger": TriggerEvent(event="app/x", expression="event.data. >")}, "trigger[0]"),
        ({"trigger": [TriggerEvent(event="a"), TriggerEvent(event="app*")]}, "trigger[1].event"),
        ({"trigger": [TriggerEvent(event=f"e{i}") for i in range(11)]}, "trigger"),
        ({"trigger": []}, "trigger"),
        ({"retries": 21}, "retries"),
        ({"retries": -1}, "retries"),
        ({"concurrency": [Concurrency(limit=1, key="event.data.")]}, "concurrency[0].key"),
        ({"concurrency": [Concurrency(limit=1)] * 3}, "concurrency"),
        ({"idempotency": "event.data.id +"}, "idempotency"),
        ({"idempotency": "evnt.data.id"}, "idempotency"),
    ],
)
def test_invalid_config_names_function_and_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        declare(App("shop"), **kwargs)
    message = str(info.value)
    assert message.startswith("shop-f: ")
    assert field in message


def test_fn_id_must_be_a_slug() -> None:
    with pytest.raises(ConfigError, match="fn_id 'Process Order' is not a slug"):
        declare(App("shop"), fn_id="Process Order")
    with pytest.raises(ConfigError, match="app id"):
        App("My Shop")


def test_duplicate_fn_id() -> None:
    app = App("shop")
    declare(app)
    with pytest.raises(ConfigError, match="shop-f: fn_id 'f' is already declared"):
        declare(app)


def test_handler_must_be_async() -> None:
    def sync_handler(ctx: Context) -> None:
        return None

    with pytest.raises(ConfigError, match=r"shop-f: handler: .*async def"):
        App("shop").function(fn_id="f", trigger=TriggerEvent(event="a"))(sync_handler)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("cancel", Cancel(event="shop/cancelled")),
        ("debounce", Debounce(period="5s")),
        ("singleton", Singleton()),
        ("priority", Priority(run="10")),
        ("idempotency", "event.data.orderId"),
        ("rate_limit", RateLimit(limit=1, period="1m")),
    ],
)
def test_a_batch_with_an_option_inngest_refuses_beside_it_fails_naming_both(
    option: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        declare(App("shop"), batch_events=Batch(max_size=10, timeout="5s"), **{option: value})
    assert str(info.value).startswith(f"shop-f: batch_events cannot be combined with {option}: ")


def test_a_batch_is_keyed_like_the_other_options_and_needs_a_timeout() -> None:
    event = Event(name="a", data={"userId": 42})
    keyed = declare(
        App("shop"), batch_events=Batch(max_size=10, timeout="5s", key="event.data.userId")
    )
    assert keyed.run_key(event) == "42" and keyed.batch_key(event) == "42"
    whole = declare(App("shop"), batch_events=Batch(max_size=10, timeout="5s"))
    assert whole.run_key(event) == "shop-f"  # one batch for the function: one partition
    with pytest.raises(ConfigError, match=r"batch_events\.timeout is 0:00:00"):
        declare(App("shop"), batch_events=Batch(max_size=10, timeout=0))
    with pytest.raises(ValueError, match="max_size"):
        Batch(max_size=0, timeout="5s")


def test_cancel_rules_and_timeouts_are_checked_at_declaration() -> None:
    fn = declare(
        App("shop"),
        cancel=[Cancel(event="app/order.cancelled", if_exp="async.data.id == event.data.id")],
        timeouts=Timeouts(start="10s", finish="1h"),
    )
    assert [c.event for c in fn.cancel] == ["app/order.cancelled"]
    assert fn.timeouts is not None and fn.timeouts.finish is not None
    with pytest.raises(ConfigError, match=r"shop-f: cancel: 6 rules given; .* at most 5"):
        declare(App("shop"), cancel=[Cancel(event=f"app/c{i}") for i in range(6)])
    with pytest.raises(ConfigError, match=r"shop-f: cancel\[0\]\.if_exp: .*unknown variable"):
        declare(App("shop"), cancel=Cancel(event="app/c", if_exp="asink.data.id == 1"))
    with pytest.raises(ConfigError, match=r"shop-f: cancel\[0\]\.event: .*no wildcard"):
        declare(App("shop"), cancel=Cancel(event="app/*"))


def test_cron_triggers_mix_with_event_triggers() -> None:
    fn = declare(App("shop"), trigger=[TriggerCron(cron="0 9 * * *"), TriggerEvent(event="app/x")])
    assert fn.event_patterns == ["app/x"]
    only_cron = declare(App("shop"), trigger=TriggerCron(cron="0 9 * * *"))
    assert only_cron.event_patterns == []
    assert not only_cron.matches(Event(name="inngest/scheduled.timer"))


def test_matches_wildcards_and_expressions_once_per_event() -> None:
    fn = declare(
        App("shop"),
        trigger=[
            TriggerEvent(event="app/order.*", expression="event.data.total > 0"),
            TriggerEvent(event="app/*"),
        ],
    )
    assert fn.matches(Event(name="app/order.created", data={"total": 1}))
    assert fn.matches(Event(name="app/order.created", data={"total": 0}))  # second trigger
    assert not fn.matches(Event(name="other/order.created", data={"total": 1}))
    only = declare(
        App("shop"), trigger=TriggerEvent(event="app/order.*", expression="event.data.total > 0")
    )
    assert not only.matches(Event(name="app/order.created", data={}))  # missing field: false
    assert App("x").functions_for(Event(name="a")) == []


def test_run_key_and_idempotency_key() -> None:
    fn = declare(
        App("shop"),
        concurrency=[Concurrency(limit=0, key="event.data.userId")],
        idempotency="event.data.orderId",
    )
    event = Event(name="app/x", data={"userId": 42, "orderId": "o-1"})
    assert fn.run_key(event) == "42"
    assert fn.idempotency_key(event) == "o-1"
    assert fn.run_key(Event(name="app/x", data={})) is None  # not evaluable: keyed by run id
    assert fn.slot_limits == ()  # limit 0: the key only picks the partition
    plain = declare(App("shop"))
    assert plain.run_key(event) is None
    assert plain.idempotency_key(event) is None


def test_limits_route_the_runs_they_count_together_to_one_partition() -> None:
    event = Event(name="app/x", data={"userId": 42, "accountId": "a"})
    keyed = declare(App("shop"), concurrency=Concurrency(limit=3, key="event.data.userId"))
    assert keyed.run_key(event) == "42"
    assert keyed.slot_keys(event) == ("42",)
    # A key that cannot be evaluated: counted with the others like it, on one partition.
    assert keyed.run_key(Event(name="app/x", data={})) == "shop-f"
    assert keyed.slot_keys(Event(name="app/x", data={})) == ("",)
    both = declare(
        App("shop"),
        concurrency=[Concurrency(limit=5), Concurrency(limit=1, key="event.data.userId")],
    )
    assert both.slot_limits == (5, 1)
    assert both.run_key(event) == "shop-f"  # a key-less limit counts every run
    assert both.slot_keys(event) == ("", "42")
    two_keys = declare(
        App("shop"),
        concurrency=[
            Concurrency(limit=3, key="event.data.userId"),
            Concurrency(limit=9, key="event.data.accountId"),
        ],
    )
    assert two_keys.run_key(event) == "shop-f"
    assert two_keys.slot_keys(event) == ("42", "a")
    same_key = declare(
        App("shop"),
        concurrency=[
            Concurrency(limit=0, key="event.data.accountId"),
            Concurrency(limit=3, key="event.data.userId"),
        ],
    )
    assert same_key.run_key(event) == "42"  # the limited key picks the partition


def test_rate_limits_and_singletons_route_with_their_key_too() -> None:
    event = Event(name="app/x", data={"userId": 42, "accountId": "a"})
    rated = declare(
        App("shop"), rate_limit=RateLimit(limit=1, period="1m", key="event.data.userId")
    )
    assert rated.run_key(event) == "42" and rated.rate_key(event) == "42"
    assert (
        declare(App("shop"), rate_limit=RateLimit(limit=1, period="1m")).run_key(event) == "shop-f"
    )
    one = declare(
        App("shop"),
        concurrency=Concurrency(limit=3, key="event.data.userId"),
        singleton=Singleton(key="event.data.userId", mode="cancel"),
    )
    assert one.run_key(event) == "42" and one.singleton_key(event) == "42"
    apart = declare(
        App("shop"),
        concurrency=Concurrency(limit=3, key="event.data.userId"),
        singleton=Singleton(key="event.data.accountId"),
    )
    assert apart.run_key(event) == "shop-f"  # two keys counted: one partition
    with pytest.raises(ConfigError, match=r"rate_limit\.key"):
        declare(App("shop"), rate_limit=RateLimit(limit=1, period="1m", key="event.data.("))
    paced = declare(
        App("shop"), throttle=Throttle(limit=2, period="1m", burst=1, key="event.data.userId")
    )
    assert paced.run_key(event) == "42" and paced.throttle_key(event) == "42"
    held = declare(App("shop"), debounce=Debounce(period="5s", key="event.data.userId"))
    assert held.run_key(event) == "42" and held.debounce_key(event) == "42"
    both = declare(App("shop"), debounce=Debounce(period="5s"), singleton=Singleton())
    assert both.one_partition  # neither has a key: every run on one partition
    with pytest.raises(ValueError, match="mode"):
        Singleton(mode="queue")  # type: ignore[arg-type]


def test_priority_is_whole_seconds_clipped_and_zero_when_it_fails() -> None:
    fn = declare(
        App("shop"),
        concurrency=Concurrency(limit=1),
        priority=Priority(run="event.data.vip ? 120 : event.data.p"),
    )
    assert fn.priority_s(Event(name="app/x", data={"vip": True})) == 120
    assert fn.priority_s(Event(name="app/x", data={"vip": False, "p": -5000})) == -600
    assert fn.priority_s(Event(name="app/x", data={"vip": False, "p": 2.9})) == 2
    assert fn.priority_s(Event(name="app/x", data={"vip": False, "p": "high"})) == 0
    assert fn.priority_s(Event(name="app/x", data={})) == 0  # fails to evaluate


def test_concurrency_scope_account_is_refused_and_env_needs_one_keyed_limit() -> None:
    with pytest.raises(ConfigError, match="scope 'account' counts runs of other apps"):
        declare(App("shop"), concurrency=Concurrency(limit=1, key="event.id", scope="account"))
    with pytest.raises(ConfigError, match="scope 'env' needs a key"):
        declare(App("shop"), concurrency=Concurrency(limit=1, scope="env"))
    with pytest.raises(ConfigError, match="two limits with scope 'env'"):
        declare(
            App("shop"),
            concurrency=[
                Concurrency(limit=1, key='"a"', scope="env"),
                Concurrency(limit=1, key='"b"', scope="env"),
            ],
        )
    shared = declare(
        App("shop"),
        concurrency=[
            Concurrency(limit=5, key='"openai"', scope="env"),
            Concurrency(limit=2, key="event.data.userId"),
        ],
    )
    event = Event(name="a", data={"userId": 42})
    assert shared.env_key(event) == "openai" and shared.env_limit is not None
    assert shared.slot_limits == (2,)  # the function's own limit; the gate counts the other
    assert shared.run_key(event) == "42"


def test_on_failure_registers_a_second_function() -> None:
    app = App("shop")

    async def failed(ctx: Context) -> None:
        return None

    fn = declare(app, fn_id="charge", on_failure=failed)
    failure = app.functions["shop-charge-failure"]
    assert fn.on_failure is failure
    assert failure.handler is failed
    assert failure.failure_of == "shop-charge"
    assert failure.event_patterns == ["inngest/function.failed"]
    mine = Event(name="inngest/function.failed", data={"function_id": "shop-charge"})
    other = Event(name="inngest/function.failed", data={"function_id": "shop-other"})
    assert failure.matches(mine)
    assert not failure.matches(other)
    assert not fn.matches(mine)
