"""CLI over a simulator on a real socket: headend read via Modbus, headend load ... with the audit trail."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
from typer.testing import CliRunner

from headend.cli import app
from headend.exitcodes import ExitCode
from tests.modbus.conftest import ThreadedSim

runner = CliRunner()


def test_headend_read_through_modbus(threaded_sim: ThreadedSim) -> None:
    r = runner.invoke(
        app, ["read", "2", "voltage.a", "energy.active.import", "relay.state", "--protocol", "modbus",
              "--port", threaded_sim.url, "--json"],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    values = {i["quantity"]: i["value"] for i in doc["items"]}
    assert 225 < values["voltage.a"] < 236 and values["energy.active.import"] > 1000 and values["relay.state"] == 0


def test_headend_read_with_a_map_in_the_url() -> None:
    ts = ThreadedSim("chint_dtsu666", devices=1)
    try:
        r = runner.invoke(app, ["read", "1", "frequency", "--protocol", "modbus", "--port",
                                f"{ts.url}?map=chint_dtsu666", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["items"][0]["value"] == pytest.approx(50, abs=0.1)
    finally:
        ts.close()


def test_read_of_a_silent_unit_exits_no_response(threaded_sim: ThreadedSim) -> None:
    url = f"{threaded_sim.url}?timeout=0.2"
    r = runner.invoke(app, ["read", "7", "voltage.a", "--protocol", "modbus", "--port", url])
    assert r.exit_code == ExitCode.NO_RESPONSE


def _rows(dsn: str, request_id: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT phase, command, operator, accepted, reason, readback FROM load_control_log"
            " WHERE request_id = %s ORDER BY id", (request_id,),
        ).fetchall()


def test_load_commands_are_read_back_and_audited(
    threaded_sim: ThreadedSim, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", pg_dsn)
    base = ["--device", "1", "--operator", "alice", "--port", threaded_sim.url, "--json"]
    r = runner.invoke(app, ["load", "limit", "--kw", "42.5", "--request-id", "cli-limit-1", *base])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["readback"] == {"limit.power": 42.5}
    rows = _rows(pg_dsn, "cli-limit-1")
    assert [row[0] for row in rows] == ["requested", "result"]
    assert rows[1][1:5] == ("set_power_limit", "alice", True, "") and rows[1][5] == {"limit.power": 42.5}

    r = runner.invoke(app, ["load", "keep-power", "on", "--request-id", "cli-kp-1", *base])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["load", "trip", "--request-id", "cli-trip-1", *base])
    assert r.exit_code == ExitCode.BLOCKED, "keep-power blocks the trip; the read-back shows it"
    assert "expected 1" in json.loads(r.stdout)["reason"]
    assert _rows(pg_dsn, "cli-trip-1")[1][3] is False
    assert runner.invoke(app, ["load", "keep-power", "off", *base]).exit_code == 0
    r = runner.invoke(app, ["load", "trip", "--circuit", "2", *base])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["load", "restore", "--circuit", "2", *base]).exit_code == 0

    r = runner.invoke(app, ["load", "purchase", "--kwh", "100", "--request-id", "order-77", *base])
    b1 = json.loads(r.stdout)["readback"]["balance.energy"]
    r = runner.invoke(app, ["load", "purchase", "--kwh", "100", "--request-id", "order-77", *base])
    assert r.exit_code == 0
    b2 = json.loads(r.stdout)["readback"]["balance.energy"]
    assert b2 <= b1 + 0.01, "the same order number is applied once"
    assert len(_rows(pg_dsn, "order-77")) == 4  # both attempts audited

    with psycopg.connect(pg_dsn) as conn:
        audit = conn.execute(
            "SELECT actor, action, detail->>'accepted' FROM audit_log WHERE detail->>'request_id' = 'cli-trip-1'"
            " ORDER BY id"
        ).fetchall()
    assert audit == [("alice", "load.trip_circuit.requested", None), ("alice", "load.trip_circuit.result", "false")]
    with psycopg.connect(pg_dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM load_control_log")


def test_unknown_outcome_is_audited(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from simulators.modbus.server import Faults

    ts = ThreadedSim(devices=1, faults=Faults(silent={1}))
    monkeypatch.setenv("HEADEND_DATABASE__DSN", pg_dsn)
    try:
        r = runner.invoke(app, ["load", "trip", "-d", "1", "-o", "bob", "-p", f"{ts.url}?timeout=0.2",
                                "--request-id", "cli-unknown-1"])
        assert r.exit_code == ExitCode.UNKNOWN_OUTCOME
        assert [row[0] for row in _rows(pg_dsn, "cli-unknown-1")] == ["requested", "unknown"]
    finally:
        ts.close()


def test_no_database_refuses_unless_no_audit(threaded_sim: ThreadedSim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", "host=127.0.0.1 port=1 user=nobody connect_timeout=1")
    base = ["--device", "2", "--operator", "carol", "--port", threaded_sim.url]
    r = runner.invoke(app, ["load", "trip", *base])
    assert r.exit_code == ExitCode.CONFIG
    assert threaded_sim.sim.terminals[2].state.open == [False, False], "nothing is sent without an audit"
    assert runner.invoke(app, ["load", "trip", "--no-audit", *base]).exit_code == 0
    assert threaded_sim.sim.terminals[2].state.open[0]


def test_load_status(threaded_sim: ThreadedSim) -> None:
    r = runner.invoke(app, ["load", "status", "-d", "1", "-p", threaded_sim.url, "--json"])
    assert r.exit_code == 0, r.output
    values = json.loads(r.stdout)["values"]
    assert values["relay.state"] == 0 and values["balance.energy"] > 0 and "power.active.total" in values


def test_sim_modbus_cli_serves_tcp() -> None:
    """``headend sim modbus`` as a process: prints its URL, answers a read, stops on terminate."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from headend.cli import main; main()",
         "sim", "modbus", "--tcp", "127.0.0.1:0", "--devices", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("tcp://127.0.0.1:") and url.endswith("?map=generic_terminal")
        r = runner.invoke(app, ["read", "2", "frequency", "--protocol", "modbus", "--port", url, "--json"])
        assert r.exit_code == 0, r.output
    finally:
        proc.terminate()
        proc.wait(5)


