"""VEE runner: load reads from the store, run the rules, store exceptions and estimates, raise work orders.

Entry point for the CLI and the daemon's demo::

    from mdm.vee.runner import run_vee
    summary = run_vee(conn, start, end, meters=None, tz="Asia/Shanghai")   # blocking psycopg Connection

Per chunk of meters: reads of [start - history, end) are put on a grid (latest raw version per
time, manual edits on top), every rule runs over the chunk at once, failures become rows of
``vee_exceptions`` (one row per meter, rule and time range: a re-run updates ``last_seen``),
missing intervals of [start, end) are estimated and stored as new versions in
``read_versions`` (only when the value changed), estimates are validated again, and
exceptions are turned into work orders by :data:`RULE_ORDERS`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from psycopg import Connection
from psycopg.types.json import Jsonb

from mdm import workorders as wo
from mdm.vee import rules, storeio
from mdm.vee.config import Thresholds, VeeConfig, load_vee_config
from mdm.vee.estimate import estimate, method_name
from protocols.reading import Quality

__all__ = ["FLAG_ORDERS", "RULE_ORDERS", "RunSummary", "build_grid", "orders_from_flags", "run_vee",
           "store_exceptions"]

LOGGER = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

INTERVAL_Q = "interval.energy.active.import"
EXPORT_Q = "interval.energy.active.export"
REGISTER_Q = "energy.active.import"
TARIFF_Q = [f"energy.active.import.t{t}" for t in range(1, 5)]
INSTANT_Q = ["voltage.a", "voltage.b", "voltage.c", "current.a", "current.b", "current.c", "current.n",
             "power.active.total", "pf.total", "clock.offset"]

#: rule -> (work order type, lowest severity that raises it)
RULE_ORDERS: dict[str, tuple[wo.WorkOrderType, str]] = {
    "gap": (wo.WorkOrderType.MANUAL_REREAD, "error"),  # a whole day or more missing: comm inspection
    "comm_failure": (wo.WorkOrderType.COMM_INSPECTION, "error"),
    "day_count": (wo.WorkOrderType.CLOCK_ERROR, "error"),  # more intervals than the day holds: time stamps
    "prolonged_estimation": (wo.WorkOrderType.MANUAL_REREAD, "error"),
    "future": (wo.WorkOrderType.CLOCK_ERROR, "error"),
    "clock_drift": (wo.WorkOrderType.CLOCK_ERROR, "error"),
    "register_decrease": (wo.WorkOrderType.METER_FAULT, "error"),
    "running_fast": (wo.WorkOrderType.METER_FAULT, "error"),
    "stopped": (wo.WorkOrderType.METER_FAULT, "error"),
    "sum_register": (wo.WorkOrderType.METER_FAULT, "error"),
    "sum_tou": (wo.WorkOrderType.METER_FAULT, "error"),
    "reverse_energy": (wo.WorkOrderType.THEFT_INVESTIGATION, "error"),
    "voltage_loss": (wo.WorkOrderType.THEFT_INVESTIGATION, "error"),
    "current_loss": (wo.WorkOrderType.THEFT_INVESTIGATION, "error"),
    "neutral_mismatch": (wo.WorkOrderType.THEFT_INVESTIGATION, "error"),
}
_SEV = {"info": 0, "warning": 1, "error": 2, "critical": 3}
_PRIORITY = {"critical": 1, "error": 2, "warning": 3, "info": 4}


@dataclass
class RunSummary:
    run_id: int
    start: datetime
    end: datetime
    meters: int = 0
    intervals: int = 0
    exceptions: Counter[str] = field(default_factory=Counter)
    estimates: int = 0
    new_versions: int = 0
    work_orders: list[int] = field(default_factory=list)
    records: list[rules.VeeException] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "from": self.start, "to": self.end, "meters": self.meters,
                "intervals": self.intervals, "exceptions": dict(self.exceptions),
                "exceptions_total": sum(self.exceptions.values()), "estimates": self.estimates,
                "new_versions": self.new_versions, "work_orders": self.work_orders, "seconds": round(self.seconds, 3)}


def build_grid(r: storeio.Readings, n_meters: int, t0: int, step: int, n: int, *, mean: bool = False) -> FloatArray:
    """Readings -> M x N grid. Intervals: the last (highest version) value per cell; instants: the mean."""
    grid = np.full((n_meters, n), np.nan)
    if len(r) == 0:
        return grid
    col = (r.ts - t0) // step
    ok = (col >= 0) & (col < n) & ~np.isnan(r.value)
    m, c, v = r.meter[ok], col[ok], r.value[ok]
    if mean:
        flat = m * n + c
        s = np.bincount(flat, v, minlength=n_meters * n)
        k = np.bincount(flat, minlength=n_meters * n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(k > 0, s / np.maximum(k, 1), np.nan).reshape(n_meters, n)
        return out
    grid[m, c] = v  # rows are sorted by version: the last write wins
    return grid


def _grid_for(r: storeio.Readings, q: int, n_meters: int, t0: int, step: int, n: int) -> FloatArray | None:
    sub = r.select(q)
    if len(sub) == 0:
        return None
    return build_grid(sub, n_meters, t0, step, n, mean=True)


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, datetime.min.time(), tz)


def run_vee(
    conn: Connection[Any],
    start: datetime,
    end: datetime,
    *,
    meters: Sequence[str] | None = None,
    config: VeeConfig | None = None,
    tz: str = "Asia/Shanghai",
    now: datetime | None = None,
    operator: str = "",
    do_estimate: bool = True,
    raise_orders: bool = True,
    chunk_meters: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Validate, estimate and raise work orders for ``meters`` (default: every meter with reads) in [start, end)."""
    t_begin = time.perf_counter()
    cfg = config or load_vee_config()
    zone = ZoneInfo(cfg.timezone or tz)
    step = cfg.interval_seconds
    start = start.astimezone(UTC)
    end = end.astimezone(UTC)
    now = now or datetime.now(UTC)
    all_meters = storeio.list_meters(conn, start, end, meters)
    run_id = int(conn.execute("INSERT INTO vee_runs (from_ts, to_ts, operator) VALUES (%s, %s, %s) RETURNING id",
                              (start, end, operator)).fetchone()[0])  # type: ignore[index]
    summary = RunSummary(run_id, start, end, meters=len(all_meters))
    info = storeio.meter_info(conn, all_meters)
    for i in range(0, len(all_meters), chunk_meters):
        chunk = all_meters[i:i + chunk_meters]
        by_class: dict[str | None, list[str]] = defaultdict(list)
        for m in chunk:
            by_class[info[m].meter_class].append(m)
        for cls, members in by_class.items():
            th = cfg.for_class(cls)
            _run_chunk(conn, members, info, th, start, end, step, zone, now, operator, do_estimate, summary)
        if progress:
            progress(min(i + chunk_meters, len(all_meters)), len(all_meters))
    if raise_orders:
        summary.work_orders = raise_orders_for_run(conn, run_id) + orders_from_flags(conn, all_meters)
    summary.seconds = time.perf_counter() - t_begin
    conn.execute("UPDATE vee_runs SET finished_at = now(), meters = %s, intervals = %s, exceptions = %s, "
                 "estimates = %s, work_orders = %s WHERE id = %s",
                 (summary.meters, summary.intervals, sum(summary.exceptions.values()), summary.new_versions,
                  len(summary.work_orders), run_id))
    LOGGER.info("VEE run %s: %s meters, %s intervals, %s exceptions, %s new estimate versions, %s work orders",
                run_id, summary.meters, summary.intervals, sum(summary.exceptions.values()), summary.new_versions,
                len(summary.work_orders))
    return summary


