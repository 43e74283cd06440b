"""Every query VEE makes against the meter data store's tables, in one place.

The store owns ``interval_reads``, ``register_reads``, ``meters``, ``meter_events``,
``transformer_areas`` and the installation records; VEE only reads them (its own writes go to
``vee_*`` and ``read_versions``). The columns are the ones the store's migrations create, which
VEE's migrations require to have run first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from psycopg import Connection

__all__ = [
    "INTERVAL_TABLE",
    "REGISTER_TABLE",
    "MeterInfo",
    "Readings",
    "daily_energy",
    "list_meters",
    "load_areas",
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
        rows = conn.execute(f"SELECT DISTINCT meter FROM {table} WHERE ts >= %s AND ts < %s",  # table: constant
                            (start, end)).fetchall()
        found.update(r[0] for r in rows)
    return sorted(found)


def load_readings(conn: Connection[Any], table: str, quantities: Sequence[str], meters: Sequence[str],
                  start: datetime, end: datetime, *, with_superseded: bool = False) -> Readings:
    """Raw reads of ``quantities`` for ``meters`` in [start, end) from a store table.

    The store keeps the current value per (meter, quantity, ts) and earlier different values in
    ``superseded_reads``; ``with_superseded`` adds those (lower versions, sorted first) so the
    duplicate rule sees every value that arrived for one time. Rows travel as binary COPY straight
    into numpy (no Python object per row).
    """
    if table not in _TABLES:
        raise ValueError(table)
    if not meters:
        return _empty()
    src = f"SELECT meter, quantity, ts, value, quality, version FROM {table} r"
    if with_superseded:
        kind = "interval" if table == INTERVAL_TABLE else "register"
        src += (" WHERE r.ts >= %(s)s AND r.ts < %(e)s UNION ALL SELECT meter, quantity, ts, value, quality, version "
                f"FROM superseded_reads WHERE kind = '{kind}'")  # kind: one of two constants
    return _fetch(conn, src, meters, quantities, start, end)


def load_versions(conn: Connection[Any], quantities: Sequence[str], meters: Sequence[str], start: datetime,
                  end: datetime) -> Readings:
    """Estimates and edits (``read_versions``, not superseded) in the range: version numbers are VEE's own."""
    src = ("SELECT meter, quantity, ts, coalesce(value, 'NaN'::float8) AS value, quality, version "
           "FROM read_versions WHERE NOT superseded")
    return _fetch(conn, src, meters, quantities, start, end)


_ROW = np.dtype([("n", ">i2"), ("l0", ">i4"), ("m", ">i4"), ("l1", ">i4"), ("q", ">i4"), ("l2", ">i4"),
                 ("ts", ">i8"), ("l3", ">i4"), ("v", ">f8"), ("l4", ">i4"), ("qual", ">i4"), ("l5", ">i4"),
                 ("ver", ">i4")])
_HEADER = 19  # PGCOPY signature (11) + flags (4) + extension length (4)


def _fetch(conn: Connection[Any], src: str, meters: Sequence[str], quantities: Sequence[str], start: datetime,
           end: datetime) -> Readings:
    """Rows of ``src`` (meter, quantity, ts, value, quality, version) for the meters, quantities and range,
    as fixed-width binary COPY (meter and quantity as their index in the lists) parsed by numpy."""
    if not meters or not quantities:
        return _empty()
    sql = (f"COPY (SELECT mi.i::int4 - 1, qi.i::int4 - 1, extract(epoch FROM u.ts)::int8, u.value::float8, "
           f"u.quality::int4, u.version::int4 FROM ({src}) u "
           "JOIN unnest(%(m)s::text[]) WITH ORDINALITY AS mi(name, i) ON mi.name = u.meter "
           "JOIN unnest(%(q)s::text[]) WITH ORDINALITY AS qi(name, i) ON qi.name = u.quantity "
           "WHERE u.ts >= %(s)s AND u.ts < %(e)s) TO STDOUT (FORMAT BINARY)")
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(sql, {"m": list(meters), "q": list(quantities), "s": start, "e": end}) as cp:
        for data in cp:
            buf += data
    body = bytes(buf[_HEADER:len(buf) - 2])  # trailer: int16 -1
    if not body:
        return _empty()
    rows = np.frombuffer(body, dtype=_ROW)
    m = rows["m"].astype(np.int64)
    q = rows["q"].astype(np.int64)
    ts = rows["ts"].astype(np.int64)
    ver = rows["ver"].astype(np.int64)
    order = np.lexsort((ver, ts, q, m))
    return Readings(m[order], q[order], ts[order], rows["v"].astype(np.float64)[order],
                    rows["qual"].astype(np.int64)[order], ver[order])


