"""Daemon plug-in: run VEE every day after the night's collection (``[daemon] plugins = ["mdm.vee.plugin"]``).

At ``daily_run_at`` local time (``config/vee.toml``, default 06:30, after the daily-freeze window) it
validates and estimates the previous local day for every meter with reads, raises work orders and ranks
suspects (theft-investigation orders for suspects above ``anomaly_min_score``). The work runs in a thread
(blocking psycopg), so collection is never held up; a failure is logged and retried the next day.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["next_run", "run", "run_day"]

LOGGER = logging.getLogger(__name__)


def next_run(now: datetime, at: str, tz: ZoneInfo) -> datetime:
    """The next local ``HH:MM`` strictly after ``now``."""
    hh, mm = (int(x) for x in at.split(":"))
    local = now.astimezone(tz)
    nxt = datetime.combine(local.date(), datetime.min.time(), tz).replace(hour=hh, minute=mm)
    if nxt <= local:
        nxt = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz).replace(hour=hh, minute=mm)
    return nxt


def run_day(dsn: str, day_start: datetime, tz: str, *, min_score: float = 3.0) -> dict[str, Any]:
    """VEE for one local day, then anomaly ranking over the 35 days before its end (blocking)."""
    import psycopg

    from mdm.anomalies import find_suspects, raise_theft_orders
    from mdm.vee.runner import run_vee

    end = day_start + timedelta(days=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        summary = run_vee(conn, day_start, end, tz=tz, operator="daemon")
        report = find_suspects(conn, end - timedelta(days=35), end, tz=tz)
        theft = raise_theft_orders(conn, report, min_score=min_score)
    out = summary.to_dict() | {"suspects": len(report.suspects), "theft_orders": len(theft)}
    LOGGER.info("daily VEE for %s: %s meters, %s exceptions, %s estimates, %s work orders, %s theft orders",
                day_start.date(), out["meters"], out["exceptions_total"], out["new_versions"],
                len(out["work_orders"]), len(theft))
    return out


async def run(daemon: Any) -> None:
    """Plug-in entry point: ``daemon`` gives ``clock``, ``dsn``, ``settings`` and ``stopping``."""
    from mdm.vee.config import load_vee_config

    cfg = load_vee_config()
    tz = ZoneInfo(cfg.timezone or daemon.settings.timezone)
    if daemon.dsn is None:
        LOGGER.warning("daily VEE disabled: the daemon has no database")
        return
    while not daemon.stopping.is_set():
        when = next_run(daemon.clock.now(), cfg.daily_run_at, tz)
        wait = max((when - daemon.clock.now()).total_seconds(), 0.0)
        try:
            async with asyncio.timeout(daemon.clock.real_seconds(wait)):
                await daemon.stopping.wait()
            return  # stopping
        except TimeoutError:
            pass
        day_start = datetime.combine(when.date() - timedelta(days=1), datetime.min.time(), tz)
        try:
            await asyncio.to_thread(run_day, daemon.dsn, day_start, tz.key, min_score=cfg.anomaly_min_score)
        except Exception:  # a bad day must not stop collection; tomorrow's run tries again
            LOGGER.exception("daily VEE for %s failed", day_start.date())
