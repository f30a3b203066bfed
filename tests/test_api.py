"""The HTTP event API on a real uvicorn server, writing to the real broker."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import inngest
import pytest
import uvicorn

from connectors.api import create_app
from streams.client import Client
from streams.kafka.admin import ensure_topics
from streams.serde import EventCodec
from streams.settings import Settings
from tests.kafka_helpers import read_topic, record_count

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving the API in a thread, on a free local port."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings, client=client),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "API did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def api(settings: Settings) -> Iterator[Server]:
    ensure_topics(settings)
    with Server(settings) as server:
        yield server


def test_inngest_sdk_client_sends_to_steplog(api: Server, settings: Settings) -> None:
    client = inngest.Inngest(app_id="t", event_api_base_url=api.url, is_production=False)
    ids = client.send_sync(
        [
            inngest.Event(name="app/user.created", data={"userId": "u1"}),
            inngest.Event(name="app/user.created", data={"userId": "u2"}, id="dedup-2"),
        ]
    )
    assert len(ids) == 2 and len(set(ids)) == 2
    records = read_topic(settings, settings.topic("events"), 2)
    codec = EventCodec(settings)
    events = sorted((codec.decode(m.value()) for m in records), key=lambda e: e.data["userId"])
    assert [e.internal_id for e in events] == ids
    assert events[0].id == ids[0] and events[1].id == "dedup-2"
    assert records[0].value()[:2] == b"\xc3\x01"  # Avro single-object encoding
    keys = {m.key() for m in records}
    assert keys == {ids[0].encode(), b"dedup-2"}  # the Kafka key is the event id


def test_single_event_and_health(api: Server) -> None:
    r = httpx.post(f"{api.url}/e/anykey", json={"name": "app/a", "data": {"x": 1}})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == 200 and len(body["ids"]) == 1
    assert httpx.get(f"{api.url}/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "body is empty"),
        (json.dumps([{"name": "app/a"}, {"data": {}}]).encode(), "event 1: name: is required"),
        (json.dumps({"name": "inngest/function.failed"}).encode(), "reserved prefix"),
        (json.dumps({"name": "a", "data": "x"}).encode(), "data must be a JSON object"),
        (json.dumps({"name": "a", "ts": 12}).encode(), "outside 1980-2100"),
    ],
)
def test_invalid_requests_write_nothing(
    api: Server, settings: Settings, payload: bytes, fragment: str
) -> None:
    r = httpx.post(f"{api.url}/e/k", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["ids"] == [] and body["status"] == 400 and fragment in body["error"]
    assert record_count(settings, settings.topic("events")) == 0


def test_size_limits(settings: Settings) -> None:
    small = settings.model_copy(
        update={"max_event_bytes": 200, "max_events_per_request": 3, "max_request_bytes": 2000}
    )
    ensure_topics(small)
    with Server(small) as server:
        big = {"name": "a", "data": {"x": "y" * 300}}
        r = httpx.post(f"{server.url}/e/k", json=[{"name": "a"}, big])
        assert r.status_code == 400 and "limit is 200 bytes" in r.json()["error"]
        r = httpx.post(f"{server.url}/e/k", json=[{"name": "a"}] * 4)
        assert r.status_code == 400 and "limit is 3" in r.json()["error"]
        r = httpx.post(f"{server.url}/e/k", content=b"[" + b" " * 3000 + b"]")
        assert r.status_code == 400 and "limit is 2000 bytes" in r.json()["error"]
    assert record_count(small, small.topic("events")) == 0


def test_event_keys_are_enforced_when_configured(settings: Settings) -> None:
    keyed = settings.model_copy(update={"event_keys": ("k1", "k2")})
    ensure_topics(keyed)
    with Server(keyed) as server:
        r = httpx.post(f"{server.url}/e/wrong", json={"name": "a"})
        assert r.status_code == 401 and r.json()["ids"] == [] and "key" in r.json()["error"]
        assert httpx.post(f"{server.url}/e/k2", json={"name": "a"}).status_code == 200


def test_seed_header_makes_a_retried_request_yield_the_same_ids(api: Server) -> None:
    headers = {"x-inngest-event-id-seed": "1763700000000,AAECAwQFBgcICQ=="}
    events = [{"name": "a"}, {"name": "b"}]
    first = httpx.post(f"{api.url}/e/k", json=events, headers=headers).json()["ids"]
    again = httpx.post(f"{api.url}/e/k", json=events, headers=headers).json()["ids"]
    assert first == again and len(set(first)) == 2


def test_kafka_failure_answers_503_with_a_clear_error(settings: Settings) -> None:
    with socket.socket() as s:  # a port where no broker listens
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    broken = settings.model_copy(update={"bootstrap_servers": dead, "produce_timeout_ms": 1500})
    with Server(broken) as server:
        r = httpx.post(f"{server.url}/e/k", json={"name": "a"}, timeout=30)
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == 503 and body["ids"] == [] and "Kafka" in body["error"]


def test_events_with_a_data_schema_are_validated_at_ingest(
    settings: Settings, tmp_path: Path
) -> None:
    import shutil

    repo_schemas = Path(__file__).resolve().parents[1] / "schemas"
    for f in repo_schemas.glob("*.avsc"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "app.signup.v1.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Signup",
                "namespace": "app.events",
                "fields": [{"name": "email", "type": "string"}, {"name": "age", "type": "int"}],
            }
        )
    )
    ensure_topics(settings)
    client = Client(settings)
    client.codec = EventCodec(settings, schemas_dir=tmp_path)
    with Server(settings, client=client) as server:
        bad = httpx.post(
            f"{server.url}/e/k",
            json={"name": "app/signup", "v": "1", "data": {"email": "a", "age": "x"}},
        )
        assert bad.status_code == 400 and "data.age" in bad.json()["error"], bad.text
        good = httpx.post(
            f"{server.url}/e/k",
            json={"name": "app/signup", "v": "1", "data": {"email": "a", "age": 3}},
        )
        assert good.status_code == 200, good.text
    client.close()
    [record] = read_topic(settings, settings.topic("events"), 1)
    event = client.codec.decode(record.value())
    assert event.data == {"email": "a", "age": 3}
