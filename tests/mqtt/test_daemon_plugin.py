"""MQTT ingest as a daemon plug-in: ``[daemon] plugins = ["headend.mqtt_ingest"]`` inside ``headend run``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from headend.daemon import Daemon
from headend.fleetconfig import ChannelConfig, DaemonSettings, LeaseConfig
from headend.loadmon import LimitConfig, LoadSettings
from headend.settings import MqttSettings, load_settings
from protocols.reading import Reading
from simulators.mqtt import MqttTerminalFleet
from tests.mqtt.conftest import query, wait_for


class ListIngestor:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def submit(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)


async def test_daemon_runs_mqtt_ingest_plugin(mqtt_broker, mqtt_prefix, fresh_dsn, tmp_path):
    settings = load_settings()
    settings.data_dir = tmp_path
    settings.mqtt = MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port, topic_prefix=mqtt_prefix,
                                 client_id=f"d-{uuid.uuid4().hex[:8]}")
    settings.daemon = DaemonSettings(name="mqtt-test", listen="", leases=LeaseConfig(enabled="off"), kpi_flush=0.5,
                                     drain_timeout=2.0, plugins=["headend.mqtt_ingest", "headend.loadmon"],
                                     # the terminals are also a request/response channel (reads by command)
                                     channels=[ChannelConfig(name="mq", protocol="mqtt",
                                                             url=f"{mqtt_broker.url}?prefix={mqtt_prefix}",
                                                             meters=["LMT00001", "LMT00002"])])
    settings.load = LoadSettings(limits=[LimitConfig(target="LMT00002", power_kw=0.001)])  # always exceeded
    ingestor = ListIngestor()
    daemon = Daemon(settings, dsn=fresh_dsn, ingestor=ingestor, name="mqtt-test")
    runner = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: getattr(daemon, "mqtt_ingest", None) is not None
                       and daemon.mqtt_ingest.conn is not None and daemon.mqtt_ingest.conn.connected,
                       what="plug-in connected")
        async with MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 2, prefix=mqtt_prefix, telemetry=False,
                                     event_rate=0, clear_retained=True, faults="malformed=1.0") as fleet:
            await fleet.publish_telemetry(fleet.terminals["LMT00001"])  # malformed: a dead letter
            fleet.faults.malformed = 0.0
            await fleet.publish_telemetry(fleet.terminals["LMT00002"])
            await wait_for(lambda: any(r.meter == "LMT00002" for r in ingestor.readings), what="readings via daemon")
            await wait_for(lambda: query(fresh_dsn, "SELECT 1 FROM mqtt_dead_letters"), what="dead letter")
            # MQTT telemetry passes the load monitor: the crossing is stored like a polled terminal's
            await wait_for(lambda: query(fresh_dsn, "SELECT 1 FROM load_events WHERE meter = 'LMT00002'"
                                                    " AND kind = 'power_limit_exceeded'"), what="load event")
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 15)
    assert {r.source for r in ingestor.readings} == {"mqtt"}


async def test_demo_hooks(fresh_dsn, tmp_path):
    """simulators.mqtt.demo:setup starts a broker + fleet and the plug-in; :stage controls and reports."""
    import contextlib

    from rich.console import Console

    from headend.demo import DemoContext
    from headend.storeglue import open_ingestor
    from headend.timebase import wrap_clock
    from simulators.mqtt import demo

    settings = load_settings()
    settings.data_dir = tmp_path
    settings.mqtt = MqttSettings(host=None, topic_prefix=f"demo{uuid.uuid4().hex[:6]}",
                                 client_id=f"d-{uuid.uuid4().hex[:8]}")
    async with contextlib.AsyncExitStack() as stack:
        ctx = DemoContext(settings, fresh_dsn, wrap_clock(None), Console(quiet=True), stack)
        await demo.setup(ctx)
        assert settings.mqtt.host == "127.0.0.1" and "headend.mqtt_ingest" in settings.daemon.plugins
        settings.daemon = settings.daemon.model_copy(update={
            "name": "demo-mqtt", "listen": "", "leases": LeaseConfig(enabled="off"), "drain_timeout": 2.0,
            "channels": [ChannelConfig(name="mq", protocol="mqtt",
                                       url=f"mqtt://127.0.0.1:{settings.mqtt.port}?prefix={settings.mqtt.topic_prefix}",
                                       meters=["LMT00001"])]})
        ingestor = await open_ingestor(settings, fresh_dsn)
        stack.push_async_callback(ingestor.aclose)
        ctx.daemon = Daemon(settings, dsn=fresh_dsn, ingestor=ingestor, name="demo-mqtt")
        runner = asyncio.create_task(ctx.daemon.run())
        await wait_for(lambda: query(fresh_dsn, "SELECT 1 FROM register_reads WHERE source = 'mqtt' LIMIT 1"),
                       what="telemetry stored")
        ctx.daemon.stop()
        await asyncio.wait_for(runner, 15)
        await demo.stage(ctx)
    assert "purchase 100 kWh: accepted" in ctx.summary["mqtt load control"]
    assert "unknown outcome" in ctx.summary["mqtt load control"]
    assert "telemetry readings" in ctx.summary["mqtt stored"]
