"""Field work orders (工作单): a type catalogue, one open order per meter and type, a lifecycle table.

Integrators (remote control, the daemon, VEE) call :func:`raise_work_order` (async, psycopg
``AsyncConnection``) or :func:`raise_work_order_sync` (``Connection``). Both run in the caller's
transaction and do not commit. Raising an order for a meter that already has an open or
dispatched order of that type adds the evidence to it instead of opening a second one; the
priority becomes the more urgent of the two, and an order that keeps collecting evidence is
escalated once (see :func:`merge_priority`).

Lifecycle (one transition table, :data:`TRANSITIONS`)::

    open --dispatch--> dispatched --complete--> completed
      |                    |
      +----cancel----------+----cancel--------> cancelled

Every step is recorded in ``work_order_transitions``. Completion feeds back into the data:
an exchange outcome becomes a meter exchange record, a read outcome becomes a manual read
stored as a new version (see :mod:`mdm.vee.versions`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from protocols.errors import HeadendError

__all__ = [
    "CATALOGUE",
    "TRANSITIONS",
    "InvalidTransition",
    "OrderKind",
    "Status",
    "WorkOrder",
    "WorkOrderRef",
    "WorkOrderType",
    "cancel",
    "complete",
    "dispatch",
    "export_csv",
    "export_json",
    "get_order",
    "list_orders",
    "merge_priority",
    "next_status",
    "publish_orders",
    "raise_work_order",
    "raise_work_order_sync",
    "verification_due",
]

LOGGER = logging.getLogger(__name__)

#: Priority 1 is the most urgent, 5 routine.
MOST_URGENT = 1
ROUTINE = 5
#: An order that has collected this many pieces of evidence is escalated one step, once.
ESCALATE_AFTER = 3
#: Evidence kept per order (oldest dropped first) so a daily re-raise cannot grow a row forever.
MAX_EVIDENCE = 50


class WorkOrderType(StrEnum):
    COMM_INSPECTION = "comm_inspection"
    METER_FAULT = "meter_fault"
    THEFT_INVESTIGATION = "theft_investigation"
    CLOCK_ERROR = "clock_error"
    MANUAL_REREAD = "manual_reread"
    DISCONNECT_VISIT = "disconnect_visit"
    RECONNECT_VISIT = "reconnect_visit"
    PERIODIC_VERIFICATION = "periodic_verification"


@dataclass(frozen=True, slots=True)
class OrderKind:
    title: str
    default_priority: int
    sla_hours: int
    description: str


#: The type catalogue: what the crew is sent to do, how urgent by default, and the time allowed.
CATALOGUE: dict[WorkOrderType, OrderKind] = {
    WorkOrderType.COMM_INSPECTION: OrderKind(
        "communication inspection", 3, 72, "meter or concentrator keeps failing to answer: check link, antenna, PLC"),
    WorkOrderType.METER_FAULT: OrderKind(
        "meter fault / replacement", 2, 72,
        "register or measurement fault (示度下降, 飞走, 停走, 超差): test, replace"),
    WorkOrderType.THEFT_INVESTIGATION: OrderKind(
        "theft investigation", 2, 120, "tamper or loss indicators: inspect installation, seals, wiring (查处窃电)"),
    WorkOrderType.CLOCK_ERROR: OrderKind(
        "clock error", 3, 72, "meter clock beyond tolerance and not corrected remotely: set clock, check battery"),
    WorkOrderType.MANUAL_REREAD: OrderKind(
        "manual re-read", 3, 48, "read the register on site (handheld) where remote reads are missing or doubtful"),
    WorkOrderType.DISCONNECT_VISIT: OrderKind(
        "disconnect field visit", 2, 24, "remote disconnect not confirmed: visit to cut supply or check the relay"),
    WorkOrderType.RECONNECT_VISIT: OrderKind(
        "reconnect field visit", 1, 24, "remote reconnect not confirmed: restore supply on site within the deadline"),
    WorkOrderType.PERIODIC_VERIFICATION: OrderKind(
        "periodic verification / rotation", 4, 720, "verification period ended (周期轮换): test on site or rotate"),
}


class Status(StrEnum):
    OPEN = "open"
    DISPATCHED = "dispatched"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


OPEN_STATES = (Status.OPEN, Status.DISPATCHED)

#: (state, action) -> new state. Anything not in this table is refused.
TRANSITIONS: dict[tuple[Status, str], Status] = {
    (Status.OPEN, "dispatch"): Status.DISPATCHED,
    (Status.OPEN, "cancel"): Status.CANCELLED,
    (Status.DISPATCHED, "complete"): Status.COMPLETED,
    (Status.DISPATCHED, "cancel"): Status.CANCELLED,
    # A crew already on site may finish an order raised meanwhile without a separate dispatch.
    (Status.OPEN, "complete"): Status.COMPLETED,
}


class InvalidTransition(HeadendError):
    """The action is not allowed from the order's current state (or the order does not exist)."""


