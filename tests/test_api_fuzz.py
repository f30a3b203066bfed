"""Fuzz the event API from its own OpenAPI schema (schemathesis): no 500s, no crash.

The app runs in process (ASGI) but writes to the real broker through a real Client.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st

from connectors.api import create_app
from streams.client import Client
from streams.kafka.admin import ensure_topics
from streams.settings import Settings

pytestmark = pytest.mark.kafka


def test_api_never_fails_with_a_server_error(settings: Settings) -> None:
    ensure_topics(settings)
    client = Client(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, client=client))
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/e/{event_key}", "/health"}
    strategy = st.one_of(*(op.as_strategy() for op in operations))
    seen: dict[int, int] = {}

    @hypothesis.settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        derandomize=True,
        database=None,
    )
    @hypothesis.given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call()
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text
        if case.path.startswith("/e/"):
            body = response.json()
            assert body["status"] == response.status_code
            assert isinstance(body["ids"], list)
            if response.status_code != 200:
                assert body["error"]

    try:
        check()
    finally:
        client.close()
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0, seen
