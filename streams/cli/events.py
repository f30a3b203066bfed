"""`steplog send` and `steplog events tail`."""

from __future__ import annotations

import fnmatch
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from uuid import uuid4

import typer

from streams.cli._common import console, friendly_errors, load_settings
from streams.errors import EventValidationError

events_app = typer.Typer(no_args_is_help=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="steplog's data directory")]


def register(app: typer.Typer) -> None:
    """Add the top-level commands of this module (``send``) to ``app``."""
    app.command("send")(send)


@friendly_errors
def send(
    name: Annotated[str, typer.Argument(help="Event name, e.g. app/user.created")],
    data: Annotated[str, typer.Option("--data", "-d", help="Event data as a JSON object")] = "{}",
    event_id: Annotated[str | None, typer.Option("--id", help="Deduplication id")] = None,
    data_dir: DataDir = None,
) -> None:
    """Send one event to the events topic and print its id."""
    from streams.client import Client

    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise EventValidationError(f"--data is not valid JSON: {exc}") from None
    with Client(load_settings(data_dir)) as client:
        ids = client.send({"name": name, "data": payload, "id": event_id})
    console.print(ids[0])


@events_app.command("tail")
@friendly_errors
def tail(
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Only events whose name matches (glob: app/*)")
    ] = None,
    topic: Annotated[
        str, typer.Option("--topic", help="Topic to read (without prefix)")
    ] = "events",
    max_events: Annotated[int | None, typer.Option("--max", help="Stop after N events")] = None,
    data_dir: DataDir = None,
) -> None:
    """Print events as they arrive on the events topic, decoded."""
    from confluent_kafka import Consumer

    from streams.serde import EventCodec

    settings = load_settings(data_dir)
    codec = EventCodec(settings)
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"steplog-tail-{uuid4().hex[:8]}",
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([settings.topic(topic)])
    seen = 0
    try:
        while max_events is None or seen < max_events:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            try:
                event = codec.decode(msg.value() or b"")
            except Exception as exc:
                console.print(f"[red]{where} undecodable:[/red] {exc}")
                continue
            if name and not fnmatch.fnmatchcase(event.name, name):
                continue
            seen += 1
            when = datetime.fromtimestamp(event.ts / 1000, UTC).isoformat(timespec="milliseconds")
            console.print(
                f"[dim]{where} {when}[/dim] [bold]{event.name}[/bold] id={event.id} "
                f"{json.dumps(event.data, separators=(',', ':'))}",
                highlight=False,
            )
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
