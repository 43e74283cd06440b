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
    "columns",
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
                  start: datetime, end: datetime, *, with_superseded: bool = False) -> Readings:
    """Raw reads of ``quantities`` for ``meters`` in [start, end) from a store table.

    The store keeps the current value per (meter, quantity, ts) and earlier different values in
    ``superseded_reads``; ``with_superseded`` adds those (lower versions, sorted first) so the
    duplicate rule sees every value that arrived for one time. Rows travel as binary COPY straight
    into numpy (no Python object per row).
    """
    if table not in _TABLES:
        raise ValueError(table)
    cols = columns(conn, table)
    if not cols or not meters:
        return _empty()
    version = "r.version" if "version" in cols else "0"
    quality = "r.quality" if "quality" in cols else "0"
    src = f"SELECT meter, quantity, ts, value, {quality} AS quality, {version} AS version FROM {table} r"
    if with_superseded and columns(conn, "superseded_reads"):
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
    installed: dict[str, date] = {}
    if columns(conn, "meter_installations"):
        for m, at in conn.execute("SELECT meter, max(installed_at) FROM meter_installations WHERE meter = ANY(%s) "
                                  "AND removed_at IS NULL GROUP BY meter", (list(meters),)).fetchall():
            installed[str(m)] = at.date() if isinstance(at, datetime) else at
    out = {m: MeterInfo(m, installed=installed.get(m)) for m in meters}
    for r in rows:
        d = dict(zip(names, r, strict=True))
        inst = d.get("installed") or installed.get(str(d["meter"]))
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


def load_areas(conn: Connection[Any]) -> tuple[dict[str, str | None], dict[str, str]]:
    """(area -> check meter, meter -> area) from the store's transformer-area tables, if any."""
    area_check: dict[str, str | None] = {}
    member: dict[str, str] = {}
    for table in ("transformer_areas", "areas"):
        cols = columns(conn, table)
        key = _first(cols, ("code", "area", "name", "id"))
        chk = _first(cols, ("check_meter", "check_meter_address", "feeder_meter"))
        if not cols or key is None:
            continue
        rows = conn.execute(f"SELECT {key}::text, {chk or 'NULL'}::text FROM {table}").fetchall()
        area_check = {r[0]: r[1] for r in rows}
        if "id" in cols and key != "id":
            ids = {str(r[0]): str(r[1]) for r in conn.execute(f"SELECT id, {key} FROM {table}").fetchall()}
        else:
            ids = {a: a for a in area_check}
        mcols = columns(conn, "meters")
        mkey = _first(mcols, ("address", "meter", "id"))
        marea = _first(mcols, ("area", "area_id", "transformer_area", "transformer_area_id"))
        if mkey and marea:
            for m, a in conn.execute(f"SELECT {mkey}::text, {marea}::text FROM meters WHERE {marea} IS NOT NULL"):
                member[m] = ids.get(a, a)
        for link in ("area_meters", "transformer_area_meters"):
            lcols = columns(conn, link)
            la = _first(lcols, ("area", "area_id", "transformer_area_id"))
            lm = _first(lcols, ("meter", "meter_address", "address"))
            if la and lm:
                for m, a in conn.execute(f"SELECT {lm}::text, {la}::text FROM {link}"):
                    member[m] = ids.get(a, a)
        break
    return area_check, member


def daily_energy(conn: Connection[Any], meters: Sequence[str] | None, start: datetime, end: datetime, tz: str,
                 quantity: str = "interval.energy.active.import", min_intervals: int = 92) -> tuple[
                     list[str], list[date], npt.NDArray[np.float64]]:
    """Daily energy per meter and local day from intervals (VEE versions on top of raw); NaN = incomplete."""
    if not table_exists(conn, INTERVAL_TABLE):
        return [], [], np.zeros((0, 0))
    cols = columns(conn, INTERVAL_TABLE)
    order = "version" if "version" in cols else "0"
    meter_filter = "AND meter = ANY(%(meters)s)" if meters else ""
    sql = f"""
        WITH raw AS (
            SELECT DISTINCT ON (meter, ts) meter, ts, value FROM {INTERVAL_TABLE}
            WHERE quantity = %(q)s AND ts >= %(s)s AND ts < %(e)s {meter_filter}
            ORDER BY meter, ts, {order} DESC),
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
    cols = columns(conn, "meter_installations")
    if not {"meter", "installed_at", "multiplier"} <= cols or not meters:
        return []
    rows = conn.execute("SELECT meter, installed_at, multiplier FROM meter_installations WHERE meter = ANY(%s) "
                        "AND installed_at < %s ORDER BY meter, installed_at", (list(meters), end)).fetchall()
    return [(str(r[0]), r[1], float(r[2])) for r in rows]


def daily_sums(conn: Connection[Any], meters: Sequence[str], first_day: date, days: int, tz: str, step: int,
               quantity: str = "interval.energy.active.import") -> npt.NDArray[np.float64]:
    """Energy per meter and local day (M x days) summed in the database; NaN where the day is incomplete
    (fewer intervals than the local day holds: 92/96/100 quarter-hours around DST)."""
    out = np.full((len(meters), days), np.nan)
    if days <= 0 or not meters or not table_exists(conn, INTERVAL_TABLE):
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
        if not meters or not table_exists(conn, table):
            continue
        for m, t in conn.execute(f"SELECT meter, extract(epoch FROM max(ts))::bigint FROM {table} "  # constant
                                 "WHERE meter = ANY(%s) AND ts > %s GROUP BY meter", (list(meters), after)):
            m_idx.append(idx[m])
            ts.append(int(t))
    return np.asarray(m_idx, dtype=np.int64), np.asarray(ts, dtype=np.int64)