def next_status(current: Status | str, action: str) -> Status:
    try:
        return TRANSITIONS[(Status(current), action)]
    except (KeyError, ValueError):
        raise InvalidTransition(f"cannot {action} a work order that is {current}") from None


def merge_priority(current: int, new: int, evidence_count: int) -> int:
    """Priority rule for new evidence on an open order.

    The more urgent of the two wins; when the order reaches :data:`ESCALATE_AFTER` pieces of
    evidence it goes one step more urgent (once, at that count). Bounded to 1..5.
    """
    p = min(current, new)
    if evidence_count == ESCALATE_AFTER:
        p -= 1
    return max(MOST_URGENT, min(ROUTINE, p))


@dataclass(frozen=True, slots=True)
class WorkOrderRef:
    id: int
    created: bool
    status: str
    priority: int
    evidence_count: int


@dataclass(frozen=True, slots=True)
class WorkOrder:
    id: int
    meter: str
    type: str
    status: str
    priority: int
    summary: str
    source: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    due_at: datetime | None = None
    dispatched_at: datetime | None = None
    closed_at: datetime | None = None
    assignee: str | None = None
    closed_by: str | None = None
    outcome: dict[str, Any] | None = None
    published_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = (
    "id, meter, type, status, priority, summary, source, evidence, created_at, updated_at, due_at,"
    " dispatched_at, closed_at, assignee, closed_by, outcome, published_at"
)


def _prepare(
    meter: str, type: WorkOrderType | str, evidence: Mapping[str, Any] | None, priority: int | None, source: str
) -> dict[str, Any]:
    try:
        wtype = WorkOrderType(type)
    except ValueError:
        raise InvalidTransition(f"unknown work order type {type!r}; known: {', '.join(CATALOGUE)}") from None
    if not meter:
        raise InvalidTransition("a work order needs a meter")
    kind = CATALOGUE[wtype]
    prio = kind.default_priority if priority is None else int(priority)
    prio = max(MOST_URGENT, min(ROUTINE, prio))
    item = dict(evidence or {})
    item.setdefault("source", source)
    item.setdefault("at", datetime.now().astimezone().isoformat())
    summary = str(item.get("summary") or item.get("explanation") or kind.title)
    return {
        "meter": meter,
        "type": wtype.value,
        "priority": prio,
        "evidence": Jsonb([_jsonable(item)]),
        "source": source,
        "summary": summary[:500],
        "sla": timedelta(hours=kind.sla_hours),
        "escalate": ESCALATE_AFTER,
        "max_evidence": MAX_EVIDENCE,
    }


# One statement: insert, or add the evidence to the open order of that meter and type.
# The priority rule mirrors merge_priority() (kept in SQL so concurrent raisers cannot race).
_DUP = ("(EXCLUDED.evidence->0->>'key' IS NOT NULL AND work_orders.evidence @> "
        "jsonb_build_array(jsonb_build_object('key', EXCLUDED.evidence->0->>'key')))")
_UPSERT = f"""
INSERT INTO work_orders (meter, type, status, priority, evidence, source, summary, due_at)
VALUES (%(meter)s, %(type)s, 'open', %(priority)s, %(evidence)s, %(source)s, %(summary)s, now() + %(sla)s)
ON CONFLICT (meter, type) WHERE status IN ('open', 'dispatched') DO UPDATE SET
    evidence = CASE WHEN {_DUP} THEN work_orders.evidence ELSE (
        SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb) FROM (
            SELECT e, o FROM jsonb_array_elements(work_orders.evidence || EXCLUDED.evidence)
                WITH ORDINALITY AS t(e, o)
            ORDER BY o DESC LIMIT %(max_evidence)s
        ) kept
    ) END,
    priority = CASE WHEN {_DUP} THEN work_orders.priority ELSE GREATEST(1, LEAST(5,
        LEAST(work_orders.priority, EXCLUDED.priority)
        - CASE WHEN jsonb_array_length(work_orders.evidence) + 1 = %(escalate)s THEN 1 ELSE 0 END)) END,
    summary = CASE WHEN EXCLUDED.priority < work_orders.priority THEN EXCLUDED.summary
                   ELSE work_orders.summary END,
    updated_at = CASE WHEN {_DUP} THEN work_orders.updated_at ELSE now() END
RETURNING id, (xmax = 0) AS created, status, priority, jsonb_array_length(evidence) AS n
"""

_LOG_TRANSITION = """
INSERT INTO work_order_transitions (order_id, from_status, to_status, operator, note)
VALUES (%s, %s, %s, %s, %s)
"""


