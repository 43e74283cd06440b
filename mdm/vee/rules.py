"""Validation rules as pure functions over numpy arrays, batched per meter and time range.

Layout used by every rule:

* a *grid* of ``M`` meters x ``N`` intervals: ``values[m, j]`` is the value of meter ``m`` for the
  interval starting at ``t0 + j * step`` (epoch seconds, UTC); ``NaN`` = missing;
* *raw* flat arrays ``(rows, ts, values)`` for the checks that need what arrived before it is put
  on the grid (duplicates, off-grid and future timestamps, counts per local day);
* *register series* as a grid of reads (``M`` x ``K``), ``NaN`` = no read.

Each rule returns :class:`Findings`: parallel arrays for the failures only (meter row, time range,
the values involved) plus a rule id, severity and an explanation template. No rule loops over
rows in Python; the only Python loops are over failures when they are turned into records, and
over calendar days when local-day boundaries are computed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from mdm.vee.config import Thresholds

__all__ = [
    "RULES",
    "Findings",
    "RuleInfo",
    "VeeException",
    "check_clock_drift",
    "check_count_per_day",
    "check_current_imbalance",
    "check_current_loss",
    "check_duplicates",
    "check_exchange",
    "check_future",
    "check_gaps",
    "check_high_low",
    "check_multiplier_change",
    "check_neutral_mismatch",
    "check_power_factor",
    "check_prolonged_estimation",
    "check_register_decrease",
    "check_reverse_energy",
    "check_running_fast",
    "check_spikes",
    "check_stopped",
    "check_sum_intervals_register",
    "check_sum_tou",
    "check_voltage_band",
    "check_voltage_loss",
    "local_day_bounds",
    "runs",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    severity: str
    title: str


#: The rule catalogue: id -> default severity and a title (rule ids are stored with each exception).
RULES: dict[str, RuleInfo] = {r.id: r for r in [
    RuleInfo("gap", "warning", "missing intervals"),
    RuleInfo("duplicate", "warning", "duplicate reads for one time"),
    RuleInfo("off_grid", "warning", "timestamp not on the interval grid (interval size)"),
    RuleInfo("day_count", "warning", "interval count per local day (92/96/100 around DST)"),
    RuleInfo("future", "error", "timestamp in the future"),
    RuleInfo("clock_drift", "warning", "meter clock drift beyond tolerance"),
    RuleInfo("register_decrease", "error", "register went backwards (示度下降)"),
    RuleInfo("register_rollover", "info", "register rolled over at its maximum"),
    RuleInfo("running_fast", "error", "consumption implausible for the rating or history (飞走)"),
    RuleInfo("stopped", "error", "zero consumption while current or power flows (停走)"),
    RuleInfo("spike", "warning", "interval spike"),
    RuleInfo("high_usage", "warning", "daily use high against own history"),
    RuleInfo("low_usage", "warning", "daily use low against own history"),
    RuleInfo("sum_register", "error", "intervals do not add up to the register delta"),
    RuleInfo("sum_tou", "error", "tariff registers do not add up to the total"),
    RuleInfo("voltage_high", "warning", "voltage above band"),
    RuleInfo("voltage_low", "warning", "voltage below band"),
    RuleInfo("voltage_loss", "error", "phase voltage loss under load (失压)"),
    RuleInfo("current_loss", "error", "phase current loss while other phases load (失流)"),
    RuleInfo("current_imbalance", "warning", "phase currents imbalanced"),
    RuleInfo("reverse_energy", "error", "reverse energy on a meter without generation"),
    RuleInfo("power_factor", "warning", "power factor out of range"),
    RuleInfo("neutral_mismatch", "error", "neutral current differs from phase current"),
    RuleInfo("multiplier_change", "warning", "CT/PT multiplier changed"),
    RuleInfo("meter_exchange", "info", "meter exchanged: reads across it are not consumption"),
    RuleInfo("prolonged_estimation", "error", "too many estimated intervals"),
    RuleInfo("comm_failure", "error", "every read job of the range failed (collection side)"),
]}


@dataclass(frozen=True, slots=True)
class VeeException:
    """One stored exception: what failed, where, when, with which values, and why in words."""

    rule: str
    severity: str
    meter: str
    start: datetime
    end: datetime
    values: dict[str, Any]
    explanation: str


@dataclass(frozen=True, slots=True)
class Findings:
    """Failures of one rule over a batch, as parallel arrays (one entry per failure)."""

    rule: str
    rows: IntArray
    start: IntArray  # epoch seconds, inclusive
    end: IntArray  # epoch seconds, exclusive
    values: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    explanation: str = ""
    severity: str | npt.NDArray[np.str_] | None = None

    def __len__(self) -> int:
        return int(self.rows.size)

    def records(self, meters: Sequence[str]) -> list[VeeException]:
        """Turn failures into exception records (a loop over failures only)."""
        out: list[VeeException] = []
        default_sev = RULES[self.rule].severity
        for i in range(len(self)):
            vals = {k: _py(v[i]) for k, v in self.values.items()}
            if isinstance(self.severity, np.ndarray):
                sev = str(self.severity[i])
            else:
                sev = self.severity or default_sev
            start = datetime.fromtimestamp(int(self.start[i]), UTC)
            end = datetime.fromtimestamp(int(self.end[i]), UTC)
            meter = meters[int(self.rows[i])]
            text = self.explanation.format(meter=meter, start=start.isoformat(), end=end.isoformat(), **vals)
            out.append(VeeException(self.rule, sev, meter, start, end, vals, text))
        return out


def _py(v: Any) -> Any:
    if isinstance(v, np.floating):
        f = float(v)
        return None if np.isnan(f) else round(f, 6)
    if isinstance(v, np.integer | np.bool_):
        return v.item()
    if isinstance(v, np.str_):
        return str(v)
    return v


def _empty(rule: str) -> Findings:
    z = np.zeros(0, dtype=np.int64)
    return Findings(rule, z, z, z)


# --------------------------------------------------------------------------- helpers


def runs(mask: BoolArray, min_len: int = 1) -> tuple[IntArray, IntArray, IntArray]:
    """Runs of True along axis 1 of a 2-D mask: (row, first column, column after the last).

    Vectorised: pad each row with False, diff, and pair the rising and falling edges.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 1:
        m = m[None, :]
    rows_n, cols_n = m.shape
    padded = np.zeros((rows_n, cols_n + 2), dtype=np.int8)
    padded[:, 1:-1] = m
    d = np.diff(padded, axis=1)
    sr, sc = np.nonzero(d == 1)
    _er, ec = np.nonzero(d == -1)
    keep = (ec - sc) >= min_len
    return sr[keep].astype(np.int64), sc[keep].astype(np.int64), ec[keep].astype(np.int64)


