"""The simulator itself: fault parsing, RTU framing, profile replay from the shared data (read in place)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocols.client import LoadCommand, LoadControlRequest
from protocols.errors import ConfigError
from protocols.modbus.client import ModbusClient
from simulators.modbus.server import Faults, ModbusSimulator
from simulators.modbus.terminal import TerminalConfig, load_smud_profile
from simulators.modbus.wire import RtuRequestDeframer, crc16, rtu_frame

SHARED = Path(os.environ.get("HEADEND_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SMUD = SHARED / "smud_eear_commercial_15min" / "smud_3_meters_15min_kw.csv.gz"


def test_fault_spec_parsing() -> None:
    f = Faults.parse("silent=2+3,busy=4,bad_crc=5,delay=0.05,drop=0.1,baud=9600,slow=6:0.4")
    assert f.silent == {2, 3} and f.busy == {4} and f.bad_crc == {5} and f.slow == {6: 0.4}
    assert f.delay == 0.05 and f.drop == 0.1 and f.char_time == pytest.approx(11 / 9600)
    with pytest.raises(ConfigError):
        Faults.parse("explode=1")


def test_rtu_crc_and_deframer_hunting() -> None:
    # the textbook request: unit 1, FC03, address 0, count 10 -> 01 03 00 00 00 0A C5 CD
    assert rtu_frame(1, bytes.fromhex("030000000a")).hex() == "01030000000ac5cd"
    frame = rtu_frame(1, bytes.fromhex("0300000001"))
    assert crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")
    d = RtuRequestDeframer()
    noise = b"\x00\xff"
    bad = bytearray(frame)
    bad[-1] ^= 0xFF
    out = d.feed(noise + bytes(bad) + frame[:3])
    assert out == [] and d.bad_crc >= 1
    assert d.feed(frame[3:]) == [(1, bytes.fromhex("0300000001"))]


@pytest.mark.skipif(not SMUD.exists(), reason="shared SMUD data not available")
async def test_profile_replay_drives_the_terminal_power() -> None:
    profile = load_smud_profile(SMUD, "201", limit=96)
    assert len(profile.kw) == 96
    sim = ModbusSimulator.build(
        "generic_terminal", devices=1, config=TerminalConfig(speed=1.0), profile_path=SMUD, profile_meter="201",
    )
    await sim.start_tcp()
    client = ModbusClient.from_url(f"tcp://127.0.0.1:{sim.tcp_port}")
    try:
        (p,) = await client.read("1", ["power.active.total"])
        assert p.value == pytest.approx(profile.kw[0], rel=0.05)  # t ~ 0: the first interval, +-2 % noise
    finally:
        await client.aclose()
        await sim.stop()


async def test_load_control_over_rtu_with_line_time() -> None:
    sim = ModbusSimulator.build("generic_terminal", devices=2, faults=Faults.parse("baud=19200"))
    path = await sim.start_pty()
    client = ModbusClient.from_url(f"serial://{path}?baud=19200&parity=N&timeout=0.3")
    try:
        res = await client.load_command(LoadControlRequest("2", LoadCommand.SET_POWER_LIMIT, "op", value=12.345))
        assert res.accepted and res.tx[0] == 2 and res.tx[1] == 0x10  # RTU frame: unit 2, FC16
        assert (await client.read("2", ["limit.power"]))[0].value == pytest.approx(12.345)
        assert sim.terminals[1].state.limit_kw == 0.0
    finally:
        await client.aclose()
        await sim.stop()
