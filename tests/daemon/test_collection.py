"""The daemon end to end, in process: simulated buses over real TCP sockets and ptys, real PostgreSQL.

Simulated time runs fast (the daemon shares the simulator's clock), wire timeouts stay real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from headend import ipc
from headend.channels import Job, JobKind
from headend.daemon import Daemon
from headend.plans import PlanKind, ReadPlan
from headend.timebase import wrap_clock
from protocols.arbitration import Priority
from protocols.reading import Quality
from simulators.dlt645 import MeterBusSimulator
from tests.daemon.conftest import make_settings, query

TZ = ZoneInfo("Asia/Shanghai")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
    return body


async def _run_for(d: Daemon, sim: MeterBusSimulator, until: datetime, events: list[tuple[datetime, object]]) -> None:
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    pending = sorted(events, key=lambda e: e[0])  # type: ignore[arg-type, return-value]
    while sim.clock.now() < until:
        while pending and sim.clock.now() >= pending[0][0]:
            pending.pop(0)[1]()  # type: ignore[operator]
        assert not task.done(), task.exception() if task.done() else None
        await asyncio.sleep(0.05)
    d.stop()
    await asyncio.wait_for(task, 20)


async def test_windows_breaker_and_backfill_after_meter_returns(
    daemon_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plan outside its window never reads; a silent meter logs once down and once up, and its
    missed load-profile intervals come back from meter memory with their true timestamps."""
    caplog.set_level(logging.WARNING, logger="headend")
    start = datetime(2026, 11, 26, 22, 58, tzinfo=TZ)
    async with MeterBusSimulator(4, transport="tcp", parity="N", speed=240, start=start, history_days=1,
                                 faults={"000000000002": "silent"}) as sim:
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-backfill", listen="",
            channels=[{"name": "bus-a", "url": sim.url, "meters": sim.addresses, "timeout": 0.25, "retries": 0}],
            plans=[
                ReadPlan(name="instant", kind=PlanKind.READ, every=60, quantities=["voltage.a", "current.a"]),
                ReadPlan(name="night", kind=PlanKind.READ, every=60, window="03:00-04:00", quantities=["voltage.a"]),
                ReadPlan(name="profile", kind=PlanKind.PROFILE, every=900, offset=5),
            ],
            breaker={"failure_threshold": 2, "base_backoff": 120, "max_backoff": 240},
            backfill={"every": 120, "not_before": start, "lookback_days": 1},
            leases={"enabled": "off"}, kpi_flush=0.5,
        )
        d = Daemon(settings, dsn=daemon_dsn, clock=wrap_clock(sim.clock))
        back = start + timedelta(minutes=50)
        await _run_for(d, sim, start + timedelta(minutes=62),
                       [(back, lambda: sim.clear_fault("000000000002"))])

    down = [r for r in caplog.records if "stopped answering" in r.getMessage() and "000000000002" in r.getMessage()]
    up = [r for r in caplog.records if r.getMessage().endswith("answers again") and "000000000002" in r.getMessage()]
    assert len(down) == 1 and len(up) == 1, [r.getMessage() for r in caplog.records]
    # the window: "night" never ran, "instant" did for every meter
    kpi = dict(query(daemon_dsn, "SELECT plan, sum(due) FROM collection_kpi GROUP BY plan"))
    assert "night" not in kpi and kpi["instant"] > 4 * 30
    # backfill: intervals of the silent period, re-read with BACKFILLED and their own quarter-hour stamps
    rows = query(daemon_dsn, "SELECT ts, quality FROM interval_reads WHERE meter = %s AND quantity = %s"
                 " ORDER BY ts", "000000000002", "interval.energy.active.import")
    filled = [ts for ts, q in rows if q & Quality.BACKFILLED]
    assert filled, rows
    assert all(ts.astimezone(TZ).minute % 15 == 0 and ts.second == 0 for ts in filled)
    assert all(ts < back for ts in filled)
    assert d.kpi.totals.backfilled >= len(filled) >= 2
    # healthy meters were never backfilled (nothing missing)
    assert not query(daemon_dsn, "SELECT 1 FROM interval_reads WHERE meter <> %s AND quality & 8 = 8",
                     "000000000002")


