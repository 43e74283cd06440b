"""Commands: read, load control with read-back, idempotency by request id, timeout -> unknown outcome."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from headend.loadmon import run_load_command
from protocols.client import (
    Credentials,
    LoadCommand,
    LoadControlRequest,
    RelayCommand,
    RelayRequest,
    RelayState,
)
from protocols.errors import NoResponseError, UnknownOutcomeError
from protocols.factory import open_client
from protocols.mqtt.client import MqttClient
from simulators.mqtt import MqttTerminalFleet
from tests.mqtt.conftest import ingest_running, query, wait_for


def _req(device: str, cmd: LoadCommand, value: float | None = None, **kw) -> LoadControlRequest:
    return LoadControlRequest(device, cmd, "operator-7", value=value, **kw)


async def test_read_and_load_control_with_readback(mqtt_broker, mqtt_prefix, fresh_dsn):
    url = f"{mqtt_broker.url}?prefix={mqtt_prefix}&timeout=3"
    async with MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 2, prefix=mqtt_prefix, telemetry=False,
                                 event_rate=0, clear_retained=True, balance_kwh=50) as fleet:
        client = open_client("mqtt", url)
        assert isinstance(client, MqttClient)
        try:
            readings = await client.read("LMT00001", ["voltage.a", "relay.state", "pf.total"])
            assert [r.quantity for r in readings] == ["voltage.a", "relay.state", "pf.total"]
            assert 220 < readings[0].value < 240 and readings[0].unit == "V" and readings[0].source == "mqtt"
            assert readings[1].value == 0.0
            assert math.isnan(readings[2].value)  # the terminal does not measure it

            async with await psycopg.AsyncConnection.connect(fresh_dsn, autocommit=True) as conn:
                out = await run_load_command(client, _req("LMT00001", LoadCommand.SET_POWER_LIMIT, 42.5), conn=conn,
                                             channel=mqtt_broker.url, protocol="mqtt")
                assert out.outcome == "accepted" and out.readback == {"limit.power": 42.5}
                out = await run_load_command(client, _req("LMT00001", LoadCommand.TRIP_CIRCUIT), conn=conn,
                                             protocol="mqtt")
                assert out.outcome == "accepted" and out.readback == {"relay.state": 1.0}
                assert await client.relay_state("LMT00001") is RelayState.OPEN
                out = await run_load_command(client, _req("LMT00001", LoadCommand.PURCHASE_ENERGY, 100), conn=conn,
                                             protocol="mqtt")
                assert out.outcome == "accepted" and out.readback["balance.energy"] == pytest.approx(150, abs=0.01)
                # keep-power blocks trips: the terminal refuses, the result says why
                await run_load_command(client, _req("LMT00002", LoadCommand.KEEP_POWER_ON), conn=conn, protocol="mqtt")
                out = await run_load_command(client, _req("LMT00002", LoadCommand.TRIP_CIRCUIT), conn=conn,
                                             protocol="mqtt")
                assert out.outcome == "rejected" and "keep-power" in (out.result.reason if out.result else "")
                assert fleet.terminals["LMT00002"].relay == "closed"
                audit = await query(fresh_dsn, "SELECT phase, command, accepted, readback FROM load_control_log"
                                               " WHERE phase = 'result' ORDER BY id")
                assert [(a[1], a[2]) for a in audit] == [
                    ("set_power_limit", True), ("trip_circuit", True), ("purchase_energy", True),
                    ("keep_power_on", True), ("trip_circuit", False)]
            # RelayControl: close again, read back through status
            res = await client.relay_command(RelayRequest(
                "LMT00001", RelayCommand.CLOSE_DIRECT, datetime.now(UTC) + timedelta(minutes=1),
                Credentials("000000"), "operator-7"))
            assert res.accepted
            assert client.status("LMT00001") is not None and client.status("LMT00001").relay == "closed"
            assert fleet.terminals["LMT00001"].relay == "closed"
        finally:
            await client.aclose()


async def test_commands_are_idempotent_by_request_id(mqtt_broker, mqtt_prefix):
    async with MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 1, prefix=mqtt_prefix, telemetry=False,
                                 event_rate=0, clear_retained=True, balance_kwh=10) as fleet:
        term = fleet.terminals["LMT00001"]
        async with MqttClient(mqtt_broker.host, mqtt_broker.port, prefix=mqtt_prefix, timeout=3) as c1, \
                MqttClient(mqtt_broker.host, mqtt_broker.port, prefix=mqtt_prefix, timeout=3) as c2:
            req = _req("LMT00001", LoadCommand.PURCHASE_ENERGY, 5, request_id="buy-0001")
            first = await c1.load_command(req)
            assert first.accepted and term.balance_kwh == pytest.approx(15)
            # the same client answers a repeat from its record, without publishing
            assert await c1.load_command(req) is first
            # another head-end process sends the same request id: the terminal does not act twice
            again = await c2.load_command(req)
            assert again.accepted
            assert json.loads(again.rx)["duplicate"] is True
            assert term.balance_kwh == pytest.approx(15) and term.acted == 1
            assert fleet.stats.duplicates == 1


async def test_command_timeout_is_unknown_outcome_and_never_resent(mqtt_broker, mqtt_prefix, fresh_dsn):
    async with MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 2, prefix=mqtt_prefix, telemetry=False,
                                 event_rate=0, clear_retained=True, faults="no_answer=LMT00002") as fleet:
        async with MqttClient(mqtt_broker.host, mqtt_broker.port, prefix=mqtt_prefix, timeout=0.5,
                              telemetry_max_age=0) as client:
            req = _req("LMT00002", LoadCommand.TRIP_CIRCUIT)
            async with await psycopg.AsyncConnection.connect(fresh_dsn, autocommit=True) as conn:
                with pytest.raises(UnknownOutcomeError):
                    await run_load_command(client, req, conn=conn, protocol="mqtt")
            assert req.request_id in client.unknown
            await asyncio.sleep(0.5)  # nothing is re-sent behind the caller's back
            assert fleet.stats.commands == 1
            phases = await query(fresh_dsn, "SELECT phase FROM load_control_log WHERE request_id = %s ORDER BY id",
                                 (req.request_id,))
            assert [p[0] for p in phases] == ["requested", "unknown"]
            # a read has no side effects: no answer -> NoResponseError (no fresh telemetry allowed here)
            with pytest.raises(NoResponseError):
                await client.read("LMT00002", ["voltage.a"])


async def test_late_response_is_recorded_for_unknown_outcomes(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn):
    """The ingest service records every response by request id, so an unknown outcome can be resolved."""
    settings = settings_for(mqtt_broker, mqtt_prefix)
    async with ingest_running(settings, fresh_dsn) as svc, MqttTerminalFleet(
        mqtt_broker.host, mqtt_broker.port, 1, prefix=mqtt_prefix, telemetry=False, event_rate=0, clear_retained=True
    ), MqttClient(mqtt_broker.host, mqtt_broker.port, prefix=mqtt_prefix, timeout=3) as client:
        res = await client.load_command(_req("LMT00001", LoadCommand.KEEP_POWER_ON, request_id="kp-42"))
        assert res.accepted
        await wait_for(lambda: svc.stats.responses >= 1, what="response stored")
        rows = await query(fresh_dsn, "SELECT terminal, status FROM mqtt_command_responses WHERE request_id='kp-42'")
        assert rows == [("LMT00001", "accepted")]


async def test_cli_read_over_mqtt(mqtt_broker, mqtt_prefix):
    async with MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 1, prefix=mqtt_prefix, telemetry=False,
                                 event_rate=0, clear_retained=True):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from headend.cli import main; main()",
            "read", "LMT00001", "voltage.a", "balance.energy",
            "--protocol", "mqtt", "--port", f"{mqtt_broker.url}?prefix={mqtt_prefix}", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        doc = json.loads(out)
        assert [i["quantity"] for i in doc["items"]] == ["voltage.a", "balance.energy"]
        assert doc["items"][1]["value"] == 1000.0


async def test_read_falls_back_to_fresh_telemetry_when_the_terminal_does_not_answer(mqtt_broker, mqtt_prefix):
    async with MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 1, prefix=mqtt_prefix, telemetry=False,
                                 event_rate=0, clear_retained=True, faults="no_answer=LMT00001") as fleet, \
            MqttClient(mqtt_broker.host, mqtt_broker.port, prefix=mqtt_prefix, timeout=1.0,
                       telemetry_max_age=60) as client:
        async def publish_soon() -> None:
            await asyncio.sleep(0.3)
            await fleet.publish_telemetry(fleet.terminals["LMT00001"])

        task = asyncio.create_task(publish_soon())
        readings = await client.read("LMT00001", ["voltage.a", "balance.energy"])
        await task
        assert [r.quantity for r in readings] == ["voltage.a", "balance.energy"]
        assert readings[1].value == 1000.0 and readings[0].source == "mqtt"
        with pytest.raises(NoResponseError):  # a code the telemetry does not carry
            await client.read("LMT00001", ["pf.total"])
