"""Evaluation of VEE estimation and detection on real public load profiles.

    python -m bench.eval_vee [--data DIR] [--seed 1] [--per-class 40] [--out docs/bench/vee_eval.json]

Data are read in place from the shared data folder (``--data``, env ``HEADEND_SHARED_DATA``,
default ``<repo>/../shared/data``); nothing is copied. Sources (see their SOURCE.md):
Smart-Grid Smart-City Customer Trial (Australian Government, Ausgrid), 50 households, 30 min;
EEAR (github.com/bryangoodrich/EEAR), 7 SMUD commercial meters, 15 min;
G. Hebrail and A. Berard, UCI "Individual household electric power consumption", doi:10.24432/C58K54.

Part 1, estimation: gaps of 30 min, 2 h, 8 h, 1 day and 3 days are punched into complete stretches
of every series; the production estimator (:func:`mdm.vee.estimate.estimate`, without and with
daily register reads) is compared with plain linear interpolation and a 3-like-day average on
NMAE (sum |error| / sum |truth| over the punched intervals) and energy bias (sum error / sum truth).

Part 2, detection: known faults and theft patterns are injected into real series; each rule's
detection rate is reported, and its alarms on the unmodified series per 1,000 meter-days (an
upper bound of the false-alarm rate: the real data may hold real anomalies).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mdm import anomalies
from mdm.vee import rules
from mdm.vee.config import Thresholds, load_vee_config
from mdm.vee.estimate import estimate, like_day_average, linear_interpolate

FloatArray = npt.NDArray[np.float64]

GAP_CLASSES: dict[str, int] = {"30min": 1800, "2h": 7200, "8h": 28800, "1day": 86400, "3days": 259200}


@dataclass
class Series:
    name: str
    kind: str  # household | commercial
    day0: np.datetime64  # local midnight of column 0
    step: int  # seconds
    values: FloatArray  # kWh per interval, NaN = missing in the source
    extra: dict[str, FloatArray] = field(default_factory=dict)
    multiplier: float = 1.0  # CT ratio a real installation of this size would have

    @property
    def per_day(self) -> int:
        return 86400 // self.step

    def day_type(self) -> npt.NDArray[np.int64]:
        days = -(-self.values.size // self.per_day)
        dates = self.day0.astype("datetime64[D]") + np.arange(days)
        weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday -> Monday = 0
        out: npt.NDArray[np.int64] = (weekday >= 5).astype(np.int64)
        return out


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("HEADEND_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _grid(ts: npt.NDArray[np.datetime64], vals: FloatArray, step: int) -> tuple[np.datetime64, FloatArray]:
    sec = ts.astype("datetime64[s]").astype(np.int64)
    day0 = (sec.min() // 86400) * 86400
    end = (sec.max() // 86400 + 1) * 86400
    n = (end - day0) // step
    grid = np.full(n, np.nan)
    idx = (sec - day0) // step
    grid[idx] = vals
    return np.datetime64(int(day0), "s"), grid


def load_sgsc(root: Path) -> list[Series]:
    path = root / "sgsc_nsw_50_households" / "sgsc_50_households_30min.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        r = csv.reader(f)
        next(r)
        cols = list(zip(*r, strict=True))
    cust = np.array(cols[0])
    ts = np.array(cols[1], dtype="datetime64[s]")
    kwh = np.array(cols[3], dtype=np.float64)
    out = []
    for c in np.unique(cust):
        sel = cust == c
        day0, grid = _grid(ts[sel], kwh[sel], 1800)
        out.append(Series(f"sgsc-{c}", "household", day0, 1800, grid))
    return out


def load_uci(root: Path) -> list[Series]:
    path = root / "uci_household_power_sceaux" / "household_power_15min.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        r = csv.reader(f)
        header = next(r)
        cols = list(zip(*r, strict=True))
    h = {name: i for i, name in enumerate(header)}
    ts = np.array(cols[h["interval_start_local"]], dtype="datetime64[s]")
    kwh = np.array(cols[h["kwh"]], dtype=np.float64)
    imputed = np.array(cols[h["n_imputed_minutes"]], dtype=np.int64) > 0
    nmin = np.array(cols[h["n_minutes"]], dtype=np.int64)
    kwh = np.where(imputed | (nmin < 15), np.nan, kwh)
    volt = np.array(cols[h["voltage_mean"]], dtype=np.float64)
    day0, grid = _grid(ts, kwh, 900)
    _, vgrid = _grid(ts, np.where(np.isnan(kwh), np.nan, volt), 900)
    with np.errstate(invalid="ignore", divide="ignore"):
        current = grid * 4 * 1000 / vgrid  # mean current over the interval, A
    return [Series("uci-sceaux", "household", day0, 900, grid, {"voltage": vgrid, "current": current})]


def load_smud(root: Path) -> list[Series]:
    path = root / "smud_eear_commercial_15min" / "smud_3_meters_15min_kw.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        r = csv.reader(f)
        next(r)
        cols = list(zip(*r, strict=True))
    meter = np.array(cols[1])
    ts_utc = np.array([s.rstrip("Z") for s in cols[2]], dtype="datetime64[s]")
    kw = np.array(cols[3], dtype=np.float64)
    # local standard time (UTC-8); DST ignored for the grid, a 1 h shift of the like-day shape in summer
    ts = ts_utc - np.timedelta64(8 * 3600, "s")
    out = []
    for m in np.unique(meter):
        sel = meter == m
        day0, grid = _grid(ts[sel], kw[sel] * 0.25, 900)
        # sized like a real installation: CT ratio so that the rating covers 1.25 x the peak
        th = load_vee_config().for_class("commercial")
        rating_kw = th.nominal_voltage * th.rated_max_current * th.phases / 1000
        ct = float(np.ceil(np.nanmax(grid) * 4 * 1.25 / rating_kw / 5) * 5)
        out.append(Series(f"smud-{m}", "commercial", day0, 900, grid, multiplier=max(ct, 1.0)))
    return out


# --------------------------------------------------------------------------- part 1: estimation


def _pick_gaps(values: FloatArray, length: int, per_day: int, count: int, rng: np.random.Generator) -> list[int]:
    """Start columns of non-overlapping gaps in complete stretches with >= 28 days of history."""
    n = values.size
    known = ~np.isnan(values)
    cs = np.concatenate([[0], np.cumsum(~known)])
    lo = 28 * per_day
    hi = n - length - per_day - 2
    if hi <= lo:
        return []
    cand = np.arange(lo, hi)
    span = length + 2
    clean = (cs[cand + span - 1] - cs[cand - 1]) == 0  # gap plus one known cell either side
    cand = cand[clean]
    rng.shuffle(cand)
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for c in cand:  # loop over candidate gap positions (a few dozen), not over data
        a, b = c - per_day, c + length + per_day
        if taken[max(a, 0):b].any():
            continue
        taken[c:c + length] = True
        chosen.append(int(c))
        if len(chosen) >= count:
            break
    return chosen


def _daily_registers(truth: FloatArray, per_day: int) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Midnight register reads from the true series (NaN where a day holds a source gap)."""
    n = truth.size
    days = n // per_day
    cols = np.arange(days + 1) * per_day
    reg = np.concatenate([[0.0], np.nancumsum(truth)])[cols]
    day_has_nan = np.isnan(truth[: days * per_day]).reshape(days, per_day).any(axis=1)
    bad = np.zeros(days + 1, dtype=bool)
    bad[:-1] |= day_has_nan
    bad[1:] |= day_has_nan
    # a read next to a source gap cannot bound a span; drop both ends of such days
    reg = np.where(bad, np.nan, reg)
    return cols.astype(np.int64), reg


