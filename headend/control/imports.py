"""Billing inputs: arrears (with notices), payments and clearances, exemptions. CSV or SQL table.

Parsing is pure (:func:`parse_arrears` ... return rows and per-line problems); applying
writes in one transaction and appends an audit row per file. Columns (header names; extra
columns are ignored; times are ISO 8601, naive times are in the utility's zone):

- arrears: ``account, amount, days_overdue`` [``meter, utility, customer_class, as_of,
  notice_sent, notice_delivered, notice_method, renotice_sent, renotice_delivered, renotice_method``]
- payments: ``reference, account, amount, paid_at`` [``clears``] (``clears`` true = billing
  says the arrears are cleared, e.g. a write-off or an agreed plan)
- exemptions: ``account, kind`` [``since, until, note``]

Importing the same file twice changes nothing (payments by ``reference``, notices and
exemptions by their natural keys, arrears replaced per account).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, sql

from headend.control import audit

__all__ = [
    "ArrearsRow",
    "ExemptionRow",
    "ImportResult",
    "PaymentRow",
    "apply_arrears",
    "apply_exemptions",
    "apply_payments",
    "parse_arrears",
    "parse_exemptions",
    "parse_payments",
    "read_table",
]


@dataclass(frozen=True, slots=True)
class NoticeRow:
    kind: str
    sent_at: datetime | None
    delivered_at: datetime | None
    method: str


@dataclass(frozen=True, slots=True)
class ArrearsRow:
    account: str
    amount: Decimal
    days_overdue: int
    meter: str | None = None
    utility: str | None = None
    customer_class: str | None = None
    as_of: datetime | None = None
    notices: tuple[NoticeRow, ...] = ()


@dataclass(frozen=True, slots=True)
class PaymentRow:
    reference: str
    account: str
    amount: Decimal
    paid_at: datetime
    clears: bool = False


@dataclass(frozen=True, slots=True)
class ExemptionRow:
    account: str
    kind: str
    since: datetime | None
    until: datetime | None
    note: str = ""


@dataclass(slots=True)
class ImportResult:
    kind: str
    rows: int = 0
    applied: int = 0
    rejected: list[str] = field(default_factory=list)
    cleared_accounts: list[str] = field(default_factory=list)
    cancelled_commands: list[int] = field(default_factory=list)
    reconnects: list[int] = field(default_factory=list)
    reconnect_outcomes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.rows, "applied": self.applied, "rejected": self.rejected,
                "cleared_accounts": self.cleared_accounts, "cancelled_commands": self.cancelled_commands,
                "reconnect_commands": self.reconnects, "reconnect_outcomes": self.reconnect_outcomes}


class _Bad(ValueError):
    pass


def _s(row: Mapping[str, Any], key: str) -> str:
    v = row.get(key)
    return "" if v is None else str(v).strip()


def _req(row: Mapping[str, Any], key: str) -> str:
    v = _s(row, key)
    if not v:
        raise _Bad(f"missing {key}")
    return v


def _dec(row: Mapping[str, Any], key: str, required: bool = True) -> Decimal:
    v = _req(row, key) if required else (_s(row, key) or "0")
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise _Bad(f"{key}: not a number: {v!r}") from None
    if not d.is_finite():
        raise _Bad(f"{key}: not a finite number")
    return d


def _ts(row: Mapping[str, Any], key: str, tz: tzinfo) -> datetime | None:
    v = row.get(key)
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=tz)
    s = _s(row, key)
    if not s:
        return None
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise _Bad(f"{key}: bad time {s!r} (ISO 8601 expected)") from None
    return t if t.tzinfo else t.replace(tzinfo=tz)


def _bool(row: Mapping[str, Any], key: str) -> bool:
    v = row.get(key)
    if isinstance(v, bool):
        return v
    return _s(row, key).lower() in ("1", "true", "yes", "y", "t")


def _rows(source: Path | str | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(source, Path):
        with source.open(newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    if isinstance(source, str):
        return list(csv.DictReader(io.StringIO(source)))
    return list(source)


def _parse(source: Path | str | Iterable[Mapping[str, Any]], one: Any) -> tuple[list[Any], list[str]]:
    out: list[Any] = []
    problems: list[str] = []
    for i, row in enumerate(_rows(source), start=2):
        try:
            out.append(one(row))
        except _Bad as exc:
            problems.append(f"line {i}: {exc}")
    return out, problems


def parse_arrears(source: Path | str | Iterable[Mapping[str, Any]], tz: tzinfo) -> tuple[list[ArrearsRow], list[str]]:
    def one(r: Mapping[str, Any]) -> ArrearsRow:
        amount = _dec(r, "amount")
        try:
            days = int(_req(r, "days_overdue"))
        except ValueError:
            raise _Bad("days_overdue: not an integer") from None
        notices = []
        for kind in ("notice", "renotice"):
            sent, delivered = _ts(r, f"{kind}_sent", tz), _ts(r, f"{kind}_delivered", tz)
            if sent or delivered:
                notices.append(NoticeRow(kind, sent, delivered, _s(r, f"{kind}_method")))
        return ArrearsRow(_req(r, "account"), amount, days, _s(r, "meter") or None, _s(r, "utility") or None,
                          _s(r, "customer_class") or None, _ts(r, "as_of", tz), tuple(notices))

    return _parse(source, one)


def parse_payments(source: Path | str | Iterable[Mapping[str, Any]], tz: tzinfo) -> tuple[list[PaymentRow], list[str]]:
    def one(r: Mapping[str, Any]) -> PaymentRow:
        paid = _ts(r, "paid_at", tz)
        if paid is None:
            raise _Bad("missing paid_at")
        return PaymentRow(_req(r, "reference"), _req(r, "account"), _dec(r, "amount", required=False), paid,
                          _bool(r, "clears"))

    return _parse(source, one)


def parse_exemptions(
    source: Path | str | Iterable[Mapping[str, Any]], tz: tzinfo
) -> tuple[list[ExemptionRow], list[str]]:
    def one(r: Mapping[str, Any]) -> ExemptionRow:
        return ExemptionRow(_req(r, "account"), _req(r, "kind").lower(), _ts(r, "since", tz), _ts(r, "until", tz),
                            _s(r, "note"))

    return _parse(source, one)


async def read_table(conn: AsyncConnection[Any], table: str) -> list[dict[str, Any]]:
    """All rows of a billing table or view (``schema.table``), as dicts, for the parsers."""
    ident = sql.Identifier(*table.split(".", 1))
    cur = await conn.execute(sql.SQL("SELECT * FROM {}").format(ident))
    cols = [d.name for d in cur.description or []]
    return [dict(zip(cols, row, strict=True)) for row in await cur.fetchall()]


async def apply_arrears(conn: AsyncConnection[Any], rows: Sequence[ArrearsRow], *, operator: str,
                        source: str = "") -> int:
    """Upsert arrears, account links and notices in the caller's transaction."""
    n = 0
    for r in rows:
        if r.meter or r.utility or r.customer_class:
            await conn.execute(
                """INSERT INTO control_accounts (account, meter, utility, customer_class)
                   VALUES (%s, %s, coalesce(%s, 'default'), coalesce(%s, ''))
                   ON CONFLICT (account) DO UPDATE SET meter = coalesce(EXCLUDED.meter, control_accounts.meter),
                     utility = coalesce(%s, control_accounts.utility),
                     customer_class = coalesce(%s, control_accounts.customer_class), updated_at = now()""",
                (r.account, r.meter, r.utility, r.customer_class, r.utility, r.customer_class))
        await conn.execute(
            """INSERT INTO arrears (account, amount, days_overdue, as_of, imported_by, source)
               VALUES (%s, %s, %s, coalesce(%s, now()), %s, %s)
               ON CONFLICT (account) DO UPDATE SET amount = EXCLUDED.amount, days_overdue = EXCLUDED.days_overdue,
                 as_of = EXCLUDED.as_of, imported_by = EXCLUDED.imported_by, imported_at = now(),
                 source = EXCLUDED.source,
                 cleared_at = CASE WHEN EXCLUDED.amount > 0 AND EXCLUDED.as_of > coalesce(arrears.cleared_at,
                                   '-infinity') THEN NULL ELSE arrears.cleared_at END""",
            (r.account, r.amount, r.days_overdue, r.as_of, operator, source))
        for nt in r.notices:
            await conn.execute(
                """INSERT INTO notices (account, kind, sent_at, delivered_at, method) VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT DO NOTHING""", (r.account, nt.kind, nt.sent_at, nt.delivered_at, nt.method))
        n += 1
    await audit.record(conn, action="import.arrears", operator=operator, reason=source,
                       details={"rows": len(rows)})
    return n


