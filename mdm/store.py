"""Store operations behind the ``headend db|meters|reads`` commands (synchronous psycopg).

Schema on first use, storage policies, meter assets (add, list, CSV import/export), reads
queries (one meter over a range; consumption per day) and parsing of reads CSV files from
other systems or handheld readers (the rows then go through :class:`mdm.ingest.Ingestor`).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.rows import dict_row

from mdm.db import StoreError, connect
from mdm.migrate import migrate, status
from protocols.errors import ConfigError, LocalProtocolError
from protocols.quantities import QUANTITIES, Kind
from protocols.reading import Quality, Reading

if TYPE_CHECKING:
    from headend.settings import Settings

__all__ = [
    "METER_COLUMNS",
    "READ_COLUMNS",
    "RowError",
    "add_meter",
    "apply_policies",
    "daily_consumption",
    "ensure_schema",
    "export_meters",
    "import_meters_csv",
    "list_meters",
    "parse_reads_csv",
    "parse_time",
    "read_range",
    "storage_info",
]

LOGGER = logging.getLogger(__name__)

METER_COLUMNS = (
    "address", "protocol", "channel", "terminal", "vendor", "model", "firmware", "meter_class",
    "ct_ratio", "pt_ratio", "multiplier", "status", "time_zone",
)
_FLOAT_COLS = {"ct_ratio", "pt_ratio", "multiplier"}
READ_COLUMNS = ("meter", "quantity", "ts", "value", "unit", "quality", "source")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason}


# -- schema and storage -----------------------------------------------------------------------------


def ensure_schema(dsn: str, settings: Settings, *, auto: bool | None = None) -> None:
    """Bring an empty (first run) or embedded database to this code's schema; otherwise refuse pending work.

    ``auto=None``: migrate automatically when the database is empty or is the embedded one.
    """
    with connect(dsn) as conn:
        st = status(conn)
    if not st.pending and not st.unknown:
        return
    if st.unknown:
        from mdm.migrate import MigrationError

        raise MigrationError("database schema is newer than this code; upgrade ami-headend")
    embedded = not settings.database.dsn
    if auto is None:
        auto = embedded or st.version == 0
    if not auto:
        raise StoreError(f"the database has {len(st.pending)} pending migration(s): run `headend db migrate`")
    migrate(dsn, timescaledb=settings.database.timescaledb, timezone=settings.timezone)
    with connect(dsn, autocommit=True) as conn:
        apply_policies(conn, settings)


def apply_policies(conn: psycopg.Connection[Any], settings: Settings) -> str:
    """Compression and retention (TimescaleDB) or partitions ahead and retention (partitioned)."""
    db = settings.database
    row = conn.execute("SELECT mdm_apply_policies(%s, %s)", (db.compress_after_days, db.retention_days)).fetchone()
    return str(row[0]) if row else ""


def storage_info(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    info["server_version"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    row = conn.execute("SELECT default_version, installed_version FROM pg_available_extensions "
                       "WHERE name = 'timescaledb'").fetchone()
    info["timescaledb_available"] = row is not None
    info["timescaledb_version"] = row[1] if row else None
    if conn.execute("SELECT to_regclass('mdm_storage') IS NOT NULL").fetchone() == (True,):
        got = conn.execute("SELECT mode, timezone FROM mdm_storage").fetchone()
        if got:
            info["storage_mode"], info["bucket_timezone"] = got
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname IN ('register_reads', 'interval_reads')").fetchone()
        info["partitions"] = int(parts[0]) if parts else 0
    return info


# -- time parsing ------------------------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}") from None


def parse_time(text: str, tz: str | ZoneInfo) -> datetime:
    """ISO 8601 date or date-time; naive values are local time in ``tz``; a date is its local midnight."""
    z = tz if isinstance(tz, ZoneInfo) else zone(tz)
    s = text.strip()
    try:
        if len(s) <= 10:
            return datetime.combine(date.fromisoformat(s), time(0), z)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise LocalProtocolError(f"bad time {text!r}: use ISO 8601, e.g. 2026-11-01T00:15:00+08:00") from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=z)


# -- meters ------------------------------------------------------------------------------------------


def _meter_values(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if k not in METER_COLUMNS:
            raise LocalProtocolError(f"unknown meter field {k!r}")
        if v is None or v == "":
            continue
        if k in _FLOAT_COLS:
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise LocalProtocolError(f"{k} must be a number, not {v!r}") from None
            if not math.isfinite(v) or v <= 0:
                raise LocalProtocolError(f"{k} must be a positive number, not {v!r}")
        elif k == "time_zone":
            zone(str(v))
            v = str(v)
        else:
            v = str(v).strip()
        out[k] = v
    addr = str(out.get("address", "")).strip()
    if not addr:
        raise LocalProtocolError("a meter needs an address")
    if "multiplier" not in out and ("ct_ratio" in out or "pt_ratio" in out):
        out["multiplier"] = float(out.get("ct_ratio", 1.0)) * float(out.get("pt_ratio", 1.0))
    return out


def add_meter(conn: psycopg.Connection[Any], **fields: Any) -> tuple[dict[str, Any], bool]:
    """Insert or update one meter by address; return (row, created)."""
    vals = _meter_values(fields)
    cols = list(vals)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "address") or "address = EXCLUDED.address"
    q = (f"INSERT INTO meters ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "  # names: METER_COLUMNS
         f"ON CONFLICT (address) DO UPDATE SET {updates}, updated_at = now() "
         f"RETURNING {', '.join(METER_COLUMNS)}, (xmax = 0) AS created")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q.encode(), [vals[c] for c in cols])
        row = cur.fetchone()
    assert row is not None
    created = bool(row.pop("created"))
    return row, created


def list_meters(
    conn: psycopg.Connection[Any], *, status: str | None = None, like: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    q = (f"SELECT {', '.join(METER_COLUMNS)}, created_at FROM meters "
         "WHERE (%(status)s::text IS NULL OR status = %(status)s) "
         "AND (%(like)s::text IS NULL OR address LIKE %(like)s) ORDER BY address")
    if limit:
        q += " LIMIT %(limit)s"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q.encode(), {"status": status, "like": like, "limit": limit})
        return list(cur.fetchall())


def export_meters(conn: psycopg.Connection[Any]) -> Iterator[dict[str, Any]]:
    with conn.cursor(name="meters_export", row_factory=dict_row) as cur:
        cur.execute(f"SELECT {', '.join(METER_COLUMNS)} FROM meters ORDER BY address".encode())
        yield from cur


def import_meters_csv(conn: psycopg.Connection[Any], path: Path) -> tuple[int, int, list[RowError]]:
    """Upsert meters from a CSV file with a header (``address`` required). Returns (created, updated, errors).

    Each good row is applied; a bad row is reported with its line number and reason.
    """
    created = updated = 0
    errors: list[RowError] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "address" not in reader.fieldnames:
            raise LocalProtocolError(f"{path}: the header must name an 'address' column")
        unknown = [c for c in reader.fieldnames if c not in METER_COLUMNS]
        if unknown:
            raise LocalProtocolError(
                f"{path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(METER_COLUMNS)}"
            )
        for rec in reader:
            line = reader.line_num
            try:
                with conn.transaction():
                    _, was_new = add_meter(conn, **{k: v for k, v in rec.items() if k is not None})
            except (LocalProtocolError, ConfigError) as exc:
                errors.append(RowError(line, str(exc)))
                continue
            except psycopg.DataError as exc:
                errors.append(RowError(line, str(exc).strip().splitlines()[0]))
                continue
            if was_new:
                created += 1
            else:
                updated += 1
    return created, updated, errors


# -- reads -------------------------------------------------------------------------------------------


def read_range(
    conn: psycopg.Connection[Any], meter: str, start: datetime, end: datetime, quantities: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Current values of one meter in [start, end), both reads tables, ordered by time then quantity."""
    q = """
        SELECT ts, quantity, value, unit, quality, source, version, received_at, kind FROM (
            SELECT ts, quantity, value, unit, quality, source, version, received_at, 'register' AS kind
              FROM register_reads WHERE meter = %(m)s AND ts >= %(a)s AND ts < %(b)s
                AND (%(q)s::text[] IS NULL OR quantity = ANY(%(q)s))
            UNION ALL
            SELECT ts, quantity, value, unit, quality, source, version, received_at, 'interval'
              FROM interval_reads WHERE meter = %(m)s AND ts >= %(a)s AND ts < %(b)s
                AND (%(q)s::text[] IS NULL OR quantity = ANY(%(q)s))
        ) x ORDER BY ts, quantity"""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q, {"m": meter, "a": start, "b": end, "q": list(quantities) if quantities else None})
        return list(cur.fetchall())


