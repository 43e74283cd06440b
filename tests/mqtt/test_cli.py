"""``headend mqtt ingest|dead-letters|terminals`` and ``headend sim mqtt`` as subprocesses against a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from simulators.mqtt import MqttTerminalFleet

CLI = (sys.executable, "-c", "from headend.cli import main; main()")


async def _run(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:  # noqa: ASYNC109
    proc = await asyncio.create_subprocess_exec(*CLI, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_mqtt_cli_ingest_dead_letters_terminals(mqtt_broker, mqtt_prefix, fresh_dsn, tmp_path):
    env = {**os.environ, "HEADEND_DATABASE__DSN": fresh_dsn, "HEADEND_MQTT__HOST": mqtt_broker.host,
           "HEADEND_MQTT__PORT": str(mqtt_broker.port), "HEADEND_MQTT__TOPIC_PREFIX": mqtt_prefix,
           "HEADEND_MQTT__CLIENT_ID": f"cli-{mqtt_prefix}", "HEADEND_DATA_DIR": str(tmp_path)}
    ingest = asyncio.create_task(_run(env, "mqtt", "ingest", "--duration", "4", "--json"))
    await asyncio.sleep(2.0)  # the subprocess starts and subscribes
    async with MqttTerminalFleet(mqtt_broker.host, mqtt_broker.port, 3, prefix=mqtt_prefix, telemetry=False,
                                 event_rate=0, clear_retained=True, faults="malformed=1.0") as fleet:
        await fleet.publish_telemetry(fleet.terminals["LMT00001"])
        fleet.faults.malformed = 0.0
        await fleet.publish_telemetry(fleet.terminals["LMT00002"])
        code, out, err = await ingest
    assert code == 0, err
    counts = json.loads(out)
    assert counts["dead_letters"] == 1 and counts["telemetry"] == 1 and counts["statuses"] >= 3
    code, out, err = await _run(env, "mqtt", "dead-letters", "--json")
    assert code == 0, err
    (dl,) = json.loads(out)
    assert dl["topic"] == f"{mqtt_prefix}/terminal/LMT00001/telemetry" and dl["reason"] in ("json", "schema", "empty")
    code, out, err = await _run(env, "mqtt", "terminals", "--json")
    assert code == 0, err
    assert [t["terminal"] for t in json.loads(out)] == ["LMT00001", "LMT00002", "LMT00003"]


async def test_sim_mqtt_cli(mqtt_broker, mqtt_prefix):
    code, out, err = await _run(dict(os.environ), "sim", "mqtt", "--broker", mqtt_broker.url, "--terminals", "20",
                                "--interval", "0.5", "--duration", "2", "--prefix", mqtt_prefix, "--json")
    assert code == 0, err
    summary = json.loads(out)  # --json: only the JSON document on stdout
    assert summary["terminals"] == 20 and summary["telemetry"] >= 20 and summary["publish_errors"] == 0
