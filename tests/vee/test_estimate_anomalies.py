"""Estimation methods, register scaling, anomaly scores, suspect ranking and the area balance."""

from __future__ import annotations

import numpy as np
import pytest

from mdm import anomalies, balance
from mdm.vee.estimate import Method, estimate, like_day_average, linear_interpolate, method_name, scale_to_registers


def daily_profile(days: int, per_day: int = 96, seed: int = 0) -> np.ndarray:
    t = np.arange(days * per_day)
    shape = 0.3 + 0.2 * np.sin(2 * np.pi * (t % per_day) / per_day)
    return shape + np.random.default_rng(seed).normal(0, 0.01, t.size)


def test_linear_interpolation_short_gap_only() -> None:
    v = np.array([[1.0, np.nan, np.nan, 4.0, np.nan, np.nan, np.nan, np.nan, 9.0]])
    out = linear_interpolate(v, max_gap=2)
    assert out[0, :4].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert np.isnan(out[0, 5])  # a 4-interval gap is longer than max_gap
    edge = linear_interpolate(np.array([[np.nan, 1.0, 2.0]]))
    assert np.isnan(edge[0, 0])  # no left edge: no line


def test_like_day_uses_same_day_type_and_skips_unusable() -> None:
    per_day = 4
    v = np.array([[1.0] * 4 + [2.0] * 4 + [3.0] * 4 + [np.nan] * 4])
    day_type = np.array([0, 1, 0, 0])
    ld = like_day_average(v, per_day, day_type, like_days=3)
    assert ld[0, 12:].tolist() == [2.0] * 4  # mean of days 0 and 2 (day 1 is a rest day)
    usable = np.ones(v.shape, dtype=bool)
    usable[0, 8:12] = False  # day 2 was itself estimated
    assert like_day_average(v, per_day, day_type, usable=usable)[0, 12] == 1.0


def test_estimator_methods_and_register_scaling() -> None:
    per_day = 96
    truth = daily_profile(10)[None, :]
    g = truth.copy()
    g[0, 9 * 96 + 10:9 * 96 + 12] = np.nan  # 30 min
    g[0, 8 * 96:8 * 96 + 40] = np.nan  # 10 h
    r = estimate(g, per_day=per_day, linear_max=8)
    assert not np.isnan(r.values).any()
    assert set(np.unique(r.method)) == {Method.RAW, Method.LINEAR, Method.SHAPE}
    assert method_name(int(r.method[0, 9 * 96 + 10])) == "linear"
    err = np.abs(r.values - truth)[np.isnan(g)].mean()
    assert err < 0.03
    raw_untouched = ~np.isnan(g)
    assert np.array_equal(r.values[raw_untouched], g[raw_untouched])  # raw values never changed
    # daily registers bound the gaps: the day then holds exactly the register delta
    cols = np.arange(11) * per_day
    reg = np.concatenate([[0.0], np.cumsum(truth[0])])[cols][None, :]
    rs = estimate(g, per_day=per_day, linear_max=8, reg_cols=cols, reg_values=reg)
    assert rs.values[0, 8 * 96:9 * 96].sum() == pytest.approx(truth[0, 8 * 96:9 * 96].sum())
    assert method_name(int(rs.method[0, 8 * 96 + 5])) == "shape+scaled"


def test_scale_to_registers_skips_spans_with_unknown_cells() -> None:
    raw = np.array([[1.0, np.nan, 1.0, np.nan]])
    est = np.array([[1.0, 2.0, 1.0, np.nan]])
    filled = np.array([[False, True, False, False]])
    out, scaled = scale_to_registers(est, raw, filled, np.array([0, 4]), np.array([[0.0, 6.0]]))
    assert not scaled.any() and out[0, 1] == 2.0  # cell 3 unknown: the remainder is not known
    out, scaled = scale_to_registers(est, raw, filled, np.array([0, 3]), np.array([[0.0, 5.0]]))
    assert scaled[0, 1] and out[0, 1] == pytest.approx(3.0)


def test_sustained_drop_flags_theft_not_vacancy_or_peer_drop() -> None:
    rng = np.random.default_rng(3)
    daily = rng.normal(10, 0.5, (6, 40))
    daily[1, 33:] *= 0.3  # theft-like drop
    daily[2, 33:] = 0.0  # vacancy
    daily[3, 38:] *= 0.3  # too short to be sustained over 7 days
    flag, strength = anomalies.sustained_drop(daily, recent_days=7)
    assert flag.tolist() == [False, True, False, False, False, False]
    assert strength[1] == pytest.approx(0.7, abs=0.05)
    # the whole peer group dropped (e.g. a holiday): not flagged
    group_drop = daily.copy()
    group_drop[:, 33:] *= 0.3
    flag2, _ = anomalies.sustained_drop(group_drop, recent_days=7, peer_group=[0] * 6)
    assert not flag2.any()


def test_peer_zscores_and_ranking() -> None:
    z = anomalies.peer_zscores(np.array([10.0, 11.0, 9.0, 10.5, 1.0, 100.0, 101.0]), [0, 0, 0, 0, 0, 1, 1])
    assert z[4] < -3 and abs(z[0]) < 1
    hits = [
        anomalies.Hit("m1", "cover_open", "cover opened 02:13"),
        anomalies.Hit("m2", "sustained_drop", "use fell to 30 %", 0.7),
        anomalies.Hit("m1", "reverse_energy", "1.2 kWh reverse"),
        anomalies.Hit("m3", "peer_deviation", "z=-4", 0.5),
        anomalies.Hit("m1", "cover_open", "again"),
    ]
    ranked = anomalies.rank_suspects(hits)
    assert [s.meter for s in ranked] == ["m1", "m2", "m3"]
    assert ranked[0].reasons[0]["kind"] == "reverse_energy" and ranked[0].reasons[1]["count"] == 2
    with pytest.raises(KeyError):
        anomalies.rank_suspects([anomalies.Hit("x", "nonsense", "")])


def test_area_balance_and_suspects() -> None:
    days = 20
    rng = np.random.default_rng(4)
    cust = rng.normal(10, 0.3, (4, days))
    area_of = np.array([0, 0, 0, 1])
    true_cons = cust.copy()
    cust[1, 13:] -= 6.0  # customer 1 bypasses its meter from day 13: the area's loss rises by 6 kWh/day
    check = np.zeros((2, days))
    np.add.at(check, area_of, true_cons)
    check *= 1.03  # 3 % technical loss
    b = balance.area_balance(check, cust, area_of)
    assert b.complete.all()
    assert b.loss_pct[0, 0] == pytest.approx(100 * 0.03 / 1.03, abs=0.5)
    assert b.loss_pct[0, -1] > 8 and b.abnormal(8.0, -2.0)[0, -1]
    score, drop = balance.rank_area_suspects(b, cust, area_of, recent_days=7)
    assert int(np.argmax(score)) == 1 and drop[1] == pytest.approx(6.0, abs=0.5)
    # a missing customer read makes the day incomplete: no loss figure for it
    cust2 = cust.copy()
    cust2[0, 5] = np.nan
    assert np.isnan(balance.area_balance(check, cust2, area_of).loss_pct[0, 5])
