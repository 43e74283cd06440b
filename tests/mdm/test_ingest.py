"""Ingest: idempotent replays, versions, rejections, unknown meters, spool on outage, damaged spools."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mdm.db import admin_dsn, database_name
from mdm.ingest import Ingestor
from mdm.spool import Spool
from protocols.reading import Quality, Reading

from .helpers import QTY, T0, db_checksum, expected_checksum, readings


def _q(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args or None).fetchall()


async def test_replay_changes_nothing_and_new_values_become_versions(fresh_dsn: str) -> None:
    rs = list(readings(0, 5000, meters=50))
    async with Ingestor(fresh_dsn, batch_size=1000) as ing:
        assert (await ing.submit(rs)).accepted == 5000
        before = db_checksum(psycopg.connect(fresh_dsn))
        await ing.submit(rs)  # replay: nothing changes
        assert ing.stats.inserted == 5000 and ing.stats.unchanged == 5000
        with psycopg.connect(fresh_dsn) as conn:
            assert db_checksum(conn) == before == expected_checksum(conn, 5000, meters=50)
        changed = [Reading(r.meter, r.quantity, r.ts, r.value + 1, r.unit, Quality.GOOD, "fix") for r in rs[:10]]
        await ing.submit(changed)
        await ing.submit(changed + rs[:10])  # replaying both old and new values: still nothing new
        assert ing.stats.superseded == 10
    cur = _q(fresh_dsn, "SELECT value, version, source FROM interval_reads WHERE meter = %s AND ts = %s",
             rs[0].meter, rs[0].ts)
    assert cur == [(rs[0].value + 1, 2, "fix")]
    old = _q(fresh_dsn, "SELECT value, version, source FROM superseded_reads WHERE meter = %s AND ts = %s",
             rs[0].meter, rs[0].ts)
    assert old == [(rs[0].value, 1, "test")]
    assert _q(fresh_dsn, "SELECT count(*) FROM interval_reads") == [(5000,)]


async def test_several_values_in_one_batch_all_kept_in_arrival_order(fresh_dsn: str) -> None:
    r = Reading("000000000001", "energy.active.import", T0, 10.0, "kWh")
    vals = [10.0, 11.0, 12.0, 11.0]
    async with Ingestor(fresh_dsn) as ing:
        await ing.submit([Reading(r.meter, r.quantity, r.ts, v, "kWh") for v in vals])
    assert _q(fresh_dsn, "SELECT value, version FROM register_reads") == [(12.0, 3)]
    assert _q(fresh_dsn, "SELECT value, version FROM superseded_reads ORDER BY version") == [(10.0, 1), (11.0, 2)]


async def test_routing_rejections_and_unknown_meters(fresh_dsn: str) -> None:
    good_reg = Reading("000000000042", "energy.active.import", T0, 1.5, "kWh", source="dlt645")
    good_int = Reading("000000000042", QTY, T0, 0.1, "kWh", source="dlt645")
    bad_q = Reading("000000000042", "energy.bogus", T0, 1.0)
    async with Ingestor(fresh_dsn) as ing:
        res = await ing.submit([good_reg, good_int, bad_q])
        assert res.accepted == 2 and [x.reason for x in res.rejected] == ["unknown quantity code 'energy.bogus'"]
        assert ing.stats.discovered == 1
    assert _q(fresh_dsn, "SELECT status, protocol FROM meters WHERE address = '000000000042'") == [
        ("discovered", "dlt645")]
    assert _q(fresh_dsn, "SELECT count(*) FROM register_reads") == [(1,)]
    assert _q(fresh_dsn, "SELECT count(*) FROM interval_reads") == [(1,)]
    async with Ingestor(fresh_dsn, unknown_meters="reject") as ing:
        res = await ing.submit([good_reg, Reading("000000000099", "energy.active.import", T0, 1.0)])
        assert res.accepted == 1 and "unknown meter" in res.rejected[0].reason


async def test_far_dates_get_partitions(fresh_dsn: str) -> None:
    far = [Reading("000000000001", "energy.active.import", T0 + timedelta(days=400 * k), float(k)) for k in range(3)]
    async with Ingestor(fresh_dsn) as ing:
        await ing.submit(far)
    assert _q(fresh_dsn, "SELECT count(*) FROM register_reads") == [(3,)]
    mode = _q(fresh_dsn, "SELECT mode FROM mdm_storage")[0][0]
    if mode == "partitioned":
        assert _q(fresh_dsn, "SELECT count(*) FROM register_reads_default") == [(0,)]


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _outage(dsn: str, down: bool) -> None:
    name = database_name(dsn)
    with psycopg.connect(admin_dsn(dsn), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.Literal(not down)))
        if down:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


async def test_outage_spools_then_replays_in_order(fresh_dsn: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    async with Ingestor(fresh_dsn, spool_dir=spool, batch_size=500, retry_for=0.3, replay_interval=0.1) as ing:
        await ing.submit(list(readings(0, 1000)))
        _outage(fresh_dsn, True)
        try:
            res = await ing.submit(list(readings(1000, 3000)))  # durable in the spool while the DB is down
            assert res.accepted == 2000 and ing.stats.spooled_batches >= 1
            st = ing.spool_stats()
            assert st is not None and st.spooling and st.segments >= 1
        finally:
            _outage(fresh_dsn, False)
        assert await ing.wait_spool_drained(10)
        await ing.submit(list(readings(3000, 4000)))
    with psycopg.connect(fresh_dsn) as conn:
        assert db_checksum(conn) == expected_checksum(conn, 4000)
    assert not list(spool.glob("spool-*.log"))


async def test_damaged_spool_tail_replays_good_records_and_reports(fresh_dsn: str, tmp_path: Path) -> None:
    d = tmp_path / "spool"
    sp = Spool(d)
    rows = list(readings(0, 300))
    for k in range(3):
        sp.append([], rows[k * 100:(k + 1) * 100])
    sp.close()
    seg = sorted(d.glob("spool-*.log"))[0]
    data = seg.read_bytes()
    third = data.rfind(b"HSP1")  # start of the last record
    seg.write_bytes(data[:-37])  # crash in the middle of the last record
    async with Ingestor(fresh_dsn, spool_dir=d, replay_interval=0.05) as ing:
        assert await ing.wait_spool_drained(10)
        assert ing.stats.replayed_batches == 2
        assert [(x.reason, x.offset) for x in ing.stats.spool_damage] == [("truncated", third)]
        kept = ing.stats.spool_damage[0].kept_as
        assert kept and len(_read(kept)) == len(data) - 37 - third
    assert _q(fresh_dsn, "SELECT count(*) FROM interval_reads") == [(200,)]


async def test_corrupted_record_in_the_middle_later_records_still_replayed(fresh_dsn: str, tmp_path: Path) -> None:
    d = tmp_path / "spool"
    sp = Spool(d)
    rows = list(readings(0, 300))
    for k in range(3):
        sp.append([], rows[k * 100:(k + 1) * 100])
    sp.close()
    seg = sorted(d.glob("spool-*.log"))[0]
    data = bytearray(seg.read_bytes())
    rec = data.find(b"HSP1", 1)  # second record
    rec3 = data.find(b"HSP1", rec + 1)
    data[rec + 40] ^= 0xFF  # flip a byte in the second record's payload
    seg.write_bytes(bytes(data))
    async with Ingestor(fresh_dsn, spool_dir=d, replay_interval=0.05) as ing:
        assert await ing.wait_spool_drained(10)
        assert [(x.reason, x.offset, x.length) for x in ing.stats.spool_damage] == [("checksum", rec, rec3 - rec)]
    got = _q(fresh_dsn, "SELECT min(ts), max(ts), count(*) FROM interval_reads")[0]
    assert got[2] == 200


async def test_back_pressure_bounds_buffered_readings(fresh_dsn: str) -> None:
    async with Ingestor(fresh_dsn, batch_size=1000, max_buffered=2000, workers=1) as ing:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, ing.buffered)
                await asyncio.sleep(0)

        w = asyncio.create_task(watch())
        await asyncio.gather(*(ing.submit(list(readings(k * 5000, (k + 1) * 5000))) for k in range(4)))
        w.cancel()
        assert 0 < peak <= 2000 + 1000  # the bound plus at most one chunk admitted at the edge
    assert _q(fresh_dsn, "SELECT count(*) FROM interval_reads") == [(20000,)]


async def test_without_spool_an_outage_is_an_error(fresh_dsn: str) -> None:
    from mdm.db import StoreError

    async with Ingestor(fresh_dsn, retry_for=0.2) as ing:
        _outage(fresh_dsn, True)
        try:
            with pytest.raises(StoreError):
                await ing.submit(list(readings(0, 10)))
        finally:
            _outage(fresh_dsn, False)
