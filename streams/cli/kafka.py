"""`steplog kafka start|stop|status` and `steplog topics create`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from streams.cli._common import console, err_console, friendly_errors, load_settings
from streams.kafka import admin, local

app = typer.Typer(no_args_is_help=True)
topics_app = typer.Typer(no_args_is_help=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="steplog's data dir (default: STEPLOG_DATA_DIR or ~/.steplog).",
        show_default=False,
    ),
]


@app.command("start")
@friendly_errors
def start_cmd(
    data_dir: DataDir = None,
    port: Annotated[
        int | None,
        typer.Option(help="Broker port on 127.0.0.1 (default: the recorded one, else free)."),
    ] = None,
    controller_port: Annotated[
        int | None, typer.Option(help="KRaft controller port (default: recorded, else free).")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where Kafka's jars are cached (default: ~/.cache/steplog)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 60.0,
) -> None:
    """Start the local single-node Apache Kafka broker (KRaft; Java 17+, no Docker)."""
    settings = load_settings(data_dir)
    with err_console.status("Starting Kafka…") as spinner:
        info = local.start(
            settings.data_dir,
            port,
            controller_port=controller_port,
            cache_dir=cache_dir,
            timeout=timeout,
            max_message_bytes=max(
                local.DEFAULT_MAX_MESSAGE_BYTES,
                settings.max_record_bytes + admin.RECORD_OVERHEAD_BYTES,
            ),
            progress=lambda message: spinner.update(f"{escape(message)}…"),
        )
    state = "already running on" if info.already_running else "listening on"
    console.print(f"Kafka {info.version} {state} {info.bootstrap} (data: {info.data_dir})")
    if settings.bootstrap_servers:
        err_console.print(
            f"[yellow]note:[/yellow] STEPLOG_BOOTSTRAP_SERVERS={escape(settings.bootstrap_servers)}"
            " is set, so other steplog commands use that instead of this broker"
        )


@app.command("status")
@friendly_errors
def status_cmd(data_dir: DataDir = None) -> None:
    """Say whether the local broker runs, and where (exit code 0 if it runs, 3 if not)."""
    settings = load_settings(data_dir)
    info = local.status(settings.data_dir)
    if info is None:
        console.print(f"Kafka is not running (no broker was started in {settings.data_dir})")
        raise typer.Exit(3)
    if info.running:
        console.print(
            f"Kafka {info.version} is running on {info.bootstrap} "
            f"(pid {info.pid}, data: {info.data_dir})"
        )
        return
    console.print(f"Kafka is not running (last address {info.bootstrap}, data: {info.data_dir})")
    raise typer.Exit(3)


@app.command("stop")
@friendly_errors
def stop_cmd(
    data_dir: DataDir = None,
    grace: Annotated[
        float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = local.STOP_GRACE_SECONDS,
) -> None:
    """Stop the local broker (its topics and records stay in the data dir)."""
    settings = load_settings(data_dir)
    if local.stop(settings.data_dir, grace=grace):
        console.print(f"Kafka stopped (data kept in {settings.data_dir})")
    else:
        console.print(f"Kafka was not running (data: {settings.data_dir})")


@topics_app.command("create")
@friendly_errors
def create_cmd(
    data_dir: DataDir = None,
    partitions: Annotated[
        int | None, typer.Option(help="Partitions per topic (default: STEPLOG_PARTITIONS).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Kafka.")] = 30.0,
) -> None:
    """Create steplog's topics (events, events.dlq, inngest.function.*) if missing."""
    settings = load_settings(data_dir)
    bootstrap = settings.resolved_bootstrap()
    if not settings.bootstrap_servers:
        err_console.print(
            f"using the local broker at {bootstrap} (recorded in {settings.broker_file})"
        )
    result = admin.ensure_topics(settings, partitions=partitions, timeout=timeout)
    for name in result.created:
        console.print(f"[green]created[/green]  {escape(name)}")
    for name in result.existing:
        console.print(f"[dim]present[/dim]  {escape(name)}")
