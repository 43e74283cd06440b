"""TimescaleDB storage: reads that arrive for days older than the refresh policies' window.

The continuous aggregates are read in real time (materialized buckets + raw rows above the
watermark), so a bucket below the watermark is whatever the last refresh stored. Imported history
and corrections of old days must still reach ``daily_consumption()`` once the policies have run,
as they do at once in the partitioned mode. Runs only where the extension is available.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from mdm.ingest import Ingestor
from protocols.reading import Reading

from .helpers import QTY

TZ = ZoneInfo("Asia/Shanghai")  # the template's store zone (migrate()'s default)
METER = "000000000077"


def _day(d: date, value: float) -> list[Reading]:
    start = datetime(d.year, d.month, d.day, tzinfo=TZ)
    return [Reading(METER, QTY, start + timedelta(minutes=15 * k), value, "kWh") for k in range(96)]


async def _ingest(dsn: str, readings: list[Reading]) -> None:
    async with Ingestor(dsn) as ing:
        await ing.submit(readings)
        await ing.flush()


def _run_policies(conn: psycopg.Connection[Any]) -> None:
    """What the background scheduler does every 30 minutes, run now."""
    jobs = conn.execute("SELECT job_id FROM timescaledb_information.jobs "
                        "WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY job_id").fetchall()
    assert len(jobs) == 3
    for (job,) in jobs:
        conn.execute("CALL run_job(%s)", (job,))


def _daily(conn: psycopg.Connection[Any], first: date, last: date) -> dict[date, tuple[float, int]]:
    return {d: (kwh, n) for _, d, kwh, n in conn.execute(
        "SELECT meter, day, kwh, intervals FROM daily_consumption(%s, %s, %s)", (first, last, [METER]))}


def _raw(conn: psycopg.Connection[Any], first: date, last: date) -> dict[date, tuple[float, int]]:
    """The partitioned mode's answer: straight from the rows."""
    return {d: (kwh, n) for d, kwh, n in conn.execute(
        "SELECT (ts AT TIME ZONE 'Asia/Shanghai')::date, sum(value), count(*) FROM interval_reads "
        "WHERE meter = %s AND quantity = %s GROUP BY 1", (METER, QTY))
        if first <= d <= last}


@pytest.mark.timescaledb
async def test_history_and_old_corrections_reach_daily_consumption(fresh_dsn: str) -> None:
    today = datetime.now(TZ).date()
    recent, old, older = today - timedelta(days=1), today - timedelta(days=30), today - timedelta(days=60)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT mode FROM mdm_storage").fetchone() == ("timescaledb",)
    # a day of history arrives together with yesterday's reads, then the policies run
    await _ingest(fresh_dsn, _day(recent, 0.25) + _day(old, 0.25))
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        _run_policies(conn)
        got = _daily(conn, older, recent)
        assert got == _raw(conn, older, recent) == {recent: (24.0, 96), old: (24.0, 96)}
    # later: the old day corrected (every value superseded) and more history imported
    await _ingest(fresh_dsn, _day(old, 0.5) + _day(older, 0.125))
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM superseded_reads WHERE meter = %s", (METER,)).fetchone() == (96,)
        _run_policies(conn)
        got = _daily(conn, older, recent)
        assert got == _raw(conn, older, recent) == {recent: (24.0, 96), old: (48.0, 96), older: (12.0, 96)}


@pytest.mark.timescaledb
async def test_with_retention_aggregates_of_dropped_days_stay(fresh_dsn: str) -> None:
    today = datetime.now(TZ).date()
    recent, expired = today - timedelta(days=1), today - timedelta(days=400)
    await _ingest(fresh_dsn, _day(recent, 0.25) + _day(expired, 0.25))
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        _run_policies(conn)  # no retention yet: everything materialized
        assert _daily(conn, expired, recent) == {recent: (24.0, 96), expired: (24.0, 96)}
        conn.execute("SELECT mdm_apply_policies(7, 365)")
        offsets = {r[0]: r[1] for r in conn.execute(
            "SELECT hypertable_name, config ->> 'start_offset' FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate'")}
        assert sorted(offsets.values()) == ["365 days"] * 3
        for (job,) in conn.execute("SELECT job_id FROM timescaledb_information.jobs "
                                   "WHERE proc_name = 'policy_retention'").fetchall():
            conn.execute("CALL run_job(%s)", (job,))
        assert _raw(conn, expired, recent) == {recent: (24.0, 96)}  # raw rows of the old day dropped
        _run_policies(conn)
        assert _daily(conn, expired, recent) == {recent: (24.0, 96), expired: (24.0, 96)}
        conn.execute("SELECT mdm_apply_policies(7, NULL)")
        assert {r[0] for r in conn.execute("SELECT config ->> 'start_offset' FROM timescaledb_information.jobs "
                                           "WHERE proc_name = 'policy_refresh_continuous_aggregate'")} == {None}
