"""The collection daemon polls a Modbus channel (factory + channel options) and the load monitor plug-in
stores limit crossings: Modbus readings enter the same daemon path as DL/T 645 ones."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from headend.daemon import Daemon
from headend.fleetconfig import ChannelConfig, DaemonSettings, LeaseConfig
from headend.loadmon import LimitConfig, LoadSettings
from headend.plans import PlanKind, ReadPlan
from headend.settings import load_settings
from protocols.reading import Reading
from simulators.modbus.server import Faults, ModbusSimulator
from simulators.modbus.terminal import TerminalConfig


class ListIngestor:
    """Collects what the daemon hands to the store (the store itself is another area's test)."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def submit(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)


async def test_daemon_polls_modbus_terminals_and_stores_load_events(pg_dsn: str) -> None:
    sim = ModbusSimulator.build("generic_terminal", devices=3, faults=Faults(silent={3}),
                                config=TerminalConfig(base_kw=50.0, overlimit_trip_after=1e9))
    port = await sim.start_tcp()
    meters = ["LMT0001@1", "LMT0002@2", "LMT0003@3"]
    settings = load_settings()
    settings.daemon = DaemonSettings(
        name="mb-test", listen="", leases=LeaseConfig(enabled="off"), kpi_flush=0.5, drain_timeout=2.0,
        plans=[ReadPlan(name="load", kind=PlanKind.READ, every=0.5, quantities=["power.active.total", "voltage.a"])],
        channels=[ChannelConfig(name="mb", protocol="modbus", url=f"tcp://127.0.0.1:{port}?map=generic_terminal",
                                meters=list[Any](meters), timeout=0.2, retries=0, options={"breaker": False})],
        plugins=["headend.loadmon"],
    )
    settings.load = LoadSettings(limits=[LimitConfig(target="LMT0001@1", power_kw=40.0)])
    ingestor = ListIngestor()
    daemon = Daemon(settings, dsn=pg_dsn, ingestor=ingestor, name="mb-test")
    runner = asyncio.create_task(daemon.run())
    try:
        for _ in range(60):
            await asyncio.sleep(0.1)
            if {r.meter for r in ingestor.readings} >= {"LMT0001@1", "LMT0002@2"} and daemon.channels:
                break
        await asyncio.sleep(0.5)
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 10)
        await sim.stop()
    got = {(r.meter, r.quantity) for r in ingestor.readings}
    assert ("LMT0001@1", "power.active.total") in got and ("LMT0002@2", "voltage.a") in got
    assert not any(r.meter == "LMT0003@3" for r in ingestor.readings), "the silent unit yields nothing"
    assert all(r.source.startswith("modbus") for r in ingestor.readings)
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT meter, kind, limit_value FROM load_events WHERE meter = 'LMT0001@1'").fetchall()
    assert ("LMT0001@1", "power_limit_exceeded", 40.0) in rows


async def test_demo_hooks(pg_dsn: str) -> None:
    """simulators.modbus.demo:setup adds a terminal channel and the plug-in; :stage controls and reports."""
    import contextlib

    from rich.console import Console

    from headend.demo import DemoContext, demo_plans
    from headend.timebase import wrap_clock
    from simulators.modbus import demo

    settings = load_settings()
    settings.daemon = DaemonSettings(name="demo-mb", listen="", leases=LeaseConfig(enabled="off"),
                                     plans=demo_plans(), drain_timeout=2.0)
    async with contextlib.AsyncExitStack() as stack:
        ctx = DemoContext(settings, pg_dsn, wrap_clock(None), Console(quiet=True), stack)
        await demo.setup(ctx)
        (ch,) = settings.daemon.channels
        assert ch.protocol == "modbus" and ch.group == "terminals" and "headend.loadmon" in settings.daemon.plugins
        assert all(p.groups == ["default"] for p in settings.daemon.plans if p.kind is not PlanKind.READ)
        ingestor = ListIngestor()
        ctx.daemon = Daemon(settings, dsn=pg_dsn, ingestor=ingestor, name="demo-mb")
        runner = asyncio.create_task(ctx.daemon.run())
        await asyncio.sleep(0.5)
        ctx.daemon.stop()
        await asyncio.wait_for(runner, 10)
        await demo.stage(ctx)
    assert "trip_circuit: accepted (relay.state=1.0)" in ctx.summary["load control (audited, read back)"]
    assert "restore_circuit: accepted (relay.state=0.0)" in ctx.summary["load control (audited, read back)"]
    with psycopg.connect(pg_dsn) as conn:
        n = conn.execute("SELECT count(*) FROM load_control_log WHERE operator = 'demo-operator'").fetchone()
    assert n is not None and n[0] == 4