def _col_times(t0: int, step: int, cols: IntArray) -> IntArray:
    return (t0 + cols * step).astype(np.int64)


@contextmanager
def _quiet() -> Iterator[None]:
    """All-NaN slices and NaN comparisons are expected here: silence their warnings."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _nanmedian_rows(x: FloatArray) -> FloatArray:
    with _quiet():
        return np.nanmedian(x, axis=1)


def local_day_bounds(start: date, days: int, tz: str) -> IntArray:
    """Epoch seconds of local midnights from ``start`` for ``days`` days (``days + 1`` bounds).

    A DST day is 23 or 25 hours long, so it holds 92 or 100 quarter-hours.
    """
    zone = ZoneInfo(tz)
    return np.array(
        [int(datetime.combine(start + timedelta(days=i), datetime.min.time(), zone).timestamp())
         for i in range(days + 1)], dtype=np.int64)


# --------------------------------------------------------------------------- raw-read checks


def check_duplicates(rows: IntArray, ts: IntArray, values: FloatArray) -> Findings:
    """Two or more reads of one meter for one time. Values equal -> warning; different -> error."""
    if rows.size == 0:
        return _empty("duplicate")
    order = np.lexsort((ts, rows))
    r, t, v = rows[order], ts[order], values[order]
    same = (r[1:] == r[:-1]) & (t[1:] == t[:-1])
    if not same.any():
        return _empty("duplicate")
    idx = np.flatnonzero(same)
    differ = ~np.isclose(v[idx], v[idx + 1], equal_nan=True)
    sev = np.where(differ, "error", "warning")
    return Findings(
        "duplicate", r[idx], t[idx], t[idx] + 1,
        {"first": v[idx], "second": v[idx + 1]},
        "meter {meter}: two reads for {start}: {first} and {second}", sev)


def check_off_grid(rows: IntArray, ts: IntArray, step: int) -> Findings:
    bad = (ts % step) != 0
    if not bad.any():
        return _empty("off_grid")
    idx = np.flatnonzero(bad)
    return Findings("off_grid", rows[idx], ts[idx], ts[idx] + 1, {"offset_s": ts[idx] % step, "step_s": np.full(
        idx.size, step)}, "meter {meter}: interval at {start} is {offset_s} s off the {step_s} s grid")


def check_future(rows: IntArray, ts: IntArray, now: int, th: Thresholds) -> Findings:
    bad = ts > now + th.future_tolerance_s
    if not bad.any():
        return _empty("future")
    idx = np.flatnonzero(bad)
    return Findings("future", rows[idx], ts[idx], ts[idx] + 1, {"ahead_s": ts[idx] - now},
                    "meter {meter}: read stamped {start}, {ahead_s} s in the future")


def check_count_per_day(rows: IntArray, ts: IntArray, n_meters: int, bounds: IntArray, step: int) -> Findings:
    """Intervals per local day vs expected (day length / step: 92, 96 or 100 quarter-hours).

    ``bounds``: local-midnight epoch seconds from :func:`local_day_bounds`. Distinct times are
    counted (duplicates are their own rule). Only days inside ``bounds`` are judged.
    """
    days = bounds.size - 1
    if days <= 0:
        return _empty("day_count")
    expected = (np.diff(bounds) // step).astype(np.int64)
    inside = (ts >= bounds[0]) & (ts < bounds[-1])
    r, t = rows[inside], ts[inside]
    # distinct (meter, ts) only
    key = r * np.int64(1 << 40) + (t - bounds[0])
    key = np.unique(key)
    r = key // np.int64(1 << 40)
    t = key % np.int64(1 << 40) + bounds[0]
    day = np.searchsorted(bounds, t, side="right") - 1
    counts = np.bincount(r * days + day, minlength=n_meters * days).reshape(n_meters, days)
    bad = counts != expected[None, :]
    mr, dc = np.nonzero(bad)
    found = counts[mr, dc]
    exp = expected[dc]
    sev = np.where(found > exp, "error", "warning")
    return Findings("day_count", mr.astype(np.int64), bounds[dc], bounds[dc + 1],
                    {"found": found, "expected": exp},
                    "meter {meter}: {found} intervals on the local day starting {start}, expected {expected}", sev)


def check_clock_drift(rows: IntArray, ts: IntArray, offset_s: FloatArray, th: Thresholds) -> Findings:
    """``offset_s`` = meter clock minus head-end clock at read time (quantity ``clock.offset``).

    One finding per meter: the reads beyond tolerance, from the first to the last, with the
    largest offset (error when any is beyond ``clock_drift_error_s``).
    """
    a = np.abs(offset_s)
    bad = a > th.clock_drift_warn_s
    if not bad.any():
        return _empty("clock_drift")
    idx = np.flatnonzero(bad)
    order = idx[np.lexsort((ts[idx], rows[idx]))]
    r = rows[order]
    first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    last = np.r_[first[1:], r.size] - 1
    worst = np.maximum.reduceat(a[order], first)
    grp = np.repeat(np.arange(first.size), np.diff(np.r_[first, r.size]))
    by_size = np.lexsort((-a[order], grp))  # per meter, the largest |offset| first
    w_idx = by_size[first]
    sev = np.where(worst > th.clock_drift_error_s, "error", "warning")
    return Findings("clock_drift", r[first], ts[order][first], ts[order][last] + 1,
                    {"offset_s": offset_s[order][w_idx], "reads": last - first + 1},
                    "meter {meter}: clock off by up to {offset_s} s in {reads} reads from {start}", sev)


# --------------------------------------------------------------------------- interval grid checks


def check_gaps(values: FloatArray, t0: int, step: int, th: Thresholds) -> Findings:
    r, s, e = runs(np.isnan(values), th.gap_min_intervals)
    if r.size == 0:
        return _empty("gap")
    n = e - s
    sev = np.where(n >= th.gap_error_intervals, "error", "warning")
    return Findings("gap", r, _col_times(t0, step, s), _col_times(t0, step, e), {"missing": n},
                    "meter {meter}: {missing} intervals missing from {start} to {end}", sev)


def check_spikes(values: FloatArray, t0: int, step: int, th: Thresholds) -> Findings:
    """An interval far above the meter's median over the window and above both neighbours."""
    med = _nanmedian_rows(values)
    base = np.where(np.isnan(med) | (med <= 0), 0.0, med)
    left = np.empty_like(values)
    right = np.empty_like(values)
    left[:, 1:] = values[:, :-1]
    left[:, 0] = np.nan
    right[:, :-1] = values[:, 1:]
    right[:, -1] = np.nan
    with _quiet():
        neigh = np.nanmean(np.stack([left, right]), axis=0) if values.size else values
    neigh = np.where(np.isnan(neigh), base[:, None], neigh)
    min_kwh = th.spike_min_kw * step / 3600.0
    with np.errstate(invalid="ignore"):
        bad = (values > th.spike_factor * np.maximum(base[:, None], 1e-9)) & (values - neigh > min_kwh) & (
            values > th.spike_factor * np.maximum(neigh, 1e-9))
    r, c = np.nonzero(bad)
    if r.size == 0:
        return _empty("spike")
    return Findings("spike", r.astype(np.int64), _col_times(t0, step, c), _col_times(t0, step, c + 1),
                    {"value": values[r, c], "median": base[r], "neighbours": neigh[r, c]},
                    "meter {meter}: {value} kWh at {start}, median {median}, neighbours {neighbours}")


