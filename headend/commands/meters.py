"""``headend meters add|list|import|export``: meter assets in the store."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, err_console, fail, print_json, print_table
from headend.commands.db import store_conn
from headend.exitcodes import ExitCode
from protocols.errors import ConfigError, LocalProtocolError

__all__ = ["meters_app", "register"]

meters_app = typer.Typer(help="Meter assets: add, list, import and export (CSV).", no_args_is_help=True)

_LIST_COLS = ("address", "protocol", "channel", "vendor", "model", "ct_ratio", "pt_ratio", "multiplier", "status")


@meters_app.command("add")
def add_cmd(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Meter address (DL/T 645: 12 digits) or device id.")],
    protocol: Annotated[str | None, typer.Option(help="dlt645 | modbus | mqtt ...")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel (bus) name it is read over.")] = None,
    terminal: Annotated[str | None, typer.Option(help="Terminal/concentrator address, if any.")] = None,
    vendor: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    firmware: Annotated[str | None, typer.Option()] = None,
    meter_class: Annotated[str | None, typer.Option("--class", help="e.g. single_phase, three_phase, ct")] = None,
    ct: Annotated[float | None, typer.Option("--ct", help="CT ratio (e.g. 40 for 200/5).")] = None,
    pt: Annotated[float | None, typer.Option("--pt", help="PT/VT ratio.")] = None,
    multiplier: Annotated[float | None, typer.Option(help="Default: CT x PT.")] = None,
    status: Annotated[str | None, typer.Option(help="in_stock | installed | removed | retired")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA zone of the meter clock.")] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Add a meter (or update the given fields of an existing one)."""
    from mdm.store import add_meter

    fields = {"address": address, "protocol": protocol, "channel": channel, "terminal": terminal, "vendor": vendor,
              "model": model, "firmware": firmware, "meter_class": meter_class, "ct_ratio": ct, "pt_ratio": pt,
              "multiplier": multiplier, "status": status, "time_zone": tz}
    with store_conn(ctx, config) as (_, conn):
        try:
            row, created = add_meter(conn, **{k: v for k, v in fields.items() if v is not None})
        except (LocalProtocolError, ConfigError) as exc:
            raise fail(exc, ExitCode.USAGE) from None
        conn.commit()
    if json_:
        print_json({**row, "created": created})
    else:
        console.print(f"meter {row['address']} {'added' if created else 'updated'} "
                      f"(multiplier {row['multiplier']:g}, status {row['status']})")


@meters_app.command("list")
def list_cmd(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only this status (e.g. discovered: auto-registered by ingest).")]
    = None,
    like: Annotated[str | None, typer.Option(help="Address pattern, SQL LIKE (e.g. 0000001%).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """List meters."""
    from mdm.store import list_meters

    with store_conn(ctx, config) as (_, conn):
        rows = list_meters(conn, status=status, like=like, limit=limit)
    if json_:
        print_json(rows)
    else:
        print_table(_LIST_COLS, [[r[c] for c in _LIST_COLS] for r in rows], title=f"{len(rows)} meter(s)")


@meters_app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a header; 'address' required.")],
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Add or update meters from a CSV file; bad rows are reported with their line and reason (exit 10)."""
    from mdm.store import import_meters_csv

    with store_conn(ctx, config) as (_, conn):
        try:
            with console.status(f"importing {file.name}"):
                created, updated, errors = import_meters_csv(conn, file)
        except LocalProtocolError as exc:
            raise fail(exc, ExitCode.USAGE) from None
        conn.commit()
    if json_:
        print_json({"created": created, "updated": updated, "rejected": [e.to_dict() for e in errors]})
    else:
        console.print(f"{created} meter(s) added, {updated} updated, {len(errors)} row(s) rejected")
        for e in errors[:50]:
            err_console.print(f"  line {e.line}: {e.reason}", highlight=False)
    if errors:
        raise typer.Exit(int(ExitCode.PARTIAL))


@meters_app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Export every meter as CSV (the format `meters import` reads) or JSON."""
    from mdm.store import METER_COLUMNS, export_meters

    with store_conn(ctx, config) as (_, conn):
        if json_:
            rows: list[dict[str, Any]] = list(export_meters(conn))
            print_json(rows)
            return
        fh = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout
        try:
            w = csv.DictWriter(fh, fieldnames=list(METER_COLUMNS))
            w.writeheader()
            n = 0
            for r in export_meters(conn):
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
                n += 1
        finally:
            if out:
                fh.close()
    if out:
        console.print(f"{n} meter(s) written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(meters_app, name="meters")
