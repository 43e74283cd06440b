"""Meter physics: energy registers accumulated from a load profile in simulated time.

Energy is integrated per 15-minute slot from the meter's load profile, so any past
instant can be reconstructed exactly: that is what lets frozen data and load-profile
history be re-read (backfill) and agree with the live registers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from simulators.loadprofile import LoadProfile

__all__ = ["SLOT_S", "TOU_TABLE", "EnergySnapshot", "MeterPhysics", "tariff_at"]

SLOT_S = 900  # load-profile interval (15 min)

# Time-of-use table: (start hour, tariff). Tariff 1 sharp (尖), 2 peak (峰), 3 flat (平), 4 valley (谷).
TOU_TABLE: tuple[tuple[int, int], ...] = (
    (0, 4),
    (8, 3),
    (10, 1),
    (12, 3),
    (17, 2),
    (19, 1),
    (21, 2),
    (23, 4),
)


def tariff_at(t: datetime) -> int:
    tariff = TOU_TABLE[0][1]
    for start, tr in TOU_TABLE:
        if t.hour >= start:
            tariff = tr
    return tariff


@dataclass(frozen=True, slots=True)
class EnergySnapshot:
    """Cumulative registers at one instant (kWh / kvarh)."""

    imp: float
    exp: float
    imp_t: tuple[float, float, float, float]
    exp_t: tuple[float, float, float, float]
    q: tuple[float, float, float, float]  # quadrant I..IV reactive

    @property
    def combined(self) -> float:
        return self.imp + self.exp

    @property
    def combined_t(self) -> tuple[float, ...]:
        return tuple(a + b for a, b in zip(self.imp_t, self.exp_t, strict=True))

    def minus(self, other: EnergySnapshot) -> EnergySnapshot:
        def sub(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
            d = [x - y for x, y in zip(a, b, strict=True)]
            return (d[0], d[1], d[2], d[3])

        return EnergySnapshot(
            self.imp - other.imp, self.exp - other.exp, sub(self.imp_t, other.imp_t), sub(self.exp_t, other.exp_t),
            sub(self.q, other.q),
        )


ZERO = EnergySnapshot(0.0, 0.0, (0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0))


class MeterPhysics:
    """Integrates a meter's demand over simulated time from ``epoch``.

    ``pv_kw`` > 0 gives the meter a rooftop PV system (export around noon).
    """

    def __init__(
        self, index: int, profile: LoadProfile, epoch: datetime, *, initial_kwh: float = 0.0, pv_kw: float = 0.0,
        pf: float = 0.95,
    ) -> None:
        self.index = index
        self.profile = profile
        self.epoch = epoch.replace(second=0, microsecond=0, minute=(epoch.minute // 15) * 15)
        self.pv_kw = pv_kw
        self.pf = pf
        k = initial_kwh
        zero = (0.0, 0.0, 0.0, 0.0)
        base = EnergySnapshot(k, 0.0, (k * 0.1, k * 0.3, k * 0.4, k * 0.2), zero, (k * 0.3, 0.0, 0.0, 0.0))
        self._cum: list[EnergySnapshot] = [base]  # cumulative at the start of slot k
        self._net: list[float] = []  # net kW in slot k (import > 0)
        self._outages: list[tuple[datetime, datetime | None]] = []  # relay open intervals
        # Max demand since the last reset: (kW, slot start)
        self.max_demand: tuple[float, datetime] = (0.0, self.epoch)
        self._md_reset_slot = 0

    def slot_start(self, k: int) -> datetime:
        return self.epoch + timedelta(seconds=k * SLOT_S)

    def slot_of(self, t: datetime) -> int:
        return max(0, int((t - self.epoch).total_seconds() // SLOT_S))

    def net_kw(self, t: datetime) -> float:
        load = self.profile.demand_kw(self.index, t)
        if self.pv_kw > 0:
            h = t.hour + t.minute / 60.0
            load -= self.pv_kw * max(0.0, math.sin(math.pi * (h - 6.0) / 12.0))
        return load

    def _extend(self, k: int) -> None:
        while len(self._cum) <= k:
            j = len(self._net)
            start = self.slot_start(j)
            frac = self._supplied(start, start + timedelta(seconds=SLOT_S)) / SLOT_S
            kw = self.net_kw(start) * frac  # average over the slot: nothing flows while the relay is open
            self._net.append(kw)
            c = self._cum[-1]
            e = kw * SLOT_S / 3600.0
            tr = tariff_at(start) - 1
            qv = abs(e) * math.tan(math.acos(self.pf))
            imp_t, exp_t, q = list(c.imp_t), list(c.exp_t), list(c.q)
            if e >= 0:
                imp_t[tr] += e
                q[0] += qv
                nxt = EnergySnapshot(c.imp + e, c.exp, tuple(imp_t), c.exp_t, tuple(q))  # type: ignore[arg-type]
            else:
                exp_t[tr] -= e
                q[2] += qv
                nxt = EnergySnapshot(c.imp, c.exp - e, c.imp_t, tuple(exp_t), tuple(q))  # type: ignore[arg-type]
            self._cum.append(nxt)
            if j >= self._md_reset_slot and kw > self.max_demand[0]:
                self.max_demand = (kw, start)

    def energy_at(self, t: datetime) -> EnergySnapshot:
        """Cumulative registers at ``t`` (linear within the slot)."""
        if t <= self.epoch:
            return self._cum[0]
        k = self.slot_of(t)
        self._extend(k + 1)
        c0, c1 = self._cum[k], self._cum[k + 1]
        s0 = self.slot_start(k)
        whole = self._supplied(s0, s0 + timedelta(seconds=SLOT_S))
        f = self._supplied(s0, t) / whole if whole > 0 else 0.0

        def lerp(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
            v = [x + (y - x) * f for x, y in zip(a, b, strict=True)]
            return (v[0], v[1], v[2], v[3])

        return EnergySnapshot(
            c0.imp + (c1.imp - c0.imp) * f, c0.exp + (c1.exp - c0.exp) * f, lerp(c0.imp_t, c1.imp_t),
            lerp(c0.exp_t, c1.exp_t), lerp(c0.q, c1.q),
        )

    def set_supply(self, on: bool, at: datetime) -> None:
        """The relay opened (``on=False``) or closed at ``at``: energy stops or resumes from then."""
        if not on and (not self._outages or self._outages[-1][1] is not None):
            self._outages.append((at, None))
        elif on and self._outages and self._outages[-1][1] is None:
            self._outages[-1] = (self._outages[-1][0], at)
        else:
            return
        k = self.slot_of(at)  # slots from here on are recomputed with the new supply
        del self._cum[k + 1 :]
        del self._net[k:]

    def _supplied(self, a: datetime, b: datetime) -> float:
        """Seconds in [a, b) with the supply on."""
        total = max(0.0, (b - a).total_seconds())
        for start, end in self._outages:
            lo = max(a, start)
            hi = b if end is None else min(b, end)
            if hi > lo:
                total -= (hi - lo).total_seconds()
        return max(0.0, total)

    def slot_kw(self, k: int) -> float:
        self._extend(k + 1)
        return self._net[k]

    def reset_max_demand(self, now: datetime) -> None:
        self._md_reset_slot = self.slot_of(now)
        self.max_demand = (0.0, now)

    def instant(self, t: datetime) -> dict[str, float]:
        """Instantaneous values consistent with the current demand (three-phase, 220 V nominal)."""
        kw = self.slot_kw(self.slot_of(t))
        wobble = 0.03 * math.sin(t.timestamp() / 37.0 + self.index)
        p = kw * (1.0 + wobble)
        pf = self.pf if p >= 0 else -self.pf
        volts = [220.0 + 3.0 * math.sin(t.timestamp() / 300.0 + self.index + ph * 2.1) for ph in range(3)]
        share = (0.4, 0.35, 0.25)
        pa = [p * s for s in share]
        cur = [abs(pp) * 1000.0 / (v * abs(pf)) * (1 if pp >= 0 else -1) for pp, v in zip(pa, volts, strict=True)]
        q = abs(p) * math.tan(math.acos(abs(pf)))
        s_kva = math.hypot(p, q)
        ia = [abs(c) for c in cur]
        neutral = math.sqrt(max(0.0, sum(c * c for c in ia) - ia[0] * ia[1] - ia[1] * ia[2] - ia[0] * ia[2]))
        return {
            "voltage.a": volts[0], "voltage.b": volts[1], "voltage.c": volts[2],
            "current.a": cur[0], "current.b": cur[1], "current.c": cur[2], "current.n": neutral,
            "power.active.total": p, "power.active.a": pa[0], "power.active.b": pa[1], "power.active.c": pa[2],
            "power.reactive.total": q, "power.apparent.total": s_kva, "pf.total": pf,
            "frequency": 50.0 + 0.02 * math.sin(t.timestamp() / 11.0),
        }
