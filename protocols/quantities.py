"""The quantity code list shared by every protocol and by the meter data store.

DL/T 645 data identifiers, Modbus register maps and MQTT payload fields all map onto
these codes, so a reading means the same thing whichever wire it came over.
Codes are dotted lower-case words; the table is data, looked up with :func:`get`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["QUANTITIES", "Kind", "Quantity", "get", "is_known"]


class Kind(StrEnum):
    REGISTER = "register"  # cumulative register (energy), monotonic apart from rollover
    INTERVAL = "interval"  # energy or demand over one load-profile interval
    INSTANT = "instant"  # instantaneous value (voltage, current, power...)
    DEMAND = "demand"  # maximum demand register
    STATE = "state"  # status words, relay state, clock offset
    COUNTER = "counter"  # event counters
    SETTING = "setting"  # limits, balances and other parameters


@dataclass(frozen=True, slots=True)
class Quantity:
    code: str
    unit: str
    kind: Kind
    description: str


def _q(code: str, unit: str, kind: Kind, description: str) -> Quantity:
    return Quantity(code, unit, kind, description)


_R, _I, _N, _D, _S, _C, _G = (
    Kind.REGISTER, Kind.INTERVAL, Kind.INSTANT, Kind.DEMAND, Kind.STATE, Kind.COUNTER, Kind.SETTING,
)

_TABLE: list[Quantity] = [
    # Energy registers: total and tariffs 1..4 (尖峰平谷 order as the meter numbers them).
    _q("energy.active.combined", "kWh", _R, "combined active energy, total"),
    _q("energy.active.import", "kWh", _R, "forward (import) active energy, total"),
    _q("energy.active.export", "kWh", _R, "reverse (export) active energy, total"),
    _q("energy.reactive.combined1", "kvarh", _R, "combined reactive energy 1, total"),
    _q("energy.reactive.combined2", "kvarh", _R, "combined reactive energy 2, total"),
    _q("energy.reactive.q1", "kvarh", _R, "quadrant I reactive energy, total"),
    _q("energy.reactive.q2", "kvarh", _R, "quadrant II reactive energy, total"),
    _q("energy.reactive.q3", "kvarh", _R, "quadrant III reactive energy, total"),
    _q("energy.reactive.q4", "kvarh", _R, "quadrant IV reactive energy, total"),
    *[
        _q(f"{base}.t{t}", unit, _R, f"{desc}, tariff {t}")
        for base, unit, desc in (
            ("energy.active.combined", "kWh", "combined active energy"),
            ("energy.active.import", "kWh", "forward active energy"),
            ("energy.active.export", "kWh", "reverse active energy"),
        )
        for t in range(1, 5)
    ],
    # Maximum demand and the time it occurred (as Unix seconds, so it fits a numeric column).
    _q("demand.active.import.max", "kW", _D, "forward active maximum demand"),
    _q("demand.active.import.max_time", "s", _S, "time of forward active maximum demand (Unix seconds)"),
    _q("demand.active.export.max", "kW", _D, "reverse active maximum demand"),
    _q("demand.active.export.max_time", "s", _S, "time of reverse active maximum demand (Unix seconds)"),
    # Load-profile intervals.
    _q("interval.energy.active.import", "kWh", _I, "forward active energy in the interval"),
    _q("interval.energy.active.export", "kWh", _I, "reverse active energy in the interval"),
    _q("interval.demand.active", "kW", _I, "average active demand over the interval"),
    # Instantaneous values.
    *[_q(f"voltage.{p}", "V", _N, f"phase {p.upper()} voltage") for p in "abc"],
    *[_q(f"current.{p}", "A", _N, f"phase {p.upper()} current") for p in "abc"],
    _q("current.n", "A", _N, "neutral current"),
    _q("power.active.total", "kW", _N, "instantaneous active power, total"),
    *[_q(f"power.active.{p}", "kW", _N, f"instantaneous active power, phase {p.upper()}") for p in "abc"],
    _q("power.reactive.total", "kvar", _N, "instantaneous reactive power, total"),
    _q("power.apparent.total", "kVA", _N, "instantaneous apparent power, total"),
    _q("pf.total", "", _N, "power factor, total"),
    # Per-phase reactive/apparent power and power factor (DL/T 645 02040100.., 02050100.., 02060100..).
    *[_q(f"power.reactive.{p}", "kvar", _N, f"instantaneous reactive power, phase {p.upper()}") for p in "abc"],
    *[_q(f"power.apparent.{p}", "kVA", _N, f"instantaneous apparent power, phase {p.upper()}") for p in "abc"],
    *[_q(f"pf.{p}", "", _N, f"power factor, phase {p.upper()}") for p in "abc"],
    _q("frequency", "Hz", _N, "grid frequency"),
    # State.
    _q("clock.offset", "s", _S, "meter clock minus head-end clock"),
    *[_q(f"status.word{n}", "", _S, f"run status word {n}") for n in range(1, 8)],
    _q("relay.state", "", _S, "supply relay: 0 closed (supply on), 1 open (supply off)"),
    _q("keep_power.state", "", _S, "keep-power (保电): 1 active"),
    # Event counters.
    _q("event.voltage_loss.count", "", _C, "voltage-loss (失压) events, all phases"),
    *[_q(f"event.voltage_loss.{p}.count", "", _C, f"phase {p.upper()} voltage-loss events") for p in "abc"],
    _q("event.cover_open.count", "", _C, "meter cover-open (开盖) events"),
    _q("event.terminal_cover_open.count", "", _C, "terminal cover-open events"),
    _q("event.magnetic.count", "", _C, "magnetic-tamper events"),
    _q("event.programming.count", "", _C, "programming events"),
    _q("event.trip.count", "", _C, "relay trip events"),
    _q("event.close.count", "", _C, "relay close events"),
    _q("event.power_down.count", "", _C, "power-down events"),
    _q("event.clock_set.count", "", _C, "clock-set events"),
    # Load-management settings and prepaid balance.
    _q("limit.power", "kW", _G, "power limit (功控 cap)"),
    _q("balance.energy", "kWh", _G, "prepaid energy balance (购电 remaining)"),
    _q("balance.money", "CNY", _G, "prepaid money balance"),
]

QUANTITIES: dict[str, Quantity] = {q.code: q for q in _TABLE}
if len(QUANTITIES) != len(_TABLE):  # pragma: no cover - guards the table itself
    raise RuntimeError("duplicate quantity code")


def get(code: str) -> Quantity:
    """Return the quantity for ``code``; raise ``KeyError`` naming it when unknown."""
    try:
        return QUANTITIES[code]
    except KeyError:
        raise KeyError(f"unknown quantity code {code!r}") from None


def is_known(code: str) -> bool:
    return code in QUANTITIES