def check_high_low(daily: FloatArray, history: FloatArray, day_start: IntArray, th: Thresholds) -> tuple[
        Findings, Findings]:
    """Daily energy (M x D) against each meter's own history (M x H daily energies, NaN = unknown).

    High: above ``high_factor`` x mean and mean + 4 sd. Low: below ``low_factor`` x mean (zero
    included; zero during a known outage should be excluded by the caller).
    """
    with _quiet():
        mean = np.nanmean(history, axis=1)
        sd = np.nanstd(history, axis=1)
    ok = ~np.isnan(mean) & (mean >= th.history_min_mean_kwh)
    m = mean[:, None]
    s = sd[:, None]
    with np.errstate(invalid="ignore"):
        high = ok[:, None] & (daily > th.high_factor * m) & (daily > m + 4 * s)
        low = ok[:, None] & (daily < th.low_factor * m)
    out = []
    for rule, mask, word in (("high_usage", high, "above"), ("low_usage", low, "below")):
        r, c = np.nonzero(mask)
        if r.size == 0:
            out.append(_empty(rule))
            continue
        out.append(Findings(rule, r.astype(np.int64), day_start[c], day_start[c] + 86400,
                            {"kwh": daily[r, c], "history_mean": mean[r], "history_sd": sd[r]},
                            "meter {meter}: {kwh} kWh on the day from {start}, " + word
                            + " its history ({history_mean} ± {history_sd})"))
    return out[0], out[1]


