"""Completed work orders feed back into the data: manual reads and meter exchanges; verification due."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from psycopg import Connection
from psycopg.types.json import Jsonb

from mdm.vee import storeio
from mdm.vee.versions import add_version

if TYPE_CHECKING:
    from mdm.workorders import WorkOrder, WorkOrderRef

__all__ = ["apply_completion", "raise_verification_due", "record_exchange"]

LOGGER = logging.getLogger(__name__)


def apply_completion(conn: Connection[Any], order: WorkOrder, outcome: Mapping[str, Any], *, operator: str) -> None:
    """Store what the crew brought back: manual reads (new versions) and a meter exchange."""
    reads = list(outcome.get("reads") or ([outcome["read"]] if "read" in outcome else []))
    for r in reads:
        ts = datetime.fromisoformat(str(r["ts"]))
        add_version(conn, order.meter, str(r["quantity"]), ts, float(r["value"]), method="field_read",
                    reason=f"work order {order.id} ({order.type})", operator=operator)
    if "exchange" in outcome:
        record_exchange(conn, order.meter, dict(outcome["exchange"]), operator=operator, order_id=order.id)


def record_exchange(conn: Connection[Any], old_meter: str, ex: dict[str, Any], *, operator: str,
                    order_id: int | None = None) -> str:
    """Record a meter exchange in the store: close the old meter's installation and open the new one
    (the store's ``exchange_meter()``), so the register series is not continued across it.

    Without an open installation for the old meter (or without the store's tables), the exchange is
    kept in ``work_order_feedback`` for an operator. Returns ``"store"`` or ``"feedback"``.
    """
    ts = datetime.fromisoformat(str(ex["ts"])) if ex.get("ts") else datetime.now().astimezone()
    new_meter = str(ex.get("new_meter") or "")
    sp = None
    if new_meter:
        row = conn.execute("SELECT service_point_id FROM meter_installations WHERE meter = %s AND removed_at IS NULL",
                           (old_meter,)).fetchone()
        sp = row[0] if row else None
    if sp is not None:
        with conn.transaction():
            conn.execute(
                "INSERT INTO meters (address, protocol, channel, terminal, meter_class, ct_ratio, pt_ratio, multiplier,"
                " status) SELECT %s, protocol, channel, terminal, meter_class, ct_ratio, pt_ratio, "
                "coalesce(%s, multiplier), 'in_stock' FROM meters WHERE address = %s ON CONFLICT (address) DO NOTHING",
                (new_meter, ex.get("multiplier"), old_meter))
            conn.execute("SELECT exchange_meter(%s, %s, %s, %s, %s, 'exchange', %s)",
                         (sp, new_meter, ts, ex.get("old_final_read"), ex.get("new_start_read"), order_id))
        LOGGER.info("meter %s exchanged for %s at %s (work order %s)", old_meter, new_meter, ts, order_id)
        return "store"
    conn.execute("INSERT INTO work_order_feedback (order_id, meter, kind, payload, operator) "
                 "VALUES (%s, %s, 'exchange', %s, %s)",
                 (order_id, old_meter, Jsonb({**ex, "ts": ts.isoformat()}), operator))
    LOGGER.warning("meter exchange of %s kept in work_order_feedback: no open installation in the store", old_meter)
    return "feedback"


def raise_verification_due(conn: Connection[Any], today: date) -> list[WorkOrderRef]:
    """Open a periodic verification order for every meter whose cycle (by customer class) has ended."""
    from mdm import workorders as wo
    from mdm.vee.config import load_vee_config

    cfg = load_vee_config()
    meters = [str(r[0]) for r in conn.execute("SELECT address FROM meters").fetchall()]
    info = storeio.meter_info(conn, meters)
    refs = []
    for m, mi in info.items():  # loop over meters with an install date (a daily job, not a VEE rule)
        if mi.installed is None:
            continue
        kva = mi.capacity_kva
        if kva is None:  # the store has no contracted capacity: judge by the meter class
            kva = {"large": wo.LARGE_KVA, "commercial": wo.MEDIUM_KVA}.get(cfg.class_name(mi.meter_class))
        due, when = wo.verification_due(mi.installed, kva, today)
        if due:
            refs.append(wo.raise_work_order_sync(
                conn, m, wo.WorkOrderType.PERIODIC_VERIFICATION,
                {"summary": f"verification due {when.isoformat()} (installed {mi.installed.isoformat()}, class "
                            f"{wo.customer_class(kva)})", "due": when.isoformat(), "key": f"due-{when}"},
                source="schedule"))
    return refs
