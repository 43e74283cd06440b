"""The DL/T 645 data-identifier registry, kept as data.

Each :class:`DataItem` has a name and a tuple of :class:`FieldSpec` (name, format, unit,
quantity code from :mod:`protocols.quantities`). Items are generated from the tables below
(energy kinds x tariffs x settlement months, frozen-record items x Nth previous, ...);
there is no per-DI code. DIs are ints (``0x00010000``) or the 8-hex-digit string as
normally written (``"00010000"``); 1997 DIs are 2 bytes (``0x9010``) and live in their own
table (``version=1997``).

Main API::

    lookup(di, version=2007) -> DataItem | None
    decode_data(di, payload, version=2007, opts=None) -> Decoded      # never raises on data
    encode_data(di, value, version=2007, opts=None) -> bytes          # the simulator uses it
    dis_for_quantity(code, version=2007) -> tuple[int, ...]
    di97_to_di07(di) / di07_to_di97(di)

``Decoded.readings(meter, ts)`` turns a decoded reply into :class:`protocols.reading.Reading`.
Sources of the tables: shared/docs/dlt645.md section 3 ([C1] [C2] [C3] [C6] [C15]).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from functools import lru_cache
from typing import Any

from protocols.dlt645.formats import (
    DEFAULT_OPTIONS,
    Ascii,
    BaudWord,
    Bcd,
    Bits,
    DateTime,
    Digits,
    Format,
    FormatOptions,
    Hex,
    Raw,
    Status,
    Value,
)
from protocols.errors import LocalProtocolError
from protocols.reading import Quality, Reading

__all__ = [
    "DI",
    "DataItem",
    "Decoded",
    "Field",
    "FieldSpec",
    "all_items",
    "decode_data",
    "di07_to_di97",
    "di97_to_di07",
    "di_to_str",
    "dis_for_quantity",
    "encode_data",
    "lookup",
    "parse_di",
]

DI = int | str


def parse_di(di: DI, version: int = 2007) -> int:
    """``"00010000"`` / ``"0001 0000"`` / ``0x00010000`` -> int; checks the width for the version."""
    if isinstance(di, str):
        text = di.replace(" ", "").replace("-", "").replace("_", "")
        if text.lower().startswith("0x"):
            text = text[2:]
        try:
            n = int(text, 16)
        except ValueError:
            raise LocalProtocolError(f"bad data identifier {di!r}") from None
    elif isinstance(di, int) and not isinstance(di, bool):
        n = di
    else:
        raise LocalProtocolError(f"bad data identifier {di!r}")
    limit = 0xFFFF if version == 1997 else 0xFFFFFFFF
    if not 0 <= n <= limit:
        raise LocalProtocolError(f"data identifier {di!r} out of range for DL/T 645-{version}")
    return n


def di_to_str(di: int, version: int = 2007) -> str:
    return f"{di:04X}" if version == 1997 else f"{di:08X}"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One value inside a data item. ``bit_quantities``: (bit, quantity) pairs for status words."""

    name: str
    fmt: Format
    unit: str = ""
    quantity: str | None = None
    bit_quantities: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Field:
    """One decoded value. ``ts`` is set inside records that carry their own time (naive, meter time)."""

    name: str
    value: Value
    unit: str = ""
    quantity: str | None = None
    status: str = Status.OK
    ts: datetime | None = None
    flags: tuple[str, ...] = ()  # names of the set bits of a status word
    spec: FieldSpec | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "value": _jsonable(self.value), "unit": self.unit}
        if self.quantity:
            d["quantity"] = self.quantity
        if self.status != Status.OK:
            d["status"] = self.status
        if self.ts is not None:
            d["ts"] = self.ts.isoformat()
        if self.flags or isinstance(self.spec.fmt if self.spec else None, Bits):
            d["flags"] = list(self.flags)
        return d


def _jsonable(v: Value) -> Any:
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return v


