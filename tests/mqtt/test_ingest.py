"""Telemetry, events, status (Last Will) and dead letters through the ingest service into PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import aiomqtt

from simulators.mqtt import MqttTerminalFleet
from simulators.mqtt.fleet import MALFORMED_KINDS, malformed_payload
from tests.mqtt.conftest import ingest_running, query, wait_for


async def test_telemetry_reaches_the_reads_tables(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn):
    settings = settings_for(mqtt_broker, mqtt_prefix)
    async with ingest_running(settings, fresh_dsn) as svc, MqttTerminalFleet(
        mqtt_broker.host, mqtt_broker.port, 3, prefix=mqtt_prefix, telemetry=False, event_rate=0, clear_retained=True
    ) as fleet:
        for term in fleet.terminals.values():
            assert await fleet.publish_telemetry(term)
        await wait_for(lambda: svc.stats.telemetry >= 3, what="3 telemetry messages stored")
        rows = await query(
            fresh_dsn,
            "SELECT meter, quantity, value, unit, source FROM register_reads WHERE quantity = 'voltage.a'"
            " ORDER BY meter")
        assert [r[0] for r in rows] == ["LMT00001", "LMT00002", "LMT00003"]
        assert all(r[3] == "V" and r[4] == "mqtt" and 220 < r[2] < 240 for r in rows)
        energy = await query(fresh_dsn, "SELECT count(*) FROM register_reads WHERE quantity = 'energy.active.import'")
        assert energy[0][0] == 3
        assert svc.stats.dead_letters == 0


async def test_invalid_payloads_become_dead_letters(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn):
    settings = settings_for(mqtt_broker, mqtt_prefix)
    now = datetime.now(UTC)
    bad = {kind: malformed_payload(kind, now) for kind in MALFORMED_KINDS}
    async with ingest_running(settings, fresh_dsn) as svc, aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, identifier=f"{mqtt_prefix}-pub"
    ) as pub:
        for i, payload in enumerate(bad.values()):
            await pub.publish(f"{mqtt_prefix}/terminal/BAD{i}/telemetry", payload, qos=1)
        await pub.publish(f"{mqtt_prefix}/terminal/BAD9/event", b'{"v":1,"ts":"2026-01-01T00:00:00Z"}', qos=1)
        await pub.publish(f"{mqtt_prefix}/terminal/BAD9/status", b'{"v":2,"state":"online"}', qos=1)
        good = json.dumps({"v": 1, "ts": now.isoformat(), "values": {"voltage.a": 231.5}}).encode()
        await pub.publish(f"{mqtt_prefix}/terminal/GOOD1/telemetry", good, qos=1)
        expected = len(bad) + 2
        await wait_for(lambda: svc.stats.dead_letters >= expected, what="dead letters")
        rows = await query(fresh_dsn, "SELECT topic, payload, reason, detail, received_at FROM mqtt_dead_letters"
                                      " ORDER BY id")
        assert len(rows) == expected
        by_topic = {r[0]: r for r in rows}
        for i, payload in enumerate(bad.values()):
            _topic, stored, reason, _detail, received_at = by_topic[f"{mqtt_prefix}/terminal/BAD{i}/telemetry"]
            assert bytes(stored) == payload  # byte for byte
            assert reason in ("json", "schema", "empty")
            assert received_at is not None
        assert "unknown quantity code" in by_topic[f"{mqtt_prefix}/terminal/BAD1/telemetry"][3]
        assert by_topic[f"{mqtt_prefix}/terminal/BAD4/telemetry"][2] == "empty"
        # the valid message between them was stored normally
        await wait_for(lambda: svc.stats.telemetry >= 1, what="the valid message")
        assert (await query(fresh_dsn, "SELECT value FROM register_reads WHERE meter = 'GOOD1'"))[0][0] == 231.5


async def test_events_and_last_will_status(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn):
    settings = settings_for(mqtt_broker, mqtt_prefix)
    async with ingest_running(settings, fresh_dsn) as svc, MqttTerminalFleet(
        mqtt_broker.host, mqtt_broker.port, 2, prefix=mqtt_prefix, telemetry=False, event_rate=0, clear_retained=True
    ) as fleet:
        await wait_for(lambda: svc.stats.statuses >= 2, what="online statuses")
        online = await query(fresh_dsn, "SELECT terminal, state FROM mqtt_terminal_status ORDER BY terminal")
        assert online == [("LMT00001", "online"), ("LMT00002", "online")]
        from protocols.mqtt.schema import Event

        await fleet.publish_event(fleet.terminals["LMT00001"], Event(ts=datetime.now(UTC), event="cover_open",
                                                                      severity=1, detail={"door": 2}))
        await wait_for(lambda: svc.stats.events >= 1, what="event")
        ev = await query(fresh_dsn, "SELECT meter, code, severity, source, detail FROM meter_events")
        assert ev == [("LMT00001", "cover_open", 1, "mqtt", {"door": 2})]
        # an abrupt drop: the broker publishes the Last Will (offline, retained)
        await fleet.drop("LMT00002")
        state_is = "SELECT 1 FROM mqtt_terminal_status WHERE terminal='LMT00002' AND state=%s"
        await wait_for(lambda: query(fresh_dsn, state_is, ("offline",)), what="Last Will offline status")
        await fleet.reconnect("LMT00002")
        await wait_for(lambda: query(fresh_dsn, state_is, ("online",)), what="back online")
        log = await query(fresh_dsn, "SELECT state FROM mqtt_status_log WHERE terminal='LMT00002' ORDER BY id")
        assert [r[0] for r in log] == ["online", "offline", "online"]
        await asyncio.sleep(0)


async def test_dead_letters_survive_a_lost_database_connection(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn,
                                                               pg_server_dsn):
    """The ingest's own connection is killed (pg_terminate_backend on our test database only): the next
    invalid message is still stored after the reconnect, not dropped."""
    import psycopg

    from mdm.db import database_name

    settings = settings_for(mqtt_broker, mqtt_prefix)
    async with ingest_running(settings, fresh_dsn) as svc, aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, identifier=f"{mqtt_prefix}-pub"
    ) as pub:
        topic = f"{mqtt_prefix}/terminal/X1/telemetry"
        await pub.publish(topic, b"first bad", qos=1)
        await wait_for(lambda: svc.stats.dead_letters >= 1, what="first dead letter")
        async with await psycopg.AsyncConnection.connect(pg_server_dsn, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE datname = %s AND pid <> pg_backend_pid()", (database_name(fresh_dsn),))
        await pub.publish(topic, b"second bad", qos=1)
        await wait_for(lambda: svc.stats.dead_letters >= 2, what="second dead letter after the reconnect")
        rows = await query(fresh_dsn, "SELECT payload FROM mqtt_dead_letters ORDER BY id")
        assert [bytes(r[0]) for r in rows] == [b"first bad", b"second bad"]
        assert svc.stats.store_retries >= 1


async def test_response_duplicates_count_each_answer_once(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn):
    """A re-delivered duplicate answer (same bytes, same ts: not acknowledged before a crash) is not counted
    again; a second duplicate answer (the request re-sent once more, a later ts) is."""
    settings = settings_for(mqtt_broker, mqtt_prefix)
    t0 = datetime(2026, 11, 27, 6, 50, tzinfo=UTC)

    def answer(ts: datetime, duplicate: bool) -> bytes:
        return json.dumps({"v": 1, "request_id": "req-dup-1", "status": "accepted", "ts": ts.isoformat(),
                           "values": {"limit.power": 80.0}, "duplicate": duplicate}).encode()

    topic = f"{mqtt_prefix}/terminal/LMT00001/resp"
    sent = [answer(t0, False), answer(t0.replace(second=5), True), answer(t0.replace(second=5), True),
            answer(t0, False), answer(t0.replace(second=9), True)]
    async with ingest_running(settings, fresh_dsn) as svc, aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, identifier=f"{mqtt_prefix}-pub"
    ) as pub:
        for i, payload in enumerate(sent):  # one at a time: each in a batch of its own, as after a restart
            await pub.publish(topic, payload, qos=1)
            await wait_for(lambda n=i: svc.stats.responses > n, what="response stored")
        rows = await query(fresh_dsn, "SELECT status, responded_at, duplicates, cardinality(duplicate_ts)"
                                      " FROM mqtt_command_responses WHERE request_id = 'req-dup-1'")
    assert rows == [("accepted", t0, 2, 2)]


async def test_status_changes_in_one_burst_are_logged_in_order(mqtt_broker, mqtt_prefix, settings_for, fresh_dsn):
    """Statuses are written one statement each in a pipeline: changes within a batch are each logged, the last
    one wins, and a repeated state keeps ``since``."""
    settings = settings_for(mqtt_broker, mqtt_prefix)
    topic = f"{mqtt_prefix}/terminal/ST1/status"
    async with ingest_running(settings, fresh_dsn) as svc, aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, identifier=f"{mqtt_prefix}-pub"
    ) as pub:
        for state in ("online", "offline", "offline", "online"):  # published back to back: one or two batches
            await pub.publish(topic, json.dumps({"v": 1, "state": state}).encode(), qos=1)
        await wait_for(lambda: svc.stats.statuses >= 4, what="4 statuses")
        log = await query(fresh_dsn, "SELECT state FROM mqtt_status_log WHERE terminal = 'ST1' ORDER BY id")
        assert [r[0] for r in log] == ["online", "offline", "online"]
        (state, since, updated), = await query(
            fresh_dsn, "SELECT state, since, updated_at FROM mqtt_terminal_status WHERE terminal = 'ST1'")
        assert state == "online"
        await pub.publish(topic, json.dumps({"v": 1, "state": "online", "firmware": "2"}).encode(), qos=1)
        await wait_for(lambda: svc.stats.statuses >= 5, what="5th status")
        (state2, since2, updated2, fw), = await query(
            fresh_dsn, "SELECT state, since, updated_at, status->>'firmware' FROM mqtt_terminal_status"
                       " WHERE terminal = 'ST1'")
        assert (state2, since2, fw) == ("online", since, "2") and updated2 > updated
        assert len(await query(fresh_dsn, "SELECT 1 FROM mqtt_status_log WHERE terminal = 'ST1'")) == 3
