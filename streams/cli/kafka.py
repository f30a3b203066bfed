"""`steplog kafka start|stop|status` and `steplog topics create`."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
topics_app = typer.Typer(no_args_is_help=True)
