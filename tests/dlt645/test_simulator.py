"""Simulator physics: CSV replay, accelerated clock, tariffs, history consistency, fault parsing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from simulators.clock import SimClock
from simulators.dlt645 import MeterBusSimulator
from simulators.dlt645.physics import tariff_at
from simulators.faults import Fault, FaultSpec, parse_faults
from simulators.loadprofile import CsvProfile, SyntheticProfile

SHARED = Path(os.environ.get("HEADEND_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SGSC_FIXTURE = SHARED / "sgsc_nsw_50_households" / "fixture_5cust_2013-01.csv"


@pytest.mark.skipif(not SGSC_FIXTURE.exists(), reason="shared SGSC data not available")
async def test_csv_replay_drives_the_energy_registers() -> None:
    profile = CsvProfile(SGSC_FIXTURE)
    assert profile.interval_s == 1800 and len(profile.series_ids) >= 3
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    async with MeterBusSimulator(2, transport="tcp", profile=SGSC_FIXTURE, start=start, history_days=1) as sim:
        meter = sim.meters["000000000001"]
        t0 = start - timedelta(hours=6)
        e0, e1 = meter.energy(t0).imp, meter.energy(start).imp
        expected = sum(profile.demand_kw(0, t0 + timedelta(minutes=15 * k)) * 0.25 for k in range(24))
        assert e1 - e0 == pytest.approx(expected, rel=1e-6)
        assert sum(meter.tariff_energy) == pytest.approx(meter.energy_import, rel=1e-9)


async def test_accelerated_clock_and_frozen_history() -> None:
    start = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)
    async with MeterBusSimulator(1, transport="tcp", start=start, speed=10.0, history_days=3, tz="UTC") as sim:
        meter = sim.meters["000000000001"]
        before = len(meter.frozen_daily)
        sim.advance(20 * 60)  # past midnight: a new daily freeze appears
        assert len(meter.frozen_daily) == before + 1
        t, snap = meter.frozen_daily[-1]
        assert t == datetime(2026, 3, 2, tzinfo=meter.tz)
        assert snap.imp == pytest.approx(meter.energy(t).imp)
        # Load-profile intervals add up to the register difference.
        lp = meter.load_profile
        total = sum(kwh for _, kwh in lp)
        assert total == pytest.approx(meter.energy(lp[-1][0] + timedelta(minutes=15)).imp
                                      - meter.energy(lp[0][0]).imp, abs=1e-6)
    clock = SimClock(start, speed=60.0)
    clock.advance(3600)
    assert clock.now() - start >= timedelta(hours=1)


def test_tariff_table_and_profiles() -> None:
    assert tariff_at(datetime(2026, 1, 1, 3)) == 4 and tariff_at(datetime(2026, 1, 1, 18)) == 2
    p = SyntheticProfile(seed=1)
    night = p.demand_kw(0, datetime(2026, 1, 7, 3, tzinfo=UTC))
    evening = p.demand_kw(0, datetime(2026, 1, 7, 19, tzinfo=UTC))
    assert 0 < night < evening


def test_fault_parsing() -> None:
    got = parse_faults("000000000003:silent, 000000000005:slow=0.8,000000000005:garbage")
    assert got["000000000003"] == [FaultSpec(Fault.SILENT, 0.0)]
    assert got["000000000005"] == [FaultSpec(Fault.SLOW, 0.8), FaultSpec(Fault.GARBAGE, 8.0)]
    assert parse_faults({"1": ["clock_drift=-30"]})["1"] == [FaultSpec(Fault.CLOCK_DRIFT, -30.0)]
    with pytest.raises(ValueError):
        parse_faults("000000000003:explode")
    with pytest.raises(ValueError):
        parse_faults("no-colon")


async def test_no_energy_flows_while_the_relay_is_open() -> None:
    from protocols.client import Credentials, RelayCommand
    from protocols.dlt645.client import Dlt645Client

    async with MeterBusSimulator(1, transport="virtual") as sim:
        meter = sim.meters["000000000001"]
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            until = datetime.now(UTC) + timedelta(days=1)
            (before,) = await client.read("000000000001", ["energy.active.import"])
            assert (await client.control("000000000001", RelayCommand.TRIP, Credentials("123456"), until)).accepted
            at_trip = meter.energy_import
            assert at_trip >= before.value - 0.01  # never goes backwards
            sim.advance(3 * 3600)
            assert meter.energy_import == pytest.approx(at_trip, abs=1e-9)
            (off,) = await client.read("000000000001", ["power.active.total"])
            assert off.value == 0
            assert (await client.control("000000000001", RelayCommand.CLOSE_DIRECT, Credentials("123456"),
                                         until + timedelta(hours=3))).accepted
            sim.advance(3600)
            assert meter.energy_import > at_trip + 0.01
            # The outage shows in the load profile: three hours of empty intervals.
            empty = [kwh for _, kwh in meter.load_profile[-15:-5]]
            assert max(empty) == pytest.approx(0.0, abs=1e-9)


async def test_voltages_currents_and_power_are_consistent() -> None:
    """Read over the wire: P = sum(U x I) x |PF| per phase, S = hypot(P, Q), PF = P / S."""
    from protocols.dlt645.client import Dlt645Client

    start = datetime(2026, 1, 7, 19, 0, tzinfo=UTC)  # evening: a real load
    async with MeterBusSimulator(1, transport="virtual", start=start) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            codes = ["voltage.a", "voltage.b", "voltage.c", "current.a", "current.b", "current.c",
                     "power.active.total", "power.reactive.total", "power.apparent.total", "pf.total"]
            r = {x.quantity: x.value for x in await client.read("000000000001", codes)}
    p, q, s, pf = r["power.active.total"], r["power.reactive.total"], r["power.apparent.total"], r["pf.total"]
    assert p > 0.1
    ui = sum(r[f"voltage.{ph}"] * r[f"current.{ph}"] for ph in "abc") / 1000.0  # kVA
    assert p == pytest.approx(ui * abs(pf), rel=0.02)
    assert s == pytest.approx((p * p + q * q) ** 0.5, rel=0.01)
    assert abs(pf) == pytest.approx(p / s, abs=0.002)
    assert all(200 < r[f"voltage.{ph}"] < 240 for ph in "abc")
