"""The daemon plug-in runs VEE for the previous day at the configured local time, and stops on request."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import psycopg

from headend.settings import load_settings
from headend.timebase import ScaledClock
from mdm.vee import plugin
from tests.vee.helpers import put

TZ = ZoneInfo("Asia/Shanghai")


def test_next_run() -> None:
    now = datetime(2026, 3, 10, 6, 29, tzinfo=TZ)
    assert plugin.next_run(now, "06:30", TZ) == datetime(2026, 3, 10, 6, 30, tzinfo=TZ)
    assert plugin.next_run(now + timedelta(minutes=1), "06:30", TZ) == datetime(2026, 3, 11, 6, 30, tzinfo=TZ)


def test_plugin_runs_yesterday_and_stops(vee_dsn: str) -> None:
    m = f"G{uuid.uuid4().hex[:8]}"
    day = datetime(2026, 3, 10, tzinfo=TZ)
    with psycopg.connect(vee_dsn, autocommit=True) as conn:
        put(conn, "interval_reads", [(m, "interval.energy.active.import", day + timedelta(minutes=15 * i), 0.2)
                                     for i in range(96) if not 20 <= i < 40])
    clock = ScaledClock(start=datetime(2026, 3, 11, 6, 29, 58, tzinfo=TZ), speed=100.0)
    daemon = SimpleNamespace(clock=clock, dsn=vee_dsn, settings=load_settings(None, timezone="Asia/Shanghai"),
                             stopping=asyncio.Event())

    async def go() -> int:
        task = asyncio.create_task(plugin.run(daemon))
        async with asyncio.timeout(30):
            while True:
                await asyncio.sleep(0.1)
                with psycopg.connect(vee_dsn) as c:
                    row = c.execute("SELECT count(*) FROM vee_exceptions WHERE meter = %s AND rule = 'gap'",
                                    (m,)).fetchone()
                if row and row[0]:
                    break
        daemon.stopping.set()
        async with asyncio.timeout(10):
            await task
        return int(row[0])

    assert asyncio.run(go()) == 1