def daily_consumption(
    conn: psycopg.Connection[Any], meters: Sequence[str] | None, first: date, last: date
) -> list[dict[str, Any]]:
    """Energy per local day (store time zone): interval sums, else register differences.

    Rows: meter, day, kwh (secondary: what the meter registered), source ("interval" | "register"),
    intervals (count of intervals summed), multiplier (CT x PT in force that day; None when unknown or
    when it changed within the day), primary_kwh (kwh x multiplier; None when it cannot be computed)
    and multiplier_changed (True when more than one multiplier applied to the day's energy).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT meter, day, kwh, intervals FROM daily_consumption(%s, %s, %s)",
                    (first, last, list(meters) if meters else None))
        out: dict[tuple[str, date], dict[str, Any]] = {
            (r[0], r[1]): {"meter": r[0], "day": r[1], "kwh": r[2], "source": "interval", "intervals": r[3]}
            for r in cur.fetchall()
        }
        with_intervals = {k[0] for k in out}
        cur.execute("SELECT meter, day, kwh FROM daily_register_consumption(%s, %s, %s)",
                    (first, last, list(meters) if meters else None))
        for m, d, kwh in cur.fetchall():
            if m not in with_intervals and kwh is not None:
                out[(m, d)] = {"meter": m, "day": d, "kwh": kwh, "source": "register", "intervals": None}
    rows = [out[k] for k in sorted(out)]
    _apply_multipliers(conn, rows, meters, first, last)
    return rows


# -- CT/PT multipliers (primary energy) ---------------------------------------------------------------

_OPEN = datetime.max.replace(tzinfo=UTC)
_REGISTER_QTY = "energy.active.import"  # the register daily_register_consumption() differences by default
_INTERVAL_QTY = "interval.energy.active.import"


@dataclass(frozen=True, slots=True)
class _Period:
    start: datetime
    end: datetime  # _OPEN while installed
    multiplier: float


@dataclass(slots=True)
class _MultiplierHistory:
    """One meter's CT x PT multiplier over time: its installation periods [installed_at, removed_at),
    ``meters.multiplier`` outside them (None for a meter not in ``meters``: unknown, never guessed)."""

    fallback: float | None
    periods: list[_Period]

    def over(self, lo: datetime, hi: datetime) -> set[float | None]:
        """Every multiplier in force somewhere in [lo, hi)."""
        found: set[float | None] = set()
        cursor = lo
        for p in self.periods:  # sorted by start
            if p.end <= lo or p.start >= hi or p.end <= p.start:
                continue
            if p.start > cursor:
                found.add(self.fallback)
            found.add(p.multiplier)
            cursor = max(cursor, p.end)
        if cursor < hi:
            found.add(self.fallback)
        return found

    def at(self, t: datetime) -> float | None:
        for p in reversed(self.periods):  # overlapping records (bad data): the latest installation wins
            if p.start <= t < p.end:
                return p.multiplier
        return self.fallback


def _multiplier_histories(conn: psycopg.Connection[Any], meters: Sequence[str] | None, lo: datetime,
                          hi: datetime) -> dict[str, _MultiplierHistory]:
    """Installation periods overlapping [lo, hi) of ``meters`` (None: every meter, no array to bind)."""
    out: dict[str, _MultiplierHistory] = {}
    for m, fallback, start, end, mult in conn.execute(
            "SELECT m.address, m.multiplier, i.installed_at, i.removed_at, i.multiplier FROM meters m "
            "LEFT JOIN meter_installations i ON i.meter = m.address AND i.installed_at < %(hi)s "
            "     AND (i.removed_at IS NULL OR i.removed_at > %(lo)s) "
            "WHERE %(ms)s::text[] IS NULL OR m.address = ANY(%(ms)s) ORDER BY m.address, i.installed_at, i.id",
            {"ms": list(meters) if meters else None, "lo": lo, "hi": hi}):
        h = out.get(m)
        if h is None:
            h = out[m] = _MultiplierHistory(float(fallback), [])
        if start is not None:
            h.periods.append(_Period(start, end or _OPEN, float(mult)))
    return out


def _local_midnights(conn: psycopg.Connection[Any], first: date, last: date) -> dict[date, datetime]:
    """Start of each local day first..last in the store zone, computed as daily_consumption() does."""
    rows = conn.execute("SELECT d::date, d::date::timestamp AT TIME ZONE s.timezone "
                        "FROM mdm_storage s, generate_series(%s::timestamp, %s::timestamp, interval '1 day') AS d",
                        (first, last)).fetchall()
    return {r[0]: r[1] for r in rows}


def _set_primary(row: dict[str, Any], used: set[float | None], primary: float | None) -> None:
    single = len(used) == 1
    row["multiplier"] = next(iter(used)) if single else None
    row["primary_kwh"] = primary
    row["multiplier_changed"] = len(used) > 1


def _apply_multipliers(conn: psycopg.Connection[Any], rows: list[dict[str, Any]], meters: Sequence[str] | None,
                       first: date, last: date) -> None:
    """Add multiplier, primary_kwh and multiplier_changed to each daily row.

    The multiplier is looked up for the time span the day's energy covers: the local day for
    interval sums, from the previous day's last register read to this day's for register
    differences. Usually one multiplier covers it (kwh x multiplier). Where an installation with
    another multiplier begins or ends inside the span: interval days are re-summed per interval, each
    with the multiplier of the installation its start falls in; register days are flagged (primary
    None), since a delta across an exchange mixes two register series. Both storage modes: the split
    re-sum reads ``interval_reads`` (a hypertable under TimescaleDB, where a day's kwh comes from the
    real-time aggregate, which matches the raw rows once its refresh has caught up).
    """
    if not rows:
        return
    day = timedelta(days=1)
    bounds = _local_midnights(conn, first - day, last + day)
    hist = _multiplier_histories(conn, meters, bounds[first - day], bounds[last + day])
    unknown_meter = _MultiplierHistory(None, [])
    for r in rows:
        h, d = hist.get(r["meter"], unknown_meter), r["day"]
        lo = bounds[d] if r["source"] == "interval" else bounds[d - day]
        used = h.over(lo, bounds[d + day])
        if len(used) == 1:
            m = next(iter(used))
            _set_primary(r, used, None if m is None else r["kwh"] * m)
        elif r["source"] == "interval":
            got = conn.execute("SELECT ts, value FROM interval_reads WHERE meter = %s AND quantity = %s "
                               "AND ts >= %s AND ts < %s", (r["meter"], _INTERVAL_QTY, lo, bounds[d + day])).fetchall()
            per = [(h.at(ts), v) for ts, v in got]
            used = {m for m, _ in per}
            unknown = None in used or not per
            _set_primary(r, used, None if unknown else sum(v * m for m, v in per if m is not None))
        else:
            # the two reads daily_register_consumption() took: the last of the day before and of this day
            got = conn.execute(
                "SELECT DISTINCT ON ((r.ts AT TIME ZONE s.timezone)::date) r.ts FROM register_reads r, mdm_storage s "
                "WHERE r.meter = %s AND r.quantity = %s AND r.ts >= %s AND r.ts < %s "
                "ORDER BY (r.ts AT TIME ZONE s.timezone)::date, r.ts DESC",
                (r["meter"], _REGISTER_QTY, lo, bounds[d + day])).fetchall()
            used = h.over(got[0][0], got[1][0]) if len(got) == 2 else used
            m = next(iter(used))
            _set_primary(r, used, r["kwh"] * m if len(used) == 1 and m is not None else None)


_QUALITY_NAMES = {f.name.lower(): f for f in Quality if f.name}


def _quality(text: str) -> Quality:
    s = text.strip()
    if not s:
        return Quality.GOOD
    if s.isdigit():
        return Quality(int(s))
    q = Quality.GOOD
    for part in s.replace(",", "|").split("|"):
        name = part.strip().lower()
        if name not in _QUALITY_NAMES:
            raise LocalProtocolError(f"unknown quality flag {part.strip()!r}")
        q |= _QUALITY_NAMES[name]
    return q


def parse_reads_csv(
    path: Path, tz: str, *, default_quantity: str | None = None, source: str | None = None
) -> Iterator[tuple[int, Reading | RowError]]:
    """(line, Reading) for each good row and (line, RowError) for each bad one.

    Header columns: meter, ts, value (required); quantity (or ``default_quantity``), unit,
    quality (an integer or flag names joined by ``|``), source. Naive times are local in ``tz``.
    Every reading gets the IMPORTED quality flag.
    """
    z = zone(tz)
    src = source or f"import:{path.name}"
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        missing = {"meter", "ts", "value"} - cols
        if "quantity" not in cols and default_quantity is None:
            missing.add("quantity")
        if missing:
            raise LocalProtocolError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        unknown = cols - set(READ_COLUMNS)
        if unknown:
            raise LocalProtocolError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}")
        if default_quantity is not None and default_quantity not in QUANTITIES:
            raise LocalProtocolError(f"unknown quantity code {default_quantity!r}")
        for rec in reader:
            line = reader.line_num
            try:
                meter = (rec.get("meter") or "").strip()
                if not meter:
                    raise LocalProtocolError("empty meter")
                qty = (rec.get("quantity") or "").strip() or default_quantity or ""
                qdef = QUANTITIES.get(qty)
                if qdef is None:
                    raise LocalProtocolError(f"unknown quantity code {qty!r}")
                ts = parse_time(rec.get("ts") or "", z)
                try:
                    value = float((rec.get("value") or "").strip())
                except ValueError:
                    raise LocalProtocolError(f"bad value {rec.get('value')!r}") from None
                if not math.isfinite(value):
                    raise LocalProtocolError(f"value is not finite: {rec.get('value')!r}")
                if value < 0 and qdef.kind in (Kind.REGISTER, Kind.INTERVAL) and "export" not in qty:
                    raise LocalProtocolError(f"negative energy {value} for {qty}")
                unit = (rec.get("unit") or "").strip() or qdef.unit
                if unit != qdef.unit:
                    raise LocalProtocolError(f"unit {unit!r} does not match {qty} ({qdef.unit!r})")
                quality = _quality(rec.get("quality") or "") | Quality.IMPORTED
                reading = Reading(meter, qty, ts, value, unit, quality, (rec.get("source") or "").strip() or src)
            except (LocalProtocolError, ConfigError, ValueError) as exc:
                yield line, RowError(line, str(exc))
                continue
            yield line, reading


def day_range(first: date | None, last: date | None, days: int = 7, today: date | None = None) -> tuple[date, date]:
    t = today or date.today()
    last = last or (t - timedelta(days=1))
    first = first or (last - timedelta(days=days - 1))
    if first > last:
        raise LocalProtocolError("--from is after --to")
    return first, last