def _run_chunk(conn: Connection[Any], meters: list[str], info: dict[str, storeio.MeterInfo], th: Thresholds,
               start: datetime, end: datetime, step: int, zone: ZoneInfo, now: datetime, operator: str,
               do_estimate: bool, summary: RunSummary) -> None:
    m_n = len(meters)
    # the grid starts at a local midnight, history_days before the range, so days line up for like-day
    first_day = start.astimezone(zone).date() - timedelta(days=th.history_days)
    hist_start = _local_midnight(first_day, zone).astimezone(UTC)
    t0 = int(hist_start.timestamp()) // step * step
    s_col = (int(start.timestamp()) - t0) // step
    e_col = -(-(int(end.timestamp()) - t0) // step)
    n = e_col
    per_day = 86400 // step

    iq = [INTERVAL_Q, EXPORT_Q]
    # the range itself in full; history as daily sums, and in full only for meters that need estimating
    raw = storeio.load_readings(conn, storeio.INTERVAL_TABLE, iq, meters, start, end, with_superseded=True)
    versions = storeio.load_versions(conn, [INTERVAL_Q], meters, start, end)
    inst = _concat(storeio.load_readings(conn, storeio.REGISTER_TABLE, INSTANT_Q, meters, start, end),
                   storeio.load_readings(conn, storeio.INTERVAL_TABLE, INSTANT_Q, meters, start, end))
    regs = storeio.load_readings(conn, storeio.REGISTER_TABLE, [REGISTER_Q, *TARIFF_Q], meters,
                                 hist_start, end + timedelta(seconds=1))

    imp = raw.select(0)
    raw_grid = build_grid(imp, m_n, t0, step, n)
    edits = versions.select(0)
    edited = edits.quality & int(Quality.EDITED) != 0
    est_prev = edits.quality & int(Quality.ESTIMATED) != 0
    edit_r = storeio.Readings(edits.meter[edited], edits.quantity[edited], edits.ts[edited], edits.value[edited],
                              edits.quality[edited], edits.version[edited])
    base = raw_grid.copy()
    if len(edit_r):
        eg = build_grid(edit_r, m_n, t0, step, n)
        base = np.where(np.isnan(eg), base, eg)  # manual edits count as reads
    summary.intervals += int((~np.isnan(base[:, s_col:])).sum())
    findings: list[rules.Findings] = []
    win = base[:, s_col:]
    w0 = t0 + s_col * step

    # --- raw-read checks (target range)
    in_range = (imp.ts >= int(start.timestamp())) & (imp.ts < int(end.timestamp()))
    findings.append(rules.check_duplicates(imp.meter[in_range], imp.ts[in_range], imp.value[in_range]))
    findings.append(rules.check_off_grid(imp.meter[in_range], imp.ts[in_range], step))
    fut_m, fut_ts = storeio.future_reads(conn, meters, now + timedelta(seconds=th.future_tolerance_s))
    findings.append(rules.check_future(fut_m, fut_ts, int(now.timestamp()), th))
    d0 = start.astimezone(zone).date()
    d1 = (end - timedelta(seconds=1)).astimezone(zone).date()
    ndays = (d1 - d0).days + 1
    bounds = rules.local_day_bounds(d0, ndays, zone.key)
    whole = (bounds >= int(start.timestamp())) & (bounds <= int(end.timestamp()))
    if whole.sum() >= 2:
        b = bounds[whole]
        ts_ok = np.concatenate([imp.ts, edit_r.ts])
        rows_ok = np.concatenate([imp.meter, edit_r.meter])
        findings.append(rules.check_count_per_day(rows_ok, ts_ok, m_n, b, step))
    # --- interval grid checks
    findings.append(rules.check_gaps(win, w0, step, th))
    spikes = rules.check_spikes(win, w0, step, th)
    findings.append(spikes)
    daily, day_start = _daily(base, t0, step, bounds[whole])
    hist_daily = storeio.daily_sums(conn, meters, first_day, th.history_days, zone.key, step)
    hi, lo = rules.check_high_low(daily, hist_daily, day_start, th)
    findings += [hi, lo]
    mult = np.array([info[m].multiplier for m in meters])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        hist_max = np.nanmax(hist_daily, axis=1) if hist_daily.shape[1] else np.full(m_n, np.nan)
    fast = rules.check_running_fast(win, w0, step, th, multiplier=mult, history_daily_max=hist_max,
                                    daily=daily, day_start=day_start)
    findings.append(fast)
    # values that failed an interval-level check are rejected: estimated like missing ones (raw kept)
    rejected = np.zeros(win.shape, dtype=bool)
    for f, sel in ((spikes, np.ones(len(spikes), dtype=bool)),
                   (fast, fast.values.get("basis", np.zeros(0)) == "rating")):
        if len(f) and sel.any():
            rejected[f.rows[sel], (f.start[sel] - w0) // step] = True
    if len(edit_r):  # a manual edit is flagged for review but never replaced by an estimate
        ec = (edit_r.ts - w0) // step
        ok = (ec >= 0) & (ec < win.shape[1])
        rejected[edit_r.meter[ok], ec[ok]] = False
    wn = win.shape[1]
    g: dict[str, FloatArray | None] = {q: _grid_for(inst, k, m_n, w0, step, wn) for k, q in enumerate(INSTANT_Q)}
    cur = {p: a for p in "abc" if (a := g[f"current.{p}"]) is not None}
    volt = {p: a for p in "abc" if (a := g[f"voltage.{p}"]) is not None}
    any_cur = None
    for a in cur.values():
        any_cur = a if any_cur is None else np.fmax(any_cur, a)
    if any_cur is not None or g["power.active.total"] is not None:
        findings.append(rules.check_stopped(win, any_cur, g["power.active.total"], w0, step, th))
    export = build_grid(raw.select(1), m_n, w0, step, wn) if len(raw.select(1)) else None
    if export is not None or g["power.active.total"] is not None:
        th_r = th if not any(info[m].has_generation for m in meters) else th.model_copy(
            update={"has_generation": True})
        findings.append(rules.check_reverse_energy(export, g["power.active.total"], w0, step, th_r))
    if volt:
        vh, vl = rules.check_voltage_band(volt, w0, step, th)
        findings += [vh, vl]
        if cur:
            findings.append(rules.check_voltage_loss(volt, cur, w0, step, th))
    if len(cur) >= 2:
        findings.append(rules.check_current_loss(cur, volt or None, w0, step, th))
        findings.append(rules.check_current_imbalance(cur, w0, step, th))
    if g["pf.total"] is not None:
        findings.append(rules.check_power_factor(g["pf.total"], g["power.active.total"], w0, step, th))
    if g["current.n"] is not None and "a" in cur and len(cur) == 1:
        findings.append(rules.check_neutral_mismatch(cur["a"], g["current.n"], w0, step, th))
    clk = inst.select(INSTANT_Q.index("clock.offset"))
    if len(clk):
        findings.append(rules.check_clock_drift(clk.meter, clk.ts, clk.value, th))
    # --- CT/PT multiplier changes between installations of the same meter
    mults = storeio.load_multipliers(conn, meters, end)
    if mults:
        idx = {m: i for i, m in enumerate(meters)}
        per: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for m, at, mul in mults:  # loop over installation records (a few per meter at most)
            per[idx[m]].append((int(at.timestamp()), mul))
        k = max(len(v) for v in per.values())
        if k >= 2:
            mgrid = np.full((m_n, k), np.nan)
            tgrid = np.zeros((m_n, k), dtype=np.int64)
            for r_i, seq in per.items():
                for j, (t_s, mul) in enumerate(seq):
                    tgrid[r_i, j], mgrid[r_i, j] = t_s, mul
            findings.append(_multiplier_findings(mgrid, tgrid, start, end))
    # --- registers
    exch = storeio.load_exchanges(conn, meters, hist_start, end)
    findings += _register_checks(regs, meters, th, start, end, base, t0, step, exch)

    # --- estimation of the target range
    est_grid = base
    new_est = np.zeros(win.shape, dtype=bool)
    if do_estimate and (np.isnan(win).any() or rejected.any()):
        need = np.flatnonzero(np.isnan(win).any(axis=1) | rejected.any(axis=1))
        _fill_history(conn, base, [meters[i] for i in need], need, hist_start, start, t0, step, s_col)
        reg_cols, reg_vals = _midnight_registers(regs, m_n, t0, step, n, per_day)
        day_type = _day_types(first_day, -(-n // per_day))
        to_fill = base.copy()
        to_fill[:, s_col:][rejected] = np.nan
        usable = ~np.isnan(to_fill)
        res = estimate(to_fill, per_day=per_day, day_type=day_type,
                       linear_max=max(int(th.estimate_blend_hours * 3600 // step), 1),
                       like_days=th.estimate_like_days, decay=th.estimate_decay_hours * 3600 / step,
                       usable=usable, reg_cols=reg_cols, reg_values=reg_vals)
        est_grid = res.values
        new_est = res.estimated[:, s_col:]
        summary.estimates += int(new_est.sum())
        summary.new_versions += _store_estimates(conn, meters, est_grid[:, s_col:], res.method[:, s_col:], new_est,
                                                 edits, w0, step, summary.run_id, operator, rejected)
        # estimates are validated again
        reval = [rules.check_spikes(np.where(new_est, est_grid[:, s_col:], np.nan), w0, step, th)]
        for f in reval:
            if len(f):
                findings.append(rules.Findings(f.rule, f.rows, f.start, f.end, {**f.values, "estimated": np.ones(
                    len(f), dtype=bool)}, "estimate: " + f.explanation, "error"))
    # --- prolonged estimation: earlier estimates still standing plus the new ones
    prev_mask = np.zeros(win.shape, dtype=bool)
    if est_prev.any():
        pe = edits.ts[est_prev]
        pc = (pe - w0) // step
        ok = (pc >= 0) & (pc < wn)
        prev_mask[edits.meter[est_prev][ok], pc[ok]] = True
    findings.append(rules.check_prolonged_estimation(prev_mask | new_est, w0, step, th))

    findings.append(_comm_failures(conn, meters, start, end, th))
    findings = _explain_by_clock(findings, th, mult, m_n)
    recs: list[rules.VeeException] = []
    for f in findings:
        if len(f):
            recs += f.records(meters)
    store_exceptions(conn, recs, summary.run_id)
    summary.records += recs
    summary.exceptions.update(r.rule for r in recs)


def _explain_by_clock(findings: list[rules.Findings], th: Thresholds, mult: FloatArray, m_n: int) -> list[
        rules.Findings]:
    """A meter whose clock is off stamps its stored records (load profile, freezes) at the wrong time, so they
    interleave with live reads and the register seems to go backwards. A drop no larger than what the meter can
    register in the clock offset is then reported as a warning about time stamps, not as 示度下降."""
    drift = np.zeros(m_n)
    for f in findings:
        if f.rule == "clock_drift" and len(f):
            np.maximum.at(drift, f.rows, np.abs(f.values["offset_s"].astype(np.float64)))
    if not drift.any():
        return findings
    cap_kw = th.fast_factor * th.nominal_voltage * th.rated_max_current * th.phases / 1000.0 * mult
    out = []
    for f in findings:
        if f.rule != "register_decrease" or not len(f):
            out.append(f)
            continue
        drop = f.values["previous"] - f.values["value"]
        explained = (drift[f.rows] > th.clock_drift_warn_s) & (drop <= cap_kw[f.rows] * drift[f.rows] / 3600.0)
        vals = {**f.values, "clock_offset_s": drift[f.rows]}
        for mask, sev, text in (
            (~explained, "error", f.explanation),
            (explained, "warning", f.explanation + " - the meter clock is off by {clock_offset_s} s: stored records "
                                                   "interleave with live reads (time stamps, not the register)"),
        ):
            if mask.any():
                out.append(rules.Findings(f.rule, f.rows[mask], f.start[mask], f.end[mask],
                                          {k: v[mask] for k, v in vals.items()}, text, sev))
    return out


def _multiplier_findings(mgrid: FloatArray, tgrid: IntArray, start: datetime, end: datetime) -> rules.Findings:
    """Multiplier changes whose new installation starts inside [start, end) (per-meter installation times)."""
    prev, cur = mgrid[:, :-1], mgrid[:, 1:]
    with np.errstate(invalid="ignore"):
        t_new = tgrid[:, 1:]
        bad = (~np.isnan(prev) & ~np.isnan(cur) & (prev != cur) & (t_new >= int(start.timestamp()))
               & (t_new < int(end.timestamp())))
    r, c = np.nonzero(bad)
    return rules.Findings("multiplier_change", r.astype(np.int64), tgrid[r, c], tgrid[r, c + 1] + 1,
                          {"old": prev[r, c], "new": cur[r, c]},
                          "meter {meter}: CT/PT multiplier changed from {old} to {new} between {start} and {end}")


def _comm_failures(conn: Connection[Any], meters: list[str], start: datetime, end: datetime,
                   th: Thresholds) -> rules.Findings:
    """Meters whose read jobs for the range all failed (at least ``comm_min_failed``): the collection side."""
    empty = rules.Findings("comm_failure", np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                           np.zeros(0, dtype=np.int64))
    rows = conn.execute(
        "SELECT meter, count(*) FILTER (WHERE status = 'failed'), min(coalesce(slot, created_at)), "
        "max(coalesce(slot, created_at)), max(error) FROM read_jobs WHERE meter = ANY(%s) "
        "AND coalesce(slot, created_at) >= %s AND coalesce(slot, created_at) < %s GROUP BY meter "
        "HAVING count(*) FILTER (WHERE status IN ('ok', 'partial')) = 0 AND count(*) FILTER (WHERE status = 'failed') "
        ">= %s", (meters, start, end, th.comm_min_failed)).fetchall()
    if not rows:
        return empty
    idx = {m: i for i, m in enumerate(meters)}
    return rules.Findings(
        "comm_failure", np.array([idx[r[0]] for r in rows], dtype=np.int64),
        np.array([int(r[2].timestamp()) for r in rows], dtype=np.int64),
        np.array([int(r[3].timestamp()) + 1 for r in rows], dtype=np.int64),
        {"failed_jobs": np.array([r[1] for r in rows]), "last_error": np.array([str(r[4] or "")[:80] for r in rows])},
        "meter {meter}: {failed_jobs} read jobs failed from {start} to {end}, none succeeded ({last_error})", "error")


def _fill_history(conn: Connection[Any], base: FloatArray, names: list[str], rows: IntArray, hist_start: datetime,
                  start: datetime, t0: int, step: int, s_col: int) -> None:
    """Load the history intervals (raw, then edits on top) of the meters that need estimating into ``base``."""
    if not names:
        return
    h_raw = storeio.load_readings(conn, storeio.INTERVAL_TABLE, [INTERVAL_Q], names, hist_start, start)
    h_ver = storeio.load_versions(conn, [INTERVAL_Q], names, hist_start, start)
    hist = build_grid(h_raw, len(names), t0, step, s_col)
    edited = h_ver.quality & int(Quality.EDITED) != 0
    if edited.any():
        sub = storeio.Readings(h_ver.meter[edited], h_ver.quantity[edited], h_ver.ts[edited], h_ver.value[edited],
                               h_ver.quality[edited], h_ver.version[edited])
        eg = build_grid(sub, len(names), t0, step, s_col)
        hist = np.where(np.isnan(eg), hist, eg)
    base[rows, :s_col] = hist


def _concat(a: storeio.Readings, b: storeio.Readings) -> storeio.Readings:
    if len(b) == 0:
        return a
    if len(a) == 0:
        return b
    return storeio.Readings(*(np.concatenate([getattr(a, f), getattr(b, f)])
                              for f in ("meter", "quantity", "ts", "value", "quality", "version")))


def _daily(base: FloatArray, t0: int, step: int, bounds: IntArray) -> tuple[FloatArray, IntArray]:
    """Energy per whole local day inside the range (``bounds``: local midnights, DST-aware); NaN if incomplete."""
    m, n = base.shape
    if bounds.size < 2:
        return np.zeros((m, 0)), np.zeros(0, dtype=np.int64)
    cols = np.clip((bounds - t0) // step, 0, n)
    cs = np.concatenate([np.zeros((m, 1)), np.cumsum(np.nan_to_num(base), axis=1)], axis=1)
    nan_cs = np.concatenate([np.zeros((m, 1)), np.cumsum(np.isnan(base), axis=1)], axis=1)
    total = cs[:, cols[1:]] - cs[:, cols[:-1]]
    missing = nan_cs[:, cols[1:]] - nan_cs[:, cols[:-1]]
    return np.where(missing > 0, np.nan, total), bounds[:-1].astype(np.int64)


def _day_types(first_day: date, days: int) -> IntArray:
    wd = np.array([(first_day + timedelta(days=i)).weekday() for i in range(days)])
    out: IntArray = (wd >= 5).astype(np.int64)
    return out


def _midnight_registers(regs: storeio.Readings, m_n: int, t0: int, step: int, n: int, per_day: int) -> tuple[
        IntArray | None, FloatArray | None]:
    tot = regs.select(0)
    if len(tot) == 0:
        return None, None
    cols = np.arange(0, n + 1, per_day, dtype=np.int64)
    on_day = (tot.ts - t0) % (per_day * step) == 0
    if not on_day.any():
        return None, None
    c = (tot.ts[on_day] - t0) // step
    vals = np.full((m_n, cols.size), np.nan)
    k = c // per_day
    ok = (k >= 0) & (k < cols.size)
    vals[tot.meter[on_day][ok], k[ok]] = tot.value[on_day][ok]
    return cols, vals


def _register_checks(regs: storeio.Readings, meters: list[str], th: Thresholds, start: datetime, end: datetime,
                     base: FloatArray, t0: int, step: int, exch: list[dict[str, Any]]) -> list[rules.Findings]:
    out: list[rules.Findings] = []
    tot = regs.select(0)
    m_n = len(meters)
    s_ts, e_ts = int(start.timestamp()), int(end.timestamp())
    if len(tot):
        # per-meter sequences (M x K), K = most reads of one meter
        sel = (tot.ts >= s_ts - 86400) & (tot.ts <= e_ts)
        mtr, ts, val = tot.meter[sel], tot.ts[sel], tot.value[sel]
        if mtr.size:
            first = np.searchsorted(mtr, np.arange(m_n))
            pos = np.arange(mtr.size) - first[mtr]
            k = int(pos.max()) + 1
            reads = np.full((m_n, k), np.nan)
            tsm = np.zeros((m_n, k), dtype=np.int64)
            reads[mtr, pos] = val
            tsm[mtr, pos] = ts
            segment = None
            if exch:
                segment = np.zeros((m_n, k), dtype=np.int64)
                idx = {m: i for i, m in enumerate(meters)}
                for e in exch:  # loop over exchange records (rare)
                    for key in ("old_meter", "new_meter"):
                        r = idx.get(str(e.get(key)))
                        if r is not None and e.get("ts") is not None:
                            segment[r] += (tsm[r] >= int(e["ts"].timestamp())).astype(np.int64)
                out.append(rules.check_exchange(segment, reads, tsm[0] if m_n == 1 else tsm.max(axis=0)))
            dec, roll = rules.check_register_decrease(reads, tsm, th, segment=segment)
            out += [dec, roll]
            # sum check: intervals between the first and last register read inside the range
            inside = ts >= s_ts
            cnt_in = np.bincount(mtr[inside], minlength=m_n)
            first = np.searchsorted(mtr, np.arange(m_n)) + np.bincount(mtr[~inside], minlength=m_n)
            last = first + cnt_in - 1
            has = cnt_in >= 2
            rows = np.flatnonzero(has)
            if rows.size:
                fi, la = first[rows], last[rows]
                ts_a, ts_b = ts[fi], ts[la]
                cols_a = (ts_a - t0) // step
                cols_b = (ts_b - t0) // step
                cs = np.concatenate([np.zeros((m_n, 1)), np.cumsum(np.nan_to_num(base), axis=1)], axis=1)
                nan_cs = np.concatenate([np.zeros((m_n, 1)), np.cumsum(np.isnan(base), axis=1)], axis=1)
                ok = (cols_a >= 0) & (cols_b <= base.shape[1]) & (cols_b > cols_a)
                ca, cb = np.clip(cols_a, 0, base.shape[1]), np.clip(cols_b, 0, base.shape[1])
                isum = cs[rows, cb] - cs[rows, ca]
                complete = (nan_cs[rows, cb] - nan_cs[rows, ca]) == 0
                # an exchange inside the span makes the register delta meaningless
                same_seg = np.ones(rows.size, dtype=bool) if segment is None else (
                    segment[rows, 0] == segment[rows, k - 1])
                use = ok & complete & same_seg
                if use.any():
                    # a rollover inside the span: the register delta wraps around register_max
                    rolled = np.zeros(m_n, dtype=bool)
                    rolled[roll.rows] = True
                    end_v = np.where(rolled[rows] & (val[la] < val[fi]), val[la] + th.register_max, val[la])
                    f = rules.check_sum_intervals_register(isum[use], val[fi][use], end_v[use], ts_a[use], ts_b[use],
                                                           th)
                    out.append(rules.Findings(f.rule, rows[use][f.rows], f.start, f.end, f.values, f.explanation))
    # tariff registers vs total at the same time
    tariffs = [regs.select(q) for q in range(1, 5)]
    if len(tot) and any(len(t) for t in tariffs):
        key_t = tot.meter * (1 << 40) + tot.ts
        tab = np.full((key_t.size, 4), np.nan)
        for j, t in enumerate(tariffs):
            if len(t) == 0:
                continue
            kk = t.meter * (1 << 40) + t.ts
            pos = np.searchsorted(key_t, kk)
            hit = (pos < key_t.size) & (key_t[np.minimum(pos, key_t.size - 1)] == kk)
            tab[pos[hit], j] = t.value[hit]
        have = ~np.isnan(tab).all(axis=1) & (tot.ts >= s_ts) & (tot.ts < e_ts)
        if have.any():
            out.append(rules.check_sum_tou(tot.value[have], tab[have], tot.ts[have], tot.meter[have], th))
    return out


def _store_estimates(conn: Connection[Any], meters: list[str], values: FloatArray, method: npt.NDArray[np.int8],
                     new: npt.NDArray[np.bool_], prior: storeio.Readings, w0: int, step: int, run_id: int,
                     operator: str, rejected: npt.NDArray[np.bool_] | None = None) -> int:
    """Insert estimates as new versions, skipping cells whose standing version already has that value."""
    r, c = np.nonzero(new)
    if r.size == 0:
        return 0
    ts = w0 + c * step
    prev_v: dict[tuple[int, int], tuple[int, float]] = {}
    for m, t, v, ver in zip(prior.meter.tolist(), prior.ts.tolist(), prior.value.tolist(), prior.version.tolist(),
                            strict=True):
        prev_v[(m, t)] = (ver, v)  # sorted by version: the last is the standing one
    rows = []
    for mi, ci, t in zip(r.tolist(), c.tolist(), ts.tolist(), strict=True):  # loop over estimated cells only
        v = float(values[mi, ci])
        ver, old = prev_v.get((mi, t), (0, np.nan))
        if not np.isnan(old) and abs(old - v) < 1e-9:
            continue
        rows.append((meters[mi], INTERVAL_Q, datetime.fromtimestamp(t, UTC), ver + 1, v,
                     int(Quality.ESTIMATED), method_name(int(method[mi, ci])),
                     "rejected value (failed validation)" if rejected is not None and rejected[mi, ci]
                     else "missing interval",
                     operator or "vee", run_id))
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO read_versions (meter, quantity, ts, version, value, quality, method, reason, operator, "
                "run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
    return len(rows)


_UPSERT_EXC = """
INSERT INTO vee_exceptions (run_id, rule, severity, meter, quantity, start_ts, end_ts, vals, explanation)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (meter, rule, quantity, start_ts, end_ts) DO UPDATE SET
    run_id = EXCLUDED.run_id, severity = EXCLUDED.severity,
    vals = EXCLUDED.vals || jsonb_strip_nulls(jsonb_build_object('resolution', vee_exceptions.vals -> 'resolution')),
    explanation = EXCLUDED.explanation, last_seen = now()
"""


def store_exceptions(conn: Connection[Any], recs: Sequence[rules.VeeException], run_id: int | None,
                     quantity: str = INTERVAL_Q) -> None:
    if not recs:
        return
    with conn.cursor() as cur:
        cur.executemany(_UPSERT_EXC, [(run_id, r.rule, r.severity, r.meter, quantity, r.start, r.end, Jsonb(r.values),
                                       r.explanation) for r in recs])


#: Flags the collection daemon keeps in ``meter_flags`` -> work order type.
FLAG_ORDERS: dict[str, wo.WorkOrderType] = {"clock_off": wo.WorkOrderType.CLOCK_ERROR}


def orders_from_flags(conn: Connection[Any], meters: Sequence[str]) -> list[int]:
    """Raised (not cleared) daemon flags become work orders, once per flag raise (evidence key)."""
    if not meters:
        return []
    rows = conn.execute("SELECT meter, flag, raised_at, detail FROM meter_flags WHERE cleared_at IS NULL AND "
                        "meter = ANY(%s) AND flag = ANY(%s)", (list(meters), list(FLAG_ORDERS))).fetchall()
    ids = []
    for meter, flag, raised_at, detail in rows:  # one row per flagged meter
        ev = {"summary": f"daemon flag {flag}: {detail}", "flag": flag, "detail": detail,
              "key": f"flag-{flag}-{raised_at.isoformat()}"}
        ids.append(wo.raise_work_order_sync(conn, meter, FLAG_ORDERS[flag], ev, source="daemon-flag").id)
    return ids


def raise_orders_for_run(conn: Connection[Any], run_id: int) -> list[int]:
    """One work order per meter and type from this run's open exceptions (evidence: the exceptions)."""
    rows = conn.execute(
        "SELECT id, rule, severity, meter, start_ts, end_ts, explanation FROM vee_exceptions "
        "WHERE run_id = %s AND status = 'open' AND work_order_id IS NULL ORDER BY meter, start_ts", (run_id,)
    ).fetchall()
    groups: dict[tuple[str, wo.WorkOrderType], list[Any]] = defaultdict(list)
    for r in rows:
        rule_order = RULE_ORDERS.get(r[1])
        if rule_order is None or _SEV.get(r[2], 0) < _SEV[rule_order[1]]:
            continue
        wtype = rule_order[0]
        if r[1] == "gap" and (r[5] - r[4]) >= timedelta(days=1):
            wtype = wo.WorkOrderType.COMM_INSPECTION  # silent for a day or more: not a one-off re-read
        groups[(r[3], wtype)].append(r)
    ids = []
    for (meter, wtype), items in groups.items():
        worst = min(_PRIORITY.get(i[2], 3) for i in items)
        evidence = {"summary": items[0][6][:300], "run_id": run_id,
                    "exceptions": [{"id": i[0], "rule": i[1], "severity": i[2], "start": i[4], "end": i[5]}
                                   for i in items[:20]], "count": len(items)}
        ref = wo.raise_work_order_sync(conn, meter, wtype, evidence, priority=worst, source="vee")
        conn.execute("UPDATE vee_exceptions SET work_order_id = %s WHERE id = ANY(%s)", (ref.id, [i[0] for i in items]))
        ids.append(ref.id)
    return ids