def check_running_fast(values: FloatArray, t0: int, step: int, th: Thresholds, multiplier: FloatArray | None = None,
                       history_daily_max: FloatArray | None = None, daily: FloatArray | None = None,
                       day_start: IntArray | None = None) -> Findings:
    """飞走: interval energy above what U x Imax x phases could deliver (x CT/PT multiplier), or
    a daily energy far above the meter's own history maximum."""
    mult = np.ones(values.shape[0]) if multiplier is None else multiplier
    cap = th.fast_factor * th.nominal_voltage * th.rated_max_current * th.phases / 1000.0 * step / 3600.0 * mult
    with np.errstate(invalid="ignore"):
        bad = values > cap[:, None]
    r, c = np.nonzero(bad)
    rows = [r.astype(np.int64)]
    starts = [_col_times(t0, step, c)]
    ends = [_col_times(t0, step, c + 1)]
    val = [values[r, c]]
    lim = [cap[r]]
    basis = [np.full(r.size, "rating")]
    if history_daily_max is not None and daily is not None and day_start is not None:
        lim_h = np.maximum(th.fast_history_factor * history_daily_max, th.fast_history_min_kwh)
        with np.errstate(invalid="ignore"):
            bad_h = daily > lim_h[:, None]
        rh, ch = np.nonzero(bad_h)
        rows.append(rh.astype(np.int64))
        starts.append(day_start[ch])
        ends.append(day_start[ch] + 86400)
        val.append(daily[rh, ch])
        lim.append(lim_h[rh])
        basis.append(np.full(rh.size, "history"))
    rr = np.concatenate(rows)
    if rr.size == 0:
        return _empty("running_fast")
    return Findings("running_fast", rr, np.concatenate(starts), np.concatenate(ends),
                    {"kwh": np.concatenate(val), "limit": np.concatenate(lim), "basis": np.concatenate(basis)},
                    "meter {meter}: {kwh} kWh from {start} to {end} exceeds the {basis} limit {limit} kWh (飞走)")


