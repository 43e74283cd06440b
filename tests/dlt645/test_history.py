"""History for backfill (daily frozen, load profile), block coalescing, and simulator/registry agreement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocols.client import Credentials, RelayCommand
from protocols.dlt645 import registry
from protocols.dlt645.client import Dlt645Client
from protocols.dlt645.quirks import Quirks
from protocols.errors import DeviceError
from protocols.reading import Quality
from simulators.dlt645 import MeterBusSimulator
from simulators.dlt645.meter import _READERS

M1 = "000000000001"


async def test_daily_frozen_matches_meter_history(tcp_bus: tuple) -> None:  # type: ignore[type-arg]
    sim, client = tcp_bus
    meter = sim.meters[M1]
    readings = await client.read_daily_frozen(M1, 1)
    by = {r.quantity: r for r in readings}
    t, snap = meter.frozen_daily[-1]
    assert by["energy.active.import"].ts == t
    assert by["energy.active.import"].value == pytest.approx(snap.imp, abs=0.01)
    assert all(r.quality & Quality.BACKFILLED for r in readings)
    older = await client.read_daily_frozen(M1, 2)
    assert {r.ts for r in older} == {meter.frozen_daily[-2][0]}


async def test_load_profile_intervals_match_meter_history(tcp_bus: tuple) -> None:  # type: ignore[type-arg]
    sim, client = tcp_bus
    meter = sim.meters[M1]
    profile = meter.load_profile
    start = profile[10][0]
    readings = await client.read_load_profile(M1, start, 12, per_request=5)
    intervals = [r for r in readings if r.quantity == "interval.energy.active.import"]
    assert len(intervals) == 11  # 12 records close 11 intervals
    expected = dict(profile)
    for r in intervals:
        assert r.value == pytest.approx(expected[r.ts], abs=0.02)
    assert intervals[0].ts == start and intervals[-1].ts == start + timedelta(minutes=15 * 10)


async def test_block_coalescing_and_clock_offset(tcp_bus: tuple) -> None:  # type: ignore[type-arg]
    sim, client = tcp_bus
    sim.clear_received()
    readings = await client.read(M1, ["voltage.a", "voltage.b", "voltage.c", "clock.offset"])
    assert [r.quantity for r in readings] == ["voltage.a", "voltage.b", "voltage.c", "clock.offset"]
    dis = [int.from_bytes(f.frame.data[:4], "little") for f in sim.received]
    assert dis[0] == 0x0201FF00  # one block read for the three voltages
    assert abs(readings[3].value) < 5


async def test_every_simulated_item_decodes_with_the_registry() -> None:
    async with MeterBusSimulator(1, transport="tcp") as sim:
        meter = sim.meters[M1]
        meter.events.last_cover_open = None
        problems = []
        for di in sorted(_READERS):
            data = meter.read_value(di)
            if data is None and di >> 24 == 0 and di & 0xFF and meter.settlement_time(di & 0xFF) is None:
                continue  # a settlement before the meter's history: "no data", as a real meter answers
            assert data is not None
            dec = registry.decode_data(di, data)
            if dec.unknown or dec.error:
                problems.append(f"{di:08X}: {'unknown' if dec.unknown else dec.error} ({len(data)} bytes)")
        for di in (0x05060001, 0x05060101, 0x0506FF01, 0x05040001, 0x05040101, 0x0504FF01, 0x03300D01, 0x03010101):
            data = meter.read_value(di)
            assert data is not None, f"{di:08X}"
            dec = registry.decode_data(di, data)
            if dec.unknown or dec.error:
                problems.append(f"{di:08X}: {'unknown' if dec.unknown else dec.error} ({len(data)} bytes)")
        assert not problems, problems


async def test_vendor_quirks_are_configuration_not_code() -> None:
    odd = Quirks(name="odd", di_map={0x00010000: 0x00019901}, time_reversed=True, reply_preamble=1, max_data=60)
    m2 = "000000000002"
    async with MeterBusSimulator(2, transport="tcp", quirks={m2: odd}) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as plain:
            with pytest.raises(DeviceError):  # the standard DI is not served by this meter
                await plain.read(m2, ["energy.active.import"])
            until = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
            res = await plain.control(m2, RelayCommand.ALARM_ON, Credentials("123456"), until)
            assert not res.accepted  # valid-until sent low byte first; this meter reads YY first
        async with Dlt645Client.from_url(sim.url, timeout=0.3, meter_quirks={m2: odd}) as client:
            (r,) = await client.read(m2, ["energy.active.import"])
            assert r.value == pytest.approx(sim.meters[m2].energy_import, abs=0.02)
            res = await client.control(m2, RelayCommand.ALARM_ON, Credentials("123456"), until)
            assert res.accepted and sim.meters[m2].alarm
            (offset,) = await client.read(m2, ["clock.offset"])  # the meter's clock comes back YY first
            assert abs(offset.value) < 5
            raw = sim.meters[m2].read_value(0x0400010C)  # YYMMDDWWhhmmss, YY sent first by this meter
            assert raw is not None and raw[0] == int(f"{sim.meters[m2].clock().year % 100:02d}", 16)
            assert (await client.read_raw(m2, "0001FF00")).frames == 1  # 20 bytes fit a 60-byte frame
            block = await client.read_raw(m2, "040005FF")  # 14 bytes
            assert len(block.data) == 14
            lp = await client.read_raw(m2, 0x06000002, count=1)
            assert lp.frames > 1  # a 60-byte frame limit splits one ~100-byte record


async def test_1997_items_agree_with_their_2007_counterparts() -> None:
    """The meter serves 1997 items from their 2007 counterparts through the registry's mapping."""
    async with MeterBusSimulator(1, transport="tcp") as sim:
        meter = sim.meters[M1]
        served = []
        for d97, d07 in registry.DI97_TO_DI07.items():
            raw97 = meter.read_value_1997(d97)
            raw07 = meter.read_value(d07)
            if raw97 is None:
                continue
            assert raw07 is not None, f"{d97:04X}"
            served.append(d97)
            v97 = registry.decode_data(d97, raw97, 1997)
            v07 = registry.decode_data(d07, raw07)
            assert not v97.unknown and not v97.error, f"{d97:04X}"
            for f97, f07 in zip(v97.fields, v07.fields, strict=False):
                if isinstance(f07.value, float):
                    assert f97.value == pytest.approx(abs(f07.value), abs=0.51), f"{d97:04X}"
                elif isinstance(f07.value, datetime):
                    assert f97.value in (f07.value.date(), f07.value.time()), f"{d97:04X}"
                else:
                    assert f97.value == f07.value, f"{d97:04X}"
        # energy, tariffs, blocks, max demand, voltages, currents, powers, pf, date, time, meter number
        assert {0x9010, 0x9011, 0x901F, 0x902F, 0xA010, 0xB611, 0xB61F, 0xB62F, 0xB630, 0xB650, 0xC010, 0xC011,
                0xC032} <= set(served)


