"""Modbus part of ``headend demo``: a line of load-management terminals polled by the daemon,
load monitoring as a daemon plug-in, and one audited load-control round trip at the end.

Hooked in through ``headend.demo.DEMO_SETUP`` / ``DEMO_STAGES``:
``simulators.modbus.demo:setup`` and ``simulators.modbus.demo:stage``.
"""

from __future__ import annotations

import logging
from typing import Any

from headend.fleetconfig import ChannelConfig
from headend.loadmon import LimitConfig, LimitKind, LoadSettings
from headend.plans import PlanKind
from simulators.modbus.server import Faults, ModbusSimulator
from simulators.modbus.terminal import TerminalConfig

__all__ = ["CHANNEL", "setup", "stage"]

LOGGER = logging.getLogger(__name__)
CHANNEL = "modbus-tcp-1"
UNITS = 4
SILENT_UNIT = 4


async def setup(ctx: Any) -> None:
    """Start 4 terminals (unit 4 silent) on TCP, add them as a daemon channel, watch their load."""
    sim = ModbusSimulator.build(
        "generic_terminal", devices=UNITS, faults=Faults(silent={SILENT_UNIT}),
        config=TerminalConfig(base_kw=50.0, speed=60.0, overlimit_trip_after=1e9),
    )
    port = await sim.start_tcp("127.0.0.1", 0)
    ctx.stack.push_async_callback(sim.stop)
    ctx.extras["modbus_sim"] = sim
    meters: list[Any] = [f"LMT{u:04d}@{u}" for u in range(1, UNITS + 1)]
    ctx.settings.daemon.channels.append(
        ChannelConfig(
            name=CHANNEL, protocol="modbus", url=f"tcp://127.0.0.1:{port}?map=generic_terminal",
            meters=meters, group="terminals", timeout=0.3, retries=1, options={"breaker": False},
        )
    )
    # terminals have no freezes, load-profile memory or clock service: keep those plans on the meters
    ctx.settings.daemon.plans = [
        p.model_copy(update={"groups": ["default"]}) if p.kind is not PlanKind.READ and p.groups == ["*"] else p
        for p in ctx.settings.daemon.plans
    ]
    # terminal 1 runs above its 40 kW cap (load events); the customer ACME owns terminals 1 and 2
    ctx.settings.load = LoadSettings(
        limits=[LimitConfig(target=meters[0], power_kw=40.0),
                LimitConfig(target="ACME", kind=LimitKind.CUSTOMER, power_kw=90.0)],
        customers={meters[0]: "ACME", meters[1]: "ACME"},
    )
    if "headend.loadmon" not in ctx.settings.daemon.plugins:
        ctx.settings.daemon.plugins.append("headend.loadmon")


async def stage(ctx: Any) -> None:
    """Trip and restore terminal 2 with read-back and audit; report readings and load events."""
    import psycopg

    from headend.loadmon import run_load_command
    from protocols.client import LoadCommand, LoadControlRequest
    from protocols.factory import open_client

    sim: ModbusSimulator = ctx.extras["modbus_sim"]
    url = f"tcp://127.0.0.1:{sim.tcp_port}?map=generic_terminal"
    client = open_client("modbus", url, timeout=0.5)
    outcomes = []
    async with await psycopg.AsyncConnection.connect(ctx.dsn, autocommit=True) as conn:
        try:
            for cmd in (LoadCommand.TRIP_CIRCUIT, LoadCommand.RESTORE_CIRCUIT):
                req = LoadControlRequest("LMT0002@2", cmd, operator_id="demo-operator")
                out = await run_load_command(client, req, conn=conn, channel=CHANNEL, protocol="modbus")  # type: ignore[arg-type]
                outcomes.append(f"{cmd.value}: {out.outcome} (relay.state={out.readback.get('relay.state')})")
        finally:
            await client.aclose()
        cur = await conn.execute("SELECT kind, count(*) FROM load_events GROUP BY kind ORDER BY kind")
        events = {k: n for k, n in await cur.fetchall()}
    ch = ctx.daemon.channels.get(CHANNEL) if ctx.daemon is not None else None
    ctx.summary["modbus terminals"] = f"{UNITS} on {CHANNEL} (unit {SILENT_UNIT} silent)"
    if ch is not None:
        ctx.summary["modbus reads ok / no reply"] = f"{ch.counts['ok']} / {ch.counts['no_response']}"
    ctx.summary["load events (功控 limits)"] = ", ".join(f"{k} {n}" for k, n in events.items()) or "none"
    ctx.summary["load control (audited, read back)"] = "; ".join(outcomes)
