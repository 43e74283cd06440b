"""DL/T 645 DI registry and value formats: public examples, every format round-trips, FF handling,
readings, quantity codes, the 1997<->2007 mapping."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import quantities
from protocols.dlt645.events import ReadRequest
from protocols.dlt645.formats import (
    BAUD_BITS,
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
)
from protocols.dlt645.frame import encode_frame
from protocols.dlt645.records import LOAD_SECTIONS
from protocols.dlt645.registry import (
    DataItem,
    all_items,
    decode_data,
    di07_to_di97,
    di97_to_di07,
    dis_for_quantity,
    encode_data,
    lookup,
    parse_di,
)
from protocols.dlt645.services import encode_request
from protocols.errors import LocalProtocolError
from protocols.reading import Quality
from tests.protocols.vectors import DATA_EXAMPLES, DI_WIRE

UTC = UTC
TS = datetime(2026, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- public examples


@pytest.mark.parametrize(("di", "wire"), DI_WIRE)
def test_di_wire_examples(di: int, wire: str) -> None:
    # shared/docs/dlt645.md section 3: "DI 00010000 -> 33 33 34 33; 02010100 -> 33 34 34 35".
    raw = encode_frame(encode_request(ReadRequest("000000000001", di)), preamble=0)
    assert raw[10:14] == bytes.fromhex(wire)


@pytest.mark.parametrize(("di", "data", "expected", "source"), DATA_EXAMPLES)
def test_public_data_examples(di: int, data: str, expected: dict[str, object], source: str) -> None:
    d = decode_data(di, bytes.fromhex(data))
    assert d.error is None, source
    assert d.values == expected, source


def test_not_supported_phase_is_none_not_garbage() -> None:
    d = decode_data("0201FF00", bytes.fromhex("5622FFFFFFFF"))
    assert [f.status for f in d.fields] == [Status.OK, Status.NOT_SUPPORTED, Status.NOT_SUPPORTED]
    readings = d.readings("000000000001", TS)
    assert [r.quantity for r in readings] == ["voltage.a", "voltage.b", "voltage.c"]
    assert readings[0].value == 225.6 and readings[0].quality == Quality.GOOD
    assert math.isnan(readings[1].value) and readings[1].quality == Quality.NOT_SUPPORTED


def test_signed_values_sign_magnitude() -> None:
    # dlt645.md section 1: sign in D7 of the most significant byte, sign-magnitude ([C3] transform.py).
    d = decode_data(0x02020100, bytes.fromhex("00 05 80"))  # -0.500 A
    assert d.value == -0.5
    assert encode_data(0x02020100, -0.5) == bytes.fromhex("00 05 80")
    assert decode_data(0x00000000, bytes.fromhex("99 99 99 F9")).value == -799999.99  # [C3] min combined energy


def test_unknown_di_is_raw_not_an_error() -> None:
    d = decode_data("EE123456", b"\x01\x02")
    assert d.unknown and d.error is None and d.value == b"\x01\x02"
    assert d.as_dict() == {"di": "EE123456", "name": "unknown", "unknown": True, "value": "0102"}
    assert d.readings("000000000001", TS) == []


def test_length_mismatch_is_flagged_not_raised() -> None:
    d = decode_data(0x00010000, b"\x01\x02\x03")
    assert d.error == "length" and not d.unknown and d.fields == ()


def test_blocks_accept_fewer_and_more_tariffs() -> None:
    three = encode_data(0x0001FF00, [10.0, 4.0, 6.0])
    d = decode_data(0x0001FF00, three)
    assert d.error is None and d.values == {"total": 10.0, "t1": 4.0, "t2": 6.0}
    seven = encode_data(0x0001FF00, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    d = decode_data(0x0001FF00, seven)
    assert d.error is None and list(d.values) == ["total", "t1", "t2", "t3", "t4", "t5", "t6"]
    assert [r.quantity for r in d.readings("1", TS)][:5] == [
        "energy.active.import", *(f"energy.active.import.t{t}" for t in range(1, 5))
    ]


def test_status_word_3_relay_bit() -> None:
    # Status word 3 bit 4 = relay open (Holley parser, dlt645.md [C15]).
    d = decode_data(0x04000503, (1 << 4).to_bytes(2, "little"))
    assert d.value == 16 and "relay_open" in d.fields[0].flags
    rs = {r.quantity: r.value for r in d.readings("000000000001", TS)}
    assert rs == {"status.word3": 16.0, "relay.state": 1.0}
    closed = decode_data(0x04000503, b"\x00\x00").readings("1", TS)
    assert {r.quantity: r.value for r in closed}["relay.state"] == 0.0
    block = decode_data(0x040005FF, bytes(12) + (1 << 4).to_bytes(2, "little"))
    assert block.values["word7"] == 16
    assert block.fields[6].flags == ("aux_power_loss",)


def test_baud_word_is_a_bitmap() -> None:
    # dlt645.md section 1/2: Z bit1 600 .. bit6 19200; 9600 is 20H, not BCD 32H.
    assert encode_data(0x04000703, 9600) == b"\x20"
    assert decode_data(0x04000703, b"\x08").value == 2400
    assert decode_data(0x04000703, b"\x32").fields[0].status == Status.INVALID


def test_daily_frozen_record_is_stamped_with_its_freeze_time() -> None:
    t = datetime(2026, 1, 5, 0, 0)
    raw = encode_data("0506FF01", {"time": t, "fwd_total": 100.5, "fwd_t1": 40.0, "fwd_t2": 60.5})
    d = decode_data("0506FF01", raw)
    assert d.error is None
    zone = UTC
    rs = d.readings("000000000001", TS, tz=zone)
    assert {r.quantity: r.value for r in rs} == {
        "energy.active.import": 100.5, "energy.active.import.t1": 40.0, "energy.active.import.t2": 60.5
    }
    assert {r.ts for r in rs} == {t.replace(tzinfo=zone)}
    item = lookup("05060101")
    assert item is not None and item.name.startswith("daily frozen forward active")
    assert lookup("050600FF") is None  # DI0 FF is not an Nth-previous index
    assert lookup("05040001") is not None and lookup("05040101") is not None  # hourly


def test_load_profile_records_round_trip_and_layout() -> None:
    recs = [
        {"time": datetime(2026, 1, 1, 0, 15), "ua": 220.1, "ub": 221.0, "uc": 219.9, "ia": 1.234, "ib": -0.5,
         "ic": 0.0, "freq": 50.01, "fwd_active": 1234.56, "rev_active": 0.0, "rc1": -1.0, "rc2": 2.0},
        {"time": datetime(2026, 1, 1, 0, 30), "p_total": 1.5, "active_demand": 0.25},
    ]
    raw = encode_data("06000001", recs)
    assert raw[:2] == b"\xa0\xa0" and raw[-1] == 0xE5
    # Record 2 has only classes 2 and 6: sections 1, 3, 4, 5 are a bare AA separator.
    d = decode_data("06000001", raw)
    assert d.error is None
    by_ts: dict[datetime, dict[str, object]] = {}
    for f in d.fields:
        assert f.ts is not None
        by_ts.setdefault(f.ts, {})[f.name] = f.value
    first = by_ts[datetime(2026, 1, 1, 0, 15)]
    assert first["ua"] == 220.1 and first["ib"] == -0.5 and first["rc1"] == -1.0
    second = by_ts[datetime(2026, 1, 1, 0, 30)]
    assert second["p_total"] == 1.5 and second["active_demand"] == 0.25 and "ua" not in second
    rs = d.readings("000000000001", TS, tz=UTC)
    assert any(r.quantity == "interval.demand.active" and r.value == 0.25 for r in rs)
    broken = bytearray(raw)
    broken[-2] ^= 1  # record checksum
    assert decode_data("06000001", bytes(broken)).error == "load_record"


def test_dis_for_quantity_and_quantity_codes_are_known() -> None:
    assert dis_for_quantity("energy.active.import")[0] == 0x00010000
    assert dis_for_quantity("voltage.a")[0] == 0x02010100
    assert dis_for_quantity("relay.state") == (0x04000503, 0x040005FF)
    assert dis_for_quantity("energy.active.import", version=1997)[0] == 0x9010
    sample = [*all_items(2007), *all_items(1997)]
    sample += [i for d in ("0506FF01", "05040101", "06000000", "1D000101", "03300D01") if (i := lookup(d))]
    unknown = {q for item in sample for q in item.quantities if not quantities.is_known(q)}
    assert unknown == set()


def test_1997_mapping_and_2byte_dis() -> None:
    # dlt645.md section 3 [C6]: 9010->00010000, 901F->0001FF00, B611->02010100, C011->04000102, 9410->00010001.
    assert di97_to_di07(0x9010) == 0x00010000
    assert di97_to_di07("901F") == 0x0001FF00
    assert di97_to_di07("B611") == 0x02010100
    assert di97_to_di07("C011") == 0x04000102
    assert di97_to_di07("9410") == 0x00010001
    assert di07_to_di97(0x00010000) == 0x9010
    # 1997 B611 voltage is XXX V (2 bytes) [P8].
    assert decode_data(0xB611, bytes.fromhex("20 02"), version=1997).value == 220
    for d97, d07 in [(0x9010, 0x00010000), (0xB611, 0x02010100), (0xB621, 0x02020100)]:
        a, b = lookup(d97, 1997), lookup(d07)
        assert a is not None and b is not None and a.quantity == b.quantity


def test_parse_di_forms() -> None:
    assert parse_di("00010000") == parse_di("0001 0000") == parse_di(0x00010000) == parse_di("0x00010000")
    with pytest.raises(LocalProtocolError):
        parse_di("xyz")
    with pytest.raises(LocalProtocolError):
        parse_di("10000", version=1997)


def test_time_reversed_quirk_option() -> None:
    t = datetime(2024, 5, 20, 13, 45)
    std = encode_data(0x01010000, [1.2345, t])
    rev = encode_data(0x01010000, [1.2345, t], opts=FormatOptions(time_reversed=True))
    assert std[3:] == bytes.fromhex("45 13 20 05 24") and rev[3:] == bytes.fromhex("24 05 20 13 45")
    assert decode_data(0x01010000, rev, opts=FormatOptions(time_reversed=True)).values["time"] == t


def test_encode_errors_are_local_protocol_errors() -> None:
    for di, value in [(0x00010000, 1e9), (0x00010000, -1.0), (0x00010000, "x"), (0x0201FF00, 1.0),
                      (0x04000703, 1234), (0x04000101, "tomorrow"), ("EE000000", 1)]:
        with pytest.raises(LocalProtocolError):
            encode_data(di, value)


# ---------------------------------------------------------------- hypothesis: every format round-trips

_dt = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59))


def _expected_time(fmt: DateTime, v: datetime) -> object:
    f = fmt.fields
    if "YY" in f and "MM" in f and "DD" in f:
        if "hh" in f:
            return v.replace(minute=v.minute if "mm" in f else 0, second=v.second if "ss" in f else 0, microsecond=0)
        return v.date()
    if "hh" in f and "mm" in f and "MM" not in f and "DD" not in f:
        return time(v.hour, v.minute, v.second if "ss" in f else 0)
    parts = {"YY": v.year % 100, "MM": v.month, "DD": v.day, "hh": v.hour, "mm": v.minute, "ss": v.second}
    return "".join(f"{parts[x]:02d}" for x in f)


def value_strategy(fmt: Format) -> st.SearchStrategy[tuple[object, object]]:
    """(value to encode, value expected back)."""
    if isinstance(fmt, Bcd):
        top = 10 ** (2 * fmt.size - (1 if fmt.signed else 0)) - 1
        ints = st.integers(-top if fmt.signed else 0, top)
        if fmt.decimals:
            num = ints.map(lambda n: (n / 10**fmt.decimals,) * 2)
        else:
            num = ints.map(lambda n: (n, n))
        return st.one_of(num, st.just((None, None)))
    if isinstance(fmt, DateTime):
        def pair(v: datetime) -> tuple[object, object]:
            exp = _expected_time(fmt, v)
            if isinstance(exp, str):
                return exp, exp
            if isinstance(exp, time):
                return exp, exp
            if isinstance(exp, date) and not isinstance(exp, datetime):
                return v, exp
            return exp, exp
        return _dt.map(pair)
    if isinstance(fmt, Digits):
        return st.text("0123456789", min_size=2 * fmt.size, max_size=2 * fmt.size).map(lambda s: (s, s))
    if isinstance(fmt, Ascii):
        return st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=fmt.size).map(lambda s: (s, s))
    if isinstance(fmt, Hex | Bits):
        return st.integers(0, 256**fmt.size - 1).map(lambda n: (n, n))
    if isinstance(fmt, BaudWord):
        return st.sampled_from(sorted(BAUD_BITS)).map(lambda b: (b, b))
    if isinstance(fmt, Raw):
        return st.binary(max_size=20).map(lambda b: (b, b))
    raise AssertionError(f"no strategy for {fmt!r}")


FORMATS: list[Format] = [
    *(Bcd(s, d, sg) for s in (1, 2, 3, 4) for d in (0, 1, 2, 3, 4) for sg in (False, True) if d < 2 * s),
    *(DateTime(x) for x in ("YYMMDDWW", "hhmmss", "YYMMDDhhmm", "YYMMDDhhmmss", "YYMMDDWWhhmmss", "MMDDhhmm",
                            "DDhh")),
    Digits(6), Digits(4), Ascii(10), Hex(1), Bits(2), BaudWord(), Raw(),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FORMATS), st.data(), st.booleans())
def test_every_format_round_trips(fmt: Format, data: st.DataObject, reversed_time: bool) -> None:
    value, expected = data.draw(value_strategy(fmt))
    opts = FormatOptions(time_reversed=reversed_time)
    raw = fmt.encode(value, opts)
    assert fmt.size is None or len(raw) == fmt.size
    got, status = fmt.decode(raw, opts)
    assert got == expected
    assert status == (Status.NOT_SUPPORTED if expected is None else Status.OK)


ITEMS: list[DataItem] = [
    i for i in [*all_items(2007), *all_items(1997)] if i.layout == "fields"
] + [i for d in ("0506FF01", "05040101", "0500FF3C", "0501FF03", "1D000101", "03300D01", "03010101",
                 "03300001", "03110001") if (i := lookup(d))]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(ITEMS), st.data())
def test_every_registry_item_round_trips(item: DataItem, data: st.DataObject) -> None:
    pairs = [data.draw(value_strategy(f.fmt)) for f in item.fields]
    raw = encode_data(item.di, [p[0] for p in pairs], version=item.version)
    d = decode_data(item.di, raw, version=item.version)
    assert d.error is None and not d.unknown
    assert [f.value for f in d.fields] == [p[1] for p in pairs]


_record = st.fixed_dictionaries(
    {"time": _dt.map(lambda v: v.replace(second=0, microsecond=0))},
    optional={c.name: value_strategy(c.fmt).map(lambda p: p[0]) for sec in LOAD_SECTIONS for c in sec},
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_record, min_size=1, max_size=3))
def test_load_profile_records_round_trip(records: list[dict[str, object]]) -> None:
    raw = encode_data("06000002", records)
    d = decode_data("06000002", raw)
    assert d.error is None
    got: list[dict[str, object]] = []
    for f in d.fields:
        if f.name == "time":
            got.append({})
        got[-1][f.name] = f.value
    for rec, back in zip(records, got, strict=True):
        for k, v in rec.items():
            assert back[k] == v
        for sec in LOAD_SECTIONS:  # a section is all there (missing columns FF -> None) or all absent
            present = [c.name in back for c in sec]
            assert all(present) or not any(present)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*(i.di for i in ITEMS[:400:7]), 0x06000001, 0xEE000000, 0x0506FF01]), st.binary(max_size=80))
def test_decode_data_never_raises(di: int, payload: bytes) -> None:
    d = decode_data(di, payload)
    d.as_dict()
    d.readings("000000000001", TS)


def test_weekday_seven_and_all_zero_dates() -> None:
    # Some meters number Sunday 7 instead of 0: accept it, the date is what matters.
    assert decode_data(0x04000101, bytes.fromhex("07 27 11 26")).value == date(2026, 11, 27)
    # An all-zero event time means "never happened", not an error; midnight is a real time.
    assert decode_data("1D000101", bytes(6)).fields[0].status == Status.EMPTY
    assert decode_data(0x04000102, bytes(3)).value == time(0, 0, 0)


def test_bcd_rounds_the_number_as_written() -> None:
    # 2.675 is 2.67499999... in binary: the decimal as written rounds (half-even) to 2.68;
    # 0.125 -> 0.12 (half-even); plain values take the float fast path and agree with Decimal.
    from decimal import Decimal

    fmt = Bcd(2, 2)
    assert fmt.encode(2.675) == fmt.encode(Decimal("2.675")) == bytes.fromhex("68 02")
    assert fmt.encode(0.125) == bytes.fromhex("12 00")
    assert fmt.encode(12.34) == bytes.fromhex("34 12")
    assert Bcd(4, 2).encode(999999.99) == bytes.fromhex("99 99 99 99")
    assert Bcd(3, 3, signed=True).encode(-1.0005) == bytes.fromhex("00 10 80")  # half-even on the written digits
