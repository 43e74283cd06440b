"""``headend reads edit``: a manual edit stored as a new version (raw kept), with operator and reason."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, fail, print_json, print_table, settings_from
from headend.commands.vee import db, parse_when
from headend.exitcodes import ExitCode
from protocols.errors import LocalProtocolError

__all__ = ["edit_cmd", "register", "versions_cmd"]

LOGGER = logging.getLogger(__name__)


def edit_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Option("--meter", "-m")],
    ts: Annotated[str, typer.Option("--ts", help="Time of the read (ISO; naive = local time).")],
    value: Annotated[float, typer.Option("--value")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why the value is edited.")],
    operator: Annotated[str, typer.Option("--operator", "-o", envvar="HEADEND_OPERATOR")],
    quantity: Annotated[str, typer.Option("--quantity", "-q")] = "interval.energy.active.import",
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Enter a corrected value as a new version; the raw read is kept and the edit is validated on the next VEE run."""
    from mdm.vee.versions import add_version

    settings = settings_from(ctx, config)
    when = parse_when(ts, settings.timezone)
    with db(ctx, config) as conn:
        try:
            v = add_version(conn, meter, quantity, when, value, method="manual", reason=reason, operator=operator)
        except LocalProtocolError as exc:
            raise fail(exc, ExitCode.USAGE) from None
    if json_:
        print_json(v.to_dict())
    else:
        console.print(f"meter {meter} {quantity} at {when.isoformat()}: version {v.version} = {value} "
                      f"(by {operator}: {reason})")


def versions_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Option("--meter", "-m")],
    ts: Annotated[str, typer.Option("--ts")],
    quantity: Annotated[str, typer.Option("--quantity", "-q")] = "interval.energy.active.import",
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The raw read and every version above it (estimates and edits) for one time."""
    from mdm.vee.versions import history

    settings = settings_from(ctx, config)
    when = parse_when(ts, settings.timezone)
    with db(ctx, config) as conn:
        raw, versions = history(conn, meter, quantity, when)
    if json_:
        print_json({"raw": raw, "versions": [v.to_dict() for v in versions]})
        return
    print_table(["source", "version", "value", "quality", "method", "operator", "reason", "at"],
                [["raw", r.get("version", ""), r.get("value"), r.get("quality"), r.get("source", ""), "", "",
                  r.get("received_at", "")] for r in raw]
                + [["vee", v.version, v.value, v.to_dict()["quality"], v.method, v.operator, v.reason, v.created_at]
                   for v in versions], title=f"{meter} {quantity} {when.isoformat()}")


def register(app: typer.Typer) -> None:
    """Add ``edit`` and ``versions`` to the store's ``reads`` group (or a ``reads`` group of our own)."""
    try:
        from headend.commands.reads import reads_app  # the store's group
    except ImportError:
        LOGGER.debug("headend.commands.reads not available: registering a reads group for edit/versions")
        reads_app = typer.Typer(help="Reads: manual edits and versions.", no_args_is_help=True)
        app.add_typer(reads_app, name="reads")
    reads_app.command("edit")(edit_cmd)
    reads_app.command("versions")(versions_cmd)