def test_load_commands_over_mqtt(mqtt_broker, mqtt_prefix: str, pg_dsn: str,  # type: ignore[no-untyped-def]
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The same CLI, audit and read-back with --protocol mqtt (the MQTT terminal fleet simulator)."""
    import asyncio
    import threading

    from simulators.mqtt.fleet import MqttTerminalFleet

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fleet = MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 2, prefix=mqtt_prefix, interval=5.0)
    asyncio.run_coroutine_threadsafe(fleet.start(), loop).result(20)
    monkeypatch.setenv("HEADEND_DATABASE__DSN", pg_dsn)
    port = f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}?prefix={mqtt_prefix}"
    try:
        base = ["--device", "LMT00001", "--operator", "dave", "--port", port, "--json"]  # mqtt:// -> mqtt
        r = runner.invoke(app, ["load", "trip", "--request-id", "mqtt-trip-1", *base])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["readback"]["relay.state"] == 1
        r = runner.invoke(app, ["load", "limit", "--kw", "33", *base])
        assert r.exit_code == 0, r.output
        assert [row[0] for row in _rows(pg_dsn, "mqtt-trip-1")] == ["requested", "result"]
    finally:
        asyncio.run_coroutine_threadsafe(fleet.stop(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_limits_and_events_commands(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from headend.loadmon import LoadLimit, LoadMonitor, store_events
    from protocols.reading import Reading

    monkeypatch.setenv("HEADEND_DATABASE__DSN", pg_dsn)
    r = runner.invoke(app, ["load", "limits", "--set", "CLI-CUST", "--kind", "customer", "--power-kw", "75",
                            "--operator", "erin", "--json"])
    assert r.exit_code == 0, r.output
    assert {"target": "CLI-CUST", "kind": "customer", "power_kw": 75.0, "demand_kw": None,
            "source": "database"} in json.loads(r.stdout)

    async def crossing() -> None:
        from datetime import UTC, datetime

        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            mon = LoadMonitor([LoadLimit("CLI-T1@1", power_kw=5.0)])
            ts = datetime(2026, 8, 1, 12, tzinfo=UTC)
            await store_events(conn, mon.observe([Reading("CLI-T1@1", "power.active.total", ts, 9.5, "kW")]))

    asyncio.run(crossing())
    r = runner.invoke(app, ["load", "events", "--device", "CLI-T1@1", "--json"])
    assert r.exit_code == 0, r.output
    (ev,) = json.loads(r.stdout)
    assert ev["kind"] == "power_limit_exceeded" and ev["value"] == 9.5 and ev["limit"] == 5.0