@dataclass(frozen=True, slots=True)
class MeterInfo:
    meter: str
    meter_class: str | None = None
    multiplier: float = 1.0
    installed: date | None = None
    capacity_kva: float | None = None
    area: str | None = None
    has_generation: bool = False


def meter_info(conn: Connection[Any], meters: Sequence[str]) -> dict[str, MeterInfo]:
    """Per meter: class, CT x PT multiplier and the start of its open installation.

    The store keeps no contracted capacity, so ``capacity_kva`` stays None (the class decides).
    """
    out = {m: MeterInfo(m) for m in meters}
    if not meters:
        return out
    rows = conn.execute(
        "SELECT m.address, m.meter_class, m.multiplier, "
        "       (SELECT max(i.installed_at) FROM meter_installations i "
        "         WHERE i.meter = m.address AND i.removed_at IS NULL) "
        "  FROM meters m WHERE m.address = ANY(%s)", (list(meters),)).fetchall()
    for m, cls, mult, inst in rows:
        out[m] = MeterInfo(m, cls, float(mult if mult is not None else 1.0),
                           inst.date() if isinstance(inst, datetime) else inst)
    return out


def load_events(conn: Connection[Any], meters: Sequence[str], start: datetime, end: datetime) -> list[
        tuple[str, datetime, str]]:
    """(meter, ts, event code) from ``meter_events``."""
    rows = conn.execute("SELECT meter, ts, code FROM meter_events WHERE meter = ANY(%s) AND ts >= %s AND ts < %s "
                        "ORDER BY meter, ts", (list(meters), start, end)).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def load_exchanges(conn: Connection[Any], meters: Sequence[str], start: datetime, end: datetime) -> list[
        dict[str, Any]]:
    """Meter exchanges touching ``meters`` in the range (old meter, new meter, ts, reads)."""
    rows = conn.execute(
        "SELECT old_meter, new_meter, ts, old_final_read, new_start_read FROM meter_exchanges "
        "WHERE (old_meter = ANY(%s) OR new_meter = ANY(%s)) AND ts >= %s AND ts < %s",
        (list(meters), list(meters), start, end)).fetchall()
    return [{"old_meter": r[0], "new_meter": r[1], "ts": r[2], "old_final_read": r[3], "new_start_read": r[4]}
            for r in rows]


def load_areas(conn: Connection[Any]) -> tuple[dict[str, str | None], dict[str, str]]:
    """(area code -> check meter, meter -> area code): areas and who each one supplies now."""
    area_check: dict[str, str | None] = {
        r[0]: r[1] for r in conn.execute("SELECT code, check_meter FROM transformer_areas").fetchall()}
    member = {r[0]: r[1] for r in conn.execute("SELECT meter, area_code FROM transformer_area_meters").fetchall()}
    return area_check, member


