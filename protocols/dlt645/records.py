"""DL/T 645-2007 load-profile record blocks (replies to 06xxxxxx reads).

One record::

    A0 A0  L  | YY MM DD hh mm (5, wire low byte first) | S1 AA | S2 AA | S3 AA | S4 AA | S5 AA | S6 AA | CS  E5

``L`` counts the bytes from the time to the last AA separator; ``CS`` is the sum mod 256 from
the first A0 to the last separator. A section whose class is not recorded (负荷记录模式字) is
empty: just its AA. Sections (load classes 1-6):

1. voltages A/B/C (XXX.X), currents A/B/C (±XXX.XXX), frequency (XX.XX) - 17 bytes
2. active power total/A/B/C, reactive power total/A/B/C (±XX.XXXX) - 24 bytes
3. power factor total/A/B/C (±X.XXX) - 8 bytes
4. forward active, reverse active (XXXXXX.XX kWh), combined reactive 1, 2 (kvarh) - 16 bytes
5. quadrant I-IV reactive energy (kvarh) - 16 bytes
6. current active demand (XX.XXXX kW), current reactive demand (kvar) - 6 bytes

Layout as remembered from the standard's appendix and cross-checked against a public
description of the upload format; a vendor deviating from it needs a quirk. A reply may hold
several records back to back (read with a count N).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from protocols.dlt645.formats import DEFAULT_OPTIONS, Bcd, DateTime, FormatOptions
from protocols.errors import LocalProtocolError

if TYPE_CHECKING:
    from protocols.dlt645.registry import Field, FieldSpec

__all__ = ["LOAD_SECTIONS", "decode_load_records", "encode_load_records"]

START = b"\xa0\xa0"
SEPARATOR = 0xAA
END = 0xE5
RECORD_TIME = DateTime("YYMMDDhhmm")


@dataclass(frozen=True, slots=True)
class _Col:
    name: str
    fmt: Bcd
    unit: str
    quantity: str | None


_V, _A, _P, _PF, _E, _ES = Bcd(2, 1), Bcd(3, 3, True), Bcd(3, 4, True), Bcd(2, 3, True), Bcd(4, 2), Bcd(4, 2, True)
LOAD_SECTIONS: tuple[tuple[_Col, ...], ...] = (
    (
        _Col("ua", _V, "V", "voltage.a"), _Col("ub", _V, "V", "voltage.b"), _Col("uc", _V, "V", "voltage.c"),
        _Col("ia", _A, "A", "current.a"), _Col("ib", _A, "A", "current.b"), _Col("ic", _A, "A", "current.c"),
        _Col("freq", Bcd(2, 2), "Hz", "frequency"),
    ),
    (
        _Col("p_total", _P, "kW", "power.active.total"), _Col("p_a", _P, "kW", "power.active.a"),
        _Col("p_b", _P, "kW", "power.active.b"), _Col("p_c", _P, "kW", "power.active.c"),
        _Col("q_total", _P, "kvar", "power.reactive.total"), _Col("q_a", _P, "kvar", "power.reactive.a"),
        _Col("q_b", _P, "kvar", "power.reactive.b"), _Col("q_c", _P, "kvar", "power.reactive.c"),
    ),
    (
        _Col("pf_total", _PF, "", "pf.total"), _Col("pf_a", _PF, "", "pf.a"),
        _Col("pf_b", _PF, "", "pf.b"), _Col("pf_c", _PF, "", "pf.c"),
    ),
    (
        _Col("fwd_active", _E, "kWh", "energy.active.import"), _Col("rev_active", _E, "kWh", "energy.active.export"),
        _Col("rc1", _ES, "kvarh", "energy.reactive.combined1"), _Col("rc2", _ES, "kvarh", "energy.reactive.combined2"),
    ),
    (
        _Col("q1", _E, "kvarh", "energy.reactive.q1"), _Col("q2", _E, "kvarh", "energy.reactive.q2"),
        _Col("q3", _E, "kvarh", "energy.reactive.q3"), _Col("q4", _E, "kvarh", "energy.reactive.q4"),
    ),
    (
        _Col("active_demand", _P, "kW", "interval.demand.active"),
        _Col("reactive_demand", _P, "kvar", None),
    ),
)
_SECTION_SIZE = tuple(sum(c.fmt.size for c in sec) for sec in LOAD_SECTIONS)
_COLUMNS = {c.name: c for sec in LOAD_SECTIONS for c in sec}


def _spec(col: _Col) -> FieldSpec:
    from protocols.dlt645.registry import FieldSpec

    return FieldSpec(col.name, col.fmt, col.unit, col.quantity)


_SPECS: dict[str, FieldSpec] = {}


def _spec_of(col: _Col) -> FieldSpec:
    spec = _SPECS.get(col.name)
    if spec is None:
        spec = _SPECS[col.name] = _spec(col)
    return spec


def decode_load_records(payload: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[list[Field], str | None]:
    """Decode back-to-back records; returns (fields, error). Each record contributes a ``time``
    field and one field per recorded column, all stamped with the record time."""
    from protocols.dlt645.registry import Field, FieldSpec

    time_spec = FieldSpec("time", RECORD_TIME)
    out: list[Field] = []
    pos = 0
    n = len(payload)
    if n == 0:
        return out, "length"
    while pos < n:
        if payload[pos : pos + 2] != START or pos + 3 > n:
            return out, "load_record"
        length = payload[pos + 2]
        body_start = pos + 3
        body_end = body_start + length
        if body_end + 2 > n:
            return out, "length"
        if sum(payload[pos:body_end]) & 0xFF != payload[body_end] or payload[body_end + 1] != END:
            return out, "load_record"
        body = payload[body_start:body_end]
        if len(body) < 5:
            return out, "load_record"
        stamp, status = RECORD_TIME.decode(body[:5], opts)
        ts = stamp if isinstance(stamp, datetime) else None
        out.append(Field("time", stamp, "", None, status, ts, (), time_spec))
        p = 5
        for sec, size in zip(LOAD_SECTIONS, _SECTION_SIZE, strict=True):
            if p < len(body) and body[p] == SEPARATOR:
                p += 1  # class not recorded
                continue
            if p + size + 1 > len(body) or body[p + size] != SEPARATOR:
                return out, "load_record"
            q = p
            for col in sec:
                raw = body[q : q + col.fmt.size]
                value, st = col.fmt.decode(raw, opts)
                out.append(Field(col.name, value, col.unit, col.quantity, st, ts, (), _spec_of(col)))
                q += col.fmt.size
            p += size + 1
        if p != len(body):
            return out, "load_record"
        pos = body_end + 2
    return out, None


def encode_load_records(value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
    """Encode one record (a mapping with ``time`` and any columns) or a sequence of them.
    A section is written when any of its columns is given (missing columns of it as FF)."""
    records: Sequence[object]
    if isinstance(value, Mapping):
        records = [value]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        records = value
    else:
        raise LocalProtocolError(f"load-profile record(s) expected, got {value!r}")
    out = bytearray()
    for rec in records:
        if not isinstance(rec, Mapping):
            raise LocalProtocolError(f"load-profile record must be a mapping, got {rec!r}")
        unknown = [k for k in rec if k != "time" and k not in _COLUMNS]
        if unknown:
            raise LocalProtocolError(f"unknown load-profile columns: {', '.join(map(str, unknown))}")
        body = bytearray(RECORD_TIME.encode(rec.get("time"), opts))
        for sec in LOAD_SECTIONS:
            if any(c.name in rec for c in sec):
                for c in sec:
                    body += c.fmt.encode(rec.get(c.name), opts)
            body.append(SEPARATOR)
        if len(body) > 255:  # pragma: no cover - the sections cannot exceed it
            raise LocalProtocolError("load-profile record too long")
        head = START + bytes((len(body),))
        rec_bytes = head + bytes(body)
        out += rec_bytes + bytes((sum(rec_bytes) & 0xFF, END))
    return bytes(out)



