"""A simulated Modbus device built from a register map: values evolve, controls act.

The same TOML map the head-end reads with describes the simulated device, so a map
error shows up as a failing read rather than as two tables drifting apart. Every
point is computed from one physical state (power, energy, relay, limit, balance)
when it is read; writes go through the map's data types back into that state.

Load-management behaviour (generic_terminal map):

* circuit 1 carries 70 % of the load, circuit 2 30 %; an open circuit carries none;
* keep-power (保电) blocks every trip, commanded or automatic;
* power above the limit (功控) for ``overlimit_trip_after`` simulated seconds trips circuit 1;
* the prepaid balance (购电) falls with imported energy; at zero circuit 1 trips;
  a top-up is an (order number, kWh) pair applied once per order number.
"""

from __future__ import annotations

import csv
import gzip
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protocols.errors import LocalProtocolError
from protocols.modbus.maps import Function, Point, RegisterMap, decode_registers, encode_value
from simulators.modbus.wire import ModbusFault

__all__ = ["LoadProfile", "Terminal", "TerminalConfig", "load_smud_profile"]

INTERVAL_S = 900.0  # 15-min demand interval


@dataclass(frozen=True, slots=True)
class LoadProfile:
    """kW values at a fixed step, replayed in a loop."""

    kw: tuple[float, ...]
    step_s: float = INTERVAL_S

    def at(self, t: float) -> float:
        """Linear interpolation at simulated second ``t``."""
        pos = (t / self.step_s) % len(self.kw)
        i = int(pos)
        frac = pos - i
        a, b = self.kw[i], self.kw[(i + 1) % len(self.kw)]
        return a + (b - a) * frac