def evaluate_estimation(series: list[Series], per_class: int, seed: int, th: Thresholds) -> dict[str, dict[str, float]]:
    methods: dict[str, Callable[[Series, FloatArray], FloatArray]] = {
        "linear": lambda s, g: linear_interpolate(g[None, :])[0],
        "like_day": lambda s, g: like_day_average(g[None, :], s.per_day, s.day_type(), th.like_days)[0],
        "estimator": lambda s, g: _estimator(s, g, th, registers=False),
        "estimator+registers": lambda s, g: _estimator(s, g, th, registers=True),
    }
    results: dict[str, dict[str, float]] = {}
    groups = {"all": series}
    for s in series:
        groups.setdefault(s.name.split("-")[0], []).append(s)
    for (grp, members), (cls, seconds) in itertools.product(groups.items(), GAP_CLASSES.items()):
        err = {k: 0.0 for k in methods}
        bias = {k: 0.0 for k in methods}
        truth_sum = 0.0
        n_gaps = 0
        n_cells = 0
        unfilled = {k: 0 for k in methods}
        rng = np.random.default_rng([seed, list(GAP_CLASSES).index(cls)])
        for s in members:
            length = max(seconds // s.step, 1)
            starts = _pick_gaps(s.values, length, s.per_day, per_class, rng)
            if not starts:
                continue
            g = s.values.copy()
            mask = np.zeros(g.size, dtype=bool)
            for c in starts:
                mask[c:c + length] = True
            g[mask] = np.nan
            truth = s.values[mask]
            truth_sum += float(np.abs(truth).sum())
            n_gaps += len(starts)
            n_cells += int(mask.sum())
            for k, fn in methods.items():
                est = fn(s, g)[mask]
                miss = np.isnan(est)
                unfilled[k] += int(miss.sum())
                est = np.where(miss, 0.0, est)  # an unfilled cell counts as a full error
                err[k] += float(np.abs(est - truth).sum())
                bias[k] += float((est - truth).sum())
        key = f"{grp}/{cls}"
        results[key] = {"gaps": n_gaps, "intervals": n_cells}
        for k in methods:
            results[key][f"{k}_nmae"] = err[k] / truth_sum if truth_sum else float("nan")
            results[key][f"{k}_bias"] = bias[k] / truth_sum if truth_sum else float("nan")
            results[key][f"{k}_unfilled"] = unfilled[k]
    return results


def _estimator(s: Series, g: FloatArray, th: Thresholds, *, registers: bool) -> FloatArray:
    cols, reg = _daily_registers(s.values, s.per_day) if registers else (None, None)
    est: FloatArray = estimate(g[None, :], per_day=s.per_day, day_type=s.day_type(),
                    linear_max=max(int(th.estimate_blend_hours * 3600 // s.step), 1),
                    like_days=th.estimate_like_days, decay=th.estimate_decay_hours * 3600 / s.step,
                    reg_cols=cols, reg_values=None if reg is None else reg[None, :]).values[0]
    return est


def print_estimation(res: dict[str, dict[str, float]]) -> None:
    names = ["linear", "like_day", "estimator", "estimator+registers"]
    print("\n## Estimation: NMAE (energy bias) per gap class")
    print("| data / gap | gaps | " + " | ".join(names) + " | estimator beats both |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for cls, r in res.items():
        cells = [f"{r[f'{k}_nmae']:.3f} ({r[f'{k}_bias']:+.3f})" for k in names]
        beats = r["estimator_nmae"] < min(r["linear_nmae"], r["like_day_nmae"])
        beats_r = r["estimator+registers_nmae"] < min(r["linear_nmae"], r["like_day_nmae"])
        verdict = ("yes" if beats else "no") + (" / with registers yes" if beats_r else " / with registers no")
        print(f"| {cls} | {int(r['gaps'])} | " + " | ".join(cells) + f" | {verdict} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="shared data folder (env HEADEND_SHARED_DATA)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-class", type=int, default=40, help="gaps per series and gap class")
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--skip-estimation", action="store_true")
    ap.add_argument("--skip-detection", action="store_true")
    args = ap.parse_args(argv)
    root = data_dir(args.data)
    if not root.is_dir():
        print(f"shared data folder not found: {root} (use --data or HEADEND_SHARED_DATA)", file=sys.stderr)
        return 2
    th = load_vee_config().for_class("residential")
    t = time.perf_counter()
    series = load_sgsc(root) + load_uci(root) + load_smud(root)
    print(f"loaded {len(series)} series in {time.perf_counter() - t:.1f} s")
    out: dict[str, object] = {}
    if not args.skip_estimation:
        t = time.perf_counter()
        est = evaluate_estimation(series, args.per_class, args.seed, th)
        print_estimation(est)
        print(f"(estimation part {time.perf_counter() - t:.1f} s)")
        out["estimation"] = est
    if not args.skip_detection:
        t = time.perf_counter()
        det = evaluate_detection(series, args.seed)
        det.update({f"theft: {k}": v for k, v in evaluate_theft(series, args.seed).items()})
        print_detection(det)
        area = evaluate_area_balance(series, args.seed)
        print(f"\n## Transformer-area balance (synthetic areas of real SGSC households)\n"
              f"{area['areas']} areas, {area['theft_areas']} with a bypass: abnormal loss on "
              f"{area['abnormal_day_detection']:.1%} of the theft days, thief ranked first in "
              f"{area['thief_ranked_first']:.1%} of theft areas, clean areas abnormal on "
              f"{area['clean_abnormal_per_1000_area_days']:.1f} per 1,000 area-days")
        out["area_balance"] = area
        print(f"(detection part {time.perf_counter() - t:.1f} s)")
        out["detection"] = det
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- part 2: detection


@dataclass
class DayMatrix:
    step: int
    rows: FloatArray  # meter-days x intervals (complete days of real data)
    history: FloatArray  # meter-days x 28: the same meter's previous 28 daily energies (NaN = unknown)
    voltage: FloatArray | None
    nominal_v: float
    multiplier: FloatArray  # per meter-day: CT x PT ratio of the installation


def _day_matrix(series: list[Series], step: int, max_days: int, rng: np.random.Generator) -> DayMatrix:
    rows, hist, volts, mults = [], [], [], []
    has_v = all("voltage" in s.extra for s in series)
    for s in series:
        if s.step != step:
            continue
        p = s.per_day
        days = s.values.size // p
        grid = s.values[: days * p].reshape(days, p)
        daily = grid.sum(axis=1)  # NaN when any interval is missing
        complete = np.flatnonzero(~np.isnan(daily))
        complete = complete[complete >= 28]
        if complete.size > max_days:
            complete = np.sort(rng.choice(complete, max_days, replace=False))
        h_idx = complete[:, None] - np.arange(1, 29)[None, :]
        rows.append(grid[complete])
        mults.append(np.full(complete.size, s.multiplier))
        hist.append(daily[h_idx])
        if has_v:
            volts.append(s.extra["voltage"][: days * p].reshape(days, p)[complete])
    return DayMatrix(step, np.concatenate(rows), np.concatenate(hist),
                     np.concatenate(volts) if has_v and volts else None, 230.0, np.concatenate(mults))


def _detect(rule: str, dm: DayMatrix, x: FloatArray, th: Thresholds, extra: dict[str, FloatArray]) -> set[int]:
    """Rows (meter-days) on which ``rule`` fires."""
    step = dm.step
    n = x.shape[0]
    day_start = np.zeros(1, dtype=np.int64)
    f: rules.Findings
    if rule == "gap":
        f = rules.check_gaps(x, 0, step, th)
    elif rule == "spike":
        f = rules.check_spikes(x, 0, step, th)
    elif rule == "stopped":
        f = rules.check_stopped(x, extra["current"], None, 0, step, th)
    elif rule in ("high_usage", "low_usage"):
        hi, lo = rules.check_high_low(np.nansum(x, axis=1)[:, None], dm.history, day_start, th)
        f = hi if rule == "high_usage" else lo
    elif rule == "running_fast":
        daily = np.nansum(x, axis=1)[:, None]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            hmax = np.nanmax(dm.history, axis=1)
        f = rules.check_running_fast(x, 0, step, th, multiplier=dm.multiplier, history_daily_max=hmax,
                                     daily=daily, day_start=day_start)
    elif rule == "reverse_energy":
        f = rules.check_reverse_energy(extra["export"], None, 0, step, th)
    elif rule == "register_decrease":
        f, _ = rules.check_register_decrease(extra["register"], np.arange(x.shape[1] + 1, dtype=np.int64) * step, th)
    elif rule == "register_rollover":
        _, f = rules.check_register_decrease(extra["register"], np.arange(x.shape[1] + 1, dtype=np.int64) * step, th)
    elif rule in ("voltage_high", "voltage_low"):
        hi_v, lo_v = rules.check_voltage_band({"a": extra["voltage"]}, 0, step, th)
        f = hi_v if rule == "voltage_high" else lo_v
    elif rule == "voltage_loss":
        f = rules.check_voltage_loss({"a": extra["voltage"]}, {"a": extra["current"]}, 0, step, th)
    else:
        raise ValueError(rule)
    return {int(r) for r in f.rows if r < n}


def _inject(rule: str, x: FloatArray, rows: npt.NDArray[np.int64], rng: np.random.Generator, dm: DayMatrix,
            extra: dict[str, FloatArray], th: Thresholds) -> None:
    """Inject a known fault into the chosen rows (in place)."""
    p = x.shape[1]
    for r in rows:  # loop over the handful of injected meter-days
        c = int(rng.integers(2, p - 10))
        if rule == "gap":
            x[r, c:c + 4] = np.nan
        elif rule == "spike":
            x[r, c] = x[r, c] * 20 + 2 * th.spike_min_kw * dm.step / 3600
        elif rule == "stopped":
            load = extra["current"][r, c:c + 8].copy()
            extra["current"][r, c:c + 8] = np.maximum(load, 2 * th.stopped_current_a)
            x[r, c:c + 8] = 0.0
        elif rule in ("high_usage", "running_fast"):
            x[r] *= 8.0
        elif rule == "low_usage":
            x[r] *= 0.02
        elif rule == "reverse_energy":
            extra["export"][r, c:c + 4] = np.maximum(x[r, c:c + 4], 2 * th.reverse_min_kwh)
            x[r, c:c + 4] = 0.0
        elif rule == "register_decrease":
            extra["register"][r, c:] -= 5.0 + 2 * np.nanmax(x[r])
        elif rule == "register_rollover":
            extra["register"][r] = extra["register"][r] - extra["register"][r, c] + th.register_max
            extra["register"][r] = np.where(extra["register"][r] >= th.register_max,
                                            extra["register"][r] - th.register_max, extra["register"][r])
        elif rule == "voltage_high":
            extra["voltage"][r, c:c + 4] = th.nominal_voltage * (1 + th.voltage_high_pct / 100) + 5
        elif rule == "voltage_low":
            extra["voltage"][r, c:c + 4] = th.nominal_voltage * (1 - th.voltage_low_pct / 100) - 5
        elif rule == "voltage_loss":
            extra["voltage"][r, c:c + 4] = 0.3 * th.nominal_voltage
            extra["current"][r, c:c + 4] = np.maximum(extra["current"][r, c:c + 4], 2 * th.loss_current_a)


DETECTION_RULES = ["gap", "spike", "stopped", "high_usage", "low_usage", "running_fast", "reverse_energy",
                   "register_decrease", "register_rollover", "voltage_high", "voltage_low", "voltage_loss"]


def evaluate_detection(series: list[Series], seed: int, max_days: int = 400, injected: int = 200) -> dict[
        str, dict[str, float]]:
    """Per rule: detection rate on injected meter-days, alarms per 1,000 unmodified meter-days."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    for step, label in ((1800, "households 30 min (SGSC)"), (900, "household 15 min (UCI)"),
                        (900, "commercial 15 min (SMUD)")):
        members = [s for s in series if s.step == step and s.name.startswith(label.split("(")[1][:3].lower())]
        if not members:
            continue
        dm = _day_matrix(members, step, max_days, rng)
        kind = members[0].kind
        th = load_vee_config().for_class("commercial" if kind == "commercial" else "residential")
        if dm.voltage is not None:
            th = th.model_copy(update={"nominal_voltage": 230.0, "voltage_high_pct": 10.0, "voltage_low_pct": 10.0})
        base = dm.rows
        hours = step / 3600
        current = base / hours * 1000 / th.nominal_voltage / th.phases
        volt = dm.voltage if dm.voltage is not None else np.full(base.shape, th.nominal_voltage)
        register = np.concatenate([np.zeros((base.shape[0], 1)), np.cumsum(base, axis=1)], axis=1) + 1000.0
        clean_extra = {"current": current, "export": np.zeros_like(base), "register": register, "voltage": volt}
        for rule in DETECTION_RULES:
            if rule.startswith("voltage") and dm.voltage is None:
                continue
            fired_clean = _detect(rule, dm, base, th, clean_extra)
            x = base.copy()
            extra = {k: v.copy() for k, v in clean_extra.items()}
            candidates = np.setdiff1d(np.arange(base.shape[0]), np.fromiter(fired_clean, dtype=np.int64))
            rows = rng.choice(candidates, min(injected, candidates.size), replace=False)
            _inject(rule, x, rows, rng, dm, extra, th)
            fired = _detect(rule, dm, x, th, extra)
            hit = len(fired & {int(r) for r in rows})
            out[f"{label}/{rule}"] = {
                "meter_days": int(base.shape[0]),
                "injected": int(rows.size),
                "detected": hit,
                "detection_rate": hit / rows.size if rows.size else float("nan"),
                "alarms_clean": len(fired_clean),
                "alarms_per_1000_meter_days": 1000 * len(fired_clean) / base.shape[0],
            }
    return out


def evaluate_theft(series: list[Series], seed: int, windows_per_series: int = 20, window_days: int = 42,
                   recent_days: int = 7) -> dict[str, dict[str, float]]:
    """Sustained drop (meter bypass taking 50-80 % of the load) injected into 42-day windows of real daily use.

    Half of the windows get the drop over their last 7 days; the score must flag those and not the
    others. Peer check off (windows of different customers are not peers).
    """
    rng = np.random.default_rng(seed + 100)
    out: dict[str, dict[str, float]] = {}
    th = load_vee_config().for_class("residential")
    for grp in ("sgsc", "uci", "smud"):
        wins = []
        for s in series:
            if not s.name.startswith(grp):
                continue
            days = s.values.size // s.per_day
            daily = s.values[: days * s.per_day].reshape(days, s.per_day).sum(axis=1)
            starts = rng.integers(0, max(days - window_days, 1), windows_per_series)
            for a in starts:
                w = daily[a:a + window_days]
                if w.size == window_days and np.isnan(w).mean() < 0.2:
                    wins.append(w)
        if not wins:
            continue
        x = np.array(wins)
        inject: npt.NDArray[np.bool_] = np.asarray(rng.random(x.shape[0]) < 0.5)
        keep: FloatArray = np.asarray(rng.uniform(0.2, 0.5, x.shape[0]))  # the share of the load still seen
        y = x.copy()
        y[inject, -recent_days:] *= keep[inject, None]
        min_base = th.history_min_mean_kwh if grp != "smud" else 50.0
        flag, _ = anomalies.sustained_drop(y, recent_days=recent_days, ratio=th.drop_ratio, min_baseline=min_base)
        eligible: npt.NDArray[np.bool_] = np.asarray(np.nanmedian(x[:, :-recent_days], axis=1) >= min_base)
        hit = flag & inject & eligible
        fa = flag & ~inject
        out[f"{grp}/sustained_drop"] = {
            "meter_days": int((~inject).sum() * recent_days), "injected": int((inject & eligible).sum()),
            "detected": int(hit.sum()), "detection_rate": float(hit.sum() / max((inject & eligible).sum(), 1)),
            "alarms_clean": int(fa.sum()),
            "alarms_per_1000_meter_days": float(1000 * fa.sum() / max((~inject).sum() * recent_days, 1)),
        }
    return out


def evaluate_area_balance(series: list[Series], seed: int, areas: int = 400, size: int = 10, days: int = 35,
                          theft_from: int = 28) -> dict[str, float]:
    """Synthetic transformer areas of real households: 10 SGSC customers (each a real 35-day stretch), a check
    meter reading their true total plus 3 % +/- 0.5 % technical loss. In half the areas one customer bypasses
    50-80 % of its load from day 28. Reported: abnormal-loss detection (> 8 %) on the theft days, the thief
    ranked first by :func:`mdm.balance.rank_area_suspects`, and abnormal days in the clean areas."""
    from mdm import balance

    rng = np.random.default_rng(seed + 200)
    th = load_vee_config().for_class("residential")
    pool = []
    for s in series:
        if not s.name.startswith("sgsc"):
            continue
        d = s.values.size // s.per_day
        daily = s.values[: d * s.per_day].reshape(d, s.per_day).sum(axis=1)
        pool.append(daily)
    theft_days = hit_days = clean_days = clean_alarm = top1 = thefts = 0
    for _ in range(areas):  # loop over synthetic areas (a few hundred), each vectorised
        cust: list[FloatArray] = []
        while len(cust) < size:
            d = pool[int(rng.integers(len(pool)))]
            if d.size < days:
                continue
            a = int(rng.integers(0, d.size - days + 1))
            w = d[a:a + days]
            if not np.isnan(w).any():
                cust.append(w)
        true = np.array(cust)
        check = true.sum(axis=0) * (1 + rng.normal(0.03, 0.005, days))
        metered = true.copy()
        theft = rng.random() < 0.5
        if theft:
            k = int(rng.integers(size))
            metered[k, theft_from:] *= rng.uniform(0.2, 0.5)
        area_of = np.zeros(size, dtype=np.int64)
        bal = balance.area_balance(check[None, :], metered, area_of)
        abnormal = bal.abnormal(th.area_loss_pct, th.area_loss_negative_pct)[0]
        if theft:
            thefts += 1
            theft_days += days - theft_from
            hit_days += int(abnormal[theft_from:].sum())
            score, _ = balance.rank_area_suspects(bal, metered, area_of, recent_days=days - theft_from)
            top1 += int(np.argmax(score) == k)
        else:
            clean_days += days
            clean_alarm += int(abnormal.sum())
    return {"areas": areas, "theft_areas": thefts, "abnormal_day_detection": hit_days / max(theft_days, 1),
            "thief_ranked_first": top1 / max(thefts, 1),
            "clean_abnormal_per_1000_area_days": 1000 * clean_alarm / max(clean_days, 1)}


def print_detection(res: dict[str, dict[str, float]]) -> None:
    print("\n## Detection: injected faults on real meter-days")
    print("| data / rule | meter-days | injected | detection rate | alarms on unmodified data per 1,000 meter-days |")
    print("|---|---|---|---|---|")
    for k, r in res.items():
        print(f"| {k} | {int(r['meter_days'])} | {int(r['injected'])} | {r['detection_rate']:.1%} | "
              f"{r['alarms_per_1000_meter_days']:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
