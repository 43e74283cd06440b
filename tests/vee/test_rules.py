"""Every VEE rule with a case that passes (no finding) and one that fails (finding with its values)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from mdm.vee import rules
from mdm.vee.config import Thresholds, VeeConfig, load_vee_config

TH = VeeConfig().for_class("residential")
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
STEP = 900


def flat(n: int = 96, m: int = 1, v: float = 0.25) -> np.ndarray:
    return np.full((m, n), v)


def test_runs_pairs_edges_per_row() -> None:
    mask = np.array([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=bool)
    r, s, e = rules.runs(mask)
    assert list(zip(r, s, e, strict=True)) == [(0, 0, 2), (0, 3, 4), (1, 1, 4)]
    r, _, _ = rules.runs(mask, 3)
    assert list(r) == [1]


def test_gaps() -> None:
    assert len(rules.check_gaps(flat(), T0, STEP, TH)) == 0
    v = flat(m=2)
    v[1, 10:20] = np.nan
    f = rules.check_gaps(v, T0, STEP, TH)
    assert list(f.rows) == [1] and int(f.values["missing"][0]) == 10
    rec = f.records(["m0", "m1"])[0]
    assert rec.severity == "error" and rec.meter == "m1" and "10 intervals missing" in rec.explanation
    assert rec.start == datetime.fromtimestamp(T0 + 10 * STEP, UTC)


def test_duplicates() -> None:
    rows = np.array([0, 0, 1])
    ts = np.array([T0, T0 + STEP, T0])
    assert len(rules.check_duplicates(rows, ts, np.array([1.0, 2.0, 3.0]))) == 0
    f = rules.check_duplicates(np.array([0, 0, 0]), np.array([T0, T0, T0 + STEP]), np.array([1.0, 1.5, 2.0]))
    assert len(f) == 1 and f.records(["a"])[0].severity == "error"


def test_off_grid() -> None:
    assert len(rules.check_off_grid(np.array([0]), np.array([T0 + STEP]), STEP)) == 0
    assert len(rules.check_off_grid(np.array([0]), np.array([T0 + 7]), STEP)) == 1


@pytest.mark.parametrize(("day", "expected"), [(date(2026, 3, 8), 92), (date(2026, 11, 1), 100),
                                               (date(2026, 6, 1), 96)])
def test_day_count_is_dst_aware(day: date, expected: int) -> None:
    bounds = rules.local_day_bounds(day, 1, "America/New_York")
    ts = np.arange(bounds[0], bounds[1], STEP)
    assert ts.size == expected
    ok = rules.check_count_per_day(np.zeros(ts.size, dtype=np.int64), ts, 1, bounds, STEP)
    assert len(ok) == 0
    short = rules.check_count_per_day(np.zeros(ts.size - 3, dtype=np.int64), ts[:-3], 1, bounds, STEP)
    assert len(short) == 1 and short.values["expected"][0] == expected and short.values["found"][0] == expected - 3
    # a day in a zone without DST always expects 96
    b2 = rules.local_day_bounds(day, 1, "Asia/Shanghai")
    assert int((b2[1] - b2[0]) // STEP) == 96


def test_future() -> None:
    now = T0 + 86400
    assert len(rules.check_future(np.array([0]), np.array([now - STEP]), now, TH)) == 0
    f = rules.check_future(np.array([0]), np.array([now + 3600]), now, TH)
    assert len(f) == 1 and f.values["ahead_s"][0] == 3600


def test_clock_drift() -> None:
    assert len(rules.check_clock_drift(np.array([0]), np.array([T0]), np.array([12.0]), TH)) == 0
    f = rules.check_clock_drift(np.array([0, 1]), np.array([T0, T0]), np.array([-90.0, 900.0]), TH)
    assert [r.severity for r in f.records(["a", "b"])] == ["warning", "error"]
    # several drifted reads of one meter: one finding with the worst offset and the span
    f = rules.check_clock_drift(np.array([0, 0, 0, 1]), np.array([T0 + 60, T0, T0 + 120, T0]),
                                np.array([-100.0, 80.0, 30.0, 10.0]), TH)
    assert len(f) == 1 and f.values["offset_s"][0] == -100.0 and f.values["reads"][0] == 2
    assert f.start[0] == T0 and f.end[0] == T0 + 61


def test_register_decrease_vs_rollover_and_exchange() -> None:
    ts = np.arange(4, dtype=np.int64) * 86400 + T0
    ok = np.array([[10.0, 11.0, np.nan, 12.5]])
    dec, roll = rules.check_register_decrease(ok, ts, TH)
    assert len(dec) == 0 and len(roll) == 0
    bad = np.array([[10.0, 11.0, 8.0, 9.0], [TH.register_max - 3, TH.register_max - 1, 2.0, 5.0]])
    dec, roll = rules.check_register_decrease(bad, ts, TH)
    assert list(dec.rows) == [0] and dec.values["previous"][0] == 11.0 and dec.values["value"][0] == 8.0
    assert list(roll.rows) == [1] and roll.values["consumption"][0] == pytest.approx(3.0)
    # a drop across a meter exchange is not a decrease
    seg = np.array([[0, 0, 1, 1]])
    dec, _ = rules.check_register_decrease(bad[:1], ts, TH, segment=seg)
    assert len(dec) == 0
    ex = rules.check_exchange(seg, bad[:1], ts)
    assert len(ex) == 1 and ex.values["old_read"][0] == 11.0 and ex.values["new_read"][0] == 8.0
    assert len(rules.check_exchange(np.zeros((1, 4)), bad[:1], ts)) == 0


def test_running_fast_rating_and_history() -> None:
    assert len(rules.check_running_fast(flat(), T0, STEP, TH)) == 0
    v = flat()
    v[0, 5] = 10.0  # 40 kW from a 220 V 60 A meter (13.2 kW max)
    f = rules.check_running_fast(v, T0, STEP, TH)
    assert len(f) == 1 and f.values["basis"][0] == "rating"
    # CT multiplier raises the limit
    assert len(rules.check_running_fast(v, T0, STEP, TH, multiplier=np.array([10.0]))) == 0
    daily = np.array([[100.0]])
    f = rules.check_running_fast(flat(), T0, STEP, TH, history_daily_max=np.array([8.0]), daily=daily,
                                 day_start=np.array([T0]))
    assert len(f) == 1 and f.values["basis"][0] == "history"


def test_stopped() -> None:
    v = flat()
    cur = np.full(v.shape, 2.0)
    assert len(rules.check_stopped(v, cur, None, T0, STEP, TH)) == 0
    v[0, 20:30] = 0.0
    f = rules.check_stopped(v, cur, None, T0, STEP, TH)
    assert len(f) == 1 and f.values["intervals"][0] == 10 and f.values["mean_current_a"][0] == pytest.approx(2.0)
    # zero with no current is a vacancy, not a stopped meter
    assert len(rules.check_stopped(v, np.zeros(v.shape), None, T0, STEP, TH)) == 0
    # power alone is enough evidence
    assert len(rules.check_stopped(v, None, np.full(v.shape, 1.0), T0, STEP, TH)) == 1


def test_spikes() -> None:
    rng = np.random.default_rng(1)
    v = rng.uniform(0.1, 0.3, (1, 96))
    assert len(rules.check_spikes(v, T0, STEP, TH)) == 0
    v[0, 40] = 4.0
    f = rules.check_spikes(v, T0, STEP, TH)
    assert list(f.values["value"]) == [4.0]


def test_high_low_against_history() -> None:
    hist = np.random.default_rng(2).normal(10, 1, (3, 28))
    daily = np.array([[10.5], [45.0], [0.5]])
    hi, lo = rules.check_high_low(daily, hist, np.array([T0]), TH)
    assert list(hi.rows) == [1] and list(lo.rows) == [2]
    hi, lo = rules.check_high_low(np.array([[10.0]]), hist[:1], np.array([T0]), TH)
    assert len(hi) == 0 and len(lo) == 0


def test_sum_intervals_vs_register() -> None:
    t = np.array([T0])
    te = np.array([T0 + 86400])
    ok = rules.check_sum_intervals_register(np.array([24.0]), np.array([100.0]), np.array([124.02]), t, te, TH)
    assert len(ok) == 0
    bad = rules.check_sum_intervals_register(np.array([20.0]), np.array([100.0]), np.array([124.0]), t, te, TH)
    assert len(bad) == 1 and bad.values["difference_kwh"][0] == pytest.approx(-4.0)
    # the multiplier is applied to the register delta
    ok2 = rules.check_sum_intervals_register(np.array([240.0]), np.array([10.0]), np.array([12.4]), t, te, TH,
                                             multiplier=np.array([100.0]))
    assert len(ok2) == 0


def test_sum_tou() -> None:
    rows = np.array([0, 1])
    ts = np.array([T0, T0])
    tariffs = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, np.nan]])
    f = rules.check_sum_tou(np.array([10.0, 10.0]), tariffs, ts, rows, TH)
    assert list(f.rows) == [1] and f.values["tariff_sum"][0] == 6.0


def test_voltage_band() -> None:
    v = {"a": np.full((1, 96), 221.0)}
    hi, lo = rules.check_voltage_band(v, T0, STEP, TH)
    assert len(hi) == 0 and len(lo) == 0
    v["a"][0, 10:14] = 240.0  # > 235.4
    v["a"][0, 50:53] = 190.0  # < 198
    v["a"][0, 70:75] = 10.0  # voltage loss, not a band problem
    hi, lo = rules.check_voltage_band(v, T0, STEP, TH)
    assert list(hi.values["intervals"]) == [4] and list(lo.values["intervals"]) == [3]
    assert hi.values["phase"][0] == "a"


def test_voltage_loss() -> None:
    volt = {p: np.full((1, 96), 220.0) for p in "abc"}
    cur = {p: np.full((1, 96), 5.0) for p in "abc"}
    assert len(rules.check_voltage_loss(volt, cur, T0, STEP, TH)) == 0
    volt["b"][0, 30:40] = 5.0
    f = rules.check_voltage_loss(volt, cur, T0, STEP, TH)
    assert len(f) == 1 and f.values["phase"][0] == "b" and f.values["intervals"][0] == 10
    # no current: an outage, not 失压
    cur0 = {p: np.zeros((1, 96)) for p in "abc"}
    assert len(rules.check_voltage_loss(volt, cur0, T0, STEP, TH)) == 0


def test_current_loss_and_imbalance() -> None:
    cur = {p: np.full((1, 96), 8.0) for p in "abc"}
    assert len(rules.check_current_loss(cur, None, T0, STEP, TH)) == 0
    assert len(rules.check_current_imbalance(cur, T0, STEP, TH)) == 0
    cur["c"][0, 0:8] = 0.0
    f = rules.check_current_loss(cur, None, T0, STEP, TH)
    assert len(f) == 1 and f.values["phase"][0] == "c"
    imb = rules.check_current_imbalance(cur, T0, STEP, TH)
    assert len(imb) == 1 and imb.values["imbalance_pct"][0] == pytest.approx(100.0)


def test_reverse_energy() -> None:
    exp = np.zeros((1, 96))
    assert len(rules.check_reverse_energy(exp, None, T0, STEP, TH)) == 0
    exp[0, 3:6] = 0.2
    f = rules.check_reverse_energy(exp, None, T0, STEP, TH)
    assert len(f) == 1 and f.values["export_kwh"][0] == pytest.approx(0.6)
    pv = Thresholds(has_generation=True)
    assert len(rules.check_reverse_energy(exp, None, T0, STEP, pv)) == 0
    assert len(rules.check_reverse_energy(None, np.full((1, 4), -1.0), T0, STEP, TH)) == 1


def test_power_factor() -> None:
    pf = np.full((1, 96), 0.95)
    p = np.full((1, 96), 2.0)
    assert len(rules.check_power_factor(pf, p, T0, STEP, TH)) == 0
    pf[0, 5] = 0.3
    pf[0, 50] = 1.2
    f = rules.check_power_factor(pf, p, T0, STEP, TH)
    assert len(f) == 2


def test_neutral_mismatch() -> None:
    ia = np.full((1, 96), 10.0)
    assert len(rules.check_neutral_mismatch(ia, ia * 1.05, T0, STEP, TH)) == 0
    f = rules.check_neutral_mismatch(ia, ia * 0.4, T0, STEP, TH)
    assert len(f) == 1 and f.values["intervals"][0] == 96


def test_multiplier_change() -> None:
    ts = np.array([T0, T0 + 86400, T0 + 2 * 86400])
    assert len(rules.check_multiplier_change(np.array([[40.0, 40.0, 40.0]]), ts)) == 0
    f = rules.check_multiplier_change(np.array([[40.0, 40.0, 80.0]]), ts)
    assert len(f) == 1 and f.values["old"][0] == 40.0 and f.values["new"][0] == 80.0


def test_prolonged_estimation() -> None:
    est = np.zeros((2, 96 * 3), dtype=bool)
    est[1, :200] = True
    f = rules.check_prolonged_estimation(est, T0, STEP, TH)
    assert list(f.rows) == [1] and f.values["estimated"][0] == 200


def test_rule_catalogue_covers_every_finding_rule() -> None:
    for rid in ("gap", "duplicate", "day_count", "future", "clock_drift", "register_decrease", "register_rollover",
                "running_fast", "stopped", "spike", "high_usage", "low_usage", "sum_register", "sum_tou",
                "voltage_high", "voltage_low", "voltage_loss", "current_loss", "current_imbalance", "reverse_energy",
                "power_factor", "neutral_mismatch", "multiplier_change", "meter_exchange", "prolonged_estimation"):
        assert rid in rules.RULES


def test_vee_config_classes_and_errors(tmp_path: object) -> None:
    from pathlib import Path

    from protocols.errors import ConfigError

    cfg = load_vee_config()
    assert cfg.for_class("large").phases == 3 and cfg.for_class("unknown").phases == 1
    p = Path(str(tmp_path)) / "v.toml"
    p.write_text("[classes.residential]\nspike_factor = 4.0\n")
    assert load_vee_config(p).for_class("residential").spike_factor == 4.0
    p.write_text("[classes.residential]\nno_such_key = 1\n")
    with pytest.raises(ConfigError, match="no_such_key"):
        load_vee_config(p)