async def apply_exemptions(conn: AsyncConnection[Any], rows: Sequence[ExemptionRow], *, operator: str,
                           source: str = "") -> int:
    n = 0
    for r in rows:
        cur = await conn.execute(
            """INSERT INTO exemptions (account, kind, since, until, note, imported_by)
               VALUES (%s, %s, coalesce(%s, '-infinity'::timestamptz), %s, %s, %s)
               ON CONFLICT (account, kind, since) DO UPDATE SET until = EXCLUDED.until, note = EXCLUDED.note""",
            (r.account, r.kind, r.since, r.until, r.note, operator))
        n += cur.rowcount
    await audit.record(conn, action="import.exemptions", operator=operator, reason=source,
                       details={"rows": len(rows)})
    return n


async def apply_payments(conn: AsyncConnection[Any], rows: Sequence[PaymentRow], *, operator: str,
                         source: str = "") -> tuple[int, list[str]]:
    """Insert payments (new references only) and mark arrears cleared; return (new rows, cleared accounts).

    An account is cleared when a payment says so (``clears``) or when the payments that are news
    to the current arrears figure cover the amount: paid on or after its ``as_of``, or imported
    after it (a payment made before the arrears file was imported but after billing's snapshot
    must not be lost: a missed reconnection is the worse error).
    """
    n = 0
    touched: set[str] = set()
    for r in rows:
        cur = await conn.execute(
            """INSERT INTO payments (reference, account, amount, paid_at, clears, imported_by)
               VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (reference) DO NOTHING""",
            (r.reference, r.account, r.amount, r.paid_at, r.clears, operator))
        if cur.rowcount:
            n += 1
            touched.add(r.account)
    cleared: list[str] = []
    for account in sorted(touched):
        cur = await conn.execute(
            """SELECT a.amount, a.as_of, a.cleared_at,
                      (SELECT coalesce(sum(p.amount), 0) FROM payments p
                        WHERE p.account = a.account
                          AND (p.paid_at >= a.as_of OR p.imported_at >= a.imported_at)) AS paid,
                      (SELECT max(p.paid_at) FROM payments p WHERE p.account = a.account) AS last_paid,
                      (SELECT p.id FROM payments p WHERE p.account = a.account ORDER BY p.paid_at DESC, p.id DESC
                        LIMIT 1) AS last_id,
                      (SELECT bool_or(p.clears) FROM payments p WHERE p.account = a.account
                        AND (p.paid_at >= a.as_of OR p.imported_at >= a.imported_at)) AS clears
                 FROM arrears a WHERE a.account = %s""", (account,))
        row = await cur.fetchone()
        if row is None:
            continue
        amount, _as_of, cleared_at, paid, last_paid, last_id, clears = row
        if cleared_at is None and (clears or paid >= amount):
            await conn.execute("UPDATE arrears SET cleared_at = %s, cleared_by_payment = %s WHERE account = %s",
                               (last_paid, last_id, account))
            cleared.append(account)
    await audit.record(conn, action="import.payments", operator=operator, reason=source,
                       details={"rows": len(rows), "new": n, "cleared": cleared})
    return n, cleared
