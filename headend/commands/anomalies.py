"""``headend anomalies list|plot``: ranked theft / tamper suspects with reasons, and a meter's load curve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, fail, print_json, print_table, settings_from
from headend.commands.vee import db, window
from headend.exitcodes import ExitCode
from protocols.errors import HeadendError

__all__ = ["anomalies_app", "register"]

anomalies_app = typer.Typer(help="Theft and tamper indicators, ranked suspects, transformer-area balance.",
                            no_args_is_help=True)


@anomalies_app.command("list")
def list_cmd(
    ctx: typer.Context,
    frm: Annotated[str | None, typer.Option("--from", help="Start of the window (default: --days before today).")]
    = None,
    to: Annotated[str | None, typer.Option("--to", help="End (exclusive, default today 00:00).")] = None,
    days: Annotated[int, typer.Option("--days", help="Window length when --from is not given.")] = 35,
    meters: Annotated[str | None, typer.Option("--meters", "-m", help="Comma-separated meters.")] = None,
    top: Annotated[int, typer.Option("--top")] = 20,
    raise_orders: Annotated[bool, typer.Option("--raise-orders", help="Suspects at or above --min-score get a "
                                               "theft-investigation work order.")] = False,
    min_score: Annotated[float, typer.Option("--min-score")] = 3.0,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Ranked suspects with their reasons (and the loss % of each transformer area)."""
    from mdm.anomalies import find_suspects, raise_theft_orders
    from mdm.vee.config import load_vee_config

    settings = settings_from(ctx, config)
    try:
        cfg = load_vee_config()
    except HeadendError as exc:
        raise fail(exc) from None
    tz = cfg.timezone or settings.timezone
    start, end = window(frm, to, tz, default_days=days)
    ml = [m.strip() for m in meters.split(",")] if meters else None
    with db(ctx, config) as conn:
        report = find_suspects(conn, start, end, tz=tz, config=cfg, meters=ml)
        orders = raise_theft_orders(conn, report, min_score=min_score) if raise_orders else []
    report.suspects = report.suspects[:top]
    if json_:
        print_json({**report.to_dict(), "work_orders": orders})
        return
    print_table(["rank", "meter", "score", "reasons"],
                [[i + 1, s.meter, f"{s.score:.2f}", "; ".join(f"{r['kind']} ({r['detail'][:50]})" for r in s.reasons)]
                 for i, s in enumerate(report.suspects)],
                title=f"suspects {start:%Y-%m-%d} .. {end:%Y-%m-%d} ({report.meters} meters)")
    if report.areas:
        print_table(["area", "check meter", "customers", "latest loss %", "abnormal days"],
                    [[a["area"], a["check_meter"], a["customers"],
                      "" if a["loss_pct_latest"] is None else f"{a['loss_pct_latest']:.1f}", a["abnormal_days"]]
                     for a in report.areas], title="transformer-area balance")
    if orders:
        console.print(f"{len(orders)} theft-investigation work orders raised or updated")


@anomalies_app.command("plot")
def plot_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Option("--meter", "-m")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    frm: Annotated[str | None, typer.Option("--from")] = None,
    to: Annotated[str | None, typer.Option("--to")] = None,
    days: Annotated[int, typer.Option("--days")] = 7,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """PNG of one meter's load curve with exceptions, estimates, edits and events marked."""
    from mdm.anomalies import plot_meter

    settings = settings_from(ctx, config)
    start, end = window(frm, to, settings.timezone, default_days=days)
    with db(ctx, config) as conn:
        counts = plot_meter(conn, meter, start, end, str(out), tz=settings.timezone)
    if counts["raw"] == 0 and counts["estimated"] == 0:
        raise fail(f"meter {meter} has no interval reads from {start} to {end}", ExitCode.PARTIAL)
    if json_:
        print_json({"out": str(out), **counts})
    else:
        console.print(f"wrote {out}: {counts['raw']} reads, {counts['estimated']} estimated, "
                      f"{counts['exceptions']} exceptions, {counts['events']} events")


def register(app: typer.Typer) -> None:
    app.add_typer(anomalies_app, name="anomalies")
