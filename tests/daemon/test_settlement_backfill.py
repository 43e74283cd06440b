"""Backfill of monthly settlement (结算日) values: the daemon re-reads a billing value the store is
missing from the meter's Nth previous settlement, end to end over a simulated bus on real TCP
sockets with real PostgreSQL. Simulated time runs fast (the daemon shares the simulator's clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from headend.backfill import SETTLEMENT_DEPTH, settlement_instants, settlement_number
from headend.channels import Channel, Job, JobKind, Outcome
from headend.daemon import Daemon
from headend.plans import PlanKind, ReadPlan
from headend.timebase import wrap_clock
from protocols.dlt645.settlement import settlement_instant
from protocols.reading import Quality, Reading
from simulators.dlt645 import MeterBusSimulator
from tests.daemon.conftest import make_settings, query

TZ = ZoneInfo("Asia/Shanghai")
M1, M2 = "000000000001", "000000000002"
BILLING = ReadPlan(name="billing", kind=PlanKind.MONTHLY, billing_day=1, offset=300, window="00:05-08:00")

_Seen = list[tuple[str, int, datetime | None, bool, Outcome]]  # meter, n, start, backfill, outcome


def _record(d: Daemon, seen: _Seen) -> None:
    def on_job(ch: Channel, job: Job, outcome: Outcome, readings: Sequence[Reading]) -> None:
        if job.kind is JobKind.SETTLEMENT:
            seen.append((job.meter, job.n, job.start or job.slot, job.backfill, outcome))

    d.listeners.append(on_job)


async def _run(d: Daemon, sim: MeterBusSimulator, until: datetime | Callable[[], bool],
               events: Sequence[tuple[datetime, Callable[[], None]]] = (), limit: float = 60.0) -> None:
    """Run the daemon until a simulated time (or a condition), firing ``events`` at their times."""
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    pending = sorted(events, key=lambda e: e[0])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not (until() if callable(until) else sim.clock.now() >= until):
        while pending and sim.clock.now() >= pending[0][0]:
            pending.pop(0)[1]()
        assert not task.done(), task.exception() if task.done() else None
        assert loop.time() < deadline, "the daemon did not get there in time"
        await asyncio.sleep(0.05)
    d.stop()
    await asyncio.wait_for(task, 20)


def _register(dsn: str, meter: str, ts: datetime) -> dict[str, tuple[float, int]]:
    return {q: (v, qual) for q, v, qual in query(
        dsn, "SELECT quantity, value, quality FROM register_reads WHERE meter = %s AND ts = %s", meter, ts)}


async def test_missed_billing_value_is_backfilled_once_after_the_meter_answers(
    daemon_dsn: str, tmp_path: Path
) -> None:
    """A meter silent on the billing day gets that day's settlement values from its memory once it
    answers again: stamped with the settlement instant, BACKFILLED, counted as backfilled in the KPI.
    A meter whose values were read on the day is never re-read, and a restart's full sweep reads
    neither again."""
    start = datetime(2026, 11, 30, 23, 58, tzinfo=TZ)
    boundary = datetime(2026, 12, 1, tzinfo=TZ)
    back = datetime(2026, 12, 1, 0, 15, tzinfo=TZ)
    seen: _Seen = []
    async with MeterBusSimulator(2, transport="tcp", parity="N", speed=240, start=start, history_days=40,
                                 faults={M2: "silent"}) as sim:
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-settle", listen="",
            channels=[{"name": "bus-s", "url": sim.url, "meters": sim.addresses, "timeout": 0.25, "retries": 0}],
            plans=[BILLING, ReadPlan(name="instant", kind=PlanKind.READ, every=60, quantities=["voltage.a"])],
            breaker={"failure_threshold": 2, "base_backoff": 120, "max_backoff": 240},
            backfill={"every": 120, "not_before": start, "lookback_days": 1},
            leases={"enabled": "off"}, kpi_flush=0.5,
        )
        d = Daemon(settings, dsn=daemon_dsn, clock=wrap_clock(sim.clock))
        _record(d, seen)
        await _run(d, sim, boundary + timedelta(minutes=40), [(back, lambda: sim.clear_fault(M2))])
        first_run = list(seen)
        backfilled_kpi = d.kpi.totals.backfilled
        # a restart sweeps every meter of the channel at once: both values are in the store now
        d2 = Daemon(settings, dsn=daemon_dsn, clock=wrap_clock(sim.clock))
        _record(d2, seen)
        await _run(d2, sim, sim.clock.now() + timedelta(minutes=12))
        snaps = {m: sim.meters[m].frozen_energy(boundary) for m in sim.addresses}

    # the billing-day read of the silent meter failed; the one of the other meter did not
    sched = {(m, o) for m, _, t, bf, o in first_run if not bf}
    assert (M1, Outcome.OK) in sched and (M2, Outcome.OK) not in sched, first_run
    # exactly one re-read, of the 1st previous settlement, for the silent meter only (both runs)
    fills = [(m, n, t, o) for m, n, t, bf, o in seen if bf]
    assert fills == [(M2, 1, boundary, Outcome.OK)], seen
    assert seen[len(first_run):] == [], seen  # the restart read nothing again
    # the values are the registers frozen at the settlement instant, stamped with it
    got = _register(daemon_dsn, M2, boundary)
    assert got["energy.active.import"][0] == pytest.approx(snaps[M2].imp, abs=0.01), got
    assert got["energy.active.import.t2"][0] == pytest.approx(snaps[M2].imp_t[1], abs=0.01)
    assert got["energy.active.export"][0] == pytest.approx(snaps[M2].exp, abs=0.01)
    assert all(qual & Quality.BACKFILLED for _, qual in got.values()), got
    assert sim.meters[M2].energy().imp > snaps[M2].imp  # the meter kept counting: not a read of "now"
    healthy = _register(daemon_dsn, M1, boundary)
    assert healthy["energy.active.import"][0] == pytest.approx(snaps[M1].imp, abs=0.01)
    assert not any(qual & Quality.BACKFILLED for _, qual in healthy.values()), healthy
    # nothing else of the silent meter was stored as backfilled (no other month read by mistake)
    assert query(daemon_dsn, "SELECT DISTINCT ts FROM register_reads WHERE meter = %s AND quality & 8 = 8",
                 M2) == [(boundary,)]
    # the KPI: the billing slot failed on the day and was backfilled later (the day it was due)
    kpi = {m: (due, ok, failed, bf) for m, due, ok, failed, bf in query(
        daemon_dsn, "SELECT meter, due, ok, failed, backfilled FROM collection_kpi"
        " WHERE plan = 'billing' AND day = %s", boundary.date())}
    assert kpi == {M1: (1, 1, 0, 0), M2: (1, 0, 1, 1)}, kpi
    assert backfilled_kpi == 1


async def test_settlements_missing_over_months_are_read_by_their_number(daemon_dsn: str, tmp_path: Path) -> None:
    """Missing settlements months back are re-read as the Nth previous settlement (N from the current
    month), at most the twelve the meter keeps; a settlement in the store is skipped, and one older
    than the meter's history is answered "no data" and stays missing."""
    start = datetime(2026, 12, 10, 10, 0, tzinfo=TZ)
    months = [datetime(2026, 12 - k, 1, tzinfo=TZ) for k in range(SETTLEMENT_DEPTH)]  # N = 1..12
    with psycopg.connect(daemon_dsn) as c:  # read earlier (by another system): must not be read again
        c.execute("INSERT INTO register_reads (meter, quantity, ts, value, unit) VALUES (%s, %s, %s, 123.0, 'kWh')",
                  (M1, "energy.active.import", months[1]))
    seen: _Seen = []
    # 75 days of history: Dec, Nov, Oct settlements are in the meter's memory, September's is not
    async with MeterBusSimulator(2, transport="tcp", parity="N", speed=20, start=start, history_days=75) as sim:
        settings = make_settings(
            daemon_dsn, tmp_path, name="t-settle-n", listen="",
            channels=[{"name": "bus-n", "url": sim.url, "meters": sim.addresses, "timeout": 0.5, "retries": 0}],
            plans=[BILLING],
            backfill={"every": 3600, "lookback_days": 400, "max_jobs_per_meter": 20},
            leases={"enabled": "off"}, kpi_flush=0.5,
        )
        d = Daemon(settings, dsn=daemon_dsn, clock=wrap_clock(sim.clock))
        _record(d, seen)
        await _run(d, sim, lambda: len(seen) >= 2 * SETTLEMENT_DEPTH - 1)
        snaps = {(m, t): sim.meters[m].frozen_energy(t) for m in sim.addresses for t in months[:3]}

    fills = sorted((m, n, t) for m, n, t, bf, _ in seen if bf)
    assert len(fills) == len(seen) == 2 * SETTLEMENT_DEPTH - 1, seen  # no scheduled read in these days
    expected = [(m, k + 1, months[k]) for m in (M1, M2) for k in range(SETTLEMENT_DEPTH) if (m, k) != (M1, 1)]
    assert fills == sorted(expected)
    outcomes = {(m, n): o for m, n, _, _, o in seen}
    assert {k for k, o in outcomes.items() if o is Outcome.OK} == {(M1, 1), (M1, 3), (M2, 1), (M2, 2), (M2, 3)}
    assert all(o is Outcome.DEVICE_ERROR for (_, n), o in outcomes.items() if n > 3), outcomes
    for (m, t), snap in snaps.items():
        got = _register(daemon_dsn, m, t)
        if (m, t) == (M1, months[1]):
            assert got == {"energy.active.import": (123.0, 0)}  # the stored value was left alone
            continue
        assert got["energy.active.import"][0] == pytest.approx(snap.imp, abs=0.01), (m, t, got)
        assert got["energy.active.export.t1"][0] == pytest.approx(snap.exp_t[0], abs=0.01)
        assert all(qual & Quality.BACKFILLED for _, qual in got.values())
    stored = query(daemon_dsn, "SELECT DISTINCT ts FROM register_reads WHERE quality & 8 = 8 ORDER BY 1")
    assert [r[0] for r in stored] == sorted(months[:3])


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/Sao_Paulo", "Europe/Berlin", "Asia/Kathmandu"])
@pytest.mark.parametrize("day", [1, 15, 28])
def test_settlement_numbering_agrees_with_the_meters_arithmetic(zone: str, day: int) -> None:
    """The instants and numbers the backfill computes are the ones the meter's settlement arithmetic
    (the client's) gives: across year ends, on the billing day itself and an instant before it."""
    tz = ZoneInfo(zone)
    checks = 0
    for now_local in (datetime(2026, 1, day, 0, 0, tzinfo=tz), datetime(2026, 1, day, 0, 0, tzinfo=tz)
                      - timedelta(seconds=1), datetime(2026, 3, 31, 23, 59, tzinfo=tz),
                      datetime(2025, 12, 31, 23, 59, tzinfo=tz), datetime(2026, 10, day, 13, 0, tzinfo=tz)):
        now = now_local.astimezone(UTC)
        instants = settlement_instants(tz, day, now, SETTLEMENT_DEPTH)
        for n in range(1, SETTLEMENT_DEPTH + 1):
            want = settlement_instant(now_local, day, 0, n)
            assert instants[n - 1] == want, (now_local, n)
            assert settlement_number(tz, day, now, want) == n
            checks += 1
    assert checks == 5 * SETTLEMENT_DEPTH
