"""Energy balance per transformer area (台区线损): loss % and the customers that explain a rise.

loss % = (check-meter energy - sum of customer energy) / check-meter energy, per area and day.
Only complete days count (every customer and the check meter read, or estimated and flagged).
A high or rising loss points to theft or a fault; a negative loss to a wrong customer list or a
bad check meter. When the loss rises, the customers whose own use fell by about the same energy
at the same time are the suspects.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["AreaBalance", "area_balance", "rank_area_suspects"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class AreaBalance:
    check_kwh: FloatArray  # areas x days
    customers_kwh: FloatArray  # areas x days (sum over the area's customers)
    loss_kwh: FloatArray
    loss_pct: FloatArray  # NaN where the day is incomplete or the check meter read zero
    complete: npt.NDArray[np.bool_]
    estimated_share: FloatArray  # fraction of the customers' energy that was estimated

    def abnormal(self, high_pct: float, negative_pct: float) -> npt.NDArray[np.bool_]:
        with np.errstate(invalid="ignore"):
            return np.asarray((self.loss_pct > high_pct) | (self.loss_pct < negative_pct))


def area_balance(check_kwh: FloatArray, customer_kwh: FloatArray, area_of: IntArray,
                 customer_estimated_kwh: FloatArray | None = None) -> AreaBalance:
    """``check_kwh`` (A x D, NaN = missing), ``customer_kwh`` (M x D, NaN = missing), ``area_of`` (M)."""
    a, d = check_kwh.shape
    missing = np.isnan(customer_kwh)
    sums = np.zeros((a, d))
    np.add.at(sums, area_of, np.nan_to_num(customer_kwh))
    miss_cnt = np.zeros((a, d))
    np.add.at(miss_cnt, area_of, missing.astype(np.float64))
    est = np.zeros((a, d))
    if customer_estimated_kwh is not None:
        np.add.at(est, area_of, np.nan_to_num(customer_estimated_kwh))
    complete = (miss_cnt == 0) & ~np.isnan(check_kwh)
    loss = np.where(complete, check_kwh - sums, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(complete & (check_kwh > 0), loss / check_kwh * 100, np.nan)
        share = np.where(sums > 0, est / sums, 0.0)
    return AreaBalance(check_kwh, sums, loss, pct, complete, share)


def rank_area_suspects(balance: AreaBalance, customer_kwh: FloatArray, area_of: IntArray, *,
                       recent_days: int = 7) -> tuple[FloatArray, FloatArray]:
    """Per customer: (score 0..1, kWh/day of the drop) for the loss rise of its area.

    The loss rise of an area is its mean daily loss over the last ``recent_days`` complete days
    minus the mean before. A customer whose own daily use fell over the same window explains
    ``min(drop, rise) / rise`` of it; the score also weighs the negative correlation between the
    customer's daily use and the area's daily loss. Areas without a rise give every customer 0.
    """
    d = customer_kwh.shape[1]
    split = max(d - recent_days, 1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss_before = np.nanmean(balance.loss_kwh[:, :split], axis=1)
        loss_after = np.nanmean(balance.loss_kwh[:, split:], axis=1)
        rise = loss_after - loss_before  # per area
        use_before = np.nanmean(customer_kwh[:, :split], axis=1)
        use_after = np.nanmean(customer_kwh[:, split:], axis=1)
        drop = use_before - use_after  # per customer
        r = rise[area_of]
        explained = np.where((r > 0) & (drop > 0), np.minimum(drop, r) / np.where(r > 0, r, 1), 0.0)
        # correlation of the customer's daily use with its area's daily loss (theft: negative)
        loss_c = balance.loss_kwh[area_of]
        x = customer_kwh - np.nanmean(customer_kwh, axis=1, keepdims=True)
        y = loss_c - np.nanmean(loss_c, axis=1, keepdims=True)
        ok = ~np.isnan(x) & ~np.isnan(y)
        x0 = np.where(ok, x, 0.0)
        y0 = np.where(ok, y, 0.0)
        corr = (x0 * y0).sum(axis=1) / np.sqrt((x0 ** 2).sum(axis=1) * (y0 ** 2).sum(axis=1))
        corr = np.nan_to_num(corr)
    score = np.clip(explained * (0.5 + 0.5 * np.clip(-corr, 0.0, 1.0)), 0.0, 1.0)
    return score, np.nan_to_num(drop)
