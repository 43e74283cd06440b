"""``headend reads show|daily|import``: reads in the store (``reads_app`` is extended by other areas)."""

from __future__ import annotations

import asyncio
import csv
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from headend.cliutil import ConfigOpt, JsonOpt, console, err_console, fail, print_json, print_table
from headend.commands.db import store_conn, store_dsn
from headend.exitcodes import ExitCode
from protocols.errors import ConfigError, LocalProtocolError

__all__ = ["reads_app", "register"]

reads_app = typer.Typer(help="Reads in the meter data store: show, daily consumption, import.", no_args_is_help=True)

CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
_SHOW_COLS = ("ts", "quantity", "value", "unit", "quality", "source", "version")


def _emit_csv(cols: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    w = csv.writer(sys.stdout)
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c].isoformat() if isinstance(r[c], datetime | date) else r[c]
                    for c in cols])


@reads_app.command("show")
def show_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Option("--meter", "-m", help="Meter address.")],
    frm: Annotated[str | None, typer.Option("--from", help="Start (ISO date or time; naive = local). "
                                            "Default: 24 h before --to.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="End, exclusive (default: now).")] = None,
    quantity: Annotated[list[str] | None, typer.Option("--quantity", "-q", help="Only these codes (repeatable).")]
    = None,
    json_: JsonOpt = False,
    csv_: CsvOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The stored (current) values of one meter in a time range, register and interval reads together."""
    from mdm.store import parse_time, read_range, zone

    with store_conn(ctx, config) as (settings, conn):
        try:
            z = zone(settings.timezone)
            end = parse_time(to, z) if to else datetime.now(z)
            start = parse_time(frm, z) if frm else end - timedelta(days=1)
        except (LocalProtocolError, ConfigError) as exc:
            raise fail(exc, ExitCode.USAGE) from None
        rows = read_range(conn, meter, start, end, quantity)
    for r in rows:
        r["ts"] = r["ts"].astimezone(z)
    if json_:
        print_json({"meter": meter, "from": start, "to": end, "reads": rows})
    elif csv_:
        _emit_csv(_SHOW_COLS, rows)
    else:
        print_table(_SHOW_COLS, [[r[c] for c in _SHOW_COLS] for r in rows],
                    title=f"{meter}: {len(rows)} read(s) {start.isoformat()} .. {end.isoformat()}")


@reads_app.command("daily")
def daily_cmd(
    ctx: typer.Context,
    meter: Annotated[list[str] | None, typer.Option("--meter", "-m", help="Meter address (repeatable, or "
                                                    "comma-separated). Default: every meter.")] = None,
    frm: Annotated[str | None, typer.Option("--from", help="First day (default: 7 days before --to).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day, inclusive (default: yesterday).")] = None,
    json_: JsonOpt = False,
    csv_: CsvOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Consumption per local day: sum of 15-min intervals, else the difference of daily register reads.

    kwh is what the meter registered (secondary side of its CT/PT); primary_kwh is kwh x the CT x PT
    multiplier in force that day (installation history, else the meter's multiplier).
    """
    from mdm.store import daily_consumption, day_range

    meters = [m.strip() for arg in (meter or []) for m in arg.split(",") if m.strip()] or None
    try:
        first, last = day_range(date.fromisoformat(frm) if frm else None, date.fromisoformat(to) if to else None)
    except (ValueError, LocalProtocolError) as exc:
        raise fail(f"bad day: {exc}", ExitCode.USAGE) from None
    with store_conn(ctx, config) as (_, conn):
        rows = daily_consumption(conn, meters, first, last)
    # new columns go last: readers of the original five keep working
    cols = ("meter", "day", "kwh", "source", "intervals", "multiplier", "primary_kwh", "multiplier_changed")
    if json_:
        print_json({"from": first, "to": last, "days": rows})
    elif csv_:
        _emit_csv(cols, rows)
    else:
        print_table(("meter", "day", "kwh", "source", "intervals", "multiplier", "primary kwh"),
                    [[r["meter"], r["day"], f"{r['kwh']:.3f}", r["source"], r["intervals"], _multiplier_cell(r),
                      "" if r["primary_kwh"] is None else f"{r['primary_kwh']:.3f}"] for r in rows],
                    title=f"daily consumption {first} .. {last}")
        if any(r["multiplier_changed"] for r in rows):
            console.print("changed: the CT/PT multiplier changed within the day; interval days are summed per "
                          "installation, register days have no primary figure", highlight=False)


def _multiplier_cell(r: dict[str, Any]) -> str:
    if r["multiplier_changed"]:
        return "changed"
    return "unknown" if r["multiplier"] is None else f"{r['multiplier']:g}"


async def _import(dsn: str, path: Path, tz: str, quantity: str | None, source: str | None,
                  reject_unknown: bool, progress: Progress | None, total: int) -> dict[str, Any]:
    from mdm.ingest import Ingestor
    from mdm.store import RowError, parse_reads_csv
    from protocols.reading import Reading

    task = progress.add_task(f"importing {path.name}", total=total) if progress else None
    errors: list[RowError] = []
    loaded = 0
    chunk: list[tuple[int, Reading]] = []

    async with Ingestor(dsn, unknown_meters="reject" if reject_unknown else "register") as ing:

        async def push() -> None:
            nonlocal loaded
            res = await ing.submit(r for _, r in chunk)
            loaded += res.accepted
            if res.rejected:
                line_of = {id(r): ln for ln, r in chunk}
                errors.extend(RowError(line_of.get(id(x.reading), 0), x.reason) for x in res.rejected)
            if progress is not None and task is not None:
                progress.advance(task, len(chunk))
            chunk.clear()

        for line, item in parse_reads_csv(path, tz, default_quantity=quantity, source=source):
            if isinstance(item, RowError):
                errors.append(item)
                if progress is not None and task is not None:
                    progress.advance(task, 1)
            else:
                chunk.append((line, item))
                if len(chunk) >= 20_000:
                    await push()
        if chunk:
            await push()
        st = ing.stats
    errors.sort(key=lambda e: e.line)
    return {"file": str(path), "loaded": loaded, "inserted": st.inserted, "superseded": st.superseded,
            "unchanged": st.unchanged, "meters_discovered": st.discovered,
            "rejected": [e.to_dict() for e in errors]}


@reads_app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="CSV: meter,ts,value[,quantity,unit,quality,source].")],
    quantity: Annotated[str | None, typer.Option("--quantity", "-q", help="Quantity code when the file has no "
                                                 "quantity column (e.g. interval.energy.active.import).")] = None,
    source: Annotated[str | None, typer.Option(help="Source recorded with each read (default import:FILE).")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="Zone of naive times (default: settings timezone).")] = None,
    reject_unknown_meters: Annotated[bool, typer.Option("--reject-unknown-meters", help="Refuse reads of meters "
                                                        "not in the store (default: register them as "
                                                        "'discovered').")] = False,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Load register or interval reads from another system or a handheld reader through the ingest path.

    Bad rows are reported with their line and reason and the rest load; exit 10 (PARTIAL) when any was rejected.
    Replaying a file changes nothing; a different value for a stored read is kept as a new version.
    """
    from mdm.db import StoreError

    settings, dsn = store_dsn(ctx, config)
    with open(file, encoding="utf-8-sig") as fh:
        total = max(0, sum(1 for _ in fh) - 1)
    progress = None if json_ else Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                           TimeRemainingColumn(), console=err_console, transient=True)
    try:
        if progress is not None:
            with progress:
                out = asyncio.run(_import(dsn, file, tz or settings.timezone, quantity, source,
                                          reject_unknown_meters, progress, total))
        else:
            out = asyncio.run(_import(dsn, file, tz or settings.timezone, quantity, source,
                                      reject_unknown_meters, None, total))
    except (LocalProtocolError, ConfigError) as exc:
        raise fail(exc, ExitCode.USAGE) from None
    except StoreError as exc:
        raise fail(exc, ExitCode.DATABASE) from None
    if json_:
        print_json(out)
    else:
        rej = out["rejected"]
        console.print(f"{file.name}: {out['loaded']} read(s) loaded ({out['inserted']} new, {out['superseded']} "
                      f"new version(s), {out['unchanged']} already stored), {len(rej)} row(s) rejected"
                      + (f", {out['meters_discovered']} unknown meter(s) registered as discovered"
                         if out["meters_discovered"] else ""))
        for e in rej[:50]:
            err_console.print(f"  line {e['line']}: {e['reason']}", highlight=False)
        if len(rej) > 50:
            err_console.print(f"  ... {len(rej) - 50} more (use --json for all)")
    if out["rejected"]:
        raise typer.Exit(int(ExitCode.PARTIAL))


def register(app: typer.Typer) -> None:
    app.add_typer(reads_app, name="reads")