def check_stopped(values: FloatArray, current: FloatArray | None, power: FloatArray | None, t0: int, step: int,
                  th: Thresholds) -> Findings:
    """停走: interval energy exactly zero for ``stopped_min_intervals`` while current or power shows load."""
    load = np.zeros(values.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        if current is not None:
            load |= current > th.stopped_current_a
        if power is not None:
            load |= np.abs(power) > th.stopped_power_kw
        mask = (values == 0.0) & load
    r, s, e = runs(mask, th.stopped_min_intervals)
    if r.size == 0:
        return _empty("stopped")
    cur = current if current is not None else np.full(values.shape, np.nan)
    cs = np.nancumsum(np.nan_to_num(cur), axis=1)
    cs = np.concatenate([np.zeros((cs.shape[0], 1)), cs], axis=1)
    mean_i = (cs[r, e] - cs[r, s]) / (e - s)
    return Findings("stopped", r, _col_times(t0, step, s), _col_times(t0, step, e),
                    {"intervals": e - s, "mean_current_a": mean_i},
                    "meter {meter}: no energy for {intervals} intervals from {start} while load flows "
                    "(mean current {mean_current_a} A) (停走)")


def check_reverse_energy(export: FloatArray | None, power: FloatArray | None, t0: int, step: int,
                         th: Thresholds) -> Findings:
    """Reverse energy grows, or signed power is negative, on a meter without generation."""
    if th.has_generation:
        return _empty("reverse_energy")
    shape = export.shape if export is not None else (power.shape if power is not None else (0, 0))
    mask = np.zeros(shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        if export is not None:
            mask |= export > th.reverse_min_kwh
        if power is not None:
            mask |= power < th.reverse_power_kw
    r, s, e = runs(mask, 1)
    if r.size == 0:
        return _empty("reverse_energy")
    ex = np.zeros(shape) if export is None else np.nan_to_num(export)
    cs = np.concatenate([np.zeros((shape[0], 1)), np.cumsum(ex, axis=1)], axis=1)
    return Findings("reverse_energy", r, _col_times(t0, step, s), _col_times(t0, step, e),
                    {"intervals": e - s, "export_kwh": cs[r, e] - cs[r, s]},
                    "meter {meter}: reverse energy {export_kwh} kWh over {intervals} intervals from {start}"
                    " (no generation: reversed CT or wiring?)")


# --------------------------------------------------------------------------- register checks


def check_register_decrease(reads: FloatArray, ts: IntArray, th: Thresholds,
                            segment: IntArray | None = None) -> tuple[Findings, Findings]:
    """示度下降 vs rollover, on a register grid ``reads`` (M x K, NaN = no read) at times ``ts`` (K, or M x K).

    Consecutive known reads are compared. A drop from within ``rollover_margin`` of
    ``register_max`` to within the margin of zero is a rollover (info), any other drop beyond
    ``decrease_tolerance`` is a decrease (error). ``segment`` (M x K ints) marks meter
    exchanges: pairs in different segments are skipped (the exchange rule reports them).
    """
    m, k = reads.shape
    if k < 2:
        return _empty("register_decrease"), _empty("register_rollover")
    tsm = ts if ts.ndim == 2 else np.broadcast_to(ts[None, :], (m, k))  # per-meter read times allowed
    # previous known read per cell (forward fill of indices)
    known = ~np.isnan(reads)
    idx = np.where(known, np.arange(k)[None, :], -1)
    prev_idx = np.maximum.accumulate(idx, axis=1)
    prev_idx = np.concatenate([np.full((m, 1), -1), prev_idx[:, :-1]], axis=1)
    valid = known & (prev_idx >= 0)
    rows_i = np.arange(m)[:, None]
    prev_val = np.where(prev_idx >= 0, reads[rows_i, np.maximum(prev_idx, 0)], np.nan)
    if segment is not None:
        valid &= segment == segment[rows_i, np.maximum(prev_idx, 0)]
    with np.errstate(invalid="ignore"):
        delta = reads - prev_val
        drop = valid & (delta < -th.decrease_tolerance)
        margin = th.rollover_margin * th.register_max
        roll = drop & (prev_val >= th.register_max - margin) & (reads <= margin)
    dec = drop & ~roll
    out = []
    for rule, mask, text in (
        ("register_decrease", dec, "meter {meter}: register fell from {previous} to {value} kWh between {start} and "
                                   "{end} (示度下降)"),
        ("register_rollover", roll, "meter {meter}: register rolled over at {register_max} ({previous} -> {value}),"
                                    " consumption {consumption} kWh"),
    ):
        r, c = np.nonzero(mask)
        if r.size == 0:
            out.append(_empty(rule))
            continue
        pc = prev_idx[r, c]
        vals = {"previous": prev_val[r, c], "value": reads[r, c]}
        if rule == "register_rollover":
            vals["register_max"] = np.full(r.size, th.register_max)
            vals["consumption"] = th.register_max - prev_val[r, c] + reads[r, c]
        out.append(Findings(rule, r.astype(np.int64), tsm[r, pc], tsm[r, c] + 1, vals, text))
    return out[0], out[1]


def check_sum_intervals_register(interval_sum: FloatArray, reg_start: FloatArray, reg_end: FloatArray,
                                 t_start: IntArray, t_end: IntArray, th: Thresholds,
                                 multiplier: FloatArray | None = None) -> Findings:
    """Σ intervals over [t_start, t_end) vs (register end - start) x multiplier, per meter (M)."""
    mult = np.ones(interval_sum.shape) if multiplier is None else multiplier
    delta = (reg_end - reg_start) * mult
    tol = np.maximum(th.sum_rel_tolerance * np.abs(delta), th.sum_abs_tolerance)
    with np.errstate(invalid="ignore"):
        bad = np.abs(interval_sum - delta) > tol
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return _empty("sum_register")
    return Findings("sum_register", idx.astype(np.int64), t_start[idx], t_end[idx],
                    {"intervals_kwh": interval_sum[idx], "register_delta_kwh": delta[idx],
                     "difference_kwh": interval_sum[idx] - delta[idx]},
                    "meter {meter}: intervals add up to {intervals_kwh} kWh but the register moved "
                    "{register_delta_kwh} kWh from {start} to {end}")


def check_sum_tou(total: FloatArray, tariffs: FloatArray, ts: IntArray, rows: IntArray, th: Thresholds) -> Findings:
    """Tariff registers (R x T, NaN = not read) vs the total register (R), per read."""
    s = np.nansum(tariffs, axis=1)
    with np.errstate(invalid="ignore"):
        bad = np.abs(s - total) > th.tou_abs_tolerance + 1e-6 * np.abs(total)
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return _empty("sum_tou")
    return Findings("sum_tou", rows[idx], ts[idx], ts[idx] + 1, {"total": total[idx], "tariff_sum": s[idx]},
                    "meter {meter}: tariff registers add up to {tariff_sum} kWh, total register {total} kWh at "
                    "{start}")


def check_multiplier_change(multiplier: FloatArray, ts: IntArray) -> Findings:
    """CT x PT multiplier per meter over time (M x K). A change means reads before and after are not comparable."""
    if multiplier.shape[1] < 2:
        return _empty("multiplier_change")
    prev = multiplier[:, :-1]
    cur = multiplier[:, 1:]
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(prev) & ~np.isnan(cur) & (prev != cur)
    r, c = np.nonzero(bad)
    if r.size == 0:
        return _empty("multiplier_change")
    return Findings("multiplier_change", r.astype(np.int64), ts[c], ts[c + 1] + 1,
                    {"old": prev[r, c], "new": cur[r, c]},
                    "meter {meter}: CT/PT multiplier changed from {old} to {new} between {start} and {end}")


def check_exchange(segment: FloatArray | IntArray, reads: FloatArray, ts: IntArray) -> Findings:
    """Reads across a meter exchange (segment id changes): reported, and excluded from consumption."""
    if segment.shape[1] < 2:
        return _empty("meter_exchange")
    chg = segment[:, 1:] != segment[:, :-1]
    r, c = np.nonzero(chg)
    if r.size == 0:
        return _empty("meter_exchange")
    return Findings("meter_exchange", r.astype(np.int64), ts[c], ts[c + 1] + 1,
                    {"old_read": reads[r, c], "new_read": reads[r, c + 1]},
                    "meter {meter}: exchanged between {start} and {end} (old {old_read}, new {new_read} kWh); "
                    "the jump is not consumption")


# --------------------------------------------------------------------------- power quality / phases


def _run_findings(rule: str, mask: BoolArray, min_len: int, t0: int, step: int, extra: Mapping[str, FloatArray],
                  text: str, phase: str = "") -> Findings:
    r, s, e = runs(mask, min_len)
    if r.size == 0:
        return _empty(rule)
    vals: dict[str, npt.NDArray[Any]] = {"intervals": e - s}
    for name, arr in extra.items():
        a = np.nan_to_num(arr)
        cs = np.concatenate([np.zeros((a.shape[0], 1)), np.cumsum(a, axis=1)], axis=1)
        vals[name] = (cs[r, e] - cs[r, s]) / (e - s)
    if phase:
        vals["phase"] = np.full(r.size, phase)
    return Findings(rule, r, _col_times(t0, step, s), _col_times(t0, step, e), vals, text)


def _concat(rule: str, parts: Sequence[Findings]) -> Findings:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty(rule)
    keys = parts[0].values.keys()
    return Findings(rule, np.concatenate([p.rows for p in parts]), np.concatenate([p.start for p in parts]),
                    np.concatenate([p.end for p in parts]),
                    {k: np.concatenate([p.values[k] for p in parts]) for k in keys}, parts[0].explanation)


def check_voltage_band(voltage: Mapping[str, FloatArray], t0: int, step: int, th: Thresholds) -> tuple[
        Findings, Findings]:
    """Voltage (per phase, M x N) outside nominal +high% / -low% for ``voltage_min_intervals``.

    Near-zero voltage is left to the voltage-loss rule (it is not a band problem).
    """
    hi = th.nominal_voltage * (1 + th.voltage_high_pct / 100)
    lo = th.nominal_voltage * (1 - th.voltage_low_pct / 100)
    floor = th.nominal_voltage * th.voltage_loss_pct / 100
    highs, lows = [], []
    for ph, v in voltage.items():
        with np.errstate(invalid="ignore"):
            highs.append(_run_findings("voltage_high", v > hi, th.voltage_min_intervals, t0, step, {"mean_v": v},
                                       "meter {meter}: phase {phase} voltage {mean_v} V above " + f"{hi:.1f}"
                                       " V for {intervals} intervals from {start}", ph))
            lows.append(_run_findings("voltage_low", (v < lo) & (v >= floor), th.voltage_min_intervals, t0, step,
                                      {"mean_v": v}, "meter {meter}: phase {phase} voltage {mean_v} V below "
                                      + f"{lo:.1f}" + " V for {intervals} intervals from {start}", ph))
    return _concat("voltage_high", highs), _concat("voltage_low", lows)


def check_voltage_loss(voltage: Mapping[str, FloatArray], current: Mapping[str, FloatArray], t0: int, step: int,
                       th: Thresholds) -> Findings:
    """失压: a phase voltage below ``voltage_loss_pct`` of nominal while that phase (or, with no
    per-phase current, any phase) carries current."""
    floor = th.nominal_voltage * th.voltage_loss_pct / 100
    any_i: FloatArray | None = None
    for i in current.values():
        any_i = i if any_i is None else np.fmax(any_i, i)
    parts = []
    for ph, v in voltage.items():
        cur_i = current[ph] if ph in current else any_i
        if cur_i is None:
            continue
        i = cur_i
        with np.errstate(invalid="ignore"):
            mask = (v < floor) & (i > th.loss_current_a)
        parts.append(_run_findings("voltage_loss", mask, th.phase_min_intervals, t0, step, {"mean_v": v,
                                   "mean_a": i}, "meter {meter}: phase {phase} voltage {mean_v} V while "
                                   "{mean_a} A flows, {intervals} intervals from {start} (失压)", ph))
    return _concat("voltage_loss", parts)


def check_current_loss(current: Mapping[str, FloatArray], voltage: Mapping[str, FloatArray] | None, t0: int,
                       step: int, th: Thresholds) -> Findings:
    """失流: a phase current near zero while another phase loads (and the phase has voltage)."""
    if len(current) < 2:
        return _empty("current_loss")
    phases = list(current)
    stack = np.stack([current[p] for p in phases])
    parts = []
    for k, ph in enumerate(phases):
        others = np.delete(stack, k, axis=0)
        with _quiet():
            omax = np.nanmax(others, axis=0)
            mask = (current[ph] < th.current_loss_a) & (omax > th.current_load_a)
            if voltage is not None and ph in voltage:
                mask &= voltage[ph] > th.nominal_voltage * th.voltage_loss_pct / 100
        parts.append(_run_findings("current_loss", mask, th.phase_min_intervals, t0, step,
                                   {"phase_a": current[ph], "others_a": omax},
                                   "meter {meter}: phase {phase} current {phase_a} A while another phase carries "
                                   "{others_a} A, {intervals} intervals from {start} (失流)", ph))
    return _concat("current_loss", parts)


def check_current_imbalance(current: Mapping[str, FloatArray], t0: int, step: int, th: Thresholds) -> Findings:
    if len(current) < 2:
        return _empty("current_imbalance")
    stack = np.stack(list(current.values()))
    with _quiet():
        mx = np.nanmax(stack, axis=0)
        mn = np.nanmin(stack, axis=0)
        pct = np.where(mx > 0, (mx - mn) / np.where(mx > 0, mx, 1) * 100, 0.0)
        mask = (mx > th.imbalance_min_current_a) & (pct > th.imbalance_pct)
    return _run_findings("current_imbalance", mask, th.imbalance_min_intervals, t0, step, {"imbalance_pct": pct},
                         "meter {meter}: phase currents {imbalance_pct}% apart for {intervals} intervals from {start}")


def check_power_factor(pf: FloatArray, power: FloatArray | None, t0: int, step: int, th: Thresholds) -> Findings:
    """|pf| > 1 (impossible) always, pf below ``pf_min`` when power is above ``pf_min_power_kw``."""
    with np.errstate(invalid="ignore"):
        loaded = np.ones(pf.shape, dtype=bool) if power is None else np.abs(power) > th.pf_min_power_kw
        mask = (np.abs(pf) > 1.0 + 1e-6) | (loaded & (np.abs(pf) < th.pf_min))
    return _run_findings("power_factor", mask, 1, t0, step, {"pf": pf},
                         "meter {meter}: power factor {pf} for {intervals} intervals from {start}")


def check_neutral_mismatch(phase_current: FloatArray, neutral_current: FloatArray, t0: int, step: int,
                           th: Thresholds) -> Findings:
    """Single-phase meter: neutral and phase currents differ persistently (load returns another way)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        big = np.fmax(phase_current, neutral_current)
        pct = np.abs(phase_current - neutral_current) / np.where(big > 0, big, 1) * 100
        mask = (big > th.neutral_min_current_a) & (pct > th.neutral_mismatch_pct)
    return _run_findings("neutral_mismatch", mask, th.neutral_min_intervals, t0, step,
                         {"phase_a": phase_current, "neutral_a": neutral_current},
                         "meter {meter}: phase {phase_a} A vs neutral {neutral_a} A for {intervals} intervals "
                         "from {start}")


def check_prolonged_estimation(estimated: BoolArray, t0: int, step: int, th: Thresholds) -> Findings:
    """More than ``prolonged_estimated_intervals`` estimated intervals in the window."""
    n = estimated.sum(axis=1)
    idx = np.flatnonzero(n > th.prolonged_estimated_intervals)
    if idx.size == 0:
        return _empty("prolonged_estimation")
    end = t0 + estimated.shape[1] * step
    return Findings("prolonged_estimation", idx.astype(np.int64), np.full(idx.size, t0, dtype=np.int64),
                    np.full(idx.size, end, dtype=np.int64), {"estimated": n[idx],
                                                             "limit": np.full(idx.size,
                                                                              th.prolonged_estimated_intervals)},
                    "meter {meter}: {estimated} estimated intervals from {start} to {end} (limit {limit}): "
                    "needs a real read")