async def test_priority_preemption_and_ipc_read(daemon_dsn: str, tmp_path: Path) -> None:
    """An on-demand read through the daemon's IPC overtakes queued backfill and scheduled work."""
    async with MeterBusSimulator(6, transport="pty", parity="N", line_time=True, baud=9600, turnaround=0.05,
                                 history_days=1) as sim:
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-prio", listen="127.0.0.1:0", plans=[],
            channels=[{"name": "bus-p", "url": sim.url, "meters": sim.addresses, "timeout": 1.0}],
            leases={"enabled": "off"},
        )
        d = Daemon(settings, dsn=daemon_dsn)
        order: list[str] = []
        d.listeners.append(lambda ch, job, outcome, readings: order.append(f"{job.plan}:{outcome.value}"))
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.ready.wait(), 10)
        for _ in range(500):
            if "bus-p" in d.channels and d.channels["bus-p"].client is not None:
                break
            await asyncio.sleep(0.02)
        ch = d.channels["bus-p"]
        for i, m in enumerate(sim.addresses * 2):
            ch.submit(Job(Priority.SCHEDULED, m, JobKind.READ, plan="bulk", quantities=("energy.active.import",),
                          slot=datetime(2026, 1, 1, tzinfo=TZ) + timedelta(minutes=i)))
        for m in sim.addresses[:3]:
            ch.submit(Job(Priority.BACKFILL, m, JobKind.DAILY, plan="fill", n=1, backfill=True))
        await asyncio.sleep(0.05)  # the first job is on the wire now
        for _ in range(40):  # the registry file is (re)written within a quarter second
            if ipc.find_daemon(tmp_path, sim.url) is not None:
                break
            await asyncio.sleep(0.05)
        assert ipc.find_daemon(tmp_path, sim.url) is not None
        done_before = len(order)
        rows = await asyncio.to_thread(ipc.try_daemon_read, tmp_path, sim.url, sim.addresses[0],
                                       ["energy.active.import", "00010000"])
        for _ in range(200):
            if order.count("bulk:ok") >= 3:
                break
            await asyncio.sleep(0.05)
        assert d.http is not None
        health = json.loads(await asyncio.to_thread(_get, d.http.url + "/health"))
        metrics = (await asyncio.to_thread(_get, d.http.url + "/metrics")).decode()
        d.stop()
        await asyncio.wait_for(task, 20)
        url = sim.url
    assert rows is not None and rows[0]["quantity"] == "energy.active.import" and rows[1]["item"] == "00010000"
    first_call = order.index("call:ok")
    # at most the job in flight when the request arrived (and one taken meanwhile) went first
    assert first_call <= done_before + 2, (done_before, order)
    assert order.index("fill:ok") < order.index("bulk:ok", first_call), order  # backfill before scheduled
    assert ipc.find_daemon(tmp_path, url) is None  # unregistered on exit
    assert health["status"] == "ok" and health["channels_up"] == 1 and health["meters"] == 6
    for line in ('headend_reads_total{channel="bus-p",outcome="ok"}', 'headend_queue_depth{channel="bus-p",priority=',
                 'headend_channel_up{channel="bus-p"} 1.0', 'headend_breakers{channel="bus-p",state="closed"} 6.0',
                 "headend_reads_per_second", "headend_success_ratio", "headend_spool_bytes",
                 'headend_gc_seconds_total{generation="2"}', "headend_gc_pause_max_seconds",
                 "headend_event_loop_lag_seconds"):
        assert line in metrics, line


async def test_clock_sync_waits_for_freeze_boundary_and_flags(daemon_dsn: str, tmp_path: Path) -> None:
    """Drifted clocks get one broadcast sync, not within the guard around midnight; a clock too far
    off (a clock running away) is flagged; the synced meter reads right afterwards."""
    start = datetime(2026, 11, 26, 23, 55, tzinfo=TZ)
    async with MeterBusSimulator(3, transport="tcp", parity="N", speed=120, start=start, history_days=1,
                                 faults={"000000000001": "clock_offset=150", "000000000003": "clock_drift=3600"},
                                 ) as sim:
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-clock", listen="",
            channels=[{"name": "bus-c", "url": sim.url, "meters": sim.addresses, "timeout": 0.5}],
            plans=[ReadPlan(name="clock", kind=PlanKind.CLOCK, every=60, jitter=10)],
            clocksync={"max_drift": 30, "max_step": 300, "guard": 300, "hourly_freezes": False,
                       "recheck_after": 60, "min_interval": 3600},
            leases={"enabled": "off"}, kpi_flush=0.5,
        )
        d = Daemon(settings, dsn=daemon_dsn, clock=wrap_clock(sim.clock))
        await _run_for(d, sim, start + timedelta(minutes=16), [])
    assert len(d.clocks.syncs) == 1, d.clocks.syncs
    _, at, n, worst = d.clocks.syncs[0]
    # drift seen from 23:55 on, but no sync inside midnight +- 5 min (meter at +150 s included)
    assert at.astimezone(TZ) >= datetime(2026, 11, 27, 0, 5, tzinfo=TZ)
    assert d.clocks.deferred > 0
    assert n == 1 and 100 < worst < 200
    assert abs(d.clocks.offsets["000000000001"][0]) < 10  # corrected
    assert "000000000003" in d.clocks.flagged and "000000000001" not in d.clocks.flagged
    flags = query(daemon_dsn, "SELECT meter, flag FROM meter_flags WHERE cleared_at IS NULL")
    assert flags == [("000000000003", "clock_off")]
    assert query(daemon_dsn, "SELECT count(*) FROM clock_syncs") == [(1,)]
    offsets = query(daemon_dsn, "SELECT count(*) FROM register_reads WHERE quantity = 'clock.offset'")
    assert offsets[0][0] >= 3 * 10