def load_smud_profile(path: Path, meter: str | None = None, limit: int = 96 * 28) -> LoadProfile:
    """Read one meter's 15-min kW from the SMUD EEAR CSV (``site_type,meter,timestamp_utc,kW``).

    The file is read in place (never copied); ``limit`` rows (default four weeks) are kept.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    values: list[float] = []
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if meter is not None and row["meter"] != meter:
                continue
            if meter is None:
                meter = row["meter"]
            values.append(float(row["kW"]))
            if len(values) >= limit:
                break
    if not values:
        raise ValueError(f"no rows for meter {meter!r} in {path.name}")
    return LoadProfile(tuple(values))


@dataclass(slots=True)
class TerminalConfig:
    base_kw: float = 50.0  # synthetic load when no profile is given
    speed: float = 1.0  # simulated seconds per wall-clock second
    overlimit_trip_after: float = 60.0  # simulated seconds over the power limit before 功控 trips
    power_limit_kw: float = 0.0  # 0 = no limit
    balance_kwh: float = 1000.0
    seed: int = 0
    profile: LoadProfile | None = None


@dataclass(slots=True)
class _State:
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    combined_kwh: float = 0.0
    power_kw: float = 0.0
    max_demand_kw: float = 0.0
    interval_kwh: float = 0.0
    interval_start: float = 0.0
    last_interval_kw: float = 0.0
    open: list[bool] = field(default_factory=lambda: [False, False])
    keep_power: bool = False
    limit_kw: float = 0.0
    over_since: float | None = None
    balance_kwh: float = 0.0
    balance_tripped: bool = False
    trip_count: int = 0
    close_count: int = 0
    purchase_seq: int = 0
    purchase_amount: float = 0.0
    last_seq: int = 0


_CIRCUIT_SHARE = (0.7, 0.3)


class Terminal:
    """One unit on the line. Implements the simulator's ``RegisterSpace``."""

    def __init__(
        self,
        rmap: RegisterMap,
        unit: int,
        config: TerminalConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.map = rmap
        self.unit = unit
        self.config = config or TerminalConfig()
        self._clock = clock
        self._rng = random.Random(self.config.seed * 1000 + unit)
        self._t0 = clock()
        self._last = self._t0
        s = _State()
        s.limit_kw = self.config.power_limit_kw
        s.balance_kwh = self.config.balance_kwh
        s.import_kwh = 1000.0 + 37.0 * unit
        s.combined_kwh = s.import_kwh
        self.state = s
        self._phase = self._rng.uniform(0, 2 * math.pi)
        # (function, address) -> (point, word offset): built once from the map
        self._index: dict[tuple[Function, int], tuple[Point, int]] = {}
        for p in rmap.points.values():
            for off in range(p.count):
                self._index[(p.function, p.address + off)] = (p, off)

    # -------------------------------------------------------------- physics

    def sim_time(self) -> float:
        return (self._clock() - self._t0) * self.config.speed

    def _demand_kw(self, t: float) -> float:
        c = self.config
        if c.profile is not None:
            base = c.profile.at(t)
        else:
            base = c.base_kw * (1.0 + 0.3 * math.sin(2 * math.pi * t / 86400.0 + self._phase))
        return max(0.0, base * (1.0 + self._rng.uniform(-0.02, 0.02)))

    def tick(self) -> None:
        """Advance the state to now: integrate energy, apply automatic trips."""
        now = self._clock()
        dt = (now - self._last) * self.config.speed
        self._last = now
        s = self.state
        t = (now - self._t0) * self.config.speed
        demand = self._demand_kw(t)
        s.power_kw = demand * sum(share for share, is_open in zip(_CIRCUIT_SHARE, s.open, strict=True) if not is_open)
        if dt > 0:
            kwh = s.power_kw * dt / 3600.0
            s.import_kwh += kwh
            s.combined_kwh += kwh
            s.interval_kwh += kwh
            s.balance_kwh -= kwh
            if t - s.interval_start >= INTERVAL_S:
                span = max(t - s.interval_start, 1e-9)
                s.last_interval_kw = s.interval_kwh * 3600.0 / span
                s.max_demand_kw = max(s.max_demand_kw, s.last_interval_kw)
                s.interval_kwh = 0.0
                s.interval_start = t
        # 功控: power limit
        if s.limit_kw > 0 and s.power_kw > s.limit_kw:
            if s.over_since is None:
                s.over_since = t
            elif t - s.over_since >= self.config.overlimit_trip_after and not s.open[0]:
                self._trip(0)
        else:
            s.over_since = None
        # 电控: prepaid balance exhausted
        if s.balance_kwh <= 0 and not s.open[0]:
            if self._trip(0):
                s.balance_tripped = True

    def _trip(self, circuit: int) -> bool:
        s = self.state
        if s.keep_power:
            return False
        if not s.open[circuit]:
            s.open[circuit] = True
            s.trip_count += 1
        return True

    def _close(self, circuit: int) -> None:
        s = self.state
        if s.open[circuit]:
            s.open[circuit] = False
            s.close_count += 1
            s.over_since = None

    def status_word(self) -> int:
        s = self.state
        return (
            (1 if s.open[0] else 0)
            | (2 if s.open[1] else 0)
            | (4 if s.keep_power else 0)
            | (8 if s.over_since is not None else 0)
            | (16 if s.balance_kwh <= 0 else 0)
        )

    # -------------------------------------------------------------- point values

    def value(self, name: str) -> float:
        """Engineering value of a point name or quantity code."""
        s = self.state
        fixed: dict[str, float] = {
            "energy.active.import": s.import_kwh,
            "energy.active.export": s.export_kwh,
            "energy.active.combined": s.combined_kwh,
            "power.active.total": s.power_kw,
            "power.reactive.total": s.power_kw * 0.33,
            "power.apparent.total": s.power_kw * 1.053,
            "pf.total": 0.95 if s.power_kw > 0 else 1.0,
            "frequency": 50.0 + 0.02 * math.sin(self._last),
            "interval.demand.active": s.last_interval_kw,
            "demand.active.import.max": s.max_demand_kw,
            "status.word1": float(self.status_word()),
            "circuit1.state": 1.0 if s.open[0] else 0.0,
            "relay.state": 1.0 if s.open[0] else 0.0,
            "circuit1.open": 1.0 if s.open[0] else 0.0,
            "circuit2.open": 1.0 if s.open[1] else 0.0,
            "circuit1.trip": 1.0 if s.open[0] else 0.0,
            "circuit2.trip": 1.0 if s.open[1] else 0.0,
            "keep_power": 1.0 if s.keep_power else 0.0,
            "keep_power.state": 1.0 if s.keep_power else 0.0,
            "balance.energy": s.balance_kwh,
            "limit.power": s.limit_kw,
            "event.trip.count": float(s.trip_count),
            "event.close.count": float(s.close_count),
            "purchase.seq": float(s.purchase_seq),
            "purchase.amount": s.purchase_amount,
            "purchase.last_seq": float(s.last_seq),
            "current.n": 0.1,
        }
        if name in fixed:
            return fixed[name]
        if name.startswith("voltage."):
            return 230.0 + (ord(name[-1]) - ord("a")) * 0.4 + 0.5 * math.sin(self._last / 7.0)
        if name.startswith("current."):
            return s.power_kw * 1000.0 / (3 * 230.0 * 0.95)
        if name.startswith("power.active."):
            return s.power_kw / 3.0
        return 0.0

    def _words(self, p: Point) -> list[int]:
        v = self.value(p.name)
        if p.function.is_bit:
            return [1 if v else 0]
        try:
            return encode_value(p, v)
        except LocalProtocolError:  # out of the type's range (e.g. a negative balance in a u32)
            return encode_value(p, 0.0)

    # -------------------------------------------------------------- RegisterSpace

    def read(self, function: Function, address: int, count: int) -> list[int]:
        self.tick()
        out: list[int] = []
        cache: dict[str, list[int]] = {}
        for a in range(address, address + count):
            hit = self._index.get((function, a))
            if hit is None:
                raise ModbusFault(2)
            p, off = hit
            words = cache.get(p.name)
            if words is None:
                words = cache[p.name] = self._words(p)
            out.append(words[off])
        return out

    def write(self, function: Function, address: int, values: list[int]) -> None:
        self.tick()
        touched: dict[str, list[int]] = {}
        points: dict[str, Point] = {}
        for i, w in enumerate(values):
            hit = self._index.get((function, address + i))
            if hit is None or not hit[0].writable:
                raise ModbusFault(2)
            p, off = hit
            if p.name not in touched:
                touched[p.name] = self._words(p)
                points[p.name] = p
            touched[p.name][off] = w
        for name, words in touched.items():
            self._apply(name, decode_registers(points[name], words))
        if "purchase.amount" in touched:
            self._purchase()

    def _apply(self, name: str, value: float) -> None:
        s = self.state
        if name in ("circuit1.trip", "circuit2.trip"):
            c = 0 if name == "circuit1.trip" else 1
            if value:
                self._trip(c)
            else:
                self._close(c)
                if c == 0:
                    s.balance_tripped = False
        elif name == "keep_power":
            s.keep_power = bool(value)
        elif name == "limit.power":
            if value < 0:
                raise ModbusFault(3)
            s.limit_kw = value
            s.over_since = None
        elif name == "purchase.seq":
            s.purchase_seq = int(value)
        elif name == "purchase.amount":
            if value <= 0:
                raise ModbusFault(3)
            s.purchase_amount = value
        else:
            raise ModbusFault(2)

    def _purchase(self) -> None:
        s = self.state
        if s.purchase_seq == 0 or s.purchase_seq == s.last_seq:
            return  # an order number is applied once
        s.balance_kwh += s.purchase_amount
        s.last_seq = s.purchase_seq
