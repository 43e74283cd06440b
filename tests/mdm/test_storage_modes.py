"""Storage modes: TimescaleDB (hypertables, compression, continuous aggregates) or native partitions.

Tests marked ``timescaledb`` run only where the extension is available (skipped on this machine's
PostgreSQL 15, which has none); the others check the decision and the partitioned path.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from mdm.ingest import Ingestor
from mdm.migrate import MigrationError, migrate
from protocols.reading import Reading

from .helpers import QTY, T0


@pytest.fixture
def empty_dsn(pg_server_dsn: str) -> Iterator[str]:
    name = f"headend_t_{os.getpid()}_{secrets.token_hex(4)}_sm"  # matched by the stale-database sweep
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(pg_server_dsn, dbname=name)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _day_of_intervals(meter: str, day_offset: int = 0) -> list[Reading]:
    start = T0 + timedelta(days=day_offset) - timedelta(hours=8)  # local midnight, Asia/Shanghai
    return [Reading(meter, QTY, start + timedelta(minutes=15 * k), 0.25, "kWh") for k in range(96)]


def test_on_without_the_extension_is_refused(empty_dsn: str, timescaledb_available: bool) -> None:
    if timescaledb_available:
        pytest.skip("the extension is available here")
    with pytest.raises(MigrationError, match="timescaledb"):
        migrate(empty_dsn, timescaledb="on")
    with psycopg.connect(empty_dsn) as conn:  # the failed file left nothing behind
        assert conn.execute("SELECT to_regclass('register_reads')").fetchone() == (None,)


async def test_off_gives_partitions_ahead_and_the_same_daily_answer(empty_dsn: str) -> None:
    migrate(empty_dsn, timescaledb="off", timezone="Asia/Shanghai")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT mode FROM mdm_storage").fetchone() == ("partitioned",)
        parts = conn.execute("SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                             "WHERE p.relname = 'interval_reads'").fetchone()
        assert parts is not None and parts[0] >= 5  # DEFAULT + last month .. 3 months ahead
        assert conn.execute("SELECT mdm_maintain()").fetchone() == (0,)  # already there
        conn.execute("SELECT mdm_apply_policies(7, 3650)")
    async with Ingestor(empty_dsn) as ing:
        await ing.submit(_day_of_intervals("000000000001") + _day_of_intervals("000000000001", 1))
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute("SELECT meter, day, kwh, intervals FROM daily_consumption(%s, %s)",
                            (T0.date(), T0.date() + timedelta(days=1))).fetchall()
        d1 = T0.date() + timedelta(days=1)
        assert rows == [("000000000001", T0.date(), 24.0, 96), ("000000000001", d1, 24.0, 96)]
        hourly = conn.execute("SELECT count(*), sum(kwh) FROM consumption_hourly").fetchone()
        assert hourly == (48, 48.0)


def test_retention_drops_whole_old_partitions(empty_dsn: str) -> None:
    migrate(empty_dsn, timescaledb="off")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("SELECT mdm_ensure_partitions('register_reads', now() - interval '400 days', "
                     "now() - interval '390 days')")
        old = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'register_reads_p%'").fetchone()
        conn.execute("SELECT mdm_apply_policies(7, 365)")
        new = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'register_reads_p%'").fetchone()
        assert old is not None and new is not None and new[0] < old[0]


@pytest.mark.timescaledb
async def test_timescaledb_hypertables_compression_and_aggregates(empty_dsn: str) -> None:
    migrate(empty_dsn, timescaledb="on", timezone="Asia/Shanghai")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT mode FROM mdm_storage").fetchone() == ("timescaledb",)
        ht = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        assert {"register_reads", "interval_reads"} <= ht
        seg = conn.execute("SELECT attname FROM timescaledb_information.compression_settings "
                           "WHERE hypertable_name = 'interval_reads' AND segmentby_column_index = 1").fetchone()
        assert seg == ("meter",)
        caggs = {r[0] for r in conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
        assert {"consumption_hourly", "consumption_daily", "consumption_monthly"} <= caggs
        conn.execute("SELECT mdm_apply_policies(7, 3650)")
    async with Ingestor(empty_dsn) as ing:
        await ing.submit(_day_of_intervals("000000000001"))
        await ing.submit(_day_of_intervals("000000000001"))  # idempotent on hypertables too
        assert ing.stats.inserted == 96
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CALL refresh_continuous_aggregate('consumption_daily', NULL, NULL)")
        rows = conn.execute("SELECT meter, day, kwh, intervals FROM daily_consumption(%s, %s)",
                            (T0.date(), T0.date())).fetchall()
        assert rows == [("000000000001", T0.date(), 24.0, 96)]
