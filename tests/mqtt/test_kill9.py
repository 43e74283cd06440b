"""A kill -9 of the MQTT ingest loses nothing and its re-delivery counts nothing twice.

Real processes: a private Mosquitto, ``headend mqtt ingest`` as a subprocess on a fresh database,
a QoS 1 publisher. The ingest is SIGKILLed while the stream is being written, restarted, and the
database must then hold exactly the published telemetry (count and a checksum over the values),
events and dead letters. With acknowledge-on-receipt (paho's default) this loses the batches that
were received but not yet committed at the kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt

from tests.mqtt.conftest import query

CLI = (sys.executable, "-c", "from headend.cli import main; main()")
N = 3000  # telemetry messages (2 readings each)
EVERY = 100  # every EVERY-th message is also an event and a dead letter
RATE = 1000.0  # published messages per second (the stream lasts ~3 s)
BASE = datetime(2026, 11, 1, tzinfo=UTC)


def _messages(prefix: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(N):
        term = f"K{i % 10:05d}"
        ts = (BASE + timedelta(seconds=i)).isoformat()
        values = {"energy.active.import": i * 1.5, "voltage.a": 200.0 + i % 50}
        out.append((f"{prefix}/terminal/{term}/telemetry", json.dumps({"v": 1, "ts": ts, "values": values}).encode()))
        if i % EVERY == 0:
            event = {"v": 1, "ts": ts, "event": "cover_open", "severity": 2, "ended": None, "detail": {"i": i}}
            out.append((f"{prefix}/terminal/{term}/event", json.dumps(event).encode()))
            out.append((f"{prefix}/terminal/{term}/telemetry", f"not json {i}".encode()))
    return out


def _expected() -> tuple[int, float]:
    readings = 2 * N
    checksum = sum(i * 1.5 + 200.0 + i % 50 for i in range(N))
    return readings, checksum


async def _counts(dsn: str) -> tuple[int, float, int, int, int]:
    (row,) = await query(dsn, """
        SELECT (SELECT count(*) FROM register_reads WHERE source = 'mqtt'),
               (SELECT coalesce(sum(value), 0) FROM register_reads WHERE source = 'mqtt'),
               (SELECT coalesce(max(version), 1) FROM register_reads WHERE source = 'mqtt'),
               (SELECT count(*) FROM meter_events WHERE source = 'mqtt'),
               (SELECT count(*) FROM mqtt_dead_letters)""")
    return int(row[0]), float(row[1]), int(row[2]), int(row[3]), int(row[4])


async def test_kill9_mid_stream_loses_nothing_and_double_counts_nothing(private_broker, mqtt_prefix, fresh_dsn,
                                                                          tmp_path: Path):
    started = time.monotonic()
    host, port = private_broker.host, private_broker.port
    client_id = f"k9-{mqtt_prefix}"
    env = {**os.environ, "HEADEND_DATABASE__DSN": fresh_dsn, "HEADEND_MQTT__HOST": host,
           "HEADEND_MQTT__PORT": str(port), "HEADEND_MQTT__TOPIC_PREFIX": mqtt_prefix,
           "HEADEND_MQTT__CLIENT_ID": client_id, "HEADEND_DATA_DIR": str(tmp_path / "data"),
           "HEADEND_LOG_LEVEL": "WARNING"}
    # create the ingest's persistent session first, so the broker queues everything from the first message
    # on, however long the subprocess takes to start (the ingest re-subscribes the same filters)
    async with aiomqtt.Client(host, port, identifier=f"{client_id}-ingest", clean_session=False) as c:
        for channel in ("telemetry", "event", "status", "resp"):
            await c.subscribe(f"{mqtt_prefix}/terminal/+/{channel}", qos=1)

    def spawn() -> asyncio.subprocess.Process:
        return asyncio.create_subprocess_exec(  # type: ignore[return-value]
            *CLI, "mqtt", "ingest", "--json", env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    messages = _messages(mqtt_prefix)

    async def publish() -> None:
        async with aiomqtt.Client(host, port, identifier=f"{mqtt_prefix}-pub", max_inflight_messages=100) as pub:
            t0 = time.monotonic()
            for k, (topic, payload) in enumerate(messages):
                await pub.publish(topic, payload, qos=1)  # returns on the broker's PUBACK
                ahead = k / RATE - (time.monotonic() - t0)
                if ahead > 0.005:
                    await asyncio.sleep(ahead)

    ingest = await spawn()
    try:
        publisher = asyncio.create_task(publish())
        # kill while the stream is flowing and batches are being written
        deadline = time.monotonic() + 15
        while (await _counts(fresh_dsn))[0] < N // 3:  # a third of the readings stored
            assert time.monotonic() < deadline, "the ingest stored nothing"
            assert ingest.returncode is None, "the ingest process ended by itself"
            await asyncio.sleep(0.02)
        ingest.send_signal(signal.SIGKILL)
        await ingest.wait()
        at_kill = await _counts(fresh_dsn)
        assert not publisher.done(), "the stream ended before the kill: raise N or lower RATE"
        await asyncio.sleep(0.3)
        ingest = await spawn()
        await asyncio.wait_for(publisher, 20)
        readings, checksum = _expected()
        deadline = time.monotonic() + 15
        got = await _counts(fresh_dsn)
        while got[0] < readings and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            got = await _counts(fresh_dsn)
        await asyncio.sleep(0.5)  # anything re-delivered late must not add anything
        got = await _counts(fresh_dsn)
    finally:
        if ingest.returncode is None:
            ingest.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(ingest.wait(), 10)
            except TimeoutError:
                ingest.kill()
                await ingest.wait()
    count, total, version, events, dead = got
    lost = readings - count
    assert (lost, count) == (0, readings), f"{lost} readings lost (killed at {at_kill[0]} stored)"
    assert abs(total - checksum) < 1e-6 * checksum, (total, checksum)
    assert version == 1, "a re-delivered reading was stored as a new version"
    assert events == N // EVERY, "events lost or duplicated"
    assert dead == N // EVERY, "dead letters lost or duplicated"
    assert time.monotonic() - started < 30


async def test_redelivered_event_and_dead_letter_are_stored_once(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn):
    """What a re-delivery after a crash looks like to the ingest: the same bytes on the same topic again."""
    from tests.mqtt.conftest import ingest_running, wait_for

    settings = settings_for(mqtt_broker, mqtt_prefix)
    event = json.dumps({"v": 1, "ts": BASE.isoformat(), "event": "cover_open", "severity": 2}).encode()
    sent = [(f"{mqtt_prefix}/terminal/R1/event", event), (f"{mqtt_prefix}/terminal/R1/telemetry", b"not json")]
    async with ingest_running(settings, fresh_dsn) as svc, aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, identifier=f"{mqtt_prefix}-pub"
    ) as pub:
        for _ in range(2):
            for topic, payload in sent:
                await pub.publish(topic, payload, qos=1)
        await wait_for(lambda: svc.stats.acked >= 4, what="4 messages stored and acknowledged")
        assert svc.stats.received == 4
    (row,) = await query(fresh_dsn, "SELECT (SELECT count(*) FROM meter_events WHERE meter = 'R1'),"
                                    " (SELECT count(*) FROM mqtt_dead_letters),"
                                    " (SELECT count(last_received_at) FROM mqtt_dead_letters)")
    assert row == (1, 1, 1)
