"""Fixtures: a simulated meter bus over a real pty pair or a real TCP socket, and a client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from protocols.dlt645.client import Dlt645Client
from simulators.dlt645 import MeterBusSimulator


@pytest.fixture(params=["pty", "tcp", "virtual"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[tuple[MeterBusSimulator, Dlt645Client]]:
    """Every test using it runs over a pty pair, over TCP and over an in-process virtual channel."""
    async with MeterBusSimulator(4, transport=request.param, seed=7) as sim:
        client = Dlt645Client.from_url(sim.url, timeout=0.4, inter_byte_timeout=0.1)
        async with client:
            yield sim, client


@pytest.fixture
async def tcp_bus() -> AsyncIterator[tuple[MeterBusSimulator, Dlt645Client]]:
    async with MeterBusSimulator(4, transport="tcp", seed=7) as sim:
        client = Dlt645Client.from_url(sim.url, timeout=0.3, inter_byte_timeout=0.1)
        async with client:
            yield sim, client