async def test_channels_and_meters_from_the_database(daemon_dsn: str, tmp_path: Path) -> None:
    """``meters_from = "database"``: enabled channels with a URL and their installed meters, each
    meter read in its own zone from ``meters.time_zone``."""
    async with MeterBusSimulator(3, transport="tcp", parity="N") as sim:
        with psycopg.connect(daemon_dsn) as c:
            c.execute("INSERT INTO channels (name, url) VALUES ('db-bus', %s), ('off-bus', 'tcp://127.0.0.1:9')",
                      (sim.url,))
            c.execute("UPDATE channels SET enabled = false WHERE name = 'off-bus'")
            for a in sim.addresses:
                c.execute("INSERT INTO meters (address, channel, status, time_zone) VALUES (%s, 'db-bus', %s, %s)",
                          (a, "installed" if a != sim.addresses[2] else "removed", "Europe/Berlin"))
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-db", listen="", meters_from="database",
            plans=[ReadPlan(name="instant", kind=PlanKind.READ, every=1, quantities=["voltage.a"])],
        )
        d = Daemon(settings, dsn=daemon_dsn)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.ready.wait(), 20)
        for _ in range(100):
            if d.kpi.totals.ok >= 4:
                break
            await asyncio.sleep(0.1)
        d.stop()
        await asyncio.wait_for(task, 20)
    assert sorted(d.channel_configs) == ["db-bus"]
    infos = d.meter_infos["db-bus"]
    assert [m.address for m in infos] == sim.addresses[:2] and {str(m.tz) for m in infos} == {"Europe/Berlin"}
    got = query(daemon_dsn, "SELECT DISTINCT meter FROM register_reads WHERE source = 'dlt645@t-db' ORDER BY 1")
    assert [g[0] for g in got] == sim.addresses[:2]


async def test_billing_plan_stores_the_meters_settlement_values(daemon_dsn: str, tmp_path: Path) -> None:
    """The monthly plan reads what the meter froze at 00:00 on the settlement day, stamped with that
    instant, not the registers as they stand when the read happens minutes later."""
    start = datetime(2026, 11, 30, 23, 58, tzinfo=TZ)
    async with MeterBusSimulator(2, transport="tcp", parity="N", speed=240, start=start, history_days=40) as sim:
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-billing", listen="",
            channels=[{"name": "bus-b", "url": sim.url, "meters": sim.addresses, "timeout": 0.5, "retries": 0}],
            plans=[ReadPlan(name="billing", kind=PlanKind.MONTHLY, billing_day=1, offset=300, window="00:05-08:00")],
            leases={"enabled": "off"}, kpi_flush=0.5,
        )
        d = Daemon(settings, dsn=daemon_dsn, clock=wrap_clock(sim.clock))
        await _run_for(d, sim, start + timedelta(minutes=20), [])
        boundary = datetime(2026, 12, 1, tzinfo=TZ)
        for m in sim.addresses:
            snap = sim.meters[m].frozen_energy(boundary)
            rows = dict(query(daemon_dsn, "SELECT quantity, value FROM register_reads WHERE meter = %s AND ts = %s",
                              m, boundary))
            assert rows["energy.active.import"] == pytest.approx(snap.imp, abs=0.01), rows
            assert rows["energy.active.import.t1"] == pytest.approx(snap.imp_t[0], abs=0.01)
            assert rows["energy.active.export"] == pytest.approx(snap.exp, abs=0.01)
            assert sim.meters[m].energy().imp > snap.imp  # the meter kept counting after the boundary


async def test_daemon_stores_what_a_killed_run_left_in_its_journal(daemon_dsn: str, tmp_path: Path) -> None:
    """Readings a killed run had journalled but not stored are stored at the next start, once."""
    from mdm.journal import ReadingJournal
    from protocols.reading import Reading

    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=TZ)
    left = [Reading(f"J{k:011d}", "voltage.a", t0 + timedelta(seconds=k), 220.0 + k / 10, "V", source="dlt645")
            for k in range(2_500)]
    j = ReadingJournal(tmp_path / "journal")
    for k in range(0, len(left), 8):  # one record per job, as the ingest sink writes them
        j.append(left[k : k + 8])
    j.close()
    async with MeterBusSimulator(1, transport="tcp", parity="N", speed=240, start=t0, history_days=1) as sim:
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-journal", listen="",
            channels=[{"name": "bus-j", "url": sim.url, "meters": sim.addresses, "timeout": 0.5, "retries": 0}],
            plans=[ReadPlan(name="instant", kind=PlanKind.READ, every=60, quantities=["voltage.a"])],
            leases={"enabled": "off"}, kpi_flush=0.5,
        )
        for _ in range(2):  # a second start finds nothing left and stores nothing twice
            d = Daemon(settings, dsn=daemon_dsn, clock=wrap_clock(sim.clock))
            await _run_for(d, sim, sim.clock.now() + timedelta(seconds=30), [])
    rows = query(daemon_dsn, "SELECT count(*), count(DISTINCT (meter, ts)), min(value), max(value) "
                 "FROM register_reads WHERE meter LIKE 'J%%'")
    assert rows == [(2_500, 2_500, 220.0, 220.0 + 2_499 / 10)]
    assert not list((tmp_path / "journal").glob("spool-*.log"))
