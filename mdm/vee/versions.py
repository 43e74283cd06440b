"""Versions above the raw read: manual edits and estimates, each with method, reason, operator and time.

Raw reads stay in the store's tables untouched. ``read_versions`` holds version 1, 2, ... per
(meter, quantity, ts); the highest version not superseded is the final value. A manual edit is
validated again on the next VEE run (the runner treats edits as reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection

from protocols import quantities
from protocols.errors import LocalProtocolError
from protocols.reading import Quality

__all__ = ["Version", "add_version", "history"]


@dataclass(frozen=True, slots=True)
class Version:
    meter: str
    quantity: str
    ts: datetime
    version: int
    value: float | None
    quality: int
    method: str
    reason: str
    operator: str
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"meter": self.meter, "quantity": self.quantity, "ts": self.ts, "version": self.version,
                "value": self.value, "quality": Quality(self.quality).name if self.quality else "GOOD",
                "method": self.method, "reason": self.reason, "operator": self.operator,
                "created_at": self.created_at}


def add_version(conn: Connection[Any], meter: str, quantity: str, ts: datetime, value: float, *, method: str,
                reason: str, operator: str, quality: Quality = Quality.EDITED, run_id: int | None = None) -> Version:
    """Append a version (next number for that meter, quantity and time). Operator and reason are required."""
    if not quantities.is_known(quantity):
        raise LocalProtocolError(f"unknown quantity code {quantity!r}")
    if ts.tzinfo is None:
        raise LocalProtocolError("the time of an edit must carry its time zone")
    if not operator or not reason:
        raise LocalProtocolError("a manual edit needs an operator and a reason")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{meter}|{quantity}|{ts.isoformat()}",))
        row = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM read_versions WHERE meter = %s AND "
                           "quantity = %s AND ts = %s", (meter, quantity, ts)).fetchone()
        ver = int(row[0]) if row else 1
        created = conn.execute(
            "INSERT INTO read_versions (meter, quantity, ts, version, value, quality, method, reason, operator, run_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING created_at",
            (meter, quantity, ts, ver, value, int(quality), method, reason, operator, run_id)).fetchone()
    return Version(meter, quantity, ts, ver, value, int(quality), method, reason, operator,
                   created[0] if created else None)


def history(conn: Connection[Any], meter: str, quantity: str, ts: datetime) -> tuple[list[dict[str, Any]],
                                                                                     list[Version]]:
    """(raw rows from the store, versions) for one meter, quantity and time."""
    raw: list[dict[str, Any]] = []
    for table in ("interval_reads", "register_reads"):
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            continue
        cur = conn.execute(f"SELECT * FROM {table} WHERE meter = %s AND quantity = %s AND ts = %s",  # constant names
                           (meter, quantity, ts))
        names = [d.name for d in cur.description or []]
        raw += [dict(zip(names, r, strict=True)) | {"table": table} for r in cur.fetchall()]
    rows = conn.execute("SELECT meter, quantity, ts, version, value, quality, method, reason, operator, created_at "
                        "FROM read_versions WHERE meter = %s AND quantity = %s AND ts = %s ORDER BY version",
                        (meter, quantity, ts)).fetchall()
    return raw, [Version(*r) for r in rows]