def daily_energy(conn: Connection[Any], meters: Sequence[str] | None, start: datetime, end: datetime, tz: str,
                 quantity: str = "interval.energy.active.import", min_intervals: int = 92) -> tuple[
                     list[str], list[date], npt.NDArray[np.float64]]:
    """Daily energy per meter and local day from intervals (VEE versions on top of raw); NaN = incomplete."""
    meter_filter = "AND meter = ANY(%(meters)s)" if meters else ""
    sql = f"""
        WITH raw AS (
            SELECT DISTINCT ON (meter, ts) meter, ts, value FROM {INTERVAL_TABLE}
            WHERE quantity = %(q)s AND ts >= %(s)s AND ts < %(e)s {meter_filter}
            ORDER BY meter, ts, version DESC),
        ver AS (
            SELECT DISTINCT ON (meter, ts) meter, ts, value FROM read_versions
            WHERE quantity = %(q)s AND ts >= %(s)s AND ts < %(e)s AND NOT superseded {meter_filter}
            ORDER BY meter, ts, version DESC),
        fin AS (
            SELECT coalesce(v.meter, r.meter) AS meter, coalesce(v.ts, r.ts) AS ts,
                   coalesce(v.value, r.value) AS value
            FROM raw r FULL JOIN ver v ON v.meter = r.meter AND v.ts = r.ts)
        SELECT meter, (ts AT TIME ZONE %(tz)s)::date AS day, sum(value), count(value)
        FROM fin GROUP BY 1, 2 ORDER BY 1, 2"""  # identifiers are constants; values bound
    rows = conn.execute(sql, {"q": quantity, "s": start, "e": end, "tz": tz, "meters": list(meters or [])}).fetchall()
    ms = sorted({r[0] for r in rows} | set(meters or []))
    d0 = start.astimezone(ZoneInfo(tz)).date()
    d1 = (end - timedelta(seconds=1)).astimezone(ZoneInfo(tz)).date()
    days = [d0 + timedelta(days=i) for i in range((d1 - d0).days + 1)]
    grid = np.full((len(ms), len(days)), np.nan)
    mi = {m: i for i, m in enumerate(ms)}
    for m, day, s, n in rows:
        k = (day - d0).days
        if 0 <= k < len(days) and n >= min_intervals:
            grid[mi[m], k] = s
    return ms, days, grid


def load_multipliers(conn: Connection[Any], meters: Sequence[str], end: datetime) -> list[tuple[str, datetime, float]]:
    """(meter, installed_at, multiplier) of every installation of ``meters`` that began before ``end``."""
    if not meters:
        return []
    rows = conn.execute("SELECT meter, installed_at, multiplier FROM meter_installations WHERE meter = ANY(%s) "
                        "AND installed_at < %s ORDER BY meter, installed_at", (list(meters), end)).fetchall()
    return [(str(r[0]), r[1], float(r[2])) for r in rows]


def daily_sums(conn: Connection[Any], meters: Sequence[str], first_day: date, days: int, tz: str, step: int,
               quantity: str = "interval.energy.active.import") -> npt.NDArray[np.float64]:
    """Energy per meter and local day (M x days) summed in the database; NaN where the day is incomplete
    (fewer intervals than the local day holds: 92/96/100 quarter-hours around DST)."""
    out = np.full((len(meters), days), np.nan)
    if days <= 0 or not meters:
        return out
    zone = ZoneInfo(tz)
    start = datetime.combine(first_day, datetime.min.time(), zone)
    end = datetime.combine(first_day + timedelta(days=days), datetime.min.time(), zone)
    bounds = [datetime.combine(first_day + timedelta(days=i), datetime.min.time(), zone).timestamp()
              for i in range(days + 1)]
    expected = np.diff(np.asarray(bounds)) // step
    rows = conn.execute(
        f"SELECT meter, ((ts AT TIME ZONE %(tz)s)::date - %(d0)s::date), sum(value), count(*) FROM {INTERVAL_TABLE} "
        "WHERE quantity = %(q)s AND meter = ANY(%(m)s) AND ts >= %(s)s AND ts < %(e)s GROUP BY 1, 2",
        {"tz": tz, "d0": first_day, "q": quantity, "m": list(meters), "s": start, "e": end}).fetchall()
    idx = {m: i for i, m in enumerate(meters)}
    for m, d, s, n in rows:  # one row per meter-day (aggregated by the database)
        if 0 <= d < days and n >= expected[d]:
            out[idx[m], d] = s
    return out


def future_reads(conn: Connection[Any], meters: Sequence[str], after: datetime) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(meter index, epoch ts) of reads of any quantity stamped after ``after`` (clock or import errors)."""
    m_idx: list[int] = []
    ts: list[int] = []
    idx = {m: i for i, m in enumerate(meters)}
    for table in (INTERVAL_TABLE, REGISTER_TABLE):
        if not meters:
            continue
        for m, t in conn.execute(f"SELECT meter, extract(epoch FROM max(ts))::bigint FROM {table} "  # constant
                                 "WHERE meter = ANY(%s) AND ts > %s GROUP BY meter", (list(meters), after)):
            m_idx.append(idx[m])
            ts.append(int(t))
    return np.asarray(m_idx, dtype=np.int64), np.asarray(ts, dtype=np.int64)
