"""The asyncio master against the simulated bus, over a real pty pair and over TCP: every service."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, time, timedelta

import pytest

from protocols.client import Credentials, RelayCommand, RelayRequest, RelayState
from protocols.dlt645.client import Dlt645Client
from protocols.dlt645.quirks import Quirks
from protocols.errors import DeviceError, LocalProtocolError
from protocols.reading import Quality
from simulators.dlt645 import MeterBusSimulator

M1 = "000000000001"
M2 = "000000000002"
GOOD = Credentials(password="123456", password_level=2, operator="12345678")
BAD = Credentials(password="654321", password_level=2)

Bus = tuple[MeterBusSimulator, Dlt645Client]


async def test_read_quantities_match_meter_state(bus: Bus) -> None:
    sim, client = bus
    codes = ["energy.active.import", "energy.active.import.t1", "voltage.a", "current.a", "power.active.total",
             "frequency", "pf.total", "relay.state"]
    readings = await client.read(M1, codes)
    assert [r.quantity for r in readings] == codes
    by = {r.quantity: r for r in readings}
    meter = sim.meters[M1]
    assert by["energy.active.import"].value == pytest.approx(meter.energy_import, abs=0.02)
    assert by["energy.active.import.t1"].value == pytest.approx(meter.tariff_energy[0], abs=0.02)
    assert 210 < by["voltage.a"].value < 230
    assert by["frequency"].value == pytest.approx(50.0, abs=0.1)
    # Consistency: P = sum(V*I*pf) over phases, within the rounding of the wire formats.
    assert by["power.active.total"].value > 0
    assert by["relay.state"].value == 0
    assert all(r.meter == M1 and r.ts.tzinfo is not None and r.quality == Quality.GOOD for r in readings)
    assert by["energy.active.import"].unit == "kWh"


async def test_block_read_total_is_sum_of_tariffs(bus: Bus) -> None:
    _, client = bus
    res = await client.read_raw(M2, "0001FF00")
    assert len(res.data) == 20
    vals = [int(res.data[i : i + 4][::-1].hex()) / 100 for i in range(0, 20, 4)]
    assert vals[0] == pytest.approx(sum(vals[1:]), abs=0.05)


async def test_load_profile_follow_up_frames_assembled(bus: Bus) -> None:
    sim, client = bus
    meter = sim.meters[M1]
    first, _ = meter.profile_slots()
    start = first + timedelta(hours=1)
    res = await client.read_raw(M1, 0x06000001, count=6, start=start)
    assert res.frames > 1  # 6 records of ~100 bytes do not fit one 200-byte reply
    assert res.decoded is not None and not res.decoded.error
    readings = res.decoded.readings(M1, res.received_at, tz=client.tz)
    stamps = sorted({r.ts for r in readings})
    assert len(stamps) == 6 and stamps[0] == start
    energy = {r.ts: r.value for r in readings if r.quantity == "energy.active.import"}
    assert energy[stamps[0]] == pytest.approx(meter.energy(start).imp, abs=0.02)
    # 12H follow-up requests carried SEQ 1, 2, ...
    seqs = [f.frame.data[4] for f in sim.received if f.frame.control == 0x12]
    assert seqs == list(range(1, res.frames))


async def test_read_address_wildcard_single_meter() -> None:
    async with MeterBusSimulator(1, transport="tcp", addresses=["310512345678"]) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            assert await client.read_address() == "310512345678"
            # Short-address wildcard (缩位寻址): low digits given, high digits AA.
            assert await client.read_address("AAAAAAAA5678") == "310512345678"


async def test_write_time_and_wrong_password(bus: Bus) -> None:
    sim, client = bus
    meter = sim.meters[M1]
    await client.write(M1, 0x04000102, bytes.fromhex("000000")[::-1], GOOD)  # hh:mm:ss = 00:00:00
    clock = meter.clock()
    assert clock.hour == 0 and clock.minute == 0
    assert meter.events.programming == 1
    with pytest.raises(DeviceError) as ei:
        await client.write(M1, 0x04000102, b"\x00\x00\x12", BAD)
    assert ei.value.code & 0x04 and "password" in ei.value.flags


async def test_change_password(bus: Bus) -> None:
    sim, client = bus
    await client.change_password(M2, GOOD, 4, "112233")
    assert sim.meters[M2].passwords[4] == "112233"
    await client.meter_clear(M2, Credentials(password="112233", password_level=4))
    with pytest.raises(DeviceError) as ei:  # level 4 may not set the level-2 password
        await client.change_password(M2, Credentials(password="112233", password_level=4), 2, "000001")
    assert "password" in ei.value.flags


async def test_write_address() -> None:
    async with MeterBusSimulator(1, transport="tcp") as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            await client.write_address("123456789012")
            assert sim.addresses == ["123456789012"]
            assert await client.read_address() == "123456789012"


async def test_freeze_then_read_frozen(bus: Bus) -> None:
    _, client = bus
    await client.freeze(M2)
    res = await client.read_raw(M2, 0x05010101)
    assert len(res.data) == 20
    daily = await client.read_raw(M2, 0x05060001)  # time of the last daily freeze
    assert daily.data[0] == 0 and daily.data[1] == 0  # mm hh = 00:00


async def test_change_baud(bus: Bus) -> None:
    sim, client = bus
    assert await client.change_baud(M1, 9600) == 9600
    assert sim.meters[M1].baud == 9600
    with pytest.raises(DeviceError) as ei:
        await client.change_baud(M1, 19200)
    assert "baud" in ei.value.flags
    with pytest.raises(LocalProtocolError):
        await client.change_baud(M1, 1234)


async def test_demand_reset_meter_clear_event_clear(bus: Bus) -> None:
    sim, client = bus
    meter = sim.meters[M2]
    await client.max_demand_reset(M2, GOOD)
    assert meter.physics.max_demand[0] == 0.0
    assert meter.energy_import > 100
    await client.meter_clear(M2, GOOD)
    (r,) = await client.read(M2, ["energy.active.import"])
    assert r.value < 1.0
    meter.events.cover_open = 3
    await client.event_clear(M2, GOOD)
    (c,) = await client.read(M2, ["event.cover_open.count"])
    assert c.value == 0
    with pytest.raises(DeviceError):
        await client.meter_clear(M2, BAD)


async def test_relay_control_and_status_word_3(bus: Bus) -> None:
    sim, client = bus
    meter = sim.meters[M1]
    until = datetime.now(UTC) + timedelta(minutes=10)
    res = await client.relay_command(RelayRequest(M1, RelayCommand.TRIP, until, GOOD, "op1", request_id="r1"))
    assert res.accepted and res.request_id == "r1" and res.tx and res.rx
    assert meter.relay_open
    assert await client.relay_state(M1) is RelayState.OPEN
    (sw3,) = await client.read(M1, ["status.word3"])
    assert int(sw3.value) & 0x10
    (trips,) = await client.read(M1, ["event.trip.count"])
    assert trips.value == 1
    res = await client.control(M1, RelayCommand.CLOSE_DIRECT, GOOD, until)
    assert res.accepted and await client.relay_state(M1) is RelayState.CLOSED
    # Keep-power blocks a trip; a wrong password is refused with the password bit.
    assert (await client.control(M1, RelayCommand.KEEP_POWER_ON, GOOD, until)).accepted
    refused = await client.control(M1, RelayCommand.TRIP, GOOD, until)
    assert not refused.accepted and "other" in refused.reason
    refused = await client.control(M1, RelayCommand.KEEP_POWER_OFF, BAD, until)
    assert not refused.accepted and "password" in refused.reason
    # An expired command is refused.
    assert not (await client.control(M1, RelayCommand.ALARM_ON, GOOD, datetime.now(UTC) - timedelta(1))).accepted
    assert [e.command for e in meter.control_log if e.accepted] == ["trip", "close_direct", "keep_power_on"]
    assert meter.control_log[0].operator == "12345678"


async def test_close_permit_needs_the_button(tcp_bus: Bus) -> None:
    sim, client = tcp_bus
    meter = sim.meters[M2]
    until = datetime.now(UTC) + timedelta(minutes=5)
    assert (await client.control(M2, RelayCommand.TRIP, GOOD, until)).accepted
    assert (await client.control(M2, RelayCommand.CLOSE_PERMIT, GOOD, until)).accepted
    assert await client.relay_state(M2) is RelayState.OPEN
    assert meter.press_button()
    assert await client.relay_state(M2) is RelayState.CLOSED


async def test_broadcast_time_sync_sets_every_meter_clock(bus: Bus) -> None:
    sim, client = bus
    target = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
    await client.broadcast_time_sync(target)
    await asyncio.sleep(0.05)
    for m in sim.meters.values():
        assert abs((m.clock() - target).total_seconds()) < 5
    assert sim.received[-1].frame.address == "999999999999"
    assert sim.stats.replies == 0  # broadcasts are never answered
    clock = await client.read_clock(M1)
    assert abs((clock - target).total_seconds()) < 5


async def test_unknown_di_is_no_data(bus: Bus) -> None:
    _, client = bus
    with pytest.raises(DeviceError) as ei:
        await client.read_raw(M1, "12345678")
    assert ei.value.flags == ("no_data",) and ei.value.device == M1


async def test_raw_pass_through(bus: Bus) -> None:
    _, client = bus
    with pytest.raises(DeviceError) as ei:  # no ESAM in the simulator: 03H is refused
        await client.raw(M1, 0x03, bytes(8))
    assert ei.value.flags == ("other",)
    reply = await client.raw(M1, 0x13, side_effect=False)  # any function, the codec's reply event back
    assert getattr(reply, "address", None) == M1


async def test_1997_read(bus: Bus) -> None:
    sim, client = bus
    res = await client.read_raw_1997(M1, 0x9010)
    assert int(res.data[::-1].hex()) / 100 == pytest.approx(sim.meters[M1].energy_import, abs=0.02)


async def test_trace_logs_every_frame(tcp_bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    _, client = tcp_bus
    with caplog.at_level(5, logger="headend.trace"):
        await client.read(M1, ["voltage.a"])
    lines = [r.getMessage() for r in caplog.records if r.name == "headend.trace"]
    assert any(" TX fe fe fe fe 68 01 00 00 00 00 00 68 11 04 33 34 34 35" in x for x in lines)
    assert any(" RX " in x and "68 01 00 00 00 00 00 68 91" in x for x in lines)
    assert logging.getLogger("headend.trace").name == "headend.trace"


async def test_1997_follow_up_frames_and_1997_write() -> None:
    """1997: a read (01H) split into follow-ups (02H, no SEQ) by a meter with a small frame
    limit, assembled into one result; a write (04H) with its password."""
    small = Quirks(name="small-frames", max_data=12)
    async with MeterBusSimulator(1, transport="tcp", quirks={M1: small}) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.4) as client:
            res = await client.read_raw_1997(M1, 0x901F)  # 2-byte DI + 5 x 4 bytes: 3 frames of <= 12
            assert res.frames == 3
            assert [f.frame.control for f in sim.received] == [0x01, 0x02, 0x02]
            assert res.decoded is not None and not res.decoded.error
            assert res.decoded.values["total"] == pytest.approx(sim.meters[M1].energy_import, abs=0.02)
            await client.write(M1, 0xC011, time(1, 2, 3), GOOD, version=1997)
            clock = sim.meters[M1].clock()
            assert (clock.hour, clock.minute) == (1, 2)
            assert sim.meters[M1].events.programming == 1
            with pytest.raises(DeviceError) as ei:
                await client.write(M1, 0xC011, time(1, 2, 3), BAD, version=1997)
            assert "password" in ei.value.flags


async def test_event_counters_and_last_records(tcp_bus: Bus) -> None:
    """Voltage loss, cover open, programming, last trip and last close: counters and records."""
    sim, client = tcp_bus
    meter = sim.meters[M1]
    until = datetime.now(UTC) + timedelta(minutes=10)
    await client.write(M1, 0x04000103, 15, GOOD)  # demand period: a programming event
    assert (await client.control(M1, RelayCommand.TRIP, GOOD, until)).accepted
    assert (await client.control(M1, RelayCommand.CLOSE_DIRECT, GOOD, until)).accepted
    counts = await client.read_decoded(M1, "03010000")
    values = {v["name"]: v["value"] for v in counts["values"]}
    assert values["a_count"] == meter.events.voltage_loss[0] == 2 and values["a_minutes"] == 37
    (cover,) = await client.read(M1, ["event.cover_open.count"])
    assert cover.value == meter.events.cover_open == 1
    record = {v["name"]: v["value"] for v in (await client.read_decoded(M1, "03300D01"))["values"]}
    assert record["start"] < record["end"] and record["before_forward_active"] > 0
    loss = {v["name"]: v["value"] for v in (await client.read_decoded(M1, "03010101"))["values"]}
    assert loss["start"].startswith(str(meter.history_start.astimezone(meter.tz).year))
    prog = {v["name"]: v["value"] for v in (await client.read_decoded(M1, "03300001"))["values"]}
    assert prog["operator"] == "12345678" and prog["di1"] == 0x04000103
    for di, count_di in (("1D000101", "1D000001"), ("1E000101", "1E000001")):
        rec = {v["name"]: v["value"] for v in (await client.read_decoded(M1, di))["values"]}
        assert rec["operator"] == "12345678" and rec["forward_active"] > 0, di
        at = datetime.fromisoformat(rec["time"])  # meter clock time of the operation
        assert abs((at - meter.clock().replace(tzinfo=None)).total_seconds()) < 30, di
        assert (await client.read_decoded(M1, count_di))["value"] == 1
    with pytest.raises(DeviceError):  # no voltage-loss record of phase A beyond the count
        await client.read_raw(M1, "03010103")


async def test_passwords_and_operator_codes_never_reach_the_trace(tcp_bus: Bus,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Both the master's and the simulator's trace hide PW and operator bytes (and the checksum)."""
    sim, client = tcp_bus
    secret = Credentials(password="654321", password_level=2, operator="87654321")
    sim.meters[M1].passwords[2] = "654321"
    until = datetime.now(UTC) + timedelta(minutes=5)
    with caplog.at_level(5, logger="headend.trace"):
        assert (await client.control(M1, RelayCommand.ALARM_ON, secret, until)).accepted
        await client.write(M1, 0x04000103, 15, secret)
        await client.change_password(M1, secret, 2, "135724")
    lines = [r.getMessage() for r in caplog.records if r.name == "headend.trace"]
    assert len(lines) == 12  # 3 exchanges x (master TX/RX + simulator RX/TX)
    wire_forms = {bytes(b + 0x33 & 0xFF for b in bytes.fromhex(s)[::-1]).hex(" ") for s in
                  ("654321", "87654321", "135724")}
    for line in lines:
        assert not any(form in line for form in wire_forms), line
    assert sum(" 1c 10 35 ** ** ** ** ** ** ** " in x for x in lines) == 2  # PA (level 2) stays visible
    assert (await client.read(M1, ["voltage.a"]))[0].value > 200  # nothing else is masked
