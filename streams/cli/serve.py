"""`steplog api`, `steplog worker` and `steplog dev`."""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from streams.cli._common import console, err_console, friendly_errors, load_settings
from streams.errors import ConfigError
from streams.topics import consumer_group

DEFAULT_EXAMPLE = "examples.shop:app"
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="steplog's data directory")]


def register(app: typer.Typer) -> None:
    """Add the serving commands to ``app``."""
    app.command("api")(api)
    app.command("worker")(worker)
    app.command("dev")(dev)


def load_app(target: str) -> object:
    """Import ``module:attribute`` (the current directory is importable)."""
    from streams.app import App

    module_name, _, attr = target.partition(":")
    if not module_name:
        raise ConfigError(f"{target!r}: give the app as MODULE:APP, e.g. myproject.flows:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    if attr:
        found = getattr(module, attr, None)
    else:
        apps = [v for v in vars(module).values() if isinstance(v, App)]
        found = apps[0] if len(apps) == 1 else None
    if not isinstance(found, App):
        raise ConfigError(f"{target!r} is not a streams.App (give MODULE:APP)")
    return found


@friendly_errors
def api(
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8288)")] = None,
    host: Annotated[str | None, typer.Option("--host")] = None,
    data_dir: DataDir = None,
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


@friendly_errors
def worker(
    target: Annotated[str, typer.Argument(help="The app to run, as MODULE:APP")],
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "warning",
    data_dir: DataDir = None,
) -> None:
    """Run a worker: the router and one agent per function of the app."""
    from agents.worker import run_worker
    from streams.app import App

    settings = load_settings(data_dir)
    app = load_app(target)
    assert isinstance(app, App)
    console.print(
        f"worker for app {app.app_id!r} ({len(app.functions)} functions) "
        f"-> Kafka {settings.resolved_bootstrap()}, group {consumer_group(app.app_id)}"
    )
    run_worker(app, settings, loglevel=loglevel)


@friendly_errors
def dev(
    target: Annotated[
        str, typer.Argument(help="The app to run, as MODULE:APP (default: an example app)")
    ] = DEFAULT_EXAMPLE,
    port: Annotated[int | None, typer.Option("--port", help="API port (default 8288)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Local broker (unless one is configured) + topics + worker + HTTP API, in one command."""
    from streams.kafka import local
    from streams.kafka.admin import ensure_topics

    settings = load_settings(data_dir, api_port=port)
    if not settings.bootstrap_servers:
        info = local.start(settings.data_dir)
        console.print(f"Kafka {info.version} on {info.bootstrap} (data: {info.data_dir})")
        settings = settings.model_copy(update={"bootstrap_servers": info.bootstrap})
    ensure_topics(settings)
    load_app(target)  # fail here, in one line, if the app does not import
    env = {
        **os.environ,
        "STEPLOG_BOOTSTRAP_SERVERS": settings.resolved_bootstrap(),
        "STEPLOG_DATA_DIR": str(settings.data_dir),
        "STEPLOG_API_PORT": str(settings.api_port),
    }
    cli = [sys.executable, "-m", "streams.cli"]
    die_with = partial(_die_with_parent, os.getpid())
    procs = [
        subprocess.Popen([*cli, "worker", target], env=env, preexec_fn=die_with),
        subprocess.Popen([*cli, "api"], env=env, preexec_fn=die_with),
    ]
    console.print(
        f"steplog dev: app {target}; send events with `steplog send NAME --data JSON` or "
        f"POST http://{settings.api_host}:{settings.api_port}/e/dev; Ctrl-C stops"
    )
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        err_console.print("[red]a steplog process exited; stopping the others[/red]")
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    if any(p.returncode not in (0, -signal.SIGTERM) for p in procs):
        raise typer.Exit(1)


#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In a child of ``steplog dev``: get SIGTERM when ``dev`` dies, even by SIGKILL.

    Otherwise a ``dev`` killed hard leaves its worker and API running, and a worker
    whose broker is then stopped retries it for ever.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # ``dev`` died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
