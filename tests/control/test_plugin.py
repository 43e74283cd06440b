"""The daemon plug-in: reconnects go through the daemon's own bus clients (same priority lock)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import psycopg
import pytest

from headend.control.plugin import run_once
from headend.fleetconfig import ChannelConfig
from headend.settings import Settings
from protocols.dlt645.client import Dlt645Client
from simulators.dlt645 import MeterBusSimulator
from tests.control.conftest import control_settings, secrets_store

pytestmark = pytest.mark.timeout(60)


async def test_plugin_reconnects_through_daemon_clients(fresh_dsn: str) -> None:
    async with MeterBusSimulator(3, transport="tcp", seed=8) as sim:
        m = sim.addresses[0]
        sim.meters[m].relay_open = True  # cut earlier
        with psycopg.connect(fresh_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO control_accounts (account, meter) VALUES ('R1', %s)", (m,))
            conn.execute("INSERT INTO arrears (account, amount, days_overdue, cleared_at) VALUES ('R1', 50, 40, now())")
            conn.execute("INSERT INTO control_commands (account, meter, bus, kind, command, state, operator, approver)"
                         " VALUES ('R1', %s, 'bus-1', 'disconnect', 'trip', 'confirmed', 'alice', 'bob')", (m,))
        settings = Settings(control=control_settings())
        settings.daemon.channels.append(ChannelConfig(name="bus-1", url=sim.url, meters=sim.addresses))
        settings.daemon.channels.append(ChannelConfig(name="bus-2", url="tcp://127.0.0.1:9", meters=["000000000099"]))
        async with Dlt645Client.from_url(sim.url, timeout=0.3, breaker=False) as client:
            daemon = SimpleNamespace(settings=settings, dsn=fresh_dsn, stopping=asyncio.Event(),
                                     channels={"bus-1": SimpleNamespace(client=client),
                                               "bus-2": SimpleNamespace(client=None)})
            assert await run_once(daemon, secrets_store()) == 1
            assert await run_once(daemon, secrets_store()) == 0
        assert not sim.meters[m].relay_open
        with psycopg.connect(fresh_dsn, autocommit=True) as conn:
            states = conn.execute("SELECT kind, state FROM control_commands ORDER BY id").fetchall()
        assert states == [("disconnect", "superseded"), ("reconnect", "confirmed")]


def test_routes_from_the_store(fresh_dsn: str) -> None:
    from headend.control.directory import MeterDirectory, Route
    from headend.control.service import _db_routes

    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO channels (name, url, protocol) VALUES ('db-bus', 'tcp://10.0.0.9:4001', 'dlt645'), "
                     "('off-bus', 'tcp://10.0.0.10:4001', 'dlt645')")
        conn.execute("UPDATE channels SET enabled = false WHERE name = 'off-bus'")
        conn.execute("INSERT INTO meters (address, channel, time_zone) VALUES ('000000000041', 'db-bus', 'UTC'), "
                     "('000000000042', 'db-bus', NULL), ('000000000043', 'off-bus', NULL), "
                     "('000000000044', NULL, NULL)")
    d = MeterDirectory({"000000000042": Route("000000000042", "cfg-bus", "dlt645", "tcp://cfg:1")})
    assert d.add_from_database(_db_routes(fresh_dsn), "Asia/Shanghai") == 1
    assert d.route("000000000041") == Route("000000000041", "db-bus", "dlt645", "tcp://10.0.0.9:4001", {"tz": "UTC"})
    assert d.bus_of("000000000042") == "cfg-bus" and d.bus_of("000000000043") == ""
