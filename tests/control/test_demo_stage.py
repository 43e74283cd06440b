"""The ``headend demo`` stage: one arrears customer cut, then restored after payment; one refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rich.console import Console

from headend.control.demo import stage
from headend.fleetconfig import ChannelConfig
from headend.settings import Settings
from simulators.dlt645 import MeterBusSimulator

pytestmark = pytest.mark.timeout(60)


async def test_demo_stage_cuts_refuses_and_restores(fresh_dsn: str) -> None:
    async with MeterBusSimulator(4, transport="tcp", seed=2, speed=60) as sim:
        settings = Settings()
        settings.daemon.channels.append(ChannelConfig(name="tcp-bus-1", url=sim.url, meters=sim.addresses,
                                                      timeout=0.4))
        console = Console(record=True, width=200)
        ctx = SimpleNamespace(settings=settings, dsn=fresh_dsn, sims=[sim], console=console, summary={})
        await stage(ctx)
    assert ctx.summary["remote cut (DEMO-0001)"].startswith("confirmed")
    assert ctx.summary["remote cut refused (DEMO-0002)"] == "exemption.life_support; frames to its meter: 0"
    assert ctx.summary["reconnect after payment"].startswith("confirmed") and "relay closed" in \
        ctx.summary["reconnect after payment"]
    assert not sim.meters[sim.addresses[0]].relay_open
    assert [f.frame.data[8] for f in sim.received if f.frame.function == 0x1C] == [0x1A, 0x1C]
    assert "home oxygen" in console.export_text()
