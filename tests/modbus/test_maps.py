"""Register codec and maps: every data type in every word/byte order, planning, map validation."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import quantities
from protocols.errors import ConfigError, LocalProtocolError
from protocols.modbus.maps import (
    ByteOrder,
    DataType,
    Function,
    Point,
    WordOrder,
    available_maps,
    compile_decoder,
    decode_block,
    decode_registers,
    encode_value,
    load_map,
    parse_map,
    plan_reads,
)

ORDERS = [(w, b) for w in WordOrder for b in ByteOrder]


def pt(dtype: DataType, w: WordOrder = WordOrder.BIG, b: ByteOrder = ByteOrder.BIG, scale: float = 1.0) -> Point:
    return Point("x", 0, Function.HOLDING, dtype, w, b, scale)


# (dtype, value, ABCD words). CDAB reverses the words, BADC swaps bytes, DCBA does both.
VECTORS = [
    (DataType.U16, 0x1234, [0x1234]),
    (DataType.S16, -2, [0xFFFE]),
    (DataType.U32, 0x12345678, [0x1234, 0x5678]),
    (DataType.S32, -123456789, [0xF8A4, 0x32EB]),
    (DataType.U64, 0x0102030405060000, [0x0102, 0x0304, 0x0506, 0x0000]),
    (DataType.FLOAT32, 123.5, [0x42F7, 0x0000]),
    (DataType.FLOAT32, -1.5, [0xBFC0, 0x0000]),
]


def _swap(w: int) -> int:
    return ((w & 0xFF) << 8) | (w >> 8)


@pytest.mark.parametrize(("dtype", "value", "abcd"), VECTORS)
@pytest.mark.parametrize(("word", "byte"), ORDERS)
def test_known_vectors_every_type_and_order(
    dtype: DataType, value: float, abcd: list[int], word: WordOrder, byte: ByteOrder
) -> None:
    expected = abcd[::-1] if word is WordOrder.LITTLE else list(abcd)
    if byte is ByteOrder.LITTLE:
        expected = [_swap(w) for w in expected]
    p = pt(dtype, word, byte)
    assert encode_value(p, value) == expected
    assert decode_registers(p, expected) == value


def test_scale_and_unit_applied() -> None:
    p = pt(DataType.U16, scale=0.01)
    assert encode_value(p, 12.34) == [1234]
    assert decode_registers(p, [1234]) == pytest.approx(12.34)
    dtsu = load_map("chint_dtsu666").by_quantity()["voltage.a"]  # float32 in 0.1 V
    assert decode_registers(dtsu, encode_value(dtsu, 231.5)) == pytest.approx(231.5)
    assert struct.unpack(">f", b"".join(w.to_bytes(2, "big") for w in encode_value(dtsu, 231.5)))[0] == 2315.0


def test_u64_encodes_exactly_beyond_float_precision() -> None:
    assert encode_value(pt(DataType.U64), 0x0102030405060708) == [0x0102, 0x0304, 0x0506, 0x0708]


def test_out_of_range_and_non_finite_rejected() -> None:
    with pytest.raises(LocalProtocolError):
        encode_value(pt(DataType.U16), 70000)
    with pytest.raises(LocalProtocolError):
        encode_value(pt(DataType.S16), -40000)
    with pytest.raises(LocalProtocolError):
        encode_value(pt(DataType.U32), -1)
    with pytest.raises(LocalProtocolError):
        encode_value(pt(DataType.FLOAT32), math.inf)
    with pytest.raises(LocalProtocolError):
        decode_registers(pt(DataType.U32), [1])


_RANGES = {
    DataType.U16: (0, 0xFFFF),
    DataType.S16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFF_FFFF),
    DataType.S32: (-0x8000_0000, 0x7FFF_FFFF),
    DataType.U64: (0, 2**53),  # readings are floats: exact to 2**53
}


@given(
    data=st.data(),
    dtype=st.sampled_from(list(_RANGES)),
    order=st.sampled_from(ORDERS),
)
def test_integer_round_trip(data: st.DataObject, dtype: DataType, order: tuple[WordOrder, ByteOrder]) -> None:
    lo, hi = _RANGES[dtype]
    raw = data.draw(st.integers(lo, hi))
    p = pt(dtype, *order)
    words = encode_value(p, raw)
    assert all(0 <= w <= 0xFFFF for w in words) and len(words) == p.count
    assert decode_registers(p, words) == raw


@given(
    value=st.floats(width=32, allow_nan=False, allow_infinity=False),
    order=st.sampled_from(ORDERS),
)
def test_float32_round_trip(value: float, order: tuple[WordOrder, ByteOrder]) -> None:
    p = pt(DataType.FLOAT32, *order)
    assert decode_registers(p, encode_value(p, value)) == value


@given(raw=st.integers(-0x8000_0000, 0x7FFF_FFFF), scale=st.sampled_from([0.1, 0.01, 0.001, 10.0]))
def test_scaled_round_trip(raw: int, scale: float) -> None:
    p = pt(DataType.S32, WordOrder.LITTLE, scale=scale)
    assert encode_value(p, decode_registers(p, encode_value(p, raw * scale))) == encode_value(p, raw * scale)


def _p(name: str, address: int, dtype: DataType = DataType.U16, fn: Function = Function.HOLDING) -> Point:
    return Point(name, address, fn, DataType.BOOL if fn.is_bit else dtype)


def test_plan_contiguous_registers_in_one_request() -> None:
    pts = [_p("a", 0, DataType.FLOAT32), _p("b", 2, DataType.U32), _p("c", 4), _p("d", 10), _p("e", 5)]
    blocks = plan_reads(pts)
    assert [(b.address, b.count) for b in blocks] == [(0, 6), (10, 1)]
    assert plan_reads(pts, max_gap=4)[0].count == 11
    assert [(b.address, b.count) for b in plan_reads(pts, max_registers=4)] == [(0, 4), (4, 2), (10, 1)]


def test_plan_separates_functions_and_limits_bits() -> None:
    pts = [_p("h", 0), _p("i", 0, fn=Function.INPUT), _p("c0", 0, fn=Function.COILS), _p("c1", 1, fn=Function.COILS)]
    blocks = plan_reads(pts)
    assert [(b.function, b.address, b.count) for b in blocks] == [
        (Function.COILS, 0, 2), (Function.HOLDING, 0, 1), (Function.INPUT, 0, 1),
    ]
    many = [_p(f"c{i}", i, fn=Function.COILS) for i in range(2500)]
    assert [b.count for b in plan_reads(many)] == [2000, 500]


def test_decode_block_offsets() -> None:
    pts = [_p("a", 10, DataType.U32), _p("b", 12, DataType.S16)]
    (block,) = plan_reads(pts)
    assert decode_block(block, [0x0001, 0x0002, 0xFFFF]) == {"a": 65538.0, "b": -1.0}
    with pytest.raises(LocalProtocolError):
        decode_block(block, [1, 2])


@pytest.mark.parametrize("name", ["generic_terminal", "eastron_sdm630", "chint_dtsu666"])
def test_shipped_maps_load_and_cite_sources(name: str) -> None:
    m = load_map(name)
    assert name in available_maps()
    assert m.sources, "a map must say where its register facts come from"
    assert all(quantities.is_known(q) for q in m.quantities())
    assert {"voltage.a", "power.active.total", "energy.active.import"} <= set(m.quantities())


def test_generic_terminal_has_every_load_control() -> None:
    m = load_map("generic_terminal")
    assert set(m.controls) == {
        "set_power_limit", "trip_circuit", "restore_circuit", "keep_power_on", "keep_power_off", "purchase_energy",
    }
    types = {p.dtype for p in m.points.values()}
    assert {DataType.FLOAT32, DataType.U16, DataType.S16, DataType.U32, DataType.S32, DataType.U64} <= types


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"point": [{"quantity": "no.such", "address": 0}]}, "unknown quantity"),
        ({"point": [{"quantity": "voltage.a", "address": 0, "type": "float32"},
                    {"quantity": "voltage.b", "address": 1}]}, "overlap"),
        ({"point": [{"quantity": "voltage.a", "address": 0, "type": "f64"}]}, "not one of"),
        ({"point": [{"name": "x", "address": 0, "function": "coils", "type": "u16"}]}, "bool"),
        ({"point": [{"quantity": "voltage.a", "address": 70000}]}, "outside"),
        ({"point": [{"quantity": "voltage.a", "address": 0, "colour": "red"}]}, "unknown keys"),
        ({"point": [{"quantity": "voltage.a", "address": 0}], "control": {"trip_circuit": {"point": "voltage.a"}}},
         "not writable"),
        ({}, "no points"),
    ],
)
def test_bad_maps_are_config_errors(doc: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_map(doc)


def test_unknown_map_name_lists_known_maps() -> None:
    with pytest.raises(ConfigError, match="generic_terminal"):
        load_map("no_such_map")


@given(data=st.data())
def test_compiled_decoder_matches_the_reference(data: st.DataObject) -> None:
    """compile_decoder (the polling fast path) == decode_block for random blocks of every type and order."""
    pts: list[Point] = []
    address = 0
    for i in range(data.draw(st.integers(1, 8))):
        dtype = data.draw(st.sampled_from([d for d in DataType if d is not DataType.BOOL]))
        w, b = data.draw(st.sampled_from(ORDERS))
        p = Point(f"p{i}", address, Function.HOLDING, dtype, w, b, data.draw(st.sampled_from([1.0, 0.01, 10.0])))
        pts.append(p)
        address = p.end + data.draw(st.integers(0, 2))
    for block in plan_reads(pts, max_gap=2):
        words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count))
        got, want = compile_decoder(block)(words), decode_block(block, words)
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == v or (math.isnan(v) and math.isnan(got[k]))


def test_compiled_decoder_overlapping_points() -> None:
    """Maps refuse overlapping points, but a hand-made block may hold two views of one register pair."""
    whole = Point("whole", 10, Function.HOLDING, DataType.U32)
    high = Point("high", 10, Function.HOLDING, DataType.U16)
    low = Point("low", 11, Function.HOLDING, DataType.S16, scale=0.5)
    block = plan_reads([whole, high, low])[0]
    words = [0x0001, 0xFFFE]
    assert compile_decoder(block)(words) == decode_block(block, words) == {"whole": 131070.0, "high": 1.0, "low": -1.0}
    with pytest.raises(LocalProtocolError, match="short read"):
        compile_decoder(block)(words[:1])
