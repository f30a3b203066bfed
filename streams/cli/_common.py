"""Helpers shared by the CLI modules: consoles, settings with overrides, one-line errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from streams.errors import ConfigError, StreamsError
from streams.settings import Settings

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with the command's explicit options on top."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STEPLOG_* settings: {exc}") from None
    update = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        update["data_dir"] = data_dir.expanduser().resolve()
    return settings.model_copy(update=update) if update else settings


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a StreamsError into one red line and exit code 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except StreamsError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None

    return wrapper
