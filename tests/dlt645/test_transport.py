"""Channels: serial options on a pty, turnaround, line-time emulation, reconnects, stalled replies."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from protocols.dlt645.client import Dlt645Client
from protocols.dlt645.frame import Frame, encode_frame
from protocols.errors import ConfigError, FrameError, TransportError
from protocols.transport import open_channel
from protocols.transport.serial import SerialChannel
from protocols.transport.tcp import TcpChannel
from simulators.dlt645 import MeterBusSimulator

M1 = "000000000001"


def test_backends_by_url_scheme() -> None:
    assert isinstance(open_channel("serial:///dev/ttyUSB0?baud=9600&parity=E"), SerialChannel)
    ch = open_channel("tcp://127.0.0.1:9?timeout=2", turnaround=0.1)
    assert isinstance(ch, TcpChannel) and ch.spec.timeout == 2 and ch.spec.turnaround == 0.1
    with pytest.raises(ConfigError):
        open_channel("udp://x:1")
    with pytest.raises(ConfigError):
        open_channel("tcp://127.0.0.1:9", no_such_option=1)


async def test_even_parity_on_a_pty_is_a_transport_error_with_a_hint() -> None:
    async with MeterBusSimulator(1, transport="pty") as sim:
        client = Dlt645Client.from_url(sim.url.replace("parity=N", "parity=E"))
        with pytest.raises(TransportError, match="parity=N"):
            await client.open()


async def test_turnaround_between_requests() -> None:
    async with MeterBusSimulator(2, transport="pty") as sim:
        async with Dlt645Client.from_url(sim.url, turnaround=0.12, timeout=0.5) as client:
            for _ in range(3):
                await client.read(M1, ["voltage.a"])
            ts = [f.ts for f in sim.received]
            assert all(b - a >= 0.11 for a, b in itertools.pairwise(ts))


async def test_line_time_emulation() -> None:
    async with MeterBusSimulator(1, transport="tcp", baud=9600, parity="E", line_time=True, turnaround=0.05,
                                 reply_preamble=0) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.5) as client:
            await client.read(M1, ["energy.active.import"])
            t0 = time.monotonic()
            await client.read(M1, ["energy.active.import"])
            elapsed = time.monotonic() - t0
    # 20-byte request + 20-byte reply at 11 bits/char, 9600 baud, + 50 ms turnaround.
    bound = 40 * 11 / 9600 + 0.05
    assert bound <= elapsed < bound + 0.3


async def test_tcp_reconnects_after_the_server_restarts() -> None:
    async with MeterBusSimulator(1, transport="tcp") as sim:
        port = sim.port
        client = Dlt645Client.from_url(sim.url, timeout=0.3, retries=1)
        await client.read(M1, ["voltage.a"])
    async with MeterBusSimulator(1, transport="tcp", port=port):
        await asyncio.sleep(0.05)
        (r,) = await client.read(M1, ["voltage.a"])  # the first attempt finds the old connection dead
        assert r.value > 200
    await client.aclose()


async def test_stalled_reply_is_a_truncated_frame() -> None:
    reply = encode_frame(Frame(M1, 0x91, bytes.fromhex("00000100") + b"\x12\x34\x56\x00"), preamble=0)

    async def half_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(reply[:9])
        await reader.read(100)  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(half_then_stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with Dlt645Client.from_url(f"tcp://127.0.0.1:{port}", timeout=0.3, inter_byte_timeout=0.1,
                                         retries=0) as client:
            t0 = time.monotonic()
            with pytest.raises(FrameError) as ei:
                await client.read(M1, ["energy.active.import"])
            assert ei.value.reason == "truncated"
            assert time.monotonic() - t0 < 1.5


async def test_virtual_channel() -> None:
    with pytest.raises(TransportError, match="nobody serves"):
        await open_channel("virtual://nobody").open()
    async with MeterBusSimulator(2, transport="virtual") as sim:
        assert sim.url.startswith("virtual://")
        async with Dlt645Client.from_url(sim.url, timeout=0.3) as client:
            (r,) = await client.read(M1, ["energy.active.import"])
            assert r.value == pytest.approx(sim.meters[M1].energy_import, abs=0.02)
    # The simulator went away: reopening fails at once, no hang.
    with pytest.raises(TransportError):
        await client.read(M1, ["voltage.a"])


async def test_long_reply_at_a_low_rate_outlasts_the_response_timeout() -> None:
    """A 212-byte reply frame takes ~0.24 s at 9600 baud: it trickles in 16 bytes at a time and the
    inter-byte timeout keeps the read alive past the 0.15 s response timeout."""
    async with MeterBusSimulator(1, transport="virtual", baud=9600, parity="E", line_time=True, turnaround=0.02,
                                 reply_preamble=0) as sim:
        meter = sim.meters[M1]
        first, _ = meter.profile_slots()
        async with Dlt645Client.from_url(sim.url, timeout=0.15, inter_byte_timeout=0.1) as client:
            t0 = time.monotonic()
            res = await client.read_raw(M1, 0x06000001, count=2, start=first)
            elapsed = time.monotonic() - t0
    assert res.frames == 2 and elapsed > 0.15  # longer than the response timeout, yet complete


async def test_trace_shows_each_reply_as_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """At line speed the reply arrives in several chunks; the trace still shows one RX line per reply."""
    async with MeterBusSimulator(1, transport="pty", baud=9600, line_time=True, turnaround=0.01,
                                 reply_preamble=0) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=0.5) as client:
            with caplog.at_level(5, logger="headend.trace"):
                await client.read_raw(M1, "0001FF00")  # 10 + 24 + 2 = 36-byte reply, sent in 16-byte chunks
                await client.read_raw(M1, "02010100")
    ours = [r.getMessage() for r in caplog.records if r.name == "headend.trace"]
    lines = [x for x in ours if not x.startswith("sim:")]  # the simulator traces its own side too
    assert [x.split()[1] for x in lines] == ["TX", "RX", "TX", "RX"]
    rx = bytes.fromhex(lines[1].split(" RX ")[1])
    assert len(rx) == 36 and rx[:2] == b"\x68\x01" and rx[-1] == 0x16
