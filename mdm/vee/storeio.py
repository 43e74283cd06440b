"""Every query VEE makes against the meter data store's tables, in one place.

The store owns ``interval_reads``, ``register_reads``, ``meters``, meter events, transformer
areas and exchange records; VEE only reads them (its own writes go to ``vee_*`` and
``read_versions``). Optional columns and tables are discovered at run time, so the runner works on
a store that has fewer attributes (defaults are used) and says so in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import Connection

__all__ = [
    "INTERVAL_TABLE",
    "REGISTER_TABLE",
    "MeterInfo",
    "Readings",
    "columns",
    "list_meters",
    "load_events",
    "load_exchanges",
    "load_readings",
    "load_versions",
    "meter_info",
]

LOGGER = logging.getLogger(__name__)

INTERVAL_TABLE = "interval_reads"
REGISTER_TABLE = "register_reads"
_TABLES = {INTERVAL_TABLE, REGISTER_TABLE}


def columns(conn: Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s", (table,)).fetchall()
    return {r[0] for r in rows}


def table_exists(conn: Connection[Any], table: str) -> bool:
    return bool(columns(conn, table))


@dataclass(frozen=True, slots=True)
class Readings:
    """Flat arrays of reads, sorted by (meter, quantity, ts, version)."""

    meter: npt.NDArray[np.int64]  # index into the meters list
    quantity: npt.NDArray[np.int64]  # index into the quantities list
    ts: npt.NDArray[np.int64]  # epoch seconds
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int64]
    version: npt.NDArray[np.int64]

    def select(self, q: int) -> Readings:
        s = self.quantity == q
        return Readings(self.meter[s], self.quantity[s], self.ts[s], self.value[s], self.quality[s], self.version[s])

    def __len__(self) -> int:
        return int(self.meter.size)


def _empty() -> Readings:
    z = np.zeros(0, dtype=np.int64)
    return Readings(z, z, z, np.zeros(0), z, z)


def list_meters(conn: Connection[Any], start: datetime, end: datetime, meters: Sequence[str] | None = None) -> list[
        str]:
    """Meters with reads in [start, end) (or the given ones), sorted."""
    if meters:
        return sorted(set(meters))
    found: set[str] = set()
    for table in (INTERVAL_TABLE, REGISTER_TABLE):
        if not table_exists(conn, table):
            continue
        rows = conn.execute(f"SELECT DISTINCT meter FROM {table} WHERE ts >= %s AND ts < %s",  # table: constant
                            (start, end)).fetchall()
        found.update(r[0] for r in rows)
    return sorted(found)


def load_readings(conn: Connection[Any], table: str, quantities: Sequence[str], meters: Sequence[str],
                  start: datetime, end: datetime) -> Readings:
    """Raw reads of ``quantities`` for ``meters`` in [start, end) from a store table."""
    if table not in _TABLES:
        raise ValueError(table)
    cols = columns(conn, table)
    if not cols or not meters:
        return _empty()
    version = "version" if "version" in cols else "0"
    quality = "quality" if "quality" in cols else "0"
    sql = (f"SELECT meter, quantity, extract(epoch FROM ts)::bigint, value::float8, {quality}::bigint, "
           f"{version}::bigint FROM {table} WHERE meter = ANY(%s) AND quantity = ANY(%s) AND ts >= %s AND ts < %s "
           f"ORDER BY meter, quantity, ts, {version}")  # identifiers from constants / the catalogue, values bound
    rows = conn.execute(sql, (list(meters), list(quantities), start, end)).fetchall()
    return _to_arrays(rows, meters, quantities)


def load_versions(conn: Connection[Any], quantities: Sequence[str], meters: Sequence[str], start: datetime,
                  end: datetime) -> Readings:
    """Estimates and edits (``read_versions``, not superseded) in the range: version numbers are VEE's own."""
    rows = conn.execute(
        "SELECT meter, quantity, extract(epoch FROM ts)::bigint, value, quality::bigint, version::bigint "
        "FROM read_versions WHERE meter = ANY(%s) AND quantity = ANY(%s) AND ts >= %s AND ts < %s "
        "AND NOT superseded ORDER BY meter, quantity, ts, version",
        (list(meters), list(quantities), start, end)).fetchall()
    return _to_arrays(rows, meters, quantities)


def _to_arrays(rows: list[Any], meters: Sequence[str], quantities: Sequence[str]) -> Readings:
    if not rows:
        return _empty()
    m_idx = {m: i for i, m in enumerate(meters)}
    q_idx = {q: i for i, q in enumerate(quantities)}
    cols = list(zip(*rows, strict=True))
    return Readings(
        np.fromiter((m_idx[m] for m in cols[0]), dtype=np.int64, count=len(rows)),
        np.fromiter((q_idx[q] for q in cols[1]), dtype=np.int64, count=len(rows)),
        np.asarray(cols[2], dtype=np.int64),
        np.asarray([np.nan if v is None else v for v in cols[3]], dtype=np.float64),
        np.asarray(cols[4], dtype=np.int64),
        np.asarray(cols[5], dtype=np.int64),
    )


