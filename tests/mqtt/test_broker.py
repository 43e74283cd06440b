"""Broker behaviour: reconnect across a restart of a private broker, shared subscriptions, in-process amqtt."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import aiomqtt
import pytest

from headend.broker import InProcessBroker
from protocols.client import LoadCommand, LoadControlRequest
from protocols.mqtt.client import MqttClient, MqttConnection
from simulators.mqtt import MqttTerminalFleet
from tests.mqtt.conftest import ingest_running, query, wait_for


def _telemetry(v: float) -> bytes:
    return json.dumps({"v": 1, "ts": datetime.now(UTC).isoformat(), "values": {"voltage.a": v}}).encode()


async def test_reconnect_across_broker_restart(private_broker, mqtt_prefix, settings_for, fresh_dsn):
    settings = settings_for(private_broker.info, mqtt_prefix)
    async with ingest_running(settings, fresh_dsn) as svc, MqttTerminalFleet(
        private_broker.host, private_broker.port, 2, prefix=mqtt_prefix, telemetry=False, event_rate=0,
        clear_retained=True,
    ) as fleet:
        assert svc.conn is not None
        for t in fleet.terminals.values():
            assert await fleet.publish_telemetry(t)
        await wait_for(lambda: svc.stats.telemetry >= 2, what="telemetry before the restart")
        connects = svc.conn.connects

        await asyncio.to_thread(private_broker.restart)  # sessions and subscriptions are gone on the broker

        await wait_for(lambda: svc.conn.connected and svc.conn.connects > connects, timeout=20,
                       what="ingest reconnected")
        term_conns = [t.conn for t in fleet.terminals.values()]
        await wait_for(lambda: all(c is not None and c.connected for c in term_conns), timeout=20,
                       what="terminals reconnected")
        for t in fleet.terminals.values():
            assert await fleet.publish_telemetry(t)
        # the re-made subscriptions deliver again, end to end into the database
        await wait_for(lambda: svc.stats.telemetry >= 4, timeout=10, what="telemetry after the restart")
        rows = await query(fresh_dsn, "SELECT meter, count(*) FROM register_reads WHERE quantity='voltage.a'"
                                      " GROUP BY meter ORDER BY meter")
        assert rows == [("LMT00001", 2), ("LMT00002", 2)]
        # commands work again too (the terminals re-subscribed to their command topic)
        async with MqttClient(private_broker.host, private_broker.port, prefix=mqtt_prefix, timeout=3) as client:
            res = await client.load_command(LoadControlRequest("LMT00002", LoadCommand.SET_POWER_LIMIT, "op", 9.0))
            assert res.accepted


async def test_persistent_session_keeps_messages_while_disconnected(private_broker, mqtt_prefix):
    """QoS 1 + clean_session=False + stable client id: what is published while we are away is delivered."""
    got: list[bytes] = []
    topic = f"{mqtt_prefix}/terminal/X1/telemetry"
    conn = MqttConnection(private_broker.host, private_broker.port, client_id=f"{mqtt_prefix}-persist",
                          handler=lambda m: got.append(bytes(m.payload)))  # type: ignore[arg-type]
    conn.subscriptions[topic] = 1
    await conn.wait_connected(5)
    await conn.stop()  # orderly disconnect, the session stays on the broker
    async with aiomqtt.Client(private_broker.host, private_broker.port, identifier=f"{mqtt_prefix}-pub") as pub:
        await pub.publish(topic, b"while-away", qos=1)
    await conn.wait_connected(5)
    try:
        await wait_for(lambda: got == [b"while-away"], what="queued message")
    finally:
        await conn.stop()


async def test_shared_subscription_splits_traffic(mqtt_broker, mqtt_prefix, settings_for, pg_db_factory):
    if mqtt_broker.kind != "mosquitto":
        pytest.skip("amqtt 0.12 does not deliver $share subscriptions")
    group = f"g{mqtt_prefix}"
    dsn1, dsn2 = pg_db_factory(), pg_db_factory()
    s1 = settings_for(mqtt_broker, mqtt_prefix, shared_group=group, client_id=f"{mqtt_prefix}-d1")
    s2 = settings_for(mqtt_broker, mqtt_prefix, shared_group=group, client_id=f"{mqtt_prefix}-d2")
    n = 200
    async with ingest_running(s1, dsn1) as a, ingest_running(s2, dsn2) as b, aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, identifier=f"{mqtt_prefix}-pub", max_inflight_messages=100
    ) as pub:
        await asyncio.sleep(0.2)
        await asyncio.gather(*(pub.publish(f"{mqtt_prefix}/terminal/T{i:04d}/telemetry", _telemetry(220 + i % 10),
                                           qos=1) for i in range(n)))
        await wait_for(lambda: a.stats.telemetry + b.stats.telemetry >= n, what="all messages stored")
        await asyncio.sleep(0.3)
        assert a.stats.telemetry + b.stats.telemetry == n  # each message went to exactly one daemon
        assert a.stats.telemetry > 0 and b.stats.telemetry > 0
        c1 = (await query(dsn1, "SELECT count(*) FROM register_reads"))[0][0]
        c2 = (await query(dsn2, "SELECT count(*) FROM register_reads"))[0][0]
        assert c1 + c2 == n and c1 == a.stats.telemetry


async def test_in_process_broker_when_no_host_is_configured(mqtt_prefix, settings_for, fresh_dsn):
    from tests.fixtures_mqtt import BrokerInfo

    settings = settings_for(BrokerInfo("", 1883, "amqtt"), mqtt_prefix, host=None)
    assert settings.mqtt.host is None
    async with ingest_running(settings, fresh_dsn) as svc:
        assert svc.host == "127.0.0.1" and svc.port != 1883
        async with MqttTerminalFleet(svc.host, svc.port, 2, prefix=mqtt_prefix, telemetry=False,
                                     event_rate=0, clear_retained=True) as fleet:
            for t in fleet.terminals.values():
                await fleet.publish_telemetry(t)
            await wait_for(lambda: svc.stats.telemetry >= 2, what="telemetry via amqtt")
    async with InProcessBroker() as broker:
        assert broker.url.startswith("mqtt://127.0.0.1:")


async def test_ack_many_acknowledges_exactly_the_messages_given(private_broker, mqtt_prefix):
    """Manual acknowledgement in one write: what was acknowledged is not delivered again after a reconnect,
    what was not is (persistent session), and an ack for an earlier connection is refused."""
    got: list[tuple[int, int, int, bytes]] = []
    topic = f"{mqtt_prefix}/terminal/A1/telemetry"
    conn = MqttConnection(private_broker.host, private_broker.port, client_id=f"{mqtt_prefix}-acks", manual_ack=True,
                          handler=lambda m: got.append((conn.connects, m.mid, m.qos, bytes(m.payload))))
    conn.subscriptions[topic] = 1
    await conn.wait_connected(5)
    try:
        async with aiomqtt.Client(private_broker.host, private_broker.port, identifier=f"{mqtt_prefix}-pub") as pub:
            for i in range(10):
                await pub.publish(topic, f"m{i}".encode(), qos=1)
        await wait_for(lambda: len(got) == 10, what="10 messages")
        first = got[0][0]
        assert conn.ack_many(first, [(mid, qos) for _, mid, qos, _ in got[:6]]) == 6
        await asyncio.sleep(0.3)  # the PUBACKs leave before the disconnect
        await conn.stop()
        got.clear()
        await conn.wait_connected(5)
        await wait_for(lambda: len(got) >= 4, what="the unacknowledged messages again")
        await asyncio.sleep(0.3)
        assert sorted(p for *_, p in got) == [b"m6", b"m7", b"m8", b"m9"]
        assert conn.ack_many(first, [(got[0][1], 1)]) == 0  # that connection is gone
        assert conn.ack_many(got[0][0], [(mid, qos) for _, mid, qos, _ in got]) == 4
    finally:
        await conn.stop()


class _SlowSink:
    """The real ingestor, made slow: each submit waits first, as a loaded store would."""

    def __init__(self, ingestor: object, delay: float) -> None:
        self.ingestor, self.delay = ingestor, delay

    async def submit(self, readings: object) -> object:
        await asyncio.sleep(self.delay)
        return await self.ingestor.submit(readings)  # type: ignore[attr-defined]


async def test_backlog_drain_stops_reading_at_max_pending(private_broker, mqtt_prefix, settings_for, fresh_dsn):
    """A queued backlog drained into a slow store: the socket reading pauses at ``max_pending`` messages not
    yet durable (the broker keeps the rest queued) and every message is stored once."""
    from headend.mqtt_ingest import MqttIngestService, run_mqtt_ingest
    from headend.storeglue import open_ingestor

    settings = settings_for(private_broker.info, mqtt_prefix)
    n, bound = 3000, 100
    client_id = f"{settings.mqtt.client_id}-ingest"
    session = MqttConnection(private_broker.host, private_broker.port, client_id=client_id, manual_ack=True)
    session.subscriptions[f"{mqtt_prefix}/terminal/+/telemetry"] = 1
    await session.wait_connected(5)
    await session.stop()  # the persistent session queues the backlog
    async with aiomqtt.Client(private_broker.host, private_broker.port, identifier=f"{mqtt_prefix}-pub",
                              max_inflight_messages=200) as pub:
        await asyncio.gather(*(pub.publish(f"{mqtt_prefix}/terminal/T{i:05d}/telemetry", _telemetry(230.0), qos=1)
                               for i in range(n)))
    ingestor = await open_ingestor(settings, fresh_dsn)
    service = MqttIngestService(settings.mqtt, _SlowSink(ingestor, 0.02), fresh_dsn, max_pending=bound)
    stop = asyncio.Event()
    task = asyncio.create_task(run_mqtt_ingest(settings, ingestor, stop=stop, service=service))
    try:
        await wait_for(lambda: service.stats.telemetry >= n, timeout=60, what="the backlog stored")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await ingestor.aclose()
    assert service.stats.read_pauses >= 1  # the broker sent more than the bound would allow
    assert service.stats.pending_peak <= bound + 1, service.stats.pending_peak
    assert service.stats.telemetry == n and service.stats.acked == n
    rows = await query(fresh_dsn, "SELECT count(*), count(DISTINCT meter) FROM register_reads WHERE source = 'mqtt'")
    assert rows[0] == (n, n)


class _StalledSink:
    """The real ingestor behind a gate: while it is shut, nothing becomes durable (a database outage
    that the ingestor would wait out)."""

    def __init__(self, ingestor: object) -> None:
        self.ingestor = ingestor
        self.open = asyncio.Event()

    async def submit(self, readings: object) -> object:
        await self.open.wait()
        return await self.ingestor.submit(readings)  # type: ignore[attr-defined]


async def test_pause_longer_than_keepalive_loses_and_doubles_nothing(private_broker, mqtt_prefix, settings_for,
                                                                      fresh_dsn):
    """Back-pressure holds the socket unread for several keepalive periods: the broker drops the session's
    connection, the ingest reconnects, the broker re-sends what was never acknowledged, and every message
    is stored exactly once."""
    from headend.mqtt_ingest import MqttIngestService, run_mqtt_ingest
    from headend.storeglue import open_ingestor

    settings = settings_for(private_broker.info, mqtt_prefix, keepalive=1)
    n, bound = 400, 10  # below the broker's in-flight window (20), so the bound is reached
    ingestor = await open_ingestor(settings, fresh_dsn)
    sink = _StalledSink(ingestor)
    service = MqttIngestService(settings.mqtt, sink, fresh_dsn, max_pending=bound)
    stop = asyncio.Event()
    task = asyncio.create_task(run_mqtt_ingest(settings, ingestor, stop=stop, service=service))
    try:
        await wait_for(lambda: service.conn is not None and service.conn.connected, timeout=10, what="connected")
        assert service.conn is not None
        first = service.conn.connects
        async with aiomqtt.Client(private_broker.host, private_broker.port, identifier=f"{mqtt_prefix}-pub",
                                  max_inflight_messages=200) as pub:
            await asyncio.gather(*(pub.publish(f"{mqtt_prefix}/terminal/T{i:05d}/telemetry", _telemetry(230.0),
                                               qos=1) for i in range(n)))
        await wait_for(lambda: service.conn is not None and service.conn.reading_paused, timeout=10,
                       what="reading paused at max_pending")
        await asyncio.sleep(4.0)  # > 1.5 x keepalive with the socket unread and nothing acknowledged
        sink.open.set()
        await wait_for(lambda: service.stats.acked >= n, timeout=60, what="every message acknowledged")
    finally:
        sink.open.set()
        stop.set()
        await asyncio.wait_for(task, 15)
        await ingestor.aclose()
    assert service.conn.connects > first, "the pause should have outlived the connection"
    rows = await query(fresh_dsn, "SELECT count(*), count(DISTINCT meter) FROM register_reads WHERE source = 'mqtt'")
    assert rows[0] == (n, n)
