"""`steplog api`, `steplog worker` and `steplog dev`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the serving commands to ``app``."""
