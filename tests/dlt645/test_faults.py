"""Fault injection: silent meters and the breaker, garbage, bad checksums, slow and abnormal replies."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from protocols.arbitration import BreakerPolicy, Priority
from protocols.client import Credentials, RelayCommand
from protocols.dlt645.client import Dlt645Client
from protocols.dlt645.quirks import Quirks
from protocols.errors import (
    CircuitOpenError,
    DeviceError,
    FrameError,
    NoResponseError,
    TransportError,
    UnknownOutcomeError,
)
from simulators.dlt645 import Fault, MeterBusSimulator

M1, M2, M3 = "000000000001", "000000000002", "000000000003"
GOOD = Credentials(password="123456", password_level=2)

Bus = tuple[MeterBusSimulator, Dlt645Client]


def _sent_to(sim: MeterBusSimulator, address: str) -> int:
    return sum(1 for f in sim.received if f.frame.address == address)


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_silent_meter_opens_breaker_then_recovers(transport: str, caplog: pytest.LogCaptureFixture) -> None:
    policy = BreakerPolicy(failure_threshold=3, base_backoff=0.4)
    async with MeterBusSimulator(3, transport=transport, faults={M3: "silent"}) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.15, retries=1, breaker_policy=policy) as client:
            with caplog.at_level(logging.WARNING, logger="protocols.dlt645.client"):
                for _ in range(3):
                    with pytest.raises(NoResponseError):
                        await client.read(M3, ["voltage.a"])
                # First request retried once; a meter already failing is not retried: 2 + 1 + 1 frames.
                assert _sent_to(sim, M3) == 4
                # Breaker open: skipped without touching the bus, healthy meters unaffected.
                with pytest.raises(CircuitOpenError):
                    await client.read(M3, ["voltage.a"])
                assert _sent_to(sim, M3) == 4
                assert (await client.read(M1, ["voltage.a"]))[0].value > 200
                sim.clear_fault(M3)
                await asyncio.sleep(0.45)  # back-off expires: one trial request goes through
                assert (await client.read(M3, ["voltage.a"]))[0].value > 200
            msgs = [r.getMessage() for r in caplog.records]
            assert sum("stopped answering" in m for m in msgs) == 1
            assert sum("answers again" in m for m in msgs) == 1


async def test_garbage_before_reply_is_skipped() -> None:
    async with MeterBusSimulator(2, transport="tcp", faults=f"{M1}:garbage=24") as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            for _ in range(5):
                (r,) = await client.read(M1, ["energy.active.import"])
                assert r.value == pytest.approx(sim.meters[M1].energy_import, abs=0.02)


async def test_bad_checksum_retried_then_frame_error() -> None:
    async with MeterBusSimulator(2, transport="pty", faults=f"{M2}:bad_checksum") as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.2, inter_byte_timeout=0.05, retries=1) as client:
            with pytest.raises(FrameError) as ei:
                await client.read(M2, ["voltage.a"])
            assert ei.value.reason == "checksum"
            assert [f.frame.preamble for f in sim.received if f.frame.address == M2] == [4, 8]  # retry: longer wake-up
            sim.clear_fault(M2)
            assert (await client.read(M2, ["voltage.a"]))[0].value > 200


async def test_slow_reply_within_and_beyond_the_timeout() -> None:
    async with MeterBusSimulator(2, transport="tcp", faults=f"{M1}:slow=0.1") as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.4, retries=0) as client:
            assert (await client.read(M1, ["voltage.a"]))[0].value > 200
            sim.set_fault(M1, Fault.SLOW, 0.6)
            with pytest.raises(NoResponseError):
                await client.read(M1, ["voltage.a"])
            # The late reply to the timed-out request must not be taken for the next one.
            await asyncio.sleep(0.35)
            sim.clear_fault(M1)
            (r,) = await client.read(M1, ["frequency"])
            assert r.unit == "Hz" and 49 < r.value < 51


async def test_a_slow_vendor_gets_its_own_timeout_from_its_quirks() -> None:
    async with MeterBusSimulator(2, transport="virtual", faults=f"{M2}:slow=0.3") as sim:
        slow = Quirks(name="slow vendor", response_timeout=0.8)
        async with Dlt645Client.from_url(sim.url, timeout=0.15, retries=0, meter_quirks={M2: slow}) as client:
            assert (await client.read(M2, ["voltage.a"]))[0].value > 200
            sim.set_fault(M1, Fault.SLOW, 0.3)
            with pytest.raises(NoResponseError, match=r"0\.15 s"):
                await client.read(M1, ["voltage.a"])


async def test_abnormal_reply_fault_and_unknown_outcome() -> None:
    async with MeterBusSimulator(3, transport="tcp", faults={M2: "abnormal=4", M3: "silent"}) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.15, retries=2) as client:
            with pytest.raises(DeviceError) as ei:
                await client.read(M2, ["voltage.a"])
            assert ei.value.code == 4 and ei.value.flags == ("password",)
            until = datetime.now(UTC) + timedelta(minutes=5)
            # A command with side effects is never re-sent blindly.
            with pytest.raises(UnknownOutcomeError):
                await client.control(M3, RelayCommand.TRIP, GOOD, until)
            assert _sent_to(sim, M3) == 1
    # A port that cannot be opened: nothing was sent, so the outcome is known (a transport error).
    with pytest.raises(TransportError) as te:
        await client.control(M3, RelayCommand.TRIP, GOOD, until)
    assert not isinstance(te.value, UnknownOutcomeError)


async def test_clock_offset_and_drift_faults() -> None:
    async with MeterBusSimulator(2, transport="tcp", faults=f"{M1}:clock_offset=300,{M2}:clock_drift=3600") as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            c1 = await client.read_clock(M1)
            assert (c1 - sim.clock.now()).total_seconds() == pytest.approx(300, abs=3)
            sim.advance(3600)  # one simulated hour: M2 gains an hour
            c2 = await client.read_clock(M2)
            assert (c2 - sim.clock.now()).total_seconds() == pytest.approx(3600, abs=5)


async def test_wildcard_on_a_multi_meter_bus_collides() -> None:
    async with MeterBusSimulator(3, transport="tcp") as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.2, inter_byte_timeout=0.05, retries=0) as client:
            with pytest.raises((FrameError, NoResponseError)):
                await client.read_address()


async def test_echo_of_our_own_request_is_ignored() -> None:
    async with MeterBusSimulator(2, transport="pty", echo=True) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            (r,) = await client.read(M2, ["energy.active.import"])
            assert r.value == pytest.approx(sim.meters[M2].energy_import, abs=0.02)


async def test_control_goes_ahead_of_queued_bulk_reads() -> None:
    async with MeterBusSimulator(3, transport="tcp", faults=f"{M1}:slow=0.1") as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.5) as client:
            first = asyncio.create_task(client.read(M1, ["voltage.a"], priority=Priority.SCHEDULED))
            await asyncio.sleep(0.02)  # M1's read is on the bus
            bulk = [asyncio.create_task(client.read(M2, ["voltage.a"], priority=Priority.SCHEDULED))
                    for _ in range(4)]
            await asyncio.sleep(0)
            urgent = asyncio.create_task(client.relay_state(M3))
            await asyncio.gather(first, urgent, *bulk)
            order = [f.frame.address for f in sim.received]
            assert order[:2] == [M1, M3]
            assert order[2:] == [M2] * 4
