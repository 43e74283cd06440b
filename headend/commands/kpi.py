"""``headend kpi``: collection success rate per day and bus (or meter), as a table, JSON or PNG."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

from headend.cliutil import ConfigOpt, JsonOpt, fail, print_json, print_table, settings_from
from headend.exitcodes import ExitCode
from protocols.errors import HeadendError

__all__ = ["register"]


class By(StrEnum):
    CHANNEL = "channel"
    METER = "meter"
    DAY = "day"


async def _query(dsn: str, **kw: Any) -> list[Any]:
    import psycopg

    from headend.kpi import query_kpi

    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        return await query_kpi(conn, **kw)


def kpi_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    start: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD); default 7 days ago.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD); default today.")] = None,
    by: Annotated[By, typer.Option("--by", help="Rows per day and channel, meter, or the whole fleet.")] = By.CHANNEL,
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel (bus).")] = None,
    meter: Annotated[str | None, typer.Option("--meter", help="Only this meter.")] = None,
    png: Annotated[str | None, typer.Option("--png", help="Write a success-rate chart (PNG).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Collection success rate (采集成功率): reads done in their window / reads due, and complete meters."""
    import psycopg

    from headend.kpi import render_png
    from headend.storeglue import resolve_dsn

    try:
        settings = settings_from(ctx, config)
        d_end = date.fromisoformat(end) if end else date.today()
        d_start = date.fromisoformat(start) if start else d_end - timedelta(days=7)
    except ValueError as exc:
        raise fail(f"bad date: {exc}", ExitCode.USAGE) from None
    except HeadendError as exc:
        raise fail(exc) from None
    try:
        dsn = resolve_dsn(settings)
        rows = asyncio.run(_query(dsn, by=by.value, start=d_start, end=d_end, channel=channel, meter=meter))
    except HeadendError as exc:
        raise fail(exc) from None
    except psycopg.Error as exc:
        raise fail(f"database: {exc}".splitlines()[0], ExitCode.DATABASE) from None
    if png:
        render_png(rows, png, title=f"Collection success rate by {by.value}")
    if json_out:
        print_json({"from": d_start, "to": d_end, "by": by.value, "rows": [r.as_dict() for r in rows]})
        return
    print_table(
        ["day", "fleet" if by is By.DAY else by.value, "meters", "due", "ok", "ok %", "backfilled", "complete %"],
        [(r.day, r.key, r.meters, r.due, r.ok, f"{100 * r.success:.2f}", r.backfilled, f"{100 * r.complete:.2f}")
         for r in rows],
        title=f"Collection success rate {d_start} .. {d_end}",
    )
    if png:
        typer.echo(f"chart written to {png}")


def register(app: typer.Typer) -> None:
    app.command("kpi")(kpi_cmd)
