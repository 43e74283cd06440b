"""Load monitoring: limit crossings with hysteresis, per terminal and per customer; events and limits in the DB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from headend.loadmon import LimitKind, LoadLimit, LoadMonitor, load_limits, store_events, upsert_limit
from headend.settings import load_settings
from protocols.reading import Reading

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def power(meter: str, kw: float, minute: int = 0, q: str = "power.active.total") -> Reading:
    return Reading(meter, q, T0 + timedelta(minutes=minute), kw, "kW", source="modbus:test")


def test_power_limit_crossing_raises_one_event_each_way() -> None:
    mon = LoadMonitor([LoadLimit("1", power_kw=100.0, hysteresis=0.1)])
    assert mon.observe([power("1", 90)]) == []
    (up,) = mon.observe([power("1", 120, 1)])
    assert up.kind == "power_limit_exceeded" and up.value == 120 and up.limit == 100 and mon.over("1")
    assert mon.observe([power("1", 130, 2), power("1", 95, 3)]) == []  # still within the hysteresis band
    (down,) = mon.observe([power("1", 89, 4)])
    assert down.kind == "power_limit_cleared" and not mon.over("1")
    assert mon.observe([power("2", 500)]) == []  # no limit for terminal 2


def test_demand_limit_uses_interval_demand() -> None:
    mon = LoadMonitor([LoadLimit("1", demand_kw=80.0)])
    (ev,) = mon.observe([power("1", 85, q="interval.demand.active"), power("1", 500)])
    assert ev.kind == "demand_limit_exceeded" and ev.details["quantity"] == "interval.demand.active"


def test_customer_limit_sums_its_terminals() -> None:
    mon = LoadMonitor(
        [LoadLimit("ACME", LimitKind.CUSTOMER, power_kw=150.0)], customers={"1": "ACME", "2": "ACME", "3": "X"}
    )
    assert mon.observe([power("1", 80), power("3", 400)]) == []
    (ev,) = mon.observe([power("2", 90, 1)])
    assert ev.kind == "power_limit_exceeded" and ev.meter == "ACME" and ev.value == 170
    assert sorted(ev.details["devices"]) == ["1", "2"]


def test_limits_from_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "h.toml"
    cfg.write_text(
        '[load]\ncustomers = {"1" = "ACME"}\n'
        '[[load.limits]]\ntarget = "1"\npower_kw = 50\n'
        '[[load.limits]]\ntarget = "ACME"\nkind = "customer"\npower_kw = 70\n'
    )
    s = load_settings(cfg)
    mon = LoadMonitor(s.load.limit_table(), s.load.customers)
    kinds = sorted(e.kind + ":" + e.meter for e in mon.observe([power("1", 80)]))
    assert kinds == ["power_limit_exceeded:1", "power_limit_exceeded:ACME"]


async def test_limits_and_events_in_the_database(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await upsert_limit(conn, LoadLimit("mb-7", power_kw=40.0), "alice")
        await upsert_limit(conn, LoadLimit("mb-7", power_kw=45.0, demand_kw=60.0), "bob")  # update in place
        limits = await load_limits(conn)
        assert limits[("mb-7", LimitKind.DEVICE)] == LoadLimit("mb-7", LimitKind.DEVICE, 45.0, 60.0, 0.05)
        mon = LoadMonitor(limits)
        events = mon.observe([power("mb-7", 50.0), power("mb-7", 30.0, 15)])
        assert await store_events(conn, events) == 2
        cur = await conn.execute(
            "SELECT kind, value, limit_value FROM load_events WHERE meter = 'mb-7' ORDER BY ts"
        )
        assert await cur.fetchall() == [("power_limit_exceeded", 50.0, 45.0), ("power_limit_cleared", 30.0, 45.0)]
        # the same crossings are meter events (the store's meter_events), deduplicated on (meter, code, ts)
        assert await store_events(conn, events[:1]) == 1
        cur = await conn.execute(
            "SELECT code, severity, source, detail->>'limit' FROM meter_events WHERE meter = 'mb-7' ORDER BY ts"
        )
        assert await cur.fetchall() == [
            ("power_limit_exceeded", 2, "loadmon", "45.0"), ("power_limit_cleared", 4, "loadmon", "45.0"),
        ]


@pytest.mark.parametrize("bad", ['[load]\nlimits = [{target = "1", power_kw = -5}]\n', "[load]\ncolour = 1\n"])
def test_bad_limit_config_is_rejected(tmp_path, bad: str) -> None:  # type: ignore[no-untyped-def]
    from protocols.errors import ConfigError

    cfg = tmp_path / "h.toml"
    cfg.write_text(bad)
    with pytest.raises(ConfigError):
        load_settings(cfg)


async def test_monitored_sink_watches_readings_on_their_way_to_the_store() -> None:
    class Inner:
        def __init__(self) -> None:
            self.got: list[Reading] = []

        async def submit(self, readings: list[Reading]) -> int:
            self.got.extend(readings)
            return len(readings)

        async def flush(self) -> str:
            return "flushed"

    from headend.loadmon import MonitoredSink

    inner = Inner()
    sink = MonitoredSink(inner, LoadMonitor([LoadLimit("LMT00001", power_kw=10.0)]))
    assert await sink.submit([power("LMT00001", 12.0), power("LMT00002", 50.0)]) == 2
    assert len(inner.got) == 2 and await sink.flush() == "flushed"
    (ev,) = sink.events.get_nowait()
    assert ev.meter == "LMT00001" and ev.kind == "power_limit_exceeded"


async def test_daemon_plugin_keeps_events_through_a_database_outage(fresh_dsn: str, pg_server_dsn: str) -> None:
    """The plug-in's connection is killed (pg_terminate_backend on this test's own database only):
    the crossing that arrives meanwhile is stored after the reconnect, not lost."""
    import asyncio
    from types import SimpleNamespace

    from psycopg.conninfo import conninfo_to_dict

    from headend import loadmon
    from headend.loadmon import LimitConfig, LoadSettings

    settings = SimpleNamespace(load=LoadSettings(limits=[LimitConfig(target="OUT-1", power_kw=10.0)]))
    daemon = SimpleNamespace(settings=settings, listeners=[], dsn=fresh_dsn, stopping=asyncio.Event(), http=None)
    task = asyncio.create_task(loadmon.run(daemon, reload_every=0.2))

    async def count() -> int:
        async with await psycopg.AsyncConnection.connect(fresh_dsn) as conn:
            row = await (await conn.execute("SELECT count(*) FROM meter_events WHERE meter = 'OUT-1'")).fetchone()
            return int(row[0]) if row else 0

    try:
        await asyncio.sleep(0.3)
        (listener,) = daemon.listeners
        listener(None, None, None, [power("OUT-1", 12.0, 0)])
        for _ in range(30):
            if await count() == 1:
                break
            await asyncio.sleep(0.1)
        assert await count() == 1
        dbname = conninfo_to_dict(fresh_dsn)["dbname"]
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                          "pg_backend_pid()", (dbname,))
        listener(None, None, None, [power("OUT-1", 5.0, 15)])  # cleared, while the connection is dead
        for _ in range(60):
            if await count() == 2:
                break
            await asyncio.sleep(0.1)
        assert await count() == 2
    finally:
        daemon.stopping.set()
        await asyncio.wait_for(task, 5)
