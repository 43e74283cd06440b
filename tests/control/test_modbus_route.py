"""The same executor over Modbus (coil relay of a load-management terminal), opened by protocol name."""

from __future__ import annotations

import psycopg
import pytest

from headend.control.directory import MeterDirectory, Route
from headend.control.executor import Executor
from headend.control.planner import approve_plan
from simulators.modbus.server import Faults, ModbusSimulator
from tests.control.conftest import WORK_TIME, control_settings, secrets_store, seed_arrears

pytestmark = pytest.mark.timeout(60)


async def test_disconnect_and_reconnect_over_modbus(fresh_dsn: str) -> None:
    sim = ModbusSimulator.build("generic_terminal", devices=3, faults=Faults(silent={3}))
    await sim.start_tcp("127.0.0.1", 0)
    try:
        url = f"tcp://127.0.0.1:{sim.tcp_port}?timeout=0.3"
        directory = MeterDirectory({u: Route(u, "rtu-1", "modbus", url, {"retries": 0}) for u in ("1", "2", "3")})
        seed_arrears(fresh_dsn, [{"account": "M1", "meter": "1"}, {"account": "M2", "meter": "2",
                                                                   "exemptions": ["keep_power"]},
                                 {"account": "M3", "meter": "3"}])
        ex = Executor(fresh_dsn, control_settings(), directory, secrets_store(), now=lambda: WORK_TIME, pool_size=2)
        async with ex:
            async with ex.pool.connection() as conn:
                res = await ex.planner.plan(conn, WORK_TIME, operator="alice", dry_run=False)
                await approve_plan(conn, ex.settings, int(res.plan_id or 0), "bob")
            report = await ex.execute_plan(int(res.plan_id or 0), "alice")
            states = {o.meter: o.state for o in report.outcomes}
            assert states == {"1": "confirmed", "3": "escalated"}  # 2 is on the keep-power list
            client = await ex.clients.get(directory.route("1"))
            from protocols.client import RelayState

            assert await client.relay_state("1") is RelayState.OPEN
            assert await client.relay_state("2") is RelayState.CLOSED
            with psycopg.connect(fresh_dsn, autocommit=True) as c:
                c.execute("UPDATE arrears SET cleared_at = now() WHERE account = 'M1'")
            again = await ex.run_due()
            assert [(o.kind, o.state) for o in again.outcomes] == [("reconnect", "confirmed")]
            assert await client.relay_state("1") is RelayState.CLOSED
    finally:
        await sim.stop()


async def test_disconnect_over_mqtt(fresh_dsn: str) -> None:
    """MQTT load-management terminals on the local broker: the command and the status read-back."""
    import uuid

    from simulators.mqtt import MqttTerminalFleet

    prefix = f"ctltest{uuid.uuid4().hex[:8]}"
    async with MqttTerminalFleet("127.0.0.1", 1883, 2, prefix=prefix, telemetry=False, seed=4) as fleet:
        url = f"mqtt://127.0.0.1:1883?prefix={prefix}&timeout=3"
        ids = list(fleet.terminals)
        directory = MeterDirectory({t: Route(t, "broker", "mqtt", url) for t in ids})
        seed_arrears(fresh_dsn, [{"account": "Q1", "meter": ids[0]},
                                 {"account": "Q2", "meter": ids[1], "exemptions": ["critical"]}])
        from protocols.mqtt.client import MqttClient

        async with MqttClient.from_url(url) as client:  # (the factory registers "mqtt" once the MQTT area does)
            ex = Executor(fresh_dsn, control_settings(), directory, secrets_store(), clients={"broker": client},
                          now=lambda: WORK_TIME, pool_size=2)
            async with ex:
                async with ex.pool.connection() as conn:
                    res = await ex.planner.plan(conn, WORK_TIME, operator="alice", dry_run=False)
                    await approve_plan(conn, ex.settings, int(res.plan_id or 0), "bob")
                report = await ex.execute_plan(int(res.plan_id or 0), "alice")
        assert [(o.meter, o.state) for o in report.outcomes] == [(ids[0], "confirmed")]
        assert fleet.terminals[ids[0]].relay == "open" and fleet.terminals[ids[1]].relay == "closed"