async def raise_work_order(
    conn: AsyncConnection[Any],
    meter: str,
    type: WorkOrderType | str,
    evidence: Mapping[str, Any] | None = None,
    priority: int | None = None,
    source: str = "",
) -> WorkOrderRef:
    """Open a work order, or add ``evidence`` to the open one of that meter and type.

    ``type`` is a :class:`WorkOrderType` value (e.g. ``"disconnect_visit"``); ``priority`` 1..5
    (1 most urgent; default from :data:`CATALOGUE`); ``evidence`` any JSON-able mapping
    (``summary`` or ``explanation`` becomes the order's summary; an item with a ``key`` already
    on the open order is not added again, so a raiser may repeat itself safely). Runs in the caller's
    transaction: commit it (or use an autocommit connection).
    """
    params = _prepare(meter, type, evidence, priority, source)
    async with conn.cursor() as cur:
        await cur.execute(_UPSERT, params)
        row = await cur.fetchone()
        assert row is not None
        if row[1]:
            await cur.execute(_LOG_TRANSITION, (row[0], None, Status.OPEN.value, source, params["summary"]))
    return _ref(row)


def raise_work_order_sync(
    conn: Connection[Any],
    meter: str,
    type: WorkOrderType | str,
    evidence: Mapping[str, Any] | None = None,
    priority: int | None = None,
    source: str = "",
) -> WorkOrderRef:
    """Blocking twin of :func:`raise_work_order` for a psycopg ``Connection``."""
    params = _prepare(meter, type, evidence, priority, source)
    with conn.cursor() as cur:
        cur.execute(_UPSERT, params)
        row = cur.fetchone()
        assert row is not None
        if row[1]:
            cur.execute(_LOG_TRANSITION, (row[0], None, Status.OPEN.value, source, params["summary"]))
    ref = _ref(row)
    LOGGER.info("work order %s %s for meter %s (%s)", ref.id, "opened" if ref.created else "updated", meter, type)
    return ref


def _ref(row: Sequence[Any]) -> WorkOrderRef:
    return WorkOrderRef(id=int(row[0]), created=bool(row[1]), status=str(row[2]), priority=int(row[3]),
                        evidence_count=int(row[4]))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _row_to_order(row: Mapping[str, Any]) -> WorkOrder:
    return WorkOrder(**{k: row[k] for k in WorkOrder.__dataclass_fields__})


def get_order(conn: Connection[Any], order_id: int) -> WorkOrder | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM work_orders WHERE id = %s", (order_id,))
        row = cur.fetchone()
    return _row_to_order(row) if row else None


def list_orders(
    conn: Connection[Any],
    *,
    status: Iterable[str] | None = None,
    meter: str | None = None,
    type: str | None = None,
    limit: int = 1000,
) -> list[WorkOrder]:
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append("status = ANY(%s)")
        params.append(list(status))
    if meter:
        where.append("meter = %s")
        params.append(meter)
    if type:
        where.append("type = %s")
        params.append(type)
    sql = f"SELECT {_COLUMNS} FROM work_orders"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY (status IN ('open','dispatched')) DESC, priority, created_at, id LIMIT %s"
    params.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return [_row_to_order(r) for r in cur.fetchall()]


def _transition(
    conn: Connection[Any], order_id: int, action: str, operator: str, note: str, sets: Mapping[str, Any]
) -> WorkOrder:
    with conn.cursor() as cur:
        cur.execute("SELECT status FROM work_orders WHERE id = %s FOR UPDATE", (order_id,))
        row = cur.fetchone()
        if row is None:
            raise InvalidTransition(f"no work order {order_id}")
        new = next_status(row[0], action)
        assigns = ", ".join(f"{k} = %({k})s" for k in sets)
        params = dict(sets, status=new.value, id=order_id)
        cur.execute(
            f"UPDATE work_orders SET status = %(status)s, updated_at = now()"
            f"{', ' + assigns if assigns else ''} WHERE id = %(id)s",
            params,
        )
        cur.execute(_LOG_TRANSITION, (order_id, row[0], new.value, operator, note))
    order = get_order(conn, order_id)
    assert order is not None
    LOGGER.info("work order %s: %s -> %s by %s", order_id, row[0], new.value, operator or "-")
    return order


def dispatch(conn: Connection[Any], order_id: int, *, assignee: str, operator: str = "", note: str = "") -> WorkOrder:
    return _transition(conn, order_id, "dispatch", operator, note,
                       {"assignee": assignee, "dispatched_at": datetime.now().astimezone()})


def cancel(conn: Connection[Any], order_id: int, *, operator: str, reason: str) -> WorkOrder:
    return _transition(conn, order_id, "cancel", operator, reason,
                       {"closed_at": datetime.now().astimezone(), "closed_by": operator,
                        "outcome": Jsonb({"cancelled": reason})})


