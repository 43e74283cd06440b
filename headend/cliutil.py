"""Pieces every ``headend`` subcommand shares: common options, output and error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headend.exitcodes import ExitCode, exit_code_for
from headend.settings import Settings, load_settings

__all__ = [
    "ConfigOpt",
    "JsonOpt",
    "State",
    "console",
    "err_console",
    "fail",
    "print_json",
    "print_table",
    "settings_from",
]

console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (env: HEADEND_CONFIG).", show_default=False)
]


@dataclass
class State:
    """Global options, kept on the click context by the root callback."""

    config: Path | None = None
    trace: bool = False
    verbose: int = 0
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings


def settings_from(ctx: typer.Context, config: Path | None = None) -> Settings:
    """Settings for this invocation; a per-command ``--config`` wins over the global one."""
    state = ctx.find_root().obj
    if not isinstance(state, State):
        state = State()
    if config is not None:
        state.config = config
        state._settings = None
    return state.settings()


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, Decimal):
        return float(o)
    if isinstance(o, bytes):
        return o.hex()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_default, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    console.print(table)


def fail(exc_or_message: BaseException | str, code: ExitCode | None = None) -> typer.Exit:
    """Print a one-line reason to stderr and return the Exit to raise."""
    if isinstance(exc_or_message, BaseException):
        msg = str(exc_or_message) or type(exc_or_message).__name__
        code = code if code is not None else exit_code_for(exc_or_message)
        msg = f"{type(exc_or_message).__name__}: {msg}"
    else:
        msg = exc_or_message
        code = code if code is not None else ExitCode.ERROR
    err_console.print(f"[red]error:[/red] {msg}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(int(code))
