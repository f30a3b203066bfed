"""The HTTP event API: Inngest's ``POST /e/{event_key}`` in front of the events topic.

A request is validated whole before anything is written; the response is sent
only once Kafka acknowledged every event. Status codes and bodies follow
Inngest's event API so its SDKs (inngest-py's ``send``) work unchanged.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.routing import Route

from streams.client import Client
from streams.errors import EventValidationError, KafkaUnavailableError, StreamsError
from streams.event import seeded_ids
from streams.kafka.cancel import BadRunIdError, request_cancel
from streams.settings import Settings

log = logging.getLogger(__name__)

SEED_HEADER = "x-inngest-event-id-seed"

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 256},
        "data": {"type": "object"},
        "id": {"type": "string"},
        "ts": {"type": "integer"},
        "v": {"type": "string"},
    },
}
_SEND_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA}]}
            }
        },
    },
    "responses": {
        "200": {"description": "Every event was written; `ids` in request order."},
        "400": {"description": "The request was invalid; nothing was written."},
        "401": {"description": "Missing or unknown event key."},
        "503": {"description": "Kafka failed; `ids` lists the events it acknowledged."},
    },
}


def _reply(status: int, ids: list[str], error: str | None = None) -> Response:
    if error is None:  # the hot path; the same bytes as json.dumps (ids are ASCII ULIDs)
        content = orjson.dumps({"ids": ids, "status": status})
    else:
        return _json(status, {"ids": ids, "status": status, "error": error})
    return Response(content, status_code=status, media_type="application/json")


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    """Build the API. ``client`` is created from ``settings`` when not given."""
    settings = settings or Settings()
    state: dict[str, Client] = {}
    keys = tuple(k.encode() for k in settings.event_keys)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["client"] = client or Client(settings)
        # What exists now (modules, the app, the client) lives as long as the server:
        # frozen, the cyclic garbage collector stops walking it in every full
        # collection (those took ~10% of the server's CPU on single-event requests).
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            if client is None:
                state["client"].close()

    app = FastAPI(title="steplog event API", version="1", lifespan=lifespan)

    def key_ok(event_key: str) -> bool:
        if not keys:
            return True
        given = event_key.encode()
        return any(hmac.compare_digest(given, k) for k in keys)

    async def send_events(request: Request) -> Response:
        """Send one event or an array of events."""
        event_key: str = request.path_params["event_key"]
        if not key_ok(event_key):
            return _reply(
                401,
                [],
                "Event key not found: send events to /e/<key> with a key "
                "listed in STEPLOG_EVENT_KEYS",
            )
        body = await request.body()
        if len(body) > settings.max_request_bytes:
            return _reply(
                400,
                [],
                f"request body is {len(body)} bytes; the limit is "
                f"{settings.max_request_bytes} bytes: send fewer events per request",
            )
        if not body or body.isspace():
            return _reply(400, [], "request body is empty: send a JSON event or array of events")
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _reply(400, [], f"request body is not valid JSON: {exc}")
        items = raw if isinstance(raw, list) else [raw]
        if len(items) > settings.max_events_per_request:
            return _reply(
                400,
                [],
                f"{len(items)} events in one request; the limit is "
                f"{settings.max_events_per_request}",
            )
        client_ = state["client"]
        try:
            records = client_.encode(
                items,
                internal_ids=seeded_ids(request.headers.get(SEED_HEADER), len(items)),
                index_parse_errors=isinstance(raw, list),
            )
        except EventValidationError as exc:
            return _reply(400, [], str(exc))
        try:
            ids = await client_.send_encoded_async(records)
        except KafkaUnavailableError as exc:
            log.error("event API: Kafka failed: %s", exc)
            return _reply(503, exc.acked_ids, f"Kafka is unavailable: {exc}")
        except StreamsError as exc:
            log.error("event API: could not write events: %s", exc)
            return _reply(503, [], f"could not write events: {exc}")
        return _reply(200, ids)

    # Served as a plain Starlette route, ahead of FastAPI's routes: FastAPI's per-request
    # parameter and dependency handling was ~30% of a single-event request's CPU. The
    # FastAPI route of the same path below is never reached; it puts the endpoint in the
    # OpenAPI schema.
    app.router.routes.insert(0, Route("/e/{event_key}", send_events, methods=["POST"]))

    @app.post("/e/{event_key}", openapi_extra=_SEND_OPENAPI)
    async def send_events_documented(event_key: str, request: Request) -> Response:
        """Send one event or an array of events."""
        return await send_events(request)

    @app.delete("/v1/runs/{run_id}")
    async def cancel_run(run_id: str, request: Request) -> Response:
        """Cancel a run between steps (it ends with ``inngest/function.cancelled``)."""
        denied = _check_signing_key(settings, request.headers.get("authorization"))
        if denied is not None:
            return denied
        try:
            run = await asyncio.to_thread(
                request_cancel, settings, run_id, "cancelled with DELETE /v1/runs/{run_id}"
            )
        except BadRunIdError as exc:
            return _json(400, {"error": str(exc)})
        except StreamsError as exc:
            return _json(503, {"error": f"Kafka is unavailable: {exc}"})
        return _json(202, {"run_id": run, "status": "cancelling"})

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the API is up (it answers even when Kafka is not)."""
        return {"status": "ok"}

    return app


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json"
    )


def _check_signing_key(settings: Settings, authorization: str | None) -> Response | None:
    """The 401 for /v1/ endpoints when a signing key is set and not given (else None)."""
    if settings.signing_key is None:
        return None
    expected = settings.signing_key.get_secret_value().encode()
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
        return None
    return _json(
        401,
        {
            "error": "missing or wrong signing key: send "
            "'Authorization: Bearer <STEPLOG_SIGNING_KEY>'"
        },
    )
