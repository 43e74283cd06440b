"""Completed work orders feed back into the data: manual reads and meter exchanges; verification due."""

from __future__ import annotations

import importlib
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
    """Record a meter exchange in the store (its API or table when present; else in work_order_feedback)."""
    ts = datetime.fromisoformat(str(ex["ts"])) if ex.get("ts") else datetime.now().astimezone()
    try:
        meters_mod = importlib.import_module("mdm.meters")
        fn = getattr(meters_mod, "record_exchange", None)
    except ImportError:
        fn = None
    if fn is not None:
        fn(conn, old_meter=old_meter, new_meter=ex.get("new_meter"), ts=ts,
           old_final_read=ex.get("old_final_read"), new_start_read=ex.get("new_start_read"),
           multiplier=ex.get("multiplier"))
        return "store"
    conn.execute("INSERT INTO work_order_feedback (order_id, meter, kind, payload, operator) "
                 "VALUES (%s, %s, 'exchange', %s, %s)",
                 (order_id, old_meter, Jsonb({**ex, "ts": ts.isoformat()}), operator))
    LOGGER.warning("meter exchange of %s kept in work_order_feedback: the store has no exchange API", old_meter)
    return "feedback"


def raise_verification_due(conn: Connection[Any], today: date) -> list[WorkOrderRef]:
    """Open a periodic verification order for every meter whose cycle (by customer class) has ended."""
    from mdm import workorders as wo

    cols = storeio.columns(conn, "meters")
    key = next((c for c in ("address", "meter", "id") if c in cols), None)
    if key is None:
        return []
    meters = [str(r[0]) for r in conn.execute(f"SELECT {key}::text FROM meters").fetchall()]  # key: catalogue
    info = storeio.meter_info(conn, meters)
    refs = []
    for m, mi in info.items():  # loop over meters with an install date (a daily job, not a VEE rule)
        if mi.installed is None:
            continue
        due, when = wo.verification_due(mi.installed, mi.capacity_kva, today)
        if due:
            refs.append(wo.raise_work_order_sync(
                conn, m, wo.WorkOrderType.PERIODIC_VERIFICATION,
                {"summary": f"verification due {when.isoformat()} (installed {mi.installed.isoformat()}, class "
                            f"{wo.customer_class(mi.capacity_kva)})", "due": when.isoformat(), "key": f"due-{when}"},
                source="schedule"))
    return refs
