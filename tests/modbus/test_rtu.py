"""Modbus RTU on a multi-drop line (a pty): arbitration, a silent unit, a garbled unit, the breaker."""

from __future__ import annotations

import asyncio

import pytest

from protocols.arbitration import BreakerPolicy, Priority
from protocols.client import RelayState
from protocols.errors import CircuitOpenError, NoResponseError
from protocols.modbus.client import ModbusClient
from simulators.modbus.server import ModbusSimulator


def rtu_client(sim: ModbusSimulator, **kw: object) -> ModbusClient:
    # a pty rejects even parity (ecosystem.md section 5): parity=N
    return ModbusClient.from_url(f"serial://{sim.pty_path}?baud=9600&parity=N&timeout=0.3", **kw)


async def test_rtu_reads_every_unit_on_the_line(rtu_line: ModbusSimulator) -> None:
    client = rtu_client(rtu_line)
    try:
        for unit in ("1", "3"):
            readings = await client.read(unit, ["voltage.a", "relay.state", "balance.energy"])
            by_q = {r.quantity: r.value for r in readings}
            assert by_q["voltage.a"] > 200 and by_q["relay.state"] == 0
    finally:
        await client.aclose()


async def test_silent_unit_opens_its_breaker_and_the_line_keeps_working(rtu_line: ModbusSimulator) -> None:
    client = rtu_client(rtu_line, retries=1, breaker_policy=BreakerPolicy(failure_threshold=3, base_backoff=60))
    try:
        for _ in range(3):
            with pytest.raises(NoResponseError):
                await client.read("2", ["voltage.a"])
            # the neighbours on the same line still answer between the silent unit's timeouts
            assert (await client.read("1", ["voltage.a"]))[0].value > 200
            assert (await client.read("3", ["voltage.a"]))[0].value > 200
        # 2 tries the first time (retries=1), then 1: a unit whose last request failed is not re-sent
        assert rtu_line.requests_by_unit[2] == 4
        before = rtu_line.requests
        with pytest.raises(CircuitOpenError):
            await client.read("2", ["voltage.a"])
        assert rtu_line.requests == before, "an open breaker skips the unit without touching the line"
        assert client.link.connected, "pymodbus must not drop the line because one unit is silent"
        assert client.breaker is not None and client.breaker.open_keys() == [f"{client.spec.name}/2"]
    finally:
        await client.aclose()


async def test_bad_crc_reply_is_dropped_as_no_response(rtu_line: ModbusSimulator) -> None:
    client = rtu_client(rtu_line, retries=0)
    try:
        with pytest.raises(NoResponseError):
            await client.read("4", ["voltage.a"])
        assert (await client.read("1", ["voltage.a"]))[0].value > 200
    finally:
        await client.aclose()


async def test_concurrent_reads_are_serialised_on_the_line(rtu_line: ModbusSimulator) -> None:
    """Many tasks share one half-duplex line: the PriorityLock keeps one request in flight."""
    client = rtu_client(rtu_line)
    try:
        results = await asyncio.gather(
            *[client.read(u, ["voltage.a", "energy.active.import"], priority=Priority.SCHEDULED) for u in "13" * 10],
            client.read("1", ["relay.state"], priority=Priority.CONTROL),
        )
        assert len(results) == 21 and all(len(r) in (1, 2) for r in results)
    finally:
        await client.aclose()


async def test_late_reply_does_not_answer_the_next_request() -> None:
    """Unit 2 answers 100 ms after the head-end gave up. RTU has no transaction id, so without the
    late-reply guard its answer would be taken for the next request to unit 1 (and unit 1 blamed)."""
    from simulators.modbus.server import Faults

    sim = ModbusSimulator.build("generic_terminal", devices=3, faults=Faults(slow={2: 0.4}))
    await sim.start_pty()
    client = rtu_client(sim, retries=0, late_guard=0.5)  # the reply comes 0.1 s after the 0.3 s timeout
    try:
        for _ in range(3):
            with pytest.raises(NoResponseError):
                await client.read("2", ["voltage.a"])
            by_q = {r.quantity: r.value for r in await client.read("1", ["voltage.a", "energy.active.import"])}
            assert by_q["energy.active.import"] == pytest.approx(1037.0, abs=1.0)  # unit 1's own register
        assert client.breaker is not None and client.breaker.open_keys() == [f"{client.spec.name}/2"]
    finally:
        await client.aclose()
        await sim.stop()


async def test_mixed_line_terminal_and_two_meter_models() -> None:
    """One RS-485 line, three register layouts: per-device maps in the client, per-unit maps in the simulator."""
    sim = ModbusSimulator.build(["generic_terminal", "eastron_sdm630", "chint_dtsu666"], devices=3)
    await sim.start_pty()
    client = rtu_client(sim, maps={"2": "eastron_sdm630", "3": "chint_dtsu666"})
    try:
        for unit in ("1", "2", "3"):
            by_q = {r.quantity: r.value for r in await client.read(unit, ["voltage.a", "power.active.total",
                                                                          "energy.active.import"])}
            assert 225 < by_q["voltage.a"] < 236, unit
            assert by_q["power.active.total"] > 1 and by_q["energy.active.import"] > 1000, unit
        assert await client.relay_state("1") is RelayState.CLOSED
        assert await client.relay_state("2") is RelayState.UNKNOWN  # a meter map has no relay point
    finally:
        await client.aclose()
        await sim.stop()
