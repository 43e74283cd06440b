"""Estimation of missing or rejected intervals, vectorised over a meter x interval grid.

Methods (stored with each estimated value as ``Quality.ESTIMATED`` plus the method name):

* ``linear``: straight line between the intervals either side of a gap (short gaps);
* ``like_day``: mean of the same interval on the nearest earlier like days (same day type:
  working day or rest day) that were read, not estimated;
* ``shape``: the production estimator, a like-day shape corrected to the gap's edges (the
  residual at each edge, decaying into the gap) and blended with the line for short gaps;
* ``+scaled``: any of them scaled so the gap holds the energy the boundary register reads say it
  must (register delta minus the intervals that are known), when such reads exist.

Everything is numpy over the whole grid: no Python loop over meters or intervals.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "EstimateResult",
    "Method",
    "estimate",
    "like_day_average",
    "linear_interpolate",
    "method_name",
    "scale_to_registers",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Method(IntEnum):
    RAW = 0
    LINEAR = 1
    LIKE_DAY = 2
    SHAPE = 3
    SCALED = 8  # bit added to the base method


def method_name(code: int) -> str:
    base = Method(code & 7).name.lower()
    return base + ("+scaled" if code & Method.SCALED else "")


@dataclass(frozen=True, slots=True)
class EstimateResult:
    values: FloatArray  # the grid with estimates filled in (NaN where nothing could be estimated)
    method: npt.NDArray[np.int8]  # Method code per cell (0 = raw / untouched)

    @property
    def estimated(self) -> BoolArray:
        return np.asarray(self.method != 0)


def _edges(missing: BoolArray) -> tuple[IntArray, IntArray]:
    """Index of the previous and next known cell per cell (-1 / n when none), per row."""
    n = missing.shape[1]
    cols = np.arange(n)
    prev = np.where(~missing, cols[None, :], -1)
    prev = np.maximum.accumulate(prev, axis=1)
    nxt = np.where(~missing, cols[None, :], n)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    return prev.astype(np.int64), nxt.astype(np.int64)


def linear_interpolate(values: FloatArray, max_gap: int | None = None) -> FloatArray:
    """Fill interior gaps (both edges known) of at most ``max_gap`` intervals with a straight line."""
    v = np.asarray(values, dtype=np.float64)
    missing = np.isnan(v)
    prev, nxt = _edges(missing)
    m, n = v.shape
    rows = np.arange(m)[:, None]
    ok = missing & (prev >= 0) & (nxt < n)
    if max_gap is not None:
        ok &= (nxt - prev - 1) <= max_gap
    pv = v[rows, np.clip(prev, 0, n - 1)]
    nv = v[rows, np.clip(nxt, 0, n - 1)]
    cols = np.arange(n)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (cols - prev) / np.maximum(nxt - prev, 1)
        lin = pv + (nv - pv) * frac
    return np.where(ok, lin, v)


def like_day_average(values: FloatArray, per_day: int, day_type: IntArray | None = None, like_days: int = 3,
                     max_lookback_days: int = 28, usable: BoolArray | None = None) -> FloatArray:
    """Mean of the same interval on the ``like_days`` nearest earlier like days with a usable read.

    ``day_type`` gives a type per day of the grid (the grid starts at a day boundary);
    ``usable`` marks cells that may serve as history (default: not NaN). Returns a full grid
    of like-day values (NaN where no like day was found).
    """
    v = np.asarray(values, dtype=np.float64)
    m, n = v.shape
    use = ~np.isnan(v) if usable is None else (usable & ~np.isnan(v))
    days_n = -(-n // per_day)
    dtype_ = np.zeros(days_n, dtype=np.int64) if day_type is None else np.asarray(day_type)
    day_of_col = np.arange(n) // per_day
    total = np.zeros((m, n))
    count = np.zeros((m, n))
    for k in range(1, max_lookback_days + 1):  # loop over lags (days), not over data
        shift = k * per_day
        if shift >= n:
            break
        src_ok = np.zeros((m, n), dtype=bool)
        src_ok[:, shift:] = use[:, :-shift]
        same_type = np.zeros(n, dtype=bool)
        same_type[shift:] = dtype_[day_of_col[shift:]] == dtype_[day_of_col[:-shift]]
        take = src_ok & same_type[None, :] & (count < like_days)
        if not take.any():
            if (count >= like_days).all():
                break
            continue
        src = np.zeros((m, n))
        src[:, shift:] = np.nan_to_num(v[:, :-shift])
        total += np.where(take, src, 0.0)
        count += take
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def scale_to_registers(est: FloatArray, raw: FloatArray, filled: BoolArray, reg_cols: IntArray,
                       reg_values: FloatArray) -> tuple[FloatArray, BoolArray]:
    """Scale estimated cells so each span between register reads holds the register delta.

    ``reg_cols`` (K, sorted): grid column at which each register read was taken (the read at
    column c covers energy of intervals < c); ``reg_values`` (M x K, NaN = no read). For each
    span between two known reads, the estimated cells in it are scaled by
    (delta - known intervals) / (sum of estimates). Spans whose remainder is negative, or whose
    estimates sum to zero, get the remainder spread evenly. Returns (values, scaled mask).
    """
    m, n = est.shape
    out = est.copy()
    scaled = np.zeros((m, n), dtype=bool)
    k = reg_cols.size
    if k < 2:
        return out, scaled
    seg = np.searchsorted(reg_cols, np.arange(n), side="right") - 1  # span index per column, -1 before first
    inside = (seg >= 0) & (seg < k - 1)
    seg_c = np.clip(seg, 0, k - 2)
    rows = np.arange(m)[:, None]
    key = (rows * (k - 1) + seg_c[None, :])
    known_part = np.where(~filled & inside[None, :], np.nan_to_num(raw), 0.0)
    est_part = np.where(filled & inside[None, :], np.nan_to_num(est), 0.0)
    est_cnt = (filled & inside[None, :]).astype(np.float64)
    size = m * (k - 1)
    known_sum = np.bincount(key.ravel(), known_part.ravel(), minlength=size).reshape(m, k - 1)
    est_sum = np.bincount(key.ravel(), est_part.ravel(), minlength=size).reshape(m, k - 1)
    cnt = np.bincount(key.ravel(), est_cnt.ravel(), minlength=size).reshape(m, k - 1)
    unknown = (np.isnan(raw) & ~filled & inside[None, :]).astype(np.float64)
    unknown_cnt = np.bincount(key.ravel(), unknown.ravel(), minlength=size).reshape(m, k - 1)
    delta = reg_values[:, 1:] - reg_values[:, :-1]
    remainder = delta - known_sum
    ok = ~np.isnan(remainder) & (cnt > 0) & (unknown_cnt == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(ok & (est_sum > 0) & (remainder >= 0), remainder / est_sum, np.nan)
        even = np.where(ok & ~(est_sum > 0) & (remainder >= 0), remainder / np.maximum(cnt, 1), np.nan)
    f_cell = factor[rows, seg_c[None, :]]
    e_cell = even[rows, seg_c[None, :]]
    target = filled & inside[None, :]
    use_f = target & ~np.isnan(f_cell)
    use_e = target & np.isnan(f_cell) & ~np.isnan(e_cell)
    out = np.where(use_f, est * f_cell, out)
    out = np.where(use_e, e_cell, out)
    scaled = use_f | use_e
    return out, scaled


def estimate(values: FloatArray, *, per_day: int, day_type: IntArray | None = None, linear_max: int = 8,
             like_days: int = 3, usable: BoolArray | None = None, reg_cols: IntArray | None = None,
             reg_values: FloatArray | None = None, decay: float | None = None) -> EstimateResult:
    """The production estimator over a grid (NaN = to estimate).

    Like-day shape with the residual at each gap edge carried into the gap (decaying with
    distance, time constant ``decay`` intervals, default a quarter of a day), blended with the
    straight line for short gaps (weight falling linearly to 0 at ``linear_max``), then scaled to
    the boundary register reads when they exist. Where no like day exists, the line is used;
    where neither exists (gap at the edge of the grid with no history), the cell stays NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    m, n = v.shape
    missing = np.isnan(v)
    method = np.zeros((m, n), dtype=np.int8)
    if not missing.any():
        return EstimateResult(v.copy(), method)
    tau = float(decay if decay is not None else max(per_day / 4, 1.0))
    like = like_day_average(v, per_day, day_type, like_days, usable=usable)
    lin = linear_interpolate(v)  # all interior gaps; weight decides where it counts
    prev, nxt = _edges(missing)
    rows = np.arange(m)[:, None]
    cols = np.arange(n)[None, :]
    has_prev = prev >= 0
    has_next = nxt < n
    pc = np.clip(prev, 0, n - 1)
    nc = np.clip(nxt, 0, n - 1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res_prev = np.where(has_prev, v[rows, pc] - like[rows, pc], 0.0)
        res_next = np.where(has_next, v[rows, nc] - like[rows, nc], 0.0)
        res_prev = np.nan_to_num(res_prev)
        res_next = np.nan_to_num(res_next)
        d_prev = (cols - prev).astype(np.float64)
        d_next = (nxt - cols).astype(np.float64)
        w_prev = np.where(has_prev, np.exp(-(d_prev - 1) / tau), 0.0)
        w_next = np.where(has_next, np.exp(-(d_next - 1) / tau), 0.0)
        # split the correction between the edges in proportion to closeness
        both = w_prev + w_next
        corr = np.where(both > 0, (res_prev * w_prev ** 2 + res_next * w_next ** 2) / np.maximum(both, 1e-12), 0.0)
        shape = np.maximum(like + corr, 0.0)
        gap_len = (nxt - prev - 1).astype(np.float64)
        w_lin = np.clip(1.0 - gap_len / max(linear_max, 1), 0.0, 1.0)
        w_lin = np.where(has_prev & has_next, w_lin, 0.0)
        blended = np.where(np.isnan(like), lin, np.where(np.isnan(lin), shape, w_lin * lin + (1 - w_lin) * shape))
    est = np.where(missing, blended, v)
    filled = missing & ~np.isnan(est)
    short = (gap_len <= linear_max) & has_prev & has_next
    method = np.where(filled & np.isnan(like), Method.LINEAR,
                      np.where(filled & short & (w_lin >= 0.5), Method.LINEAR,
                               np.where(filled, Method.SHAPE, Method.RAW))).astype(np.int8)
    if reg_cols is not None and reg_values is not None:
        est, scaled = scale_to_registers(est, v, filled, reg_cols, reg_values)
        method = np.where(scaled, method | Method.SCALED, method).astype(np.int8)
    return EstimateResult(est, method)
