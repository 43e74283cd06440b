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
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from psycopg import Connection

from mdm.vee.config import VeeConfig, load_vee_config

__all__ = [
    "INDICATORS",
    "AnomalyReport",
    "Hit",
    "Suspect",
    "find_suspects",
    "peer_zscores",
    "plot_meter",
    "raise_theft_orders",
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


# --------------------------------------------------------------------------- from the database


@dataclass
class AnomalyReport:
    start: datetime
    end: datetime
    suspects: list[Suspect]
    areas: list[dict[str, Any]] = field(default_factory=list)
    meters: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "meters": self.meters,
                "suspects": [dict(s.to_dict(), rank=i + 1) for i, s in enumerate(self.suspects)],
                "areas": self.areas}


def find_suspects(conn: Connection[Any], start: datetime, end: datetime, *, tz: str = "Asia/Shanghai",
                  config: VeeConfig | None = None, meters: Sequence[str] | None = None,
                  recent_days: int | None = None) -> AnomalyReport:
    """Gather indicators for [start, end) and rank the meters.

    ``start`` should leave enough history before the recent window (default: the class's
    ``drop_min_days``) for the sustained-drop and area-balance scores.
    """
    from mdm import balance
    from mdm.vee import storeio

    cfg = config or load_vee_config()
    th = cfg.for_class(None)
    recent = recent_days or th.drop_min_days
    hits: list[Hit] = []
    meter_filter = "AND meter = ANY(%s)" if meters else ""
    params: list[Any] = [start, end] + ([list(meters)] if meters else [])
    for rule, severity, meter, s_ts, explanation in conn.execute(
            "SELECT rule, severity, meter, start_ts, explanation FROM vee_exceptions "
            f"WHERE start_ts < %s AND end_ts > %s {meter_filter} AND status <> 'dismissed'",
            [end, start, *params[2:]]).fetchall():
        kind = RULE_INDICATOR.get(rule)
        if kind is None or (kind in ("clock_tamper", "register_decrease") and severity != "error"):
            continue  # a small clock drift, or a drop explained by the clock, is not a tamper sign
        hits.append(Hit(meter, kind, explanation, 1.0, s_ts))
    ms, days, daily = storeio.daily_energy(conn, meters, start, end, tz)
    events = storeio.load_events(conn, ms or list(meters or []), start, end)
    visited = _field_visits(conn, start - timedelta(days=1), end + timedelta(days=1))
    for meter, ts, etype in events:
        kind = EVENT_INDICATOR.get(etype)
        if kind is None:
            continue
        if kind == "cover_open" and any(abs((ts - v).total_seconds()) < 86400 for v in visited.get(meter, [])):
            continue  # opened by our own crew
        hits.append(Hit(meter, kind, f"{etype} event at {ts.isoformat()}", 1.0, ts))
    areas_out: list[dict[str, Any]] = []
    if ms and daily.shape[1] > recent + 7:
        info = storeio.meter_info(conn, ms)
        exch_rows = storeio.load_exchanges(conn, ms, start, end)
        exch = {e["old_meter"] for e in exch_rows} | {e["new_meter"] for e in exch_rows}
        area_check, member = storeio.load_areas(conn)
        checks = {c for c in area_check.values() if c}
        customers = [i for i, m in enumerate(ms) if m not in checks]
        group_key = {k: n for n, k in enumerate(sorted({(info[ms[i]].meter_class or "", member.get(ms[i], ""))
                                                        for i in customers}))}
        groups = np.array([group_key[(info[ms[i]].meter_class or "", member.get(ms[i], ""))] for i in customers],
                          dtype=np.int64)
        cd = daily[customers]
        excl = np.array([ms[i] in exch for i in customers])
        flag, strength = sustained_drop(cd, recent_days=recent, ratio=th.drop_ratio,
                                        min_baseline=th.history_min_mean_kwh, exclude=excl, peer_group=groups)
        for j in np.flatnonzero(flag):
            hits.append(Hit(ms[customers[j]], "sustained_drop",
                            f"recent {recent} days at {1 - strength[j]:.0%} of its own history", float(strength[j])))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            recent_mean = np.nanmean(cd[:, -recent:], axis=1)
        z = peer_zscores(recent_mean, groups)
        for j in np.flatnonzero(z < -th.peer_z):
            peers = int((groups == groups[j]).sum())
            hits.append(Hit(ms[customers[j]], "peer_deviation", f"robust z {z[j]:.1f} against {peers} peers",
                            float(min(1.0, abs(z[j]) / (2 * th.peer_z)))))
        # energy balance per transformer area
        area_names = sorted(a for a, c in area_check.items() if c and c in ms)
        if area_names:
            a_idx = {a: k for k, a in enumerate(area_names)}
            check = np.stack([daily[ms.index(str(area_check[a]))] for a in area_names])
            cust = [i for i in customers if member.get(ms[i]) in a_idx]
            area_of = np.array([a_idx[member[ms[i]]] for i in cust], dtype=np.int64)
            bal = balance.area_balance(check, daily[cust], area_of)
            score, drop = balance.rank_area_suspects(bal, daily[cust], area_of, recent_days=recent)
            abnormal = bal.abnormal(th.area_loss_pct, th.area_loss_negative_pct)
            for a, k in a_idx.items():
                pct = bal.loss_pct[k]
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore", RuntimeWarning)
                    latest = float(pct[~np.isnan(pct)][-1]) if (~np.isnan(pct)).any() else None
                areas_out.append({"area": a, "check_meter": area_check[a], "customers": int((area_of == k).sum()),
                                  "loss_pct_latest": latest,
                                  "loss_pct_by_day": {d.isoformat(): (None if np.isnan(p) else round(float(p), 2))
                                                      for d, p in zip(days, pct, strict=True)},
                                  "abnormal_days": int(abnormal[k].sum())})
                if abnormal[k].any():
                    for j in np.flatnonzero((area_of == k) & (score > 0.2)):
                        hits.append(Hit(ms[cust[j]], "area_loss", f"area {a} loss {latest:.1f} %, its use fell "
                                        f"{drop[j]:.1f} kWh/day" if latest is not None else f"area {a}",
                                        float(score[j])))
    return AnomalyReport(start, end, rank_suspects(hits), areas_out, len(ms))


