"""CEL expressions (compile once, evaluate many) and trigger name wildcards."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError, ExpressionError
from streams.event import Event
from streams.expressions import Expression, event_bindings, name_matches


def test_evaluates_nested_variables_to_python_values() -> None:
    expr = Expression("event.data.total > 100 && event.name == 'app/order'")
    assert expr.evaluate(event={"name": "app/order", "data": {"total": 150}}) is True
    assert Expression("event.data.items").evaluate(event={"data": {"items": [1, {"a": None}]}}) == [
        1,
        {"a": None},
    ]
    wait = Expression("async.data.orderId == event.data.orderId")
    assert wait.truthy(event={"data": {"orderId": 7}}, **{"async": {"data": {"orderId": 7}}})


def test_compile_error_names_the_expression() -> None:
    with pytest.raises(ConfigError) as info:
        Expression("event.data. >")
    assert "event.data. >" in str(info.value)
    assert "Syntax error" in str(info.value)


def test_unknown_variables_fail_at_construction_when_variables_are_given() -> None:
    with pytest.raises(ConfigError, match=r"unknown variable.*evnt"):
        Expression("evnt.data.x == 1", variables=["event"])
    # Names bound by macros are not free variables.
    Expression("event.data.items.exists(i, i.qty > 1)", variables=["event"])


def test_evaluation_errors_are_expression_errors() -> None:
    expr = Expression("event.data.missing == 1")
    with pytest.raises(ExpressionError, match="missing"):
        expr.evaluate(event={"data": {}})
    assert Expression("has(event.data.missing)").truthy(event={"data": {}}) is False


def test_bindings_are_reused_for_the_same_event() -> None:
    event = Event(name="app/a", data={"n": 2})
    first = event_bindings(event)
    assert event_bindings(event) is first
    assert Expression("event.data.n * 2").evaluate(first) == 4
    assert event_bindings(Event(name="app/a", data={"n": 3})) is not first


def test_truthy_reads_null_as_false() -> None:
    assert Expression("event.v").truthy(event={"v": None}) is False


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("app/user.created", "app/user.created", True),
        ("app/user.created", "app/user.created2", False),
        ("app/*", "app/user.created", True),
        ("app/*", "app/x", True),
        ("app/*", "app/", False),
        ("app/*", "other/x", False),
        ("app/user.*", "app/user.created", True),
        ("app/user.*", "app/users.created", False),
        ("app/user.*", "app/order.created", False),
    ],
)
def test_name_matches(pattern: str, name: str, expected: bool) -> None:
    assert name_matches(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["*", "app*", "app/*/x", "app/u*", "*/created", "a.**", ""])
def test_bad_wildcards(pattern: str) -> None:
    with pytest.raises(ConfigError, match="bad"):
        name_matches(pattern, "app/x")
