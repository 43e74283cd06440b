"""MQTT part of ``headend demo``: a fleet of MQTT terminals feeding the daemon's MQTT ingest plug-in,
with malformed payloads (dead letters) and one terminal that never answers commands (unknown
outcome), then one audited load command with read-back.

Hooks for ``headend.demo.DEMO_SETUP`` / ``DEMO_STAGES``:
``simulators.mqtt.demo:setup`` and ``simulators.mqtt.demo:stage``.
"""

from __future__ import annotations

import logging
from typing import Any

from simulators.mqtt.fleet import FleetFaults, MqttTerminalFleet

__all__ = ["TERMINALS", "setup", "stage"]

LOGGER = logging.getLogger(__name__)
TERMINALS = 200
SILENT = "LMT00007"  # receives commands, never answers


async def setup(ctx: Any) -> None:
    """Broker (the configured one, else in-process amqtt), the fleet, and the ingest plug-in."""
    from headend.broker import InProcessBroker

    mqtt = ctx.settings.mqtt
    host, port = mqtt.host, mqtt.port
    if not host:
        broker = InProcessBroker()
        await broker.start()
        ctx.stack.push_async_callback(broker.stop)
        host, port = broker.host, broker.port
        # the plug-in connects to this broker like to a configured one
        ctx.settings.mqtt = mqtt.model_copy(update={"host": host, "port": port})
    fleet = MqttTerminalFleet(
        host, port, TERMINALS, prefix=mqtt.topic_prefix, interval=2.0, speed=60.0, event_rate=0.002,
        # no flapping here: an abrupt socket drop inside the daemon's own process can race aiomqtt's
        # fd bookkeeping against the daemon's psycopg sockets (seen once); `headend sim mqtt --faults flap=`
        # shows the Last Will from its own process
        faults=FleetFaults(malformed=0.005, no_answer=frozenset({SILENT})),
    )
    await fleet.start()
    ctx.stack.push_async_callback(fleet.stop)
    ctx.extras["mqtt_fleet"] = fleet
    if "headend.mqtt_ingest" not in ctx.settings.daemon.plugins:
        ctx.settings.daemon.plugins.append("headend.mqtt_ingest")


async def stage(ctx: Any) -> None:
    """Purchase energy on one terminal (audited, read back), try the silent one, report the counts."""
    import psycopg

    from headend.loadmon import run_load_command
    from protocols.client import LoadCommand, LoadControlRequest
    from protocols.errors import UnknownOutcomeError
    from protocols.mqtt.client import MqttClient

    fleet: MqttTerminalFleet = ctx.extras["mqtt_fleet"]
    mqtt = ctx.settings.mqtt
    outcomes = []
    async with MqttClient(fleet.host, fleet.port, prefix=mqtt.topic_prefix, timeout=2.0) as client, \
            await psycopg.AsyncConnection.connect(ctx.dsn, autocommit=True) as conn:
        req = LoadControlRequest("LMT00002", LoadCommand.PURCHASE_ENERGY, "demo-operator", value=100.0)
        out = await run_load_command(client, req, conn=conn, channel="mqtt", protocol="mqtt")
        outcomes.append(f"purchase 100 kWh: {out.outcome} (balance {out.readback.get('balance.energy')})")
        try:
            await run_load_command(client, LoadControlRequest(SILENT, LoadCommand.TRIP_CIRCUIT, "demo-operator"),
                                   conn=conn, channel="mqtt", protocol="mqtt")
        except UnknownOutcomeError:
            outcomes.append(f"trip {SILENT}: unknown outcome (no answer; audited, not re-sent)")
        counts = {}
        for name, sql in (
            ("telemetry readings", "SELECT count(*) FROM register_reads WHERE source = 'mqtt'"),
            ("dead letters", "SELECT count(*) FROM mqtt_dead_letters"),
            ("offline transitions", "SELECT count(*) FROM mqtt_status_log WHERE state = 'offline'"),
            ("events", "SELECT count(*) FROM meter_events WHERE source = 'mqtt'"),
        ):
            cur = await conn.execute(sql)
            row = await cur.fetchone()
            counts[name] = row[0] if row else 0
    s = fleet.stats
    ctx.summary["mqtt terminals"] = f"{TERMINALS} ({s.telemetry} telemetry, {s.malformed} malformed, {s.drops} drops)"
    ctx.summary["mqtt stored"] = ", ".join(f"{k} {v}" for k, v in counts.items())
    ctx.summary["mqtt load control"] = "; ".join(outcomes)
