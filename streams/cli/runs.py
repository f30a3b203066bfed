"""`steplog runs list|show`: read the run history (compacted topics fed by workers)."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streams.cli._common import console, friendly_errors, load_settings
from streams.errors import StreamsError
from streams.settings import Settings
from streams.topics import Topics

runs_app = typer.Typer(no_args_is_help=True)
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="steplog's data directory")]
AppOpt = Annotated[str | None, typer.Option("--app", help="Only this app id")]


def history_topics(settings: Settings, app_id: str | None) -> list[str]:
    from confluent_kafka.admin import AdminClient

    if app_id:
        return [Topics(settings.topic_prefix, app_id).runs]
    pattern = re.compile(re.escape(settings.topic("steplog-")) + r".+-runs$")
    meta = AdminClient(settings.kafka_config()).list_topics(timeout=10)
    return sorted(name for name in meta.topics if pattern.match(name))


def read_history(settings: Settings, app_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The latest history record of every run (read from the start of the topics)."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.serde.internal import RecordCodec

    codec = RecordCodec("steplog.RunHistory")
    runs: dict[str, dict[str, Any]] = {}
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"steplog-runs-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
    )
    try:
        assignment, ends = [], {}
        for topic in history_topics(settings, app_id):
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    assignment.append(TopicPartition(topic, p, low))
                    ends[(topic, p)] = high
        consumer.assign(assignment)
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            value = msg.value()
            if value:
                rec = codec.decode(value)
                rec["body"] = json.loads(rec["body"])
                runs[rec["run_id"]] = rec
            tp = (msg.topic(), msg.partition())
            if tp in ends and (msg.offset() or 0) >= ends[tp] - 1:
                del ends[tp]
    finally:
        consumer.close()
    return runs


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@runs_app.command("list")
@friendly_errors
def list_runs(
    function: Annotated[str | None, typer.Option("--function", help="Slug or fn_id")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    app_id: AppOpt = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    data_dir: DataDir = None,
) -> None:
    """List recent runs, newest first."""
    runs = read_history(load_settings(data_dir), app_id)
    rows = [
        r
        for r in runs.values()
        if (not status or r["status"] == status)
        and (
            not function
            or r["function_id"] == function
            or r["function_id"].endswith(f"-{function}")
        )
    ]
    rows.sort(key=lambda r: r["run_id"], reverse=True)
    table = Table("run id", "function", "status", "attempt", "started", "ended")
    for r in rows[:limit]:
        body = r["body"]
        table.add_row(
            r["run_id"],
            r["function_id"],
            r["status"],
            str(body.get("attempt", 0)),
            _when(body.get("started_ms")),
            _when(body.get("ended_ms")),
        )
    console.print(table)


@runs_app.command("show")
@friendly_errors
def show_run(
    run_id: Annotated[str, typer.Argument()],
    app_id: AppOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Show one run: status, attempts, each step with timing and output or error."""
    run = read_history(load_settings(data_dir), app_id).get(run_id)
    if run is None:
        raise StreamsError(f"no run {run_id} in the run history")
    body = run["body"]
    console.print(
        f"[bold]{run_id}[/bold] {run['function_id']} [bold]{run['status']}[/bold] "
        f"attempt {body.get('attempt', 0)}"
    )
    event = body.get("event") or {}
    console.print(f"event {event.get('name')} id={event.get('id')}", highlight=False)
    table = Table("step", "status", "attempts", "started", "ms", "output / error")
    for step in body.get("steps", []):
        took = (step.get("ended_ms") or 0) - (step.get("started_ms") or 0)
        detail = (
            step.get("output") if step["status"] == "completed" else json.dumps(step.get("error"))
        )
        table.add_row(
            step["name"],
            step["status"],
            str(step.get("attempts", 1)),
            _when(step.get("started_ms")),
            str(took),
            str(detail),
        )
    console.print(table)
    if body.get("result") is not None:
        console.print(f"result: {json.dumps(body['result'])}", highlight=False)
    if body.get("error"):
        console.print(f"error: {json.dumps(body['error'])}", highlight=False)


@runs_app.command("cancel")
@friendly_errors
def cancel_run(
    run_id: Annotated[str, typer.Argument(help="The run id (a ULID)")],
    data_dir: DataDir = None,
) -> None:
    """Cancel a run between steps; it ends with inngest/function.cancelled."""
    from streams.kafka.cancel import request_cancel

    run = request_cancel(load_settings(data_dir), run_id, "cancelled with `steplog runs cancel`")
    console.print(f"cancellation of {run} requested", highlight=False)
