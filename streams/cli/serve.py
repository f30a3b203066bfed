"""`steplog api`, `steplog worker` and `steplog dev`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.cli._common import console, friendly_errors, load_settings


def register(app: typer.Typer) -> None:
    """Add the serving commands to ``app``."""
    app.command("api")(api)


@friendly_errors
def api(
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8288)")] = None,
    host: Annotated[str | None, typer.Option("--host")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Serve the HTTP event API (POST /e/{event_key})."""
    import uvicorn

    from connectors.api import create_app

    settings = load_settings(data_dir, api_port=port, api_host=host)
    bootstrap = settings.resolved_bootstrap()
    console.print(
        f"event API on http://{settings.api_host}:{settings.api_port} -> Kafka {bootstrap}"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
    )