@dataclass(frozen=True, slots=True)
class DataItem:
    """A data identifier and the layout of its data.

    - ``partial``: a block or record; the meter may return only its leading fields (fewer
      tariffs, shorter records); decoding stops at a field boundary.
    - ``open_ended``: extra trailing values in the last field's format are accepted (a meter
      with more than 4 tariffs answering a FF block), named ``t5``, ``t6``...
    - ``time_field``: the field whose value timestamps the others (frozen records).
    - ``layout``: ``"fields"`` or ``"load_record"`` (the 06... A0 A0 .. E5 record block).
    """

    di: int
    name: str
    fields: tuple[FieldSpec, ...]
    version: int = 2007
    partial: bool = False
    open_ended: bool = False
    time_field: str | None = None
    layout: str = "fields"
    writable: bool = False

    @property
    def size(self) -> int | None:
        if self.layout != "fields":
            return None
        total = 0
        for f in self.fields:
            if f.fmt.size is None:
                return None
            total += f.fmt.size
        return total

    @property
    def di_str(self) -> str:
        return di_to_str(self.di, self.version)

    @property
    def fmt(self) -> Format:
        return self.fields[0].fmt

    @property
    def unit(self) -> str:
        return self.fields[0].unit

    @property
    def quantity(self) -> str | None:
        return self.fields[0].quantity

    @property
    def quantities(self) -> tuple[str, ...]:
        out = [f.quantity for f in self.fields if f.quantity]
        out += [q for f in self.fields for _, q in f.bit_quantities]
        return tuple(out)

    def decode(self, payload: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> Decoded:
        if self.layout == "load_record":
            from protocols.dlt645.records import decode_load_records

            fields, error = decode_load_records(payload, opts)
            return Decoded(self.di, bytes(payload), tuple(fields), self, error=error, version=self.version)
        return _decode_fields(self, payload, opts)

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if self.layout == "load_record":
            from protocols.dlt645.records import encode_load_records

            return encode_load_records(value, opts)
        return _encode_fields(self, value, opts)


@dataclass(frozen=True, slots=True)
class Decoded:
    """The data of one reply, decoded. ``unknown``: the DI is not in the registry (raw kept).

    ``error`` is ``None`` or a reason (``"length"``) when the payload did not fit the item's
    layout; then ``fields`` holds what could be decoded (possibly nothing) and ``raw`` all bytes.
    """

    di: int
    raw: bytes
    fields: tuple[Field, ...]
    item: DataItem | None = None
    unknown: bool = False
    error: str | None = None
    version: int = 2007

    @property
    def name(self) -> str:
        return self.item.name if self.item else "unknown"

    @property
    def di_str(self) -> str:
        return di_to_str(self.di, self.version)

    @property
    def value(self) -> Value:
        """The first field's value (the value of a single-value item); raw bytes when unknown."""
        if self.unknown or not self.fields:
            return self.raw if self.unknown else None
        return self.fields[0].value

    @property
    def values(self) -> dict[str, Value]:
        return {f.name: f.value for f in self.fields}

    @property
    def unit(self) -> str:
        return self.fields[0].unit if self.fields else ""

    @property
    def quantity(self) -> str | None:
        return self.fields[0].quantity if self.fields else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``di``, ``name``, ``unknown``, and ``value`` (one field) or ``values``."""
        d: dict[str, Any] = {"di": self.di_str, "name": self.name, "unknown": self.unknown}
        if self.unknown:
            d["value"] = self.raw.hex()
            return d
        if self.error:
            d["error"] = self.error
            d["raw"] = self.raw.hex()
        if len(self.fields) == 1:
            f = self.fields[0]
            d.update({"value": _jsonable(f.value), "unit": f.unit})
            if f.status != Status.OK:
                d["status"] = f.status
            if f.flags or isinstance(self.item.fmt if self.item else None, Bits):
                d["flags"] = list(f.flags)
        else:
            d["unit"] = self.unit
            d["values"] = [f.as_dict() for f in self.fields]
        return d

    def readings(
        self,
        meter: str,
        ts: datetime,
        *,
        tz: tzinfo | None = None,
        source: str = "dlt645",
        quality: Quality = Quality.GOOD,
    ) -> list[Reading]:
        """One :class:`Reading` per field that has a quantity code.

        ``ts`` (aware) stamps fields without their own time; record fields that carry the
        meter's time (frozen records, load-profile records) use it, localised to ``tz``
        (default: ``ts``'s zone). Time values become Unix seconds. Not-supported (FF) fields give
        NaN with :attr:`Quality.NOT_SUPPORTED`; invalid ones NaN with ``SUSPECT``.
        """
        zone = tz or ts.tzinfo
        out: list[Reading] = []
        for f in self.fields:
            spec = f.spec
            if spec is None or (spec.quantity is None and not spec.bit_quantities):
                continue
            when = _localise(f.ts, zone) if f.ts is not None else ts
            if spec.quantity is not None:
                value, q = _numeric(f, zone)
                out.append(Reading(meter, spec.quantity, when, value, f.unit, quality | q, source))
            if isinstance(f.value, int) and not isinstance(f.value, bool):
                for bit, code in spec.bit_quantities:
                    out.append(Reading(meter, code, when, float(f.value >> bit & 1), "", quality, source))
        return out


def _localise(naive: datetime, zone: tzinfo | None) -> datetime:
    if naive.tzinfo is not None:
        return naive
    return naive.replace(tzinfo=zone) if zone is not None else naive


def _numeric(f: Field, zone: tzinfo | None) -> tuple[float, Quality]:
    v = f.value
    if v is None:
        return math.nan, Quality.NOT_SUPPORTED if f.status == Status.NOT_SUPPORTED else Quality.SUSPECT
    if isinstance(v, bool):
        return float(v), Quality.GOOD
    if isinstance(v, int | float):
        return float(v), Quality.GOOD
    if isinstance(v, datetime):
        return _localise(v, zone).timestamp(), Quality.GOOD
    return math.nan, Quality.SUSPECT


def _decode_fields(item: DataItem, payload: bytes, opts: FormatOptions) -> Decoded:
    out: list[Field] = []
    pos = 0
    n = len(payload)
    error: str | None = None
    specs: list[FieldSpec] = list(item.fields)
    if item.open_ended and specs:
        last = specs[-1]
        size = last.fmt.size or 0
        expected = item.size or 0
        if size and n > expected and (n - expected) % size == 0:
            base = len(specs) - 1  # tariff numbering continues after the last named one
            for k in range((n - expected) // size):
                specs.append(FieldSpec(f"t{base + k + 1}", last.fmt, last.unit))
    for spec in specs:
        fsize = spec.fmt.size
        size = n - pos if fsize is None else fsize
        if pos + size > n:
            break
        value, status = spec.fmt.decode(payload[pos : pos + size], opts)
        flags = spec.fmt.flags(value) if isinstance(spec.fmt, Bits) and isinstance(value, int) else ()
        out.append(Field(spec.name, value, spec.unit, spec.quantity, status, None, flags, spec))
        pos += size
    if pos != n or not out or (len(out) < len(specs) and not item.partial):
        error = "length"
    if error is not None and not item.partial:
        out = []
    if item.time_field is not None:
        stamp = next((f.value for f in out if f.name == item.time_field), None)
        if isinstance(stamp, datetime):
            out = [
                f
                if f.name == item.time_field
                else Field(f.name, f.value, f.unit, f.quantity, f.status, stamp, f.flags, f.spec)
                for f in out
            ]
    return Decoded(item.di, bytes(payload), tuple(out), item, error=error, version=item.version)


def _encode_fields(item: DataItem, value: object, opts: FormatOptions) -> bytes:
    specs = item.fields
    values: list[object]
    if isinstance(value, Mapping):
        missing = [s.name for s in specs if s.name not in value]
        if missing and not item.partial:
            raise LocalProtocolError(f"{item.di_str}: missing values for {', '.join(missing)}")
        values = []
        for s in specs:
            if s.name not in value:
                break
            values.append(value[s.name])
        extra = [k for k in value if k not in {s.name for s in specs}]
        if extra:
            raise LocalProtocolError(f"{item.di_str}: unknown fields {', '.join(map(str, extra))}")
    elif len(specs) == 1 and not (isinstance(value, list | tuple) and len(value) == 1):
        values = [value]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        values = list(value)
    else:
        raise LocalProtocolError(f"{item.di_str} ({item.name}) needs {len(specs)} values, got {value!r}")
    if len(values) > len(specs):
        if not item.open_ended:
            raise LocalProtocolError(f"{item.di_str}: {len(values)} values for {len(specs)} fields")
        specs = specs + tuple(specs[-1:]) * (len(values) - len(specs))
    if len(values) < len(specs) and not item.partial:
        raise LocalProtocolError(f"{item.di_str}: {len(values)} values for {len(specs)} fields")
    return b"".join(s.fmt.encode(v, opts) for s, v in zip(specs, values, strict=False))


# --------------------------------------------------------------------------------------------
# Tables. Formats of the DL/T 645-2007 DI tables (dlt645.md section 3).

ENERGY = Bcd(4, 2)  # XXXXXX.XX
ENERGY_S = Bcd(4, 2, signed=True)
DEMAND = Bcd(3, 4)  # XX.XXXX
DEMAND_TIME = DateTime("YYMMDDhhmm")
VOLT = Bcd(2, 1)  # XXX.X
AMP = Bcd(3, 3, signed=True)  # XXX.XXX
POWER = Bcd(3, 4, signed=True)  # XX.XXXX
PF = Bcd(2, 3, signed=True)  # X.XXX
COUNT3 = Bcd(3)  # XXXXXX
EVENT_TIME = DateTime("YYMMDDhhmmss")
OPERATOR = Digits(4)

_ITEMS: dict[tuple[int, int], DataItem] = {}
_BY_QUANTITY: dict[tuple[int, str], list[int]] = {}


def _add(item: DataItem) -> None:
    key = (item.version, item.di)
    if key in _ITEMS:  # pragma: no cover - guards the tables
        raise RuntimeError(f"duplicate DI {item.di_str}")
    _ITEMS[key] = item
    for q in item.quantities:
        _BY_QUANTITY.setdefault((item.version, q), []).append(item.di)


def _item(di: int, name: str, *fields: FieldSpec, **kw: Any) -> None:
    _add(DataItem(di, name, tuple(fields), **kw))


def _one(di: int, name: str, fmt: Format, unit: str = "", quantity: str | None = None, **kw: Any) -> None:
    _item(di, name, FieldSpec("value", fmt, unit, quantity), **kw)


TARIFF_NAMES = ("total", "t1", "t2", "t3", "t4")

# Energy (DI3 = 00): DI2 kind, DI1 00 total / 01..04 tariffs / FF block, DI0 00 current / 01..0C settlements.
# (DI2, name, signed, unit, quantity base or None, tariffs have quantities)
ENERGY_KINDS: tuple[tuple[int, str, bool, str, str | None, bool], ...] = (
    (0x00, "combined active energy", True, "kWh", "energy.active.combined", True),
    (0x01, "forward active energy", False, "kWh", "energy.active.import", True),
    (0x02, "reverse active energy", False, "kWh", "energy.active.export", True),
    (0x03, "combined reactive energy 1", True, "kvarh", "energy.reactive.combined1", False),
    (0x04, "combined reactive energy 2", True, "kvarh", "energy.reactive.combined2", False),
    (0x05, "quadrant I reactive energy", False, "kvarh", "energy.reactive.q1", False),
    (0x06, "quadrant II reactive energy", False, "kvarh", "energy.reactive.q2", False),
    (0x07, "quadrant III reactive energy", False, "kvarh", "energy.reactive.q3", False),
    (0x08, "quadrant IV reactive energy", False, "kvarh", "energy.reactive.q4", False),
    (0x09, "forward apparent energy", False, "kVAh", None, False),
    (0x0A, "reverse apparent energy", False, "kVAh", None, False),
)
SETTLEMENTS = 12


def _energy_q(base: str | None, tariff: int, with_tariffs: bool) -> str | None:
    if base is None:
        return None
    if tariff == 0:
        return base
    return f"{base}.t{tariff}" if with_tariffs else None


def _energy_block(
    signed: bool, unit: str, base: str | None, with_t: bool, current: bool
) -> tuple[FieldSpec, ...]:
    fmt = ENERGY_S if signed else ENERGY
    return tuple(
        FieldSpec(n, fmt, unit, _energy_q(base, t, with_t) if current else None) for t, n in enumerate(TARIFF_NAMES)
    )


_fmt: Format
for _di2, _name, _signed, _unit, _base, _with_t in ENERGY_KINDS:
    _fmt = ENERGY_S if _signed else ENERGY
    for _di0 in range(SETTLEMENTS + 1):
        _when = "" if _di0 == 0 else f" (settlement {_di0})"
        _cur = _di0 == 0
        for _t in range(5):
            _q = _energy_q(_base, _t, _with_t) if _cur else None
            _label = "total" if _t == 0 else f"tariff {_t}"
            _one(0x00000000 | _di2 << 16 | _t << 8 | _di0, f"{_name}, {_label}{_when}", _fmt, _unit, _q)
        _item(
            0x0000FF00 | _di2 << 16 | _di0,
            f"{_name} block{_when}",
            *_energy_block(_signed, _unit, _base, _with_t, _cur),
            partial=True,
            open_ended=True,
        )

# Maximum demand (DI3 = 01): value XX.XXXX + time YYMMDDhhmm (8 bytes). [C1 len 8][C3]
DEMAND_KINDS: tuple[tuple[int, str, str, tuple[str, str] | None], ...] = (
    (0x01, "forward active max demand", "kW", ("demand.active.import.max", "demand.active.import.max_time")),
    (0x02, "reverse active max demand", "kW", ("demand.active.export.max", "demand.active.export.max_time")),
    (0x03, "combined reactive 1 max demand", "kvar", None),
    (0x04, "combined reactive 2 max demand", "kvar", None),
    (0x05, "quadrant I reactive max demand", "kvar", None),
    (0x06, "quadrant II reactive max demand", "kvar", None),
    (0x07, "quadrant III reactive max demand", "kvar", None),
    (0x08, "quadrant IV reactive max demand", "kvar", None),
    (0x09, "forward apparent max demand", "kVA", None),
    (0x0A, "reverse apparent max demand", "kVA", None),
)


def _demand_pair(prefix: str, unit: str, qs: tuple[str, str] | None) -> tuple[FieldSpec, FieldSpec]:
    fmt = Bcd(3, 4, signed=unit != "kW" and unit != "kVA")
    return (
        FieldSpec(f"{prefix}value" if prefix else "value", fmt, unit, qs[0] if qs else None),
        FieldSpec(f"{prefix}time" if prefix else "time", DEMAND_TIME, "", qs[1] if qs else None),
    )


for _di2, _name, _unit, _qs in DEMAND_KINDS:
    for _di0 in range(SETTLEMENTS + 1):
        _when = "" if _di0 == 0 else f" (settlement {_di0})"
        for _t in range(5):
            _label = "total" if _t == 0 else f"tariff {_t}"
            _pq = _qs if (_di0 == 0 and _t == 0) else None
            _item(0x01000000 | _di2 << 16 | _t << 8 | _di0, f"{_name}, {_label}{_when}", *_demand_pair("", _unit, _pq))
        _dblock: list[FieldSpec] = []
        for _t, _tn in enumerate(TARIFF_NAMES):
            _dblock.extend(_demand_pair(f"{_tn}_", _unit, _qs if (_di0 == 0 and _t == 0) else None))
        _item(0x0100FF00 | _di2 << 16 | _di0, f"{_name} block{_when}", *_dblock, partial=True)

# Instantaneous variables (DI3 = 02). (DI2, name, format, unit, quantity prefix, phases incl. total?)
PHASES = ("a", "b", "c")
VARIABLE_KINDS: tuple[tuple[int, str, Format, str, str, bool], ...] = (
    (0x01, "voltage", VOLT, "V", "voltage", False),
    (0x02, "current", AMP, "A", "current", False),
    (0x03, "active power", POWER, "kW", "power.active", True),
    (0x04, "reactive power", POWER, "kvar", "power.reactive", True),
    (0x05, "apparent power", POWER, "kVA", "power.apparent", True),
    (0x06, "power factor", PF, "", "pf", True),
    (0x07, "phase angle", Bcd(2, 1), "°", "", False),
)
for _di2, _name, _fmt, _unit, _qp, _with_total in VARIABLE_KINDS:
    _names = (("total",) if _with_total else ()) + PHASES
    _specs = []
    for _name_p in _names:
        _idx = 0 if _name_p == "total" else PHASES.index(_name_p) + 1
        _q = f"{_qp}.{_name_p}" if _qp else None
        _label = "total" if _name_p == "total" else f"phase {_name_p.upper()}"
        _one(0x02000000 | _di2 << 16 | _idx << 8, f"{_name}, {_label}", _fmt, _unit, _q)
        _specs.append(FieldSpec(_name_p, _fmt, _unit, _q))
    _item(0x0200FF00 | _di2 << 16, f"{_name} block", *_specs, partial=True)

_VARIABLES_80: tuple[tuple[int, str, Format, str, str | None], ...] = (
    (0x01, "neutral current", AMP, "A", "current.n"),
    (0x02, "grid frequency", Bcd(2, 2), "Hz", "frequency"),
    (0x03, "one-minute average active power", POWER, "kW", None),
    (0x04, "current active demand", POWER, "kW", None),
    (0x05, "current reactive demand", POWER, "kvar", None),
    (0x06, "current apparent demand", POWER, "kVA", None),
    (0x07, "meter temperature", Bcd(2, 1, signed=True), "°C", None),
    (0x08, "clock battery voltage", Bcd(2, 2), "V", None),
    (0x09, "meter-reading battery voltage", Bcd(2, 2), "V", None),
    (0x0A, "internal battery working time", Bcd(4), "min", None),
)
for _di0, _name, _fmt, _unit, _q in _VARIABLES_80:
    _one(0x02800000 | _di0, _name, _fmt, _unit, _q)

# Prepaid balances (DI 0090xxxx).
_one(0x00900100, "remaining energy (prepaid)", ENERGY, "kWh", "balance.energy")
_one(0x00900101, "overdraft energy", ENERGY, "kWh")
_one(0x00900200, "remaining money (prepaid)", ENERGY, "CNY", "balance.money")
_one(0x00900201, "overdraft money", ENERGY, "CNY")

# Status words (04000501..07, block 040005FF). Bit names per the standard table; only word 3
# bit 4 (relay, 1 = open/off) is confirmed by a public decoder [C15], and bit 7 (alarm) by public
# meter-test software that checks `word3 & 0x80` after a 1C alarm command; the rest are as commonly
# documented and kept informational.
STATUS_BITS: dict[int, tuple[str | None, ...]] = {
    1: (None, "demand_mode_block", "clock_battery_low", "reading_battery_low", "active_power_reverse",
        "reactive_power_reverse", None, None, "control_circuit_error", "esam_error", None, None,
        "program_error", "memory_error", "overdraft", "clock_error"),
    2: ("a_active_reverse", "b_active_reverse", "c_active_reverse", None, "a_reactive_reverse",
        "b_reactive_reverse", "c_reactive_reverse"),
    3: ("second_period_table", "supply_aux", "supply_battery", "programming_enabled", "relay_open",
        "second_zone_table", "relay_command_open", "pretrip_alarm", "prepaid_energy", "prepaid_money",
        "second_tariff_table", "second_step_table", "keep_power"),
    4: ("voltage_loss", "undervoltage", "overvoltage", "current_loss", "overcurrent", "overload",
        "power_reverse", "phase_break", "current_break"),
    7: ("voltage_sequence_reverse", "current_sequence_reverse", "voltage_imbalance", "current_imbalance",
        "aux_power_loss", "power_down", "demand_over_limit", "pf_below_limit", "current_severe_imbalance"),
}
STATUS_BITS[5] = STATUS_BITS[4]
STATUS_BITS[6] = STATUS_BITS[4]
RELAY_BIT = 4  # in status word 3
KEEP_POWER_BIT = 12  # in status word 3 (unverified)


def _status_spec(n: int, name: str) -> FieldSpec:
    bq: tuple[tuple[int, str], ...] = ((RELAY_BIT, "relay.state"),) if n == 3 else ()
    return FieldSpec(name, Bits(2, STATUS_BITS[n]), "", f"status.word{n}", bq)


for _n in range(1, 8):
    _item(0x04000500 | _n, f"run status word {_n}", _status_spec(_n, "value"))
_item(0x040005FF, "run status words 1-7", *(_status_spec(n, f"word{n}") for n in range(1, 8)), partial=True)

# Parameters (DI3 = 04).
_item(0x04000101, "date and weekday", FieldSpec("value", DateTime("YYMMDDWW")), writable=True)
_item(0x04000102, "time", FieldSpec("value", DateTime("hhmmss")), writable=True)
_one(0x04000103, "demand period", Bcd(1), "min", writable=True)
_one(0x04000104, "demand slip time", Bcd(1), "min", writable=True)
_one(0x04000105, "calibration pulse width", Bcd(2), "ms")
_one(0x04000106, "zone table switch time", DEMAND_TIME, writable=True)
_one(0x04000107, "period table switch time", DEMAND_TIME, writable=True)
_one(0x0400010C, "date, weekday and time", DateTime("YYMMDDWWhhmmss"), writable=True)
_one(0x04000201, "annual time zones", Bcd(1), writable=True)
_one(0x04000202, "daily period tables", Bcd(1), writable=True)
_one(0x04000203, "daily periods", Bcd(1), writable=True)
_one(0x04000204, "tariffs", Bcd(1), writable=True)
_one(0x04000205, "public holidays", Bcd(2), writable=True)
_one(0x04000401, "comm address", Digits(6), writable=True)
_one(0x04000402, "meter number", Digits(6), writable=True)
_one(0x04000403, "asset code", Ascii(32), writable=True)
_one(0x04000404, "rated voltage", Ascii(6))
_one(0x04000405, "rated current", Ascii(6))
_one(0x04000406, "maximum current", Ascii(6))
_one(0x04000407, "active accuracy class", Ascii(4))
_one(0x04000408, "reactive accuracy class", Ascii(4))
_one(0x04000409, "active constant", Bcd(3), "imp/kWh")
_one(0x0400040A, "reactive constant", Bcd(3), "imp/kvarh")
_one(0x0400040B, "meter model", Ascii(10))
_one(0x0400040C, "production date", Ascii(10))
_one(0x0400040D, "protocol version", Ascii(16))
_one(0x04000601, "active combination mode word", Hex(1), writable=True)
_one(0x04000602, "reactive combination 1 mode word", Hex(1), writable=True)
_one(0x04000603, "reactive combination 2 mode word", Hex(1), writable=True)
for _n, _port in enumerate(("IR modulated", "IR contact", "RS-485 port 1", "RS-485 port 2", "carrier"), start=1):
    _one(0x04000700 | _n, f"{_port} baud characteristic word", BaudWord(), "bit/s", writable=True)
for _n in range(1, 4):
    _one(0x04000B00 | _n, f"settlement day {_n}", DateTime("DDhh"), writable=True)
_one(0x04000E01, "forward active power upper limit", Bcd(3, 4), "kW", "limit.power", writable=True)
_one(0x04000E02, "reverse active power upper limit", Bcd(3, 4), "kW", writable=True)
_one(0x04000E03, "voltage upper limit", VOLT, "V", writable=True)
_one(0x04000E04, "voltage lower limit", VOLT, "V", writable=True)
_one(0x04001001, "alarm energy 1 limit", ENERGY, "kWh", writable=True)
_one(0x04001002, "alarm energy 2 limit", ENERGY, "kWh", writable=True)

# Events (DI3 = 03, 1D, 1E). Counts are XXXXXX; records start with their time.
_ENERGY_SNAPSHOT = tuple(
    FieldSpec(n, ENERGY, u)
    for n, u in (("forward_active", "kWh"), ("reverse_active", "kWh"), ("q1_reactive", "kvarh"),
                 ("q2_reactive", "kvarh"), ("q3_reactive", "kvarh"), ("q4_reactive", "kvarh"))
)


def _prefixed(prefix: str, specs: Iterable[FieldSpec]) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(prefix + s.name, s.fmt, s.unit, s.quantity) for s in specs)


_item(
    0x03010000,
    "voltage-loss counts and accumulated times",
    *(
        spec
        for p in PHASES
        for spec in (
            FieldSpec(f"{p}_count", COUNT3, "", f"event.voltage_loss.{p}.count"),
            FieldSpec(f"{p}_minutes", COUNT3, "min"),
        )
    ),
)
_OPERATOR_FIELD = FieldSpec("operator", OPERATOR)
# Event records, Nth previous in DI0 (01..0A). Generated lazily by _nth_item (see below).
_EVENT_RECORDS: dict[int, tuple[str, tuple[FieldSpec, ...], int]] = {
    # base DI (DI0 = 00): name, fields, max N
    0x03010100: ("phase A voltage-loss record", (FieldSpec("start", EVENT_TIME), FieldSpec("rest", Raw())), 10),
    0x03010200: ("phase B voltage-loss record", (FieldSpec("start", EVENT_TIME), FieldSpec("rest", Raw())), 10),
    0x03010300: ("phase C voltage-loss record", (FieldSpec("start", EVENT_TIME), FieldSpec("rest", Raw())), 10),
    0x03110000: ("power-down record", (FieldSpec("start", EVENT_TIME), FieldSpec("end", EVENT_TIME)), 10),
    0x03300000: (
        "programming record",
        (FieldSpec("time", EVENT_TIME), FieldSpec("operator", OPERATOR),
         *(FieldSpec(f"di{k}", Hex(4)) for k in range(1, 11))),
        10,
    ),
    0x03300D00: (
        "cover-open record",
        (FieldSpec("start", EVENT_TIME), FieldSpec("end", EVENT_TIME),
         *_prefixed("before_", _ENERGY_SNAPSHOT), *_prefixed("after_", _ENERGY_SNAPSHOT)),
        10,
    ),
    0x03300E00: (
        "terminal cover-open record",
        (FieldSpec("start", EVENT_TIME), FieldSpec("end", EVENT_TIME),
         *_prefixed("before_", _ENERGY_SNAPSHOT), *_prefixed("after_", _ENERGY_SNAPSHOT)),
        10,
    ),
    0x1D000100: ("trip record", (FieldSpec("time", EVENT_TIME), _OPERATOR_FIELD, *_ENERGY_SNAPSHOT), 10),
    0x1E000100: ("close record", (FieldSpec("time", EVENT_TIME), _OPERATOR_FIELD, *_ENERGY_SNAPSHOT), 10),
}
_one(0x03110000, "power-down count", COUNT3, "", "event.power_down.count")
_one(0x03300000, "programming count", COUNT3, "", "event.programming.count")
_one(0x03300400, "clock-set count", COUNT3, "", "event.clock_set.count")
_one(0x03300D00, "cover-open count", COUNT3, "", "event.cover_open.count")
_one(0x03300E00, "terminal cover-open count", COUNT3, "", "event.terminal_cover_open.count")
_one(0x1D000001, "trip count", COUNT3, "", "event.trip.count")
_one(0x1E000001, "close count", COUNT3, "", "event.close.count")

# Frozen data (DI3 = 05). DI2: 00 timed, 01 instant, 04 hourly, 06 daily; DI1 item; DI0 Nth previous.
# [C2 dlt645_table_record.json][P10]. A frozen record's time field stamps its values.
FROZEN_TIME = FieldSpec("time", DateTime("YYMMDDhhmm"))


def _block(prefix: str, fmt: Format, unit: str, base: str | None) -> tuple[FieldSpec, ...]:
    return tuple(
        FieldSpec(f"{prefix}{n}", fmt, unit, (base if t == 0 else f"{base}.t{t}") if base else None)
        for t, n in enumerate(TARIFF_NAMES)
    )


def _demand_block(prefix: str, unit: str, qs: tuple[str, str] | None) -> tuple[FieldSpec, ...]:
    out: list[FieldSpec] = []
    for t, n in enumerate(TARIFF_NAMES):
        out.extend(_demand_pair(f"{prefix}{n}_", unit, qs if t == 0 else None))
    return tuple(out)


_FROZEN_FULL: dict[int, tuple[str, tuple[FieldSpec, ...]]] = {
    0x00: ("freeze time", (FROZEN_TIME,)),
    0x01: ("forward active energy block", _block("", ENERGY, "kWh", "energy.active.import")),
    0x02: ("reverse active energy block", _block("", ENERGY, "kWh", "energy.active.export")),
    0x03: ("combined reactive 1 energy block", _block("", ENERGY_S, "kvarh", None)),
    0x04: ("combined reactive 2 energy block", _block("", ENERGY_S, "kvarh", None)),
    0x05: ("quadrant I reactive energy block", _block("", ENERGY, "kvarh", None)),
    0x06: ("quadrant II reactive energy block", _block("", ENERGY, "kvarh", None)),
    0x07: ("quadrant III reactive energy block", _block("", ENERGY, "kvarh", None)),
    0x08: ("quadrant IV reactive energy block", _block("", ENERGY, "kvarh", None)),
    0x09: ("forward active max demand block", _demand_block("", "kW", None)),
    0x0A: ("reverse active max demand block", _demand_block("", "kW", None)),
    0x10: (
        "power",
        tuple(FieldSpec(n, POWER, u) for n, u in (
            ("p_total", "kW"), ("p_a", "kW"), ("p_b", "kW"), ("p_c", "kW"),
            ("q_total", "kvar"), ("q_a", "kvar"), ("q_b", "kvar"), ("q_c", "kvar"),
        )),
    ),
}
_FROZEN_HOURLY: dict[int, tuple[str, tuple[FieldSpec, ...]]] = {
    0x00: ("freeze time", (FROZEN_TIME,)),
    0x01: ("forward active energy, total", (FieldSpec("total", ENERGY, "kWh", "energy.active.import"),)),
    0x02: ("reverse active energy, total", (FieldSpec("total", ENERGY, "kWh", "energy.active.export"),)),
}
_PREFIX_OF = {0x01: "fwd_", 0x02: "rev_", 0x03: "rc1_", 0x04: "rc2_", 0x05: "q1_", 0x06: "q2_",
              0x07: "q3_", 0x08: "q4_", 0x09: "fwd_md_", 0x0A: "rev_md_", 0x10: ""}
FROZEN_KINDS: dict[int, tuple[str, dict[int, tuple[str, tuple[FieldSpec, ...]]], int]] = {
    0x00: ("timed frozen", _FROZEN_FULL, 60),
    0x01: ("instant frozen", _FROZEN_FULL, 3),
    0x04: ("hourly frozen", _FROZEN_HOURLY, 254),
    0x06: ("daily frozen", _FROZEN_FULL, 62),
}


def _frozen_item(di: int) -> DataItem | None:
    di2, di1, n = di >> 16 & 0xFF, di >> 8 & 0xFF, di & 0xFF
    kind = FROZEN_KINDS.get(di2)
    if kind is None or not 1 <= n <= kind[2]:
        return None
    label, items, _ = kind
    if di1 == 0xFF:
        fields: list[FieldSpec] = [FROZEN_TIME]
        for k, (_, specs) in items.items():
            if k == 0:
                continue
            prefix = _PREFIX_OF[k] if items is _FROZEN_FULL else ("fwd_" if k == 1 else "rev_")
            fields.extend(_prefixed(prefix, specs))
        return DataItem(di, f"{label} record (previous {n})", tuple(fields), partial=True, time_field="time")
    entry = items.get(di1)
    if entry is None:
        return None
    name, specs = entry
    # A single item read has no time of its own: values carry no ts (the caller knows the freeze time).
    return DataItem(di, f"{label} {name} (previous {n})", specs, partial=len(specs) > 1)


def _event_item(di: int) -> DataItem | None:
    n = di & 0xFF
    entry = _EVENT_RECORDS.get(di & 0xFFFFFF00)
    if entry is None or not 1 <= n <= entry[2]:
        return None
    name, specs, _ = entry
    return DataItem(di, f"{name} (previous {n})", specs, partial=True)


# Load-profile records (DI3 = 06): DI2 00 all classes / 01..06 class; DI0 00 earliest,
# 01 at a given time, 02 latest. The reply is the "A0 A0 len time ... AA ... CS E5" record block.
LOAD_PROFILE_SELECTORS = {0x00: "earliest", 0x01: "at given time", 0x02: "latest"}


def _load_item(di: int) -> DataItem | None:
    di2, di1, di0 = di >> 16 & 0xFF, di >> 8 & 0xFF, di & 0xFF
    if di2 > 6 or di1 != 0 or di0 not in LOAD_PROFILE_SELECTORS:
        return None
    cls = "all classes" if di2 == 0 else f"class {di2}"
    return DataItem(di, f"load-profile record block, {cls}, {LOAD_PROFILE_SELECTORS[di0]}", (), layout="load_record")


_GENERATORS = {0x05: _frozen_item, 0x06: _load_item, 0x03: _event_item, 0x1D: _event_item, 0x1E: _event_item}

# --------------------------------------------------------------------------------------------
# DL/T 645-1997 (2-byte DIs) and the mapping to 2007. [C5][C6][P8]

_97: dict[str, Any] = {"version": 1997}
_one(0x9010, "forward active energy, total", ENERGY, "kWh", "energy.active.import", **_97)
for _t in range(1, 5):
    _one(0x9010 + _t, f"forward active energy, tariff {_t}", ENERGY, "kWh", f"energy.active.import.t{_t}", **_97)
    _one(0x9020 + _t, f"reverse active energy, tariff {_t}", ENERGY, "kWh", f"energy.active.export.t{_t}", **_97)
_item(0x901F, "forward active energy block", *_block("", ENERGY, "kWh", "energy.active.import"),
      version=1997, partial=True, open_ended=True)
_one(0x9020, "reverse active energy, total", ENERGY, "kWh", "energy.active.export", **_97)
_item(0x902F, "reverse active energy block", *_block("", ENERGY, "kWh", "energy.active.export"),
      version=1997, partial=True, open_ended=True)
_one(0x9110, "forward reactive energy, total", ENERGY, "kvarh", **_97)
_one(0x9120, "reverse reactive energy, total", ENERGY, "kvarh", **_97)
_one(0x9410, "forward active energy, total (last month)", ENERGY, "kWh", **_97)
_one(0x9420, "reverse active energy, total (last month)", ENERGY, "kWh", **_97)
_one(0xA010, "forward active max demand", Bcd(3, 4), "kW", "demand.active.import.max", **_97)
_one(0xB010, "forward active max demand time", DateTime("MMDDhhmm"), **_97)
for _i, _p in enumerate(PHASES, start=1):
    _one(0xB610 + _i, f"voltage, phase {_p.upper()}", Bcd(2), "V", f"voltage.{_p}", **_97)  # XXX V [P8]
    _one(0xB620 + _i, f"current, phase {_p.upper()}", Bcd(2, 2), "A", f"current.{_p}", **_97)
    _one(0xB630 + _i, f"active power, phase {_p.upper()}", Bcd(3, 4), "kW", f"power.active.{_p}", **_97)
_item(0xB61F, "voltage block", *(FieldSpec(p, Bcd(2), "V", f"voltage.{p}") for p in PHASES), version=1997, partial=True)
_item(0xB62F, "current block", *(FieldSpec(p, Bcd(2, 2), "A", f"current.{p}") for p in PHASES),
      version=1997, partial=True)
_one(0xB630, "active power, total", Bcd(3, 4), "kW", "power.active.total", **_97)
_one(0xB640, "reactive power, total", Bcd(2, 2), "kvar", "power.reactive.total", **_97)
_one(0xB650, "power factor, total", Bcd(2, 3), "", "pf.total", **_97)
_one(0xC010, "date and weekday", DateTime("YYMMDDWW"), **_97)
_one(0xC011, "time", DateTime("hhmmss"), **_97)
_one(0xC020, "meter run status word", Hex(1), **_97)
_one(0xC030, "active constant", Bcd(3), "imp/kWh", **_97)
_one(0xC032, "meter number", Digits(6), **_97)
_one(0xC033, "user number", Digits(6), **_97)
_one(0xC034, "device code", Digits(6), **_97)

# 1997 -> 2007 mapping of common items [C6].
DI97_TO_DI07: dict[int, int] = {
    0x9010: 0x00010000, 0x9011: 0x00010100, 0x9012: 0x00010200, 0x9013: 0x00010300, 0x9014: 0x00010400,
    0x901F: 0x0001FF00, 0x9020: 0x00020000, 0x902F: 0x0002FF00, 0x9410: 0x00010001, 0x9420: 0x00020001,
    0xA010: 0x01010000, 0xB611: 0x02010100, 0xB612: 0x02010200, 0xB613: 0x02010300, 0xB61F: 0x0201FF00,
    0xB621: 0x02020100, 0xB622: 0x02020200, 0xB623: 0x02020300, 0xB62F: 0x0202FF00, 0xB630: 0x02030000,
    0xB631: 0x02030100, 0xB632: 0x02030200, 0xB633: 0x02030300, 0xB640: 0x02040000, 0xB650: 0x02060000,
    0xC010: 0x04000101, 0xC011: 0x04000102, 0xC032: 0x04000402, 0xD113: 0x04000503,
}
DI07_TO_DI97: dict[int, int] = {v: k for k, v in DI97_TO_DI07.items()}


def di97_to_di07(di: DI) -> int | None:
    return DI97_TO_DI07.get(parse_di(di, 1997))


def di07_to_di97(di: DI) -> int | None:
    return DI07_TO_DI97.get(parse_di(di))


# --------------------------------------------------------------------------------------------
# Public lookups.


@lru_cache(maxsize=4096)
def _lookup(di: int, version: int) -> DataItem | None:
    item = _ITEMS.get((version, di))
    if item is not None or version != 2007:
        return item
    gen = _GENERATORS.get(di >> 24)
    return gen(di) if gen is not None else None


def lookup(di: DI, version: int = 2007) -> DataItem | None:
    """The registry entry of ``di`` or ``None`` when unknown."""
    return _lookup(parse_di(di, version), version)


def all_items(version: int = 2007) -> list[DataItem]:
    """Every tabled item (generated Nth-previous records are not listed, see ``lookup``)."""
    return [item for (v, _), item in _ITEMS.items() if v == version]


@lru_cache(maxsize=1024)  # the tables are fixed after import; every scheduled read asks this
def dis_for_quantity(code: str, version: int = 2007) -> tuple[int, ...]:
    """DIs whose data carries quantity ``code``: single-value items first, then blocks."""
    dis = _BY_QUANTITY.get((version, code), [])
    return tuple(sorted(dis, key=lambda d: (len(_ITEMS[(version, d)].fields) > 1, d)))


def decode_data(
    di: DI, payload: bytes, version: int = 2007, opts: FormatOptions | None = None
) -> Decoded:
    """Decode the data bytes (after the DI, already -33H) of ``di``. Never raises on bad data:
    an unknown DI gives ``unknown=True`` with the raw bytes; a length mismatch sets ``error``."""
    n = parse_di(di, version)
    item = _lookup(n, version)
    if item is None:
        return Decoded(n, bytes(payload), (), None, unknown=True, version=version)
    return item.decode(bytes(payload), opts or DEFAULT_OPTIONS)


def encode_data(di: DI, value: object, version: int = 2007, opts: FormatOptions | None = None) -> bytes:
    """Encode a value (single-value items), a sequence (blocks, in field order) or a mapping by
    field name. ``None`` encodes as FF ("not supported"). Raises :class:`LocalProtocolError`."""
    n = parse_di(di, version)
    item = _lookup(n, version)
    if item is None:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        raise LocalProtocolError(f"unknown DI {di_to_str(n, version)}: pass raw bytes")
    return item.encode(value, opts or DEFAULT_OPTIONS)