def _field_visits(conn: Connection[Any], start: datetime, end: datetime) -> dict[str, list[datetime]]:
    out: dict[str, list[datetime]] = defaultdict(list)
    for meter, at in conn.execute(
            "SELECT w.meter, t.at FROM work_order_transitions t JOIN work_orders w ON w.id = t.order_id "
            "WHERE t.to_status IN ('dispatched', 'completed') AND t.at >= %s AND t.at < %s", (start, end)).fetchall():
        out[meter].append(at)
    return out


def raise_theft_orders(conn: Connection[Any], report: AnomalyReport, *, min_score: float = 3.0,
                       top: int = 50) -> list[int]:
    """Ranked suspects at or above ``min_score`` become theft-investigation orders (evidence: the reasons)."""
    from mdm import workorders as wo

    ids = []
    for rank, s in enumerate(report.suspects[:top], start=1):
        if s.score < min_score:
            break
        ev = {"summary": "; ".join(r["kind"] for r in s.reasons) + f" (score {s.score:.1f}, rank {rank})",
              "score": round(s.score, 3), "reasons": s.reasons, "key": f"anomalies-{report.end.date().isoformat()}"}
        prio = 1 if s.score >= 2 * min_score else 2
        ids.append(wo.raise_work_order_sync(conn, s.meter, wo.WorkOrderType.THEFT_INVESTIGATION, ev, priority=prio,
                                            source="anomalies").id)
    return ids


def plot_meter(conn: Connection[Any], meter: str, start: datetime, end: datetime, out: str, *,
               tz: str = "Asia/Shanghai") -> dict[str, int]:
    """PNG of one meter's load curve (raw, estimated, edited) with its VEE exceptions and events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from mdm.vee import storeio

    q = "interval.energy.active.import"
    raw = storeio.load_readings(conn, storeio.INTERVAL_TABLE, [q], [meter], start, end)
    ver = storeio.load_versions(conn, [q], [meter], start, end)
    zone = ZoneInfo(tz)

    def _times(ts: npt.NDArray[np.int64]) -> FloatArray:
        # matplotlib date numbers: days since 1970-01-01 UTC
        return np.asarray(ts, dtype=np.float64) / 86400.0

    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=100)
    t_raw = raw.ts.astype(np.int64)
    v_raw = raw.value
    if t_raw.size > 1:  # break the line where reads are missing instead of drawing across the gap
        step = int(np.median(np.diff(t_raw)))
        brk = np.flatnonzero(np.diff(t_raw) > 1.5 * step)
        t_raw = np.insert(t_raw, brk + 1, t_raw[brk] + step)
        v_raw = np.insert(v_raw, brk + 1, np.nan)
    ax.plot(_times(t_raw), v_raw, lw=0.9, color="tab:blue", label="raw reads", drawstyle="steps-post",
            marker="." if len(raw) < 200 else None, ms=3)
    est = (ver.quality & 1) != 0
    if est.any():
        ax.scatter(_times(ver.ts[est]), ver.value[est], s=8, color="tab:orange", label="estimated", zorder=3)
    edit = (ver.quality & 2) != 0
    if edit.any():
        ax.scatter(_times(ver.ts[edit]), ver.value[edit], s=18, marker="D", color="tab:green", label="edited",
                   zorder=3)
    exc = conn.execute("SELECT rule, severity, start_ts, end_ts FROM vee_exceptions WHERE meter = %s AND "
                       "start_ts < %s AND end_ts > %s ORDER BY start_ts", (meter, end, start)).fetchall()
    palette = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "gold", "tab:gray"]
    rule_colour: dict[str, str] = {}
    for rule, sev, s_ts, e_ts in exc:
        first = rule not in rule_colour
        colour = rule_colour.setdefault(rule, palette[len(rule_colour) % len(palette)])
        ax.axvspan(s_ts.timestamp() / 86400, max(e_ts, s_ts + timedelta(minutes=15)).timestamp() / 86400,
                   alpha=0.22 if (e_ts - s_ts) <= timedelta(hours=6) else 0.08, color=colour,
                   hatch="//" if sev == "error" else None,
                   label=f"{rule} ({sev})" if first else None)
    events = storeio.load_events(conn, [meter], start, end)
    for i, (_, ts, etype) in enumerate(events):
        ax.axvline(ts.timestamp() / 86400, color="purple", ls="--", lw=1, label="event: " + etype if i == 0 else None)
    ax.set_title(f"meter {meter}: load curve {start.astimezone(zone):%Y-%m-%d} to {end.astimezone(zone):%Y-%m-%d}"
                 f" ({len(exc)} exceptions, {int(est.sum())} estimated)")
    ax.set_ylabel("kWh per interval")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=zone))  # type: ignore[no-untyped-call]
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return {"raw": len(raw), "estimated": int(est.sum()), "edited": int(edit.sum()), "exceptions": len(exc),
            "events": len(events)}