def complete(
    conn: Connection[Any],
    order_id: int,
    *,
    operator: str,
    outcome: Mapping[str, Any] | None = None,
    note: str = "",
) -> WorkOrder:
    """Complete an order and feed its outcome back into the data.

    ``outcome`` may hold ``read`` = ``{"quantity", "ts", "value"}`` (stored as a manual read, a new
    version) and/or ``exchange`` = ``{"new_meter", "old_final_read", "new_start_read", "ts", ...}``
    (stored as a meter exchange record); anything else (findings, label such as
    ``{"theft": true}``) is kept on the order.
    """
    out = _jsonable(dict(outcome or {}))
    order = _transition(conn, order_id, "complete", operator, note,
                        {"closed_at": datetime.now().astimezone(), "closed_by": operator, "outcome": Jsonb(out)})
    from mdm.vee import feedback  # local import: feedback depends on the store's tables

    feedback.apply_completion(conn, order, out, operator=operator)
    return order


# --------------------------------------------------------------------------- export / publication


EXPORT_FIELDS = ("id", "meter", "type", "status", "priority", "summary", "source", "created_at", "due_at",
                 "dispatched_at", "closed_at", "assignee", "closed_by", "evidence_count")


def _flat(o: WorkOrder) -> dict[str, Any]:
    d = {k: getattr(o, k) for k in EXPORT_FIELDS if k != "evidence_count"}
    d["evidence_count"] = len(o.evidence)
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()}


def export_csv(orders: Iterable[WorkOrder]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(EXPORT_FIELDS), lineterminator="\n")
    w.writeheader()
    for o in orders:
        w.writerow(_flat(o))
    return buf.getvalue()


def export_json(orders: Iterable[WorkOrder]) -> str:
    return json.dumps([_jsonable(o.to_dict()) for o in orders], ensure_ascii=False, indent=2)


def order_message(o: WorkOrder) -> dict[str, Any]:
    """The payload published for the field-workforce system (one order, with its evidence)."""
    msg: dict[str, Any] = _jsonable(o.to_dict())
    kind = CATALOGUE.get(WorkOrderType(o.type)) if o.type in CATALOGUE else None
    msg["title"] = kind.title if kind else o.type
    return msg


async def publish_orders(
    conn: Connection[Any],
    *,
    host: str,
    port: int = 1883,
    topic_prefix: str = "ami",
    only_unpublished: bool = True,
    username: str | None = None,
    password: str | None = None,
    retain: bool = True,
) -> int:
    """Publish open orders (QoS 1, retained per order unless ``retain=False``) on ``<prefix>/workorders/<type>/<id>``.

    Marks them ``published_at`` once the broker acknowledged. Returns the number published.
    """
    import aiomqtt  # imported here so the CLI's other commands do not pay for it

    sql = f"SELECT {_COLUMNS} FROM work_orders WHERE status IN ('open','dispatched')"
    if only_unpublished:
        sql += " AND (published_at IS NULL OR published_at < updated_at)"
    sql += " ORDER BY priority, id"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql)
        orders = [_row_to_order(r) for r in cur.fetchall()]
    if not orders:
        return 0
    async with aiomqtt.Client(hostname=host, port=port, username=username, password=password,
                              identifier=f"ami-workorders-{id(conn)}") as client:
        for o in orders:
            topic = f"{topic_prefix}/workorders/{o.type}/{o.id}"
            await client.publish(topic, json.dumps(order_message(o), ensure_ascii=False), qos=1, retain=retain)
    with conn.cursor() as cur:
        cur.execute("UPDATE work_orders SET published_at = now() WHERE id = ANY(%s)", ([o.id for o in orders],))
    return len(orders)


# --------------------------------------------------------------------------- periodic verification


#: Verification / rotation cycle in years per customer class (large customers on a shorter cycle).
VERIFICATION_YEARS: dict[str, int] = {"large": 1, "medium": 3, "small": 8}
LARGE_KVA = 315.0
MEDIUM_KVA = 100.0


def customer_class(capacity_kva: float | None) -> str:
    """Large: >= 315 kVA (own transformer), medium: >= 100 kVA, else small (residential)."""
    if capacity_kva is None:
        return "small"
    if capacity_kva >= LARGE_KVA:
        return "large"
    if capacity_kva >= MEDIUM_KVA:
        return "medium"
    return "small"


def verification_due(installed: date, capacity_kva: float | None, today: date,
                     years: Mapping[str, int] | None = None) -> tuple[bool, date]:
    """Is the meter's verification/rotation due on ``today``? Returns (due, due date)."""
    cycle = (years or VERIFICATION_YEARS)[customer_class(capacity_kva)]
    try:
        due = installed.replace(year=installed.year + cycle)
    except ValueError:  # 29 February
        due = installed.replace(year=installed.year + cycle, day=28)
    return today >= due, due
