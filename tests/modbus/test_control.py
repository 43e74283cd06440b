"""Load control over Modbus writes, each verified by a read-back; the terminal's own control logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocols.client import (
    Credentials,
    LoadCommand,
    LoadControlRequest,
    RelayCommand,
    RelayRequest,
    RelayState,
)
from protocols.errors import LocalProtocolError, UnknownOutcomeError
from protocols.modbus.client import ModbusClient
from simulators.modbus.server import Faults, ModbusSimulator
from simulators.modbus.terminal import TerminalConfig


def client_for(sim: ModbusSimulator) -> ModbusClient:
    return ModbusClient.from_url(f"tcp://127.0.0.1:{sim.tcp_port}?timeout=0.3", retries=0)


def req(cmd: LoadCommand, value: float | None = None, circuit: int = 1, device: str = "1") -> LoadControlRequest:
    return LoadControlRequest(device, cmd, operator_id="op-17", value=value, circuit=circuit)


async def test_set_power_limit_is_read_back(tcp_sim: ModbusSimulator) -> None:
    c = client_for(tcp_sim)
    res = await c.load_command(req(LoadCommand.SET_POWER_LIMIT, 42.5))
    assert res.accepted and res.reason == "" and res.tx and res.rx
    assert (await c.read("1", ["limit.power"]))[0].value == pytest.approx(42.5)
    assert tcp_sim.terminals[1].state.limit_kw == pytest.approx(42.5)
    await c.aclose()


async def test_trip_and_restore_each_circuit(tcp_sim: ModbusSimulator) -> None:
    c = client_for(tcp_sim)
    p0 = (await c.read("2", ["power.active.total"]))[0].value
    assert (await c.load_command(req(LoadCommand.TRIP_CIRCUIT, device="2"))).accepted
    assert await c.relay_state("2") is RelayState.OPEN
    p1 = (await c.read("2", ["power.active.total"]))[0].value
    assert p1 < p0 * 0.5  # circuit 1 carries 70 % of the load
    assert (await c.load_command(req(LoadCommand.TRIP_CIRCUIT, circuit=2, device="2"))).accepted
    assert (await c.read("2", ["power.active.total"]))[0].value == 0
    assert (await c.load_command(req(LoadCommand.RESTORE_CIRCUIT, device="2"))).accepted
    assert (await c.load_command(req(LoadCommand.RESTORE_CIRCUIT, circuit=2, device="2"))).accepted
    assert await c.relay_state("2") is RelayState.CLOSED
    counts = {r.quantity: r.value for r in await c.read("2", ["event.trip.count", "event.close.count"])}
    assert counts == {"event.trip.count": 2, "event.close.count": 2}
    res = await c.load_command(req(LoadCommand.TRIP_CIRCUIT, circuit=3, device="2"))
    assert not res.accepted  # circuit 3 maps to coil 2, which the terminal does not have
    await c.aclose()


async def test_keep_power_blocks_a_trip_and_the_read_back_says_so(tcp_sim: ModbusSimulator) -> None:
    c = client_for(tcp_sim)
    assert (await c.load_command(req(LoadCommand.KEEP_POWER_ON))).accepted
    assert (await c.read("1", ["keep_power.state"]))[0].value == 1
    res = await c.load_command(req(LoadCommand.TRIP_CIRCUIT))
    assert not res.accepted and "read-back circuit1.open=0, expected 1" in res.reason
    assert await c.relay_state("1") is RelayState.CLOSED
    assert (await c.load_command(req(LoadCommand.KEEP_POWER_OFF))).accepted
    assert (await c.load_command(req(LoadCommand.TRIP_CIRCUIT))).accepted
    await c.aclose()


async def test_purchase_is_applied_once_per_request_id(tcp_sim: ModbusSimulator) -> None:
    c = client_for(tcp_sim)
    b0 = (await c.read("1", ["balance.energy"]))[0].value
    top_up = req(LoadCommand.PURCHASE_ENERGY, 250.0)
    assert (await c.load_command(top_up)).accepted
    assert (await c.load_command(top_up)).accepted  # same request: cached result, no second write
    other = client_for(tcp_sim)  # a fresh head-end process re-sending the same request id
    assert (await other.load_command(top_up)).accepted
    b1 = (await c.read("1", ["balance.energy"]))[0].value
    assert b1 == pytest.approx(b0 + 250.0, abs=0.05)
    assert (await c.load_command(req(LoadCommand.PURCHASE_ENERGY, 10.0))).accepted
    assert (await c.read("1", ["balance.energy"]))[0].value == pytest.approx(b0 + 260.0, abs=0.05)
    await c.aclose()
    await other.aclose()


async def test_refused_write_is_not_accepted(tcp_sim: ModbusSimulator) -> None:
    c = client_for(tcp_sim)
    with pytest.raises(LocalProtocolError):  # a negative u32 is refused before anything is sent
        await c.load_command(req(LoadCommand.PURCHASE_ENERGY, -5.0))
    res = await c.load_command(req(LoadCommand.PURCHASE_ENERGY, 0.0))  # the terminal answers exception 3
    assert not res.accepted and "illegal_data_value" in res.reason
    await c.aclose()


async def test_write_without_reply_is_unknown_outcome() -> None:
    sim = ModbusSimulator.build("generic_terminal", devices=1, faults=Faults(silent={1}))
    await sim.start_tcp()
    c = client_for(sim)
    with pytest.raises(UnknownOutcomeError):
        await c.load_command(req(LoadCommand.TRIP_CIRCUIT))
    await c.aclose()
    await sim.stop()


async def test_relay_control_interface(tcp_sim: ModbusSimulator) -> None:
    c = client_for(tcp_sim)
    creds = Credentials(password="000000")
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert (await c.relay_command(RelayRequest("3", RelayCommand.TRIP, soon, creds, "op-1"))).accepted
    assert await c.relay_state("3") is RelayState.OPEN
    assert (await c.relay_command(RelayRequest("3", RelayCommand.CLOSE_DIRECT, soon, creds, "op-1"))).accepted
    assert await c.relay_state("3") is RelayState.CLOSED
    assert not (await c.relay_command(RelayRequest("3", RelayCommand.ALARM_ON, soon, creds, "op-1"))).accepted
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert not (await c.relay_command(RelayRequest("3", RelayCommand.TRIP, past, creds, "op-1"))).accepted
    assert await c.relay_state("3") is RelayState.CLOSED
    await c.aclose()


async def test_terminal_trips_itself_on_power_limit_and_empty_balance() -> None:
    # 3600x time: one wall second is one simulated hour
    cfg = TerminalConfig(base_kw=100.0, speed=3600.0, overlimit_trip_after=60.0, balance_kwh=1e6)
    sim = ModbusSimulator.build("generic_terminal", devices=2, config=cfg)
    await sim.start_tcp()
    c = client_for(sim)
    assert (await c.load_command(req(LoadCommand.SET_POWER_LIMIT, 10.0))).accepted
    import asyncio

    for _ in range(50):
        await asyncio.sleep(0.02)
        if (await c.read("1", ["relay.state"]))[0].value == 1:
            break
    assert (await c.read("1", ["relay.state"]))[0].value == 1, "功控 trip after the over-limit delay"
    t2 = sim.terminals[2]
    t2.state.balance_kwh = 0.01
    for _ in range(50):
        await asyncio.sleep(0.02)
        if (await c.read("2", ["status.word1"]))[0].value:
            break
    status = int((await c.read("2", ["status.word1"]))[0].value)
    assert status & 0b10001 == 0b10001, "电控 trip when the prepaid balance is used up"
    await c.aclose()
    await sim.stop()
