"""ModbusClient against the simulator over real TCP sockets: reads, planning, typed errors."""

from __future__ import annotations

import pytest

from protocols.errors import DeviceError, NoResponseError, TransportError
from protocols.factory import open_client
from protocols.modbus.client import ModbusClient
from protocols.modbus.maps import Function, Point, RegisterMap, load_map, plan_reads
from simulators.modbus.server import Faults, ModbusSimulator


def url(sim: ModbusSimulator, extra: str = "") -> str:
    return f"tcp://127.0.0.1:{sim.tcp_port}?timeout=0.3{extra}"


async def test_read_every_quantity_of_the_generic_terminal(tcp_sim: ModbusSimulator) -> None:
    client = open_client("modbus", url(tcp_sim))
    assert isinstance(client, ModbusClient)
    try:
        readings = await client.read("1", [])
        by_q = {r.quantity: r for r in readings}
        assert set(by_q) == set(load_map("generic_terminal").quantities())
        assert 225 < by_q["voltage.a"].value < 236 and by_q["voltage.a"].unit == "V"
        assert by_q["power.active.total"].value > 0 and by_q["power.active.total"].unit == "kW"
        assert by_q["energy.active.import"].value >= 1000
        assert by_q["frequency"].value == pytest.approx(50, abs=0.1)
        assert by_q["relay.state"].value == 0
        assert by_q["balance.energy"].value == pytest.approx(1000, abs=1)  # CDAB s32
        assert by_q["energy.active.combined"].value >= 1000  # u64 on input registers
        assert all(r.ts.tzinfo is not None and r.source.startswith("modbus:") for r in readings)
    finally:
        await client.aclose()


async def test_contiguous_registers_read_in_one_request(tcp_sim: ModbusSimulator) -> None:
    client = ModbusClient.from_url(url(tcp_sim))
    qs = ["voltage.a", "voltage.b", "voltage.c", "current.a", "current.b", "current.c", "power.active.total",
          "power.reactive.total", "pf.total", "frequency"]  # holding 0..17, mixed float32/s16/u16
    rmap = load_map("generic_terminal")
    before = tcp_sim.requests
    await client.read("3", qs)
    assert tcp_sim.requests - before == len(plan_reads(rmap.for_quantities(qs))) == 1
    await client.aclose()


@pytest.mark.parametrize("map_name", ["eastron_sdm630", "chint_dtsu666"])
async def test_meter_maps_round_trip_through_simulator(map_name: str) -> None:
    sim = ModbusSimulator.build(map_name, devices=1)
    await sim.start_tcp()
    client = open_client("modbus", url(sim, f"&map={map_name}"))
    try:
        by_q = {r.quantity: r.value for r in await client.read("1", ["voltage.a", "power.active.total", "frequency"])}
        assert 225 < by_q["voltage.a"] < 236  # scale (DTSU666: 0.1 V) applied on both sides
        assert by_q["power.active.total"] > 1
        assert by_q["frequency"] == pytest.approx(50, abs=0.1)
    finally:
        await client.aclose()
        await sim.stop()


async def test_illegal_address_is_a_device_error(tcp_sim: ModbusSimulator) -> None:
    base = load_map("generic_terminal")
    bogus = Point("bogus", 500, Function.HOLDING, quantity="limit.power")
    rmap = RegisterMap("bogus", "", {**base.points, "bogus": bogus})
    client = ModbusClient.from_url(url(tcp_sim), map=rmap)
    with pytest.raises(DeviceError) as ei:
        await client.read_points("1", [bogus])
    assert ei.value.code == 2 and ei.value.flags == ("illegal_data_address",)
    # the device answered: it is alive, the breaker stays closed, the next read works
    assert (await client.read("1", ["voltage.a"]))[0].value > 200
    await client.aclose()


async def test_busy_unit_exception_code_6() -> None:
    sim = ModbusSimulator.build("generic_terminal", devices=2, faults=Faults(busy={2}))
    await sim.start_tcp()
    client = ModbusClient.from_url(url(sim))
    with pytest.raises(DeviceError) as ei:
        await client.read("2", ["voltage.a"])
    assert ei.value.code == 6 and "server_device_busy" in str(ei.value)
    assert (await client.read("1", ["voltage.a"]))[0].value > 200
    await client.aclose()
    await sim.stop()


async def test_silent_unit_behind_tcp_gateway_is_no_response(tcp_sim: ModbusSimulator) -> None:
    client = ModbusClient.from_url(url(tcp_sim), retries=0)
    with pytest.raises(NoResponseError):
        await client.read("9", ["voltage.a"])
    assert client.link.connected, "one silent unit must not drop the connection"
    assert (await client.read("1", ["voltage.a"]))[0].value > 200
    await client.aclose()


async def test_connection_refused_is_a_transport_error() -> None:
    sim = ModbusSimulator.build("generic_terminal")
    port = await sim.start_tcp()
    await sim.stop()  # nothing listens on the port any more
    client = ModbusClient.from_url(f"tcp://127.0.0.1:{port}?timeout=0.3", retries=0)
    with pytest.raises(TransportError):
        await client.read("1", ["voltage.a"])
    await client.aclose()


async def test_head_end_reconnects_after_the_server_restarts() -> None:
    sim = ModbusSimulator.build("generic_terminal")
    port = await sim.start_tcp()
    client = ModbusClient.from_url(f"tcp://127.0.0.1:{port}?timeout=0.3", retries=0, breaker=False)
    assert (await client.read("1", ["voltage.a"]))[0].value > 200
    await sim.stop()
    with pytest.raises(TransportError):
        await client.read("1", ["voltage.a"])
    sim2 = ModbusSimulator.build("generic_terminal")
    await sim2.start_tcp("127.0.0.1", port)
    assert (await client.read("1", ["voltage.a"]))[0].value > 200
    await client.aclose()
    await sim2.stop()


async def test_unknown_quantity_and_bad_unit_are_local_errors(tcp_sim: ModbusSimulator) -> None:
    from protocols.errors import LocalProtocolError

    client = ModbusClient.from_url(url(tcp_sim))
    with pytest.raises(LocalProtocolError, match="does not carry"):
        await client.read("1", ["event.magnetic.count"])
    with pytest.raises(LocalProtocolError):
        await client.read("meter-7", ["voltage.a"])
    await client.aclose()