async def test_block_refused_falls_back_to_single_items_once() -> None:
    block = _READERS.pop(0x0201FF00)  # this meter model has no voltage block
    try:
        async with MeterBusSimulator(1, transport="virtual") as sim:
            async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
                for _ in range(2):
                    readings = await client.read(M1, ["voltage.a", "voltage.b"])
                    assert [r.quantity for r in readings] == ["voltage.a", "voltage.b"]
                dis = [int.from_bytes(f.frame.data[:4], "little") for f in sim.received]
                assert dis.count(0x0201FF00) == 1  # refused once, then not asked again
                assert dis.count(0x02010100) == 2
    finally:
        _READERS[0x0201FF00] = block


async def test_settlement_values_are_the_registers_at_the_settlement_instant() -> None:
    async with MeterBusSimulator(1, transport="tcp", history_days=70) as sim:
        meter = sim.meters[M1]
        at = meter.settlement_time(1)
        assert at is not None and (at.day, at.hour, at.minute) == (1, 0, 0) and at <= meter.clock()
        snap = meter.frozen_energy(at)
        got = registry.decode_data(0x0001FF01, meter.read_value(0x0001FF01) or b"").values
        assert got["total"] == pytest.approx(snap.imp, abs=0.01)
        assert [got[f"t{k}"] for k in range(1, 5)] == pytest.approx(list(snap.imp_t), abs=0.01)
        older = meter.settlement_time(2)
        assert older is not None and older < at and older.day == 1
        assert meter.read_value(0x0001FF0C) is None  # twelve settlements back is before this meter's history
        meter.params[0x04000B01] = bytes((0x12, 0x15))  # written DDhh: the 15th, 12:00
        assert registry.decode_data(0x04000B01, meter.read_value(0x04000B01) or b"").value == "1512"
        at15 = meter.settlement_time(1)
        assert at15 is not None and (at15.day, at15.hour) == (15, 12) and at15 <= meter.clock()


async def test_client_reads_settlement_values_stamped_at_the_settlement() -> None:
    from protocols.dlt645.settlement import read_settlement, settlement_instant

    async with MeterBusSimulator(1, transport="tcp", history_days=70) as sim:
        meter = sim.meters[M1]
        async with Dlt645Client.from_url(sim.url, timeout=0.5, tz=meter.tz) as client:
            readings = await read_settlement(client, M1, 1)
            at = meter.settlement_time(1)
            assert at is not None
            snap = meter.frozen_energy(at)
            by = {r.quantity: r for r in readings}
            assert set(by) == {"energy.active.import", *(f"energy.active.import.t{k}" for k in range(1, 5)),
                               "energy.active.export", *(f"energy.active.export.t{k}" for k in range(1, 5))}
            assert all(r.ts == at and r.quality == Quality.GOOD for r in readings)
            assert by["energy.active.import"].value == pytest.approx(snap.imp, abs=0.01)
            assert by["energy.active.export.t2"].value == pytest.approx(snap.exp_t[1], abs=0.01)
            older = await read_settlement(client, M1, 2)
            assert {r.ts for r in older} == {meter.settlement_time(2)}
            with pytest.raises(DeviceError):  # before the meter's history: the meter says no data
                await read_settlement(client, M1, 12)
    # the instant arithmetic across a year boundary and before the day in the month
    t = datetime(2026, 1, 10, 8, tzinfo=UTC)
    assert settlement_instant(t, 1, 0, 1) == datetime(2026, 1, 1, tzinfo=UTC)
    assert settlement_instant(t, 15, 0, 1) == datetime(2025, 12, 15, tzinfo=UTC)
    assert settlement_instant(t, 15, 0, 3) == datetime(2025, 10, 15, tzinfo=UTC)
