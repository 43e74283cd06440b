"""The VEE stage of ``headend demo`` (hook :data:`headend.demo.DEMO_STAGES`): validate what was
collected, estimate the gaps, rank suspects and show the exceptions and work orders it raised."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.table import Table

__all__ = ["stage"]


async def stage(ctx: Any) -> None:
    """Run VEE over the demo's collection window (blocking work in a thread), then anomalies."""
    import psycopg

    from mdm import workorders as wo
    from mdm.anomalies import find_suspects, raise_theft_orders
    from mdm.vee.runner import run_vee

    step = 900
    # only intervals that had ended and been collected when the demo stopped: the load-profile plan
    # reads each interval within a few minutes after it ends
    start = datetime.fromtimestamp(-(-int(ctx.start.timestamp()) // step) * step, UTC)
    end = datetime.fromtimestamp((int((ctx.end - timedelta(minutes=10)).timestamp()) // step) * step, UTC)
    now = ctx.clock.now() if ctx.clock is not None else ctx.end
    tz = ctx.settings.timezone

    def work() -> tuple[Any, Any, list[int], list[wo.WorkOrder], list[tuple[Any, ...]]]:
        with psycopg.connect(ctx.dsn, autocommit=True) as conn:
            summary = run_vee(conn, start, end, tz=tz, operator="demo", now=now)
            report = find_suspects(conn, start - timedelta(days=14), end, tz=tz)
            theft = raise_theft_orders(conn, report, min_score=3.0)
            orders = wo.list_orders(conn, status=["open", "dispatched"], limit=15)
            top_exc = conn.execute(
                "SELECT severity, rule, meter, explanation FROM vee_exceptions WHERE run_id = %s ORDER BY "
                "CASE severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, id LIMIT 10",
                (summary.run_id,)).fetchall()
        return summary, report, theft, orders, top_exc

    summary, report, theft, orders, top_exc = await asyncio.to_thread(work)
    ctx.summary["VEE meters / intervals validated"] = f"{summary.meters} / {summary.intervals}"
    ctx.summary["VEE exceptions"] = ", ".join(f"{k} {v}" for k, v in summary.exceptions.most_common()) or "none"
    ctx.summary["VEE estimated intervals (new versions)"] = f"{summary.estimates} ({summary.new_versions})"
    ctx.summary["suspects ranked"] = (", ".join(f"{s.meter} {s.score:.1f}" for s in report.suspects[:3])
                                      or "none")
    ctx.summary["work orders open"] = f"{len(orders)} ({len(set(summary.work_orders))} from VEE, {len(theft)} theft)"
    if top_exc:
        t = Table(title="VEE exceptions (most severe first)")
        for c in ("severity", "rule", "meter", "explanation"):
            t.add_column(c)
        for row in top_exc:
            t.add_row(row[0], row[1], row[2], row[3][:80])
        ctx.console.print(t)
    if orders:
        t = Table(title="open work orders")
        for c in ("id", "meter", "type", "prio", "evidence", "summary"):
            t.add_column(c)
        for o in orders:
            t.add_row(str(o.id), o.meter, o.type, str(o.priority), str(len(o.evidence)), o.summary[:60])
        ctx.console.print(t)