@dataclass(frozen=True, slots=True)
class MeterInfo:
    meter: str
    meter_class: str | None = None
    multiplier: float = 1.0
    installed: date | None = None
    capacity_kva: float | None = None
    area: str | None = None
    has_generation: bool = False


_CLASS_COLS = ("meter_class", "customer_class", "class")
_MULT_COLS = ("multiplier",)
_INSTALL_COLS = ("installed_at", "install_date", "installed_on", "installed")
_CAP_COLS = ("capacity_kva", "contract_kva", "contracted_kva")


def _first(cols: set[str], names: Iterable[str]) -> str | None:
    return next((n for n in names if n in cols), None)


def meter_info(conn: Connection[Any], meters: Sequence[str]) -> dict[str, MeterInfo]:
    """Per meter: class, CT x PT multiplier, install date, capacity (defaults when the store lacks them)."""
    cols = columns(conn, "meters")
    key = _first(cols, ("address", "meter", "id"))
    if not cols or key is None or not meters:
        return {m: MeterInfo(m) for m in meters}
    sel = [key]
    names: list[str] = ["meter"]
    for label, options in (("meter_class", _CLASS_COLS), ("multiplier", _MULT_COLS), ("installed", _INSTALL_COLS),
                           ("capacity_kva", _CAP_COLS)):
        c = _first(cols, options)
        if c:
            sel.append(c)
            names.append(label)
    if "multiplier" not in names and {"ct_ratio", "pt_ratio"} <= cols:
        sel.append("coalesce(ct_ratio, 1) * coalesce(pt_ratio, 1)")
        names.append("multiplier")
    rows = conn.execute(f"SELECT {', '.join(sel)} FROM meters WHERE {key}::text = ANY(%s)",  # names from catalogue
                        (list(meters),)).fetchall()
    out = {m: MeterInfo(m) for m in meters}
    for r in rows:
        d = dict(zip(names, r, strict=True))
        inst = d.get("installed")
        if isinstance(inst, datetime):
            inst = inst.date()
        out[str(d["meter"])] = MeterInfo(
            str(d["meter"]), d.get("meter_class"), float(d.get("multiplier") or 1.0), inst,
            float(d["capacity_kva"]) if d.get("capacity_kva") is not None else None)
    return out


def load_events(conn: Connection[Any], meters: Sequence[str], start: datetime, end: datetime) -> list[
        tuple[str, datetime, str]]:
    """(meter, ts, event type) from the store's meter events table, if it has one."""
    for table in ("meter_events", "events"):
        cols = columns(conn, table)
        if not cols:
            continue
        kind = _first(cols, ("event_type", "kind", "type", "event", "code"))
        if kind is None or "meter" not in cols or "ts" not in cols:
            continue
        rows = conn.execute(f"SELECT meter, ts, {kind}::text FROM {table} WHERE meter = ANY(%s) AND ts >= %s "
                            f"AND ts < %s ORDER BY meter, ts", (list(meters), start, end)).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]
    return []


def load_exchanges(conn: Connection[Any], meters: Sequence[str], start: datetime, end: datetime) -> list[
        dict[str, Any]]:
    """Meter exchanges touching ``meters`` in the range (old meter, new meter, ts, reads)."""
    for table in ("meter_exchanges", "meter_installations", "meter_jobs"):
        cols = columns(conn, table)
        if not cols:
            continue
        ts = _first(cols, ("ts", "exchanged_at", "at", "performed_at", "changed_at"))
        old = _first(cols, ("old_meter", "meter_old", "removed_meter"))
        new = _first(cols, ("new_meter", "meter_new", "installed_meter"))
        if not ts or not (old or new):
            continue
        sel = ", ".join(c or "NULL" for c in (old, new, ts, _first(cols, ("old_final_read", "final_read")),
                                              _first(cols, ("new_start_read", "start_read"))))
        conds = " OR ".join(f"{c}::text = ANY(%s)" for c in (old, new) if c)
        params: list[Any] = [list(meters)] * (2 if old and new else 1)
        rows = conn.execute(f"SELECT {sel} FROM {table} WHERE ({conds}) AND {ts} >= %s AND {ts} < %s",
                            (*params, start, end)).fetchall()
        return [{"old_meter": r[0], "new_meter": r[1], "ts": r[2], "old_final_read": r[3], "new_start_read": r[4]}
                for r in rows]
    return []
