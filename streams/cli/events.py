"""`steplog send` and `steplog events tail`."""

from __future__ import annotations

import typer

events_app = typer.Typer(no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the top-level commands of this module (``send``) to ``app``."""