async def test_modbus_readings_enter_the_store_like_any_other(pg_dsn: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One reading model: Modbus readings go through mdm.ingest.Ingestor into the same read tables."""
    from mdm.ingest import Ingestor
    from protocols.modbus.client import ModbusClient

    sim = ModbusSimulator.build("generic_terminal", devices=1)
    port = await sim.start_tcp()
    client = ModbusClient.from_url(f"tcp://127.0.0.1:{port}")
    try:
        readings = await client.read("LMT9001@1", ["energy.active.import", "voltage.a", "interval.demand.active"])
        assert {r.meter for r in readings} == {"LMT9001@1"}  # NAME@UNIT: unit 1, globally unique name
    finally:
        await client.aclose()
        await sim.stop()
    async with Ingestor(pg_dsn, spool_dir=tmp_path / "spool") as ing:
        await ing.submit(readings)
        await ing.flush()
    with psycopg.connect(pg_dsn) as conn:
        regs = conn.execute(
            "SELECT quantity, source FROM register_reads WHERE meter = 'LMT9001@1' ORDER BY quantity"
        ).fetchall()
        intervals = conn.execute("SELECT quantity FROM interval_reads WHERE meter = 'LMT9001@1'").fetchall()
    assert [q for q, _ in regs] == ["energy.active.import", "voltage.a"]
    assert all(src.startswith("modbus:") for _, src in regs)
    assert intervals == [("interval.demand.active",)]


async def test_load_command_goes_through_the_daemon_that_owns_the_line(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a daemon polling the terminal, `headend load` must not open a second master on the line:
    it posts to the daemon's /load, whose channel worker sends the command at control priority."""
    import json

    from typer.testing import CliRunner

    from headend.cli import app
    from headend.logsetup import configure_logging

    sim = ModbusSimulator.build("generic_terminal", devices=2)
    port = await sim.start_tcp()
    url = f"tcp://127.0.0.1:{port}?map=generic_terminal"
    settings = load_settings()
    settings.data_dir = tmp_path
    settings.daemon = DaemonSettings(
        name="mb-owner", listen="127.0.0.1:0", leases=LeaseConfig(enabled="off"), drain_timeout=2.0,
        plans=[ReadPlan(name="load", kind=PlanKind.READ, every=0.5, quantities=["power.active.total"])],
        channels=[ChannelConfig(name="mb", protocol="modbus", url=url, meters=list[Any](["LMT0001@1"]),
                                timeout=0.3, retries=0, options={"breaker": False})],
        plugins=["headend.loadmon"],
    )
    daemon = Daemon(settings, dsn=pg_dsn, ingestor=ListIngestor(), name="mb-owner")
    runner = asyncio.create_task(daemon.run())
    monkeypatch.setenv("HEADEND_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEADEND_DATABASE__DSN", pg_dsn)
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        r = await asyncio.to_thread(
            CliRunner().invoke, app,
            ["load", "trip", "-d", "LMT0002@2", "-o", "frank", "-p", url, "--request-id", "via-daemon-1", "--json"],
        )
        configure_logging("WARNING")  # the CLI bound logging to the runner's (now closed) stderr
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["via"] == "daemon mb-owner" and doc["accepted"] and doc["readback"] == {"relay.state": 1.0}
        assert sim.terminals[2].state.open[0]
        r = await asyncio.to_thread(CliRunner().invoke, app, ["load", "status", "-d", "LMT0002@2", "-p", url, "--json"])
        configure_logging("WARNING")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["values"]["relay.state"] == 1.0
        assert sim.tcp_connections == 1, "only the daemon's connection: no second master on the line"
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 10)
        await sim.stop()
    with psycopg.connect(pg_dsn) as conn:
        phases = conn.execute("SELECT phase, operator, channel FROM load_control_log WHERE request_id = 'via-daemon-1'"
                              " ORDER BY id").fetchall()
    assert phases == [("requested", "frank", "mb"), ("result", "frank", "mb")]
