"""The ``headend`` command line: one entry point, subcommands registered from headend/commands/."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Annotated

import typer

from headend import __version__
from headend.cliutil import State, fail
from headend.logsetup import configure_logging
from protocols.errors import HeadendError

__all__ = ["app", "main"]

LOGGER = logging.getLogger(__name__)

app = typer.Typer(
    name="headend",
    help="AMI head-end: read meters (DL/T 645, Modbus, MQTT), store and validate reads, control supply.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines register(app: typer.Typer) -> None. Add new command groups here.
COMMAND_MODULES: list[str] = [
    "headend.commands.read",
    "headend.commands.probe",
    "headend.commands.sim",
    "headend.commands.frame",
    "headend.commands.run",
    "headend.commands.kpi",
    "headend.commands.demo",
    "headend.commands.load",
    "headend.commands.control",
    "headend.commands.arrears",
    "headend.commands.payments",
    "headend.commands.vee",
    "headend.commands.anomalies",
    "headend.commands.workorders",
    "headend.commands.db",  # meter data store: db migrate|status|maintain|stop
    "headend.commands.meters",
    "headend.commands.reads",  # defines reads_app (show|daily|import); reads_edit below extends it
    "headend.commands.reads_edit",  # adds `reads edit|versions` to the store's reads group
    "headend.commands.mqtt",  # mqtt ingest|dead-letters|terminals
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headend {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (env: HEADEND_CONFIG).")
    ] = None,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show every frame sent and received, in hex with timestamps.")
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")] = 0,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log as JSON lines.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    level = {0: "WARNING", 1: "INFO"}.get(verbose, "DEBUG")
    configure_logging(level, json_lines=log_json, trace=trace)
    ctx.obj = State(config=config, trace=trace, verbose=verbose)


for _mod in COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main() -> None:
    try:
        app()
    except HeadendError as exc:
        raise SystemExit(fail(exc).exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
