"""Theft and tamper indicators, statistical scores, and a ranked list of suspects.

An indicator is a reason to inspect, not proof. Each meter's score is the sum, over indicator
kinds, of the kind's weight (x its strength for graded scores), plus a small bonus for repeats.

Rule indicators come from meter events (cover opened, magnetic field, clock set) and from VEE
exceptions (reverse energy, stopped under load, phase voltage/current loss, neutral mismatch,
clock tampering). Statistical scores: a sudden sustained drop against the meter's own history
(while its peers do not drop), and deviation from its peer group (same class and area). The
transformer-area balance (:mod:`mdm.balance`) adds the customers that explain a loss rise.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "INDICATORS",
    "Hit",
    "Suspect",
    "peer_zscores",
    "rank_suspects",
    "sustained_drop",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Indicator:
    weight: float
    title: str


INDICATORS: dict[str, Indicator] = {
    "cover_open": Indicator(3.0, "meter or terminal cover opened with no matching work order (开盖)"),
    "magnetic": Indicator(4.0, "magnetic tamper event"),
    "reverse_energy": Indicator(4.0, "reverse energy without generation: reversed CT or wiring"),
    "stopped": Indicator(3.0, "register flat while current flows (停走)"),
    "voltage_loss": Indicator(3.0, "phase voltage loss under load (失压)"),
    "current_loss": Indicator(3.0, "phase current loss while other phases load (失流, shorted CT)"),
    "neutral_mismatch": Indicator(4.0, "neutral current differs from phase current: load returns another way"),
    "clock_tamper": Indicator(2.0, "clock set or far off (tariff-period fraud)"),
    "register_decrease": Indicator(2.0, "register went backwards (示度下降)"),
    "sustained_drop": Indicator(3.0, "sudden sustained drop against own history while peers do not drop"),
    "peer_deviation": Indicator(1.5, "use far below its peer group"),
    "area_loss": Indicator(3.0, "its drop explains a loss rise of its transformer area"),
}

#: VEE rule id -> indicator kind.
RULE_INDICATOR: dict[str, str] = {
    "reverse_energy": "reverse_energy",
    "stopped": "stopped",
    "voltage_loss": "voltage_loss",
    "current_loss": "current_loss",
    "neutral_mismatch": "neutral_mismatch",
    "clock_drift": "clock_tamper",
    "register_decrease": "register_decrease",
}

#: Meter event type -> indicator kind (event names as the store records them).
EVENT_INDICATOR: dict[str, str] = {
    "cover_open": "cover_open",
    "terminal_cover_open": "cover_open",
    "magnetic": "magnetic",
    "clock_set": "clock_tamper",
}


@dataclass(frozen=True, slots=True)
class Hit:
    """One piece of evidence for one meter."""

    meter: str
    kind: str
    detail: str
    strength: float = 1.0  # graded scores (0..1) scale the weight
    at: datetime | None = None


@dataclass(slots=True)
class Suspect:
    meter: str
    score: float
    reasons: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"meter": self.meter, "score": round(self.score, 3), "reasons": self.reasons}


def rank_suspects(hits: Iterable[Hit], *, repeat_bonus: float = 0.25, max_repeat_bonus: float = 1.0) -> list[Suspect]:
    """Score per meter: per kind the strongest hit's weight x strength, plus a capped bonus for repeats."""
    by_meter: dict[str, dict[str, list[Hit]]] = defaultdict(lambda: defaultdict(list))
    for h in hits:
        if h.kind not in INDICATORS:
            raise KeyError(f"unknown indicator {h.kind!r}")
        by_meter[h.meter][h.kind].append(h)
    out = []
    for meter, kinds in by_meter.items():
        score = 0.0
        reasons: list[dict[str, Any]] = []
        for kind, hs in kinds.items():
            best = max(hs, key=lambda h: h.strength)
            w = INDICATORS[kind].weight * best.strength
            w += min(repeat_bonus * (len(hs) - 1), max_repeat_bonus) * INDICATORS[kind].weight / 4
            score += w
            reasons.append({"kind": kind, "weight": round(w, 3), "count": len(hs),
                            "title": INDICATORS[kind].title, "detail": best.detail,
                            "at": best.at.isoformat() if best.at else None})
        reasons.sort(key=lambda r: -float(r["weight"]))
        out.append(Suspect(meter, score, reasons))
    out.sort(key=lambda s: (-s.score, s.meter))
    return out


def sustained_drop(daily: FloatArray, *, recent_days: int = 7, ratio: float = 0.5, min_baseline: float = 0.5,
                   vacancy_ratio: float = 0.05, exclude: npt.NDArray[np.bool_] | None = None,
                   peer_group: Sequence[int] | npt.NDArray[np.int64] | None = None) -> tuple[
                       npt.NDArray[np.bool_], FloatArray]:
    """Sudden sustained drop per meter over daily energies (M x D, NaN = unknown).

    Baseline = median of the days before the last ``recent_days``; recent = those days. Flagged
    when the recent median is below ``ratio`` x baseline and at least 80 % of the recent days are
    below it too (sustained), and it is not a vacancy (recent median above ``vacancy_ratio`` x
    baseline: theft rarely takes use to zero). ``exclude`` (M) removes meters with an exchange
    in the window. With ``peer_group`` (M group ids), a drop shared by the group's median meter
    is not flagged. Returns (flag, strength 0..1 = 1 - recent/baseline).
    """
    m, d = daily.shape
    split = d - recent_days
    if split < 7:
        return np.zeros(m, dtype=bool), np.zeros(m)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        base = np.nanmedian(daily[:, :split], axis=1)
        recent = np.nanmedian(daily[:, split:], axis=1)
        rel = recent / base
        low_days = np.nanmean(daily[:, split:] < (ratio * base)[:, None], axis=1)
    flag = (base >= min_baseline) & (rel < ratio) & (low_days >= 0.8) & (rel > vacancy_ratio)
    if peer_group is not None:
        groups = np.asarray(peer_group)
        peer_rel = np.ones(m)
        for g in np.unique(groups):  # loop over groups (a handful), not meters
            sel = groups == g
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                peer_rel[sel] = np.nanmedian(rel[sel])
        flag &= peer_rel >= ratio + (1 - ratio) / 2  # the group itself did not drop
    if exclude is not None:
        flag &= ~exclude
    strength = np.where(flag, np.clip(1 - np.nan_to_num(rel), 0.0, 1.0), 0.0)
    return flag, strength


def peer_zscores(values: FloatArray, groups: Sequence[int] | npt.NDArray[np.int64]) -> FloatArray:
    """Robust z-score of each meter's value against its peer group: (x - median) / (1.4826 MAD)."""
    g = np.asarray(groups)
    z = np.zeros(values.shape)
    for k in np.unique(g):  # loop over peer groups, not meters
        sel = g == k
        x = values[sel]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(x)
            mad = np.nanmedian(np.abs(x - med)) * 1.4826
            z[sel] = np.where(mad > 0, (x - med) / (mad if mad > 0 else 1.0), 0.0)
    return np.nan_to_num(z)
