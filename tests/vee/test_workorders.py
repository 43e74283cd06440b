"""Work orders: dedup per meter and type, priority rules, lifecycle table, export, MQTT publication."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest

from mdm import workorders as wo
from tests.vee.helpers import install


def meter() -> str:
    return uuid.uuid4().hex[:12]


def test_one_open_order_per_meter_and_type_collects_evidence(conn: psycopg.Connection) -> None:
    m = meter()
    a = wo.raise_work_order_sync(conn, m, "meter_fault", {"summary": "register decreased"}, source="vee")
    b = wo.raise_work_order_sync(conn, m, "meter_fault", {"summary": "stopped under load"}, source="vee")
    c = wo.raise_work_order_sync(conn, m, "clock_error", {"summary": "clock +400 s"}, source="vee")
    assert a.created and not b.created and c.created
    assert a.id == b.id != c.id
    assert b.evidence_count == 2
    o = wo.get_order(conn, a.id)
    assert o is not None and [e["summary"] for e in o.evidence] == ["register decreased", "stopped under load"]
    # a closed order does not absorb new evidence: a new one opens
    wo.cancel(conn, a.id, operator="op1", reason="duplicate of field job")
    d = wo.raise_work_order_sync(conn, m, "meter_fault", {"summary": "again"}, source="vee")
    assert d.created and d.id != a.id


def test_priority_rules() -> None:
    assert wo.merge_priority(3, 1, 2) == 1  # more urgent evidence wins
    assert wo.merge_priority(2, 4, 2) == 2
    assert wo.merge_priority(3, 3, wo.ESCALATE_AFTER) == 2  # escalated once at the threshold
    assert wo.merge_priority(3, 3, wo.ESCALATE_AFTER + 1) == 3
    assert wo.merge_priority(1, 1, wo.ESCALATE_AFTER) == 1


def test_priority_in_the_database_matches(conn: psycopg.Connection) -> None:
    m = meter()
    refs = [wo.raise_work_order_sync(conn, m, "comm_inspection", {"n": i}, source="daemon") for i in range(4)]
    assert [r.priority for r in refs] == [3, 3, 2, 2]  # default 3, escalated at the 3rd piece of evidence
    urgent = wo.raise_work_order_sync(conn, m, "comm_inspection", {"n": 9}, priority=1, source="op")
    assert urgent.priority == 1


def test_async_api_for_integrators(vee_dsn: str) -> None:
    m = meter()

    async def go() -> tuple[wo.WorkOrderRef, wo.WorkOrderRef]:
        async with await psycopg.AsyncConnection.connect(vee_dsn) as c:
            r1 = await wo.raise_work_order(c, m, wo.WorkOrderType.DISCONNECT_VISIT,
                                           {"summary": "read-back mismatch", "command_id": 7}, source="control")
            r2 = await wo.raise_work_order(c, m, "disconnect_visit", {"summary": "retry failed"}, source="control")
            await c.commit()
            return r1, r2

    r1, r2 = asyncio.run(go())
    assert r1.created and not r2.created and r1.priority == 2


def test_unknown_type_is_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(wo.InvalidTransition, match="unknown work order type"):
        wo.raise_work_order_sync(conn, meter(), "paint_the_meter", {})


def test_lifecycle_transition_table(conn: psycopg.Connection) -> None:
    ref = wo.raise_work_order_sync(conn, meter(), "manual_reread", {"summary": "3 days without reads"}, source="vee")
    with pytest.raises(wo.InvalidTransition):
        wo.cancel(conn, 999_999_999, operator="x", reason="y")
    o = wo.dispatch(conn, ref.id, assignee="crew-7", operator="dispatcher")
    assert o.status == "dispatched" and o.assignee == "crew-7"
    with pytest.raises(wo.InvalidTransition, match="cannot dispatch"):
        wo.dispatch(conn, ref.id, assignee="crew-8")
    o = wo.complete(conn, ref.id, operator="crew-7", outcome={"finding": "antenna replaced"})
    assert o.status == "completed" and o.outcome == {"finding": "antenna replaced"} and o.closed_by == "crew-7"
    with pytest.raises(wo.InvalidTransition, match="cannot cancel a work order that is completed"):
        wo.cancel(conn, ref.id, operator="x", reason="late")
    steps = conn.execute("SELECT from_status, to_status FROM work_order_transitions WHERE order_id = %s ORDER BY id",
                         (ref.id,)).fetchall()
    assert steps == [(None, "open"), ("open", "dispatched"), ("dispatched", "completed")]
    assert wo.next_status("open", "cancel") == wo.Status.CANCELLED
    with pytest.raises(wo.InvalidTransition):
        wo.next_status("cancelled", "dispatch")


def test_export_csv_and_json(conn: psycopg.Connection) -> None:
    m = meter()
    wo.raise_work_order_sync(conn, m, "theft_investigation", {"summary": "cover opened, drop 70 %"}, source="anoms")
    orders = wo.list_orders(conn, meter=m)
    rows = list(csv.DictReader(io.StringIO(wo.export_csv(orders))))
    assert rows[0]["meter"] == m and rows[0]["type"] == "theft_investigation" and rows[0]["evidence_count"] == "1"
    data = json.loads(wo.export_json(orders))
    assert data[0]["evidence"][0]["summary"] == "cover opened, drop 70 %"


def test_verification_due_by_customer_class() -> None:
    installed = date(2024, 5, 1)
    assert wo.customer_class(400) == "large" and wo.customer_class(315) == "large"
    assert wo.customer_class(200) == "medium" and wo.customer_class(None) == "small"
    assert wo.verification_due(installed, 400, date(2025, 5, 1)) == (True, date(2025, 5, 1))
    assert wo.verification_due(installed, 10, date(2025, 5, 1))[0] is False
    assert wo.verification_due(installed, 10, date(2032, 5, 1))[0] is True
    assert wo.verification_due(date(2024, 2, 29), 400, date(2025, 3, 1)) == (True, date(2025, 2, 28))


def test_publish_on_mqtt(conn: psycopg.Connection, mqtt_broker: Any, mqtt_prefix: str) -> None:
    import aiomqtt

    host, port = mqtt_broker.host, mqtt_broker.port
    m = meter()
    ref = wo.raise_work_order_sync(conn, m, "theft_investigation", {"summary": "magnet"}, source="anoms")
    prefix = mqtt_prefix

    async def go() -> dict[str, object]:
        got: dict[str, object] = {}
        async with aiomqtt.Client(hostname=host, port=port, identifier=f"sub-{uuid.uuid4().hex[:8]}") as sub:
            await sub.subscribe(f"{prefix}/workorders/#", qos=1)
            n = await wo.publish_orders(conn, host=host, port=port, topic_prefix=prefix, retain=False)
            assert n >= 1
            async with asyncio.timeout(10):
                async for msg in sub.messages:
                    body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    if body["id"] == ref.id:
                        got = {"topic": str(msg.topic), **body}
                        break
        return got

    got = asyncio.run(go())
    assert got["topic"] == f"{prefix}/workorders/theft_investigation/{ref.id}"
    assert got["meter"] == m and got["title"] == "theft investigation"
    o = wo.get_order(conn, ref.id)
    assert o is not None and o.published_at is not None
    # nothing new: nothing republished for this order
    left = conn.execute("SELECT count(*) FROM work_orders WHERE id = %s AND published_at < updated_at",
                        (ref.id,)).fetchone()
    assert left == (0,)


def test_evidence_with_a_key_is_idempotent(conn: psycopg.Connection) -> None:
    m = meter()
    a = wo.raise_work_order_sync(conn, m, "periodic_verification", {"summary": "due", "key": "due-2026-01-01"})
    b = wo.raise_work_order_sync(conn, m, "periodic_verification", {"summary": "due", "key": "due-2026-01-01"})
    c = wo.raise_work_order_sync(conn, m, "periodic_verification", {"summary": "due", "key": "due-2026-01-01"})
    assert a.id == b.id == c.id and c.evidence_count == 1 and c.priority == a.priority


def test_completion_feeds_back_read_and_exchange(conn: psycopg.Connection) -> None:
    m = meter()
    sp = install(conn, m, meter_class="single_phase")
    ref = wo.raise_work_order_sync(conn, m, "meter_fault", {"summary": "register decreased"}, source="vee")
    wo.dispatch(conn, ref.id, assignee="crew-1")
    outcome = {"reads": [{"quantity": "energy.active.import", "value": 1234.5, "ts": "2026-03-10T09:00:00+08:00"}],
               "exchange": {"new_meter": "NEW" + m, "old_final_read": 1234.5, "new_start_read": 0.0,
                            "ts": "2026-03-10T09:30:00+08:00"}}
    wo.complete(conn, ref.id, operator="crew-1", outcome=outcome)
    v = conn.execute("SELECT value, quality, method, operator, reason FROM read_versions WHERE meter = %s",
                     (m,)).fetchall()
    assert v == [(1234.5, 2, "field_read", "crew-1", f"work order {ref.id} (meter_fault)")]
    # the exchange closed the old installation and opened the new meter's at the same service point
    ex = conn.execute("SELECT old_meter, new_meter, old_final_read, new_start_read, service_point_id, work_order_id "
                      "FROM meter_exchanges WHERE old_meter = %s", (m,)).fetchall()
    assert ex == [(m, "NEW" + m, 1234.5, 0.0, sp, ref.id)]
    # without an installation the exchange is kept for an operator
    m2 = meter()
    ref2 = wo.raise_work_order_sync(conn, m2, "meter_fault", {"summary": "x"}, source="vee")
    wo.complete(conn, ref2.id, operator="crew-1", outcome={"exchange": {"new_meter": "N" + m2}})
    fb = conn.execute("SELECT kind FROM work_order_feedback WHERE meter = %s", (m2,)).fetchall()
    assert fb == [("exchange",)]


def test_verification_due_raises_orders_by_class(conn: psycopg.Connection) -> None:
    from mdm.vee.feedback import raise_verification_due

    big, small = meter(), meter()
    install(conn, big, meter_class="ct", installed_at=datetime(2024, 1, 10, tzinfo=UTC))
    install(conn, small, meter_class="single_phase", installed_at=datetime(2024, 1, 10, tzinfo=UTC))
    refs = raise_verification_due(conn, date(2025, 6, 1))
    got = {r[0] for r in conn.execute("SELECT meter FROM work_orders WHERE type = 'periodic_verification' AND "
                                      "id = ANY(%s)", ([r.id for r in refs],)).fetchall()}
    assert big in got and small not in got
    again = raise_verification_due(conn, date(2025, 6, 2))
    assert not any(r.created for r in again if r.id in {x.id for x in refs})
