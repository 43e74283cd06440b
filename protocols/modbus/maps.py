"""Modbus register maps as data, and the register codec (sans-I/O: no sockets, no pymodbus).

A register map (one TOML file per terminal or meter model in ``config/maps/``) says,
for each point: the function (coils, discrete inputs, holding or input registers), the
start address (0-based, as on the wire), the data type, the word and byte order, the
scale and unit, and the project's quantity code. :func:`plan_reads` groups the points
of one read into as few requests as possible (contiguous registers in one request).

Word order ``big`` means the most significant register comes first (the Modbus
convention, "ABCD"); ``little`` reverses the registers ("CDAB"). Byte order ``little``
swaps the two bytes inside each register ("BADC"; with little word order "DCBA").
"""

from __future__ import annotations

import itertools
import math
import operator
import struct
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from protocols import quantities
from protocols.errors import ConfigError, LocalProtocolError

__all__ = [
    "EXCEPTION_NAMES",
    "MAP_DIR",
    "ByteOrder",
    "ControlSpec",
    "DataType",
    "Function",
    "Point",
    "ReadBlock",
    "RegisterMap",
    "WordOrder",
    "available_maps",
    "compile_decoder",
    "compile_values",
    "decode_block",
    "decode_registers",
    "encode_value",
    "load_map",
    "parse_map",
    "plan_reads",
]

MAP_DIR = Path(__file__).resolve().parents[2] / "config" / "maps"


class Function(StrEnum):
    COILS = "coils"  # FC01 read, FC05/FC15 write; 1 bit
    DISCRETE = "discrete"  # FC02 read only; 1 bit
    HOLDING = "holding"  # FC03 read, FC06/FC16 write; 16-bit registers
    INPUT = "input"  # FC04 read only

    @property
    def is_bit(self) -> bool:
        return self in (Function.COILS, Function.DISCRETE)

    @property
    def writable(self) -> bool:
        return self in (Function.COILS, Function.HOLDING)

    @property
    def max_read(self) -> int:
        """Largest quantity one request may ask for (Modbus application protocol v1.1b3)."""
        return 2000 if self.is_bit else 125


class DataType(StrEnum):
    BOOL = "bool"
    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    U64 = "u64"
    FLOAT32 = "float32"


class WordOrder(StrEnum):
    BIG = "big"
    LITTLE = "little"


class ByteOrder(StrEnum):
    BIG = "big"
    LITTLE = "little"


# Modbus exception codes (Modbus application protocol v1.1b3, section 7).
EXCEPTION_NAMES: dict[int, str] = {
    0x01: "illegal_function",
    0x02: "illegal_data_address",
    0x03: "illegal_data_value",
    0x04: "server_device_failure",
    0x05: "acknowledge",
    0x06: "server_device_busy",
    0x08: "memory_parity_error",
    0x0A: "gateway_path_unavailable",
    0x0B: "gateway_target_no_response",
}

# data type -> (struct format, register count, integer range or None for floats)
_TYPES: dict[DataType, tuple[str, int, tuple[int, int] | None]] = {
    DataType.BOOL: (">H", 1, (0, 1)),
    DataType.U16: (">H", 1, (0, 0xFFFF)),
    DataType.S16: (">h", 1, (-0x8000, 0x7FFF)),
    DataType.U32: (">I", 2, (0, 0xFFFF_FFFF)),
    DataType.S32: (">i", 2, (-0x8000_0000, 0x7FFF_FFFF)),
    DataType.U64: (">Q", 4, (0, 0xFFFF_FFFF_FFFF_FFFF)),
    DataType.FLOAT32: (">f", 2, None),
}


@dataclass(frozen=True, slots=True)
class Point:
    """One value in a device's register space."""

    name: str
    address: int
    function: Function = Function.HOLDING
    dtype: DataType = DataType.U16
    word_order: WordOrder = WordOrder.BIG
    byte_order: ByteOrder = ByteOrder.BIG
    scale: float = 1.0
    unit: str = ""
    quantity: str | None = None  # project quantity code; None for control-only points
    writable: bool = False
    description: str = ""

    @property
    def count(self) -> int:
        """Registers (or bits) the point occupies."""
        return 1 if self.function.is_bit else _TYPES[self.dtype][1]

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """How a load-control command is carried by one terminal model.

    ``point`` is written; ``value`` (if set) is the fixed value to write (e.g. a coil
    True to trip); otherwise the request's value is written. ``readback`` names the
    point whose value must equal ``expect`` (or the written value) after the write.
    Circuit ``n`` uses ``point`` shifted by ``(n - 1) * circuit_stride`` registers.
    """

    command: str
    point: str
    value: float | None = None
    readback: str | None = None
    expect: float | None = None
    circuit_stride: int = 0
    seq_point: str | None = None  # order-number point written with the value (idempotent top-ups)


@dataclass(frozen=True, slots=True)
class RegisterMap:
    name: str
    description: str
    points: Mapping[str, Point]
    controls: Mapping[str, ControlSpec] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    max_registers: int = 125  # per read request; some devices accept fewer
    max_gap: int = 0  # registers a read may span between points (0: strictly contiguous)
    relay_point: str | None = None  # coil or register whose 1 = relay open (RelayControl)

    def by_quantity(self) -> dict[str, Point]:
        return {p.quantity: p for p in self.points.values() if p.quantity}

    def quantities(self) -> list[str]:
        return sorted(self.by_quantity())

    def point(self, name: str) -> Point:
        try:
            return self.points[name]
        except KeyError:
            raise LocalProtocolError(f"map {self.name!r} has no point {name!r}") from None

    def for_quantities(self, codes: Sequence[str]) -> list[Point]:
        index = self.by_quantity()
        missing = [c for c in codes if c not in index]
        if missing:
            raise LocalProtocolError(f"map {self.name!r} does not carry {', '.join(missing)}")
        return [index[c] for c in codes]


# ---------------------------------------------------------------------------- codec


def _order(words: list[int], point: Point) -> list[int]:
    """Apply (or undo: the operations are involutions) the point's word and byte order."""
    if point.word_order is WordOrder.LITTLE:
        words = words[::-1]
    if point.byte_order is ByteOrder.LITTLE:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


def encode_value(point: Point, value: float) -> list[int]:
    """Engineering value -> register words (or ``[0|1]`` for a bit)."""
    if point.function.is_bit or point.dtype is DataType.BOOL:
        return [1 if value else 0]
    fmt, n, bounds = _TYPES[point.dtype]
    raw: int | float
    if isinstance(value, int) and point.scale == 1.0:
        raw = value  # exact, also for u64 beyond 2**53
    else:
        raw = value / point.scale
        if not math.isfinite(raw):
            raise LocalProtocolError(f"{point.name}: {value!r} is not finite")
    if bounds is not None:
        raw = round(raw)
        if not bounds[0] <= raw <= bounds[1]:
            raise LocalProtocolError(f"{point.name}: {value} out of range for {point.dtype}")
    try:
        data = struct.pack(fmt, raw)
    except (struct.error, OverflowError) as exc:
        raise LocalProtocolError(f"{point.name}: cannot encode {value!r} as {point.dtype}: {exc}") from None
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * n, 2)]
    return _order(words, point)


def decode_registers(point: Point, words: Sequence[int]) -> float:
    """Register words (or bits) -> engineering value (raw x scale).

    Values are floats (as in :class:`~protocols.reading.Reading`): u64 counters are exact
    up to 2**53.
    """
    if point.function.is_bit or point.dtype is DataType.BOOL:
        return 1.0 if words[0] else 0.0
    fmt, n, _ = _TYPES[point.dtype]
    if len(words) != n:
        raise LocalProtocolError(f"{point.name}: {point.dtype} needs {n} registers, got {len(words)}")
    ordered = _order(list(words), point)
    raw = struct.unpack(fmt, b"".join(w.to_bytes(2, "big") for w in ordered))[0]
    return float(raw) * point.scale


# --------------------------------------------------------------------- read planning


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) from ``address``, covering ``points``."""

    function: Function
    address: int
    count: int
    points: tuple[Point, ...]


def plan_reads(points: Iterable[Point], *, max_registers: int = 125, max_gap: int = 0) -> list[ReadBlock]:
    """Group points into the fewest requests: per function, sorted by address, merged while
    the next point starts within ``max_gap`` of the block end and the block stays within
    ``max_registers`` (2000 for bits)."""
    by_fn: dict[Function, list[Point]] = {}
    for p in points:
        by_fn.setdefault(p.function, []).append(p)
    blocks: list[ReadBlock] = []
    for fn in Function:  # stable order: coils, discrete, holding, input
        pts = sorted(set(by_fn.get(fn, [])), key=lambda p: (p.address, p.name))
        limit = fn.max_read if fn.is_bit else min(max_registers, fn.max_read)
        cur: list[Point] = []
        start = end = 0
        for p in pts:
            if cur and p.address <= end + max_gap and max(end, p.end) - start <= limit:
                cur.append(p)
                end = max(end, p.end)
                continue
            if cur:
                blocks.append(ReadBlock(fn, start, end - start, tuple(cur)))
            cur, start, end = [p], p.address, p.end
        if cur:
            blocks.append(ReadBlock(fn, start, end - start, tuple(cur)))
    return blocks


def compile_decoder(block: ReadBlock) -> Callable[[Sequence[int]], dict[str, float]]:
    """A fast decoder for one block, for loops that reuse a plan: the values of
    :func:`compile_values` by point name (same results as :func:`decode_block`)."""
    names, values = compile_values(block)

    def decode(words: Sequence[int]) -> dict[str, float]:
        return dict(zip(names, values(words), strict=True))

    return decode


def compile_values(block: ReadBlock) -> tuple[tuple[str, ...], Callable[[Sequence[int]], list[float]]]:
    """The polling fast path: point names in a fixed order, and a function returning the values of
    one read of the block in that order (same values as :func:`decode_block`).

    The block's registers are packed once; all big-endian points are unpacked by one struct whose
    layout skips the registers between them (pad bytes) and scaled in C (``map(operator.mul)``).
    Other orders pack their own registers in wire order (``<H`` swaps the bytes of each register,
    a reversed index list swaps the words)."""
    count, address = block.count, block.address
    frame = struct.Struct(f">{count}H")
    fast: list[tuple[int, str, str, float]] = []  # (byte offset, name, struct code, scale)
    swapped: list[tuple[str, tuple[int, ...], struct.Struct, struct.Struct, float]] = []
    bits: list[tuple[str, int]] = []
    for p in block.points:
        off = p.address - address
        if p.function.is_bit or p.dtype is DataType.BOOL:
            bits.append((p.name, off))
            continue
        fmt, n, _ = _TYPES[p.dtype]
        if p.word_order is WordOrder.BIG and p.byte_order is ByteOrder.BIG:
            fast.append((2 * off, p.name, fmt[1:], p.scale))
            continue
        idx = tuple(range(off, off + n))
        if p.word_order is WordOrder.LITTLE:
            idx = idx[::-1]
        packer = struct.Struct(("<" if p.byte_order is ByteOrder.LITTLE else ">") + f"{n}H")
        swapped.append((p.name, idx, packer, struct.Struct(fmt), p.scale))
    fast.sort()
    layout, at = ">", 0
    for start, _, code, _ in fast:
        if start < at:  # overlapping points (maps refuse them; a hand-made block may not): one struct each
            layout = ""
            break
        layout += f"{start - at}x{code}" if start > at else code
        at = start + struct.calcsize(">" + code)
    whole = struct.Struct(layout) if fast and layout else None
    single = [(struct.Struct(">" + code), start, scale) for start, _, code, scale in fast]
    scales = tuple(f[3] for f in fast)
    others = [(idx, packer, st, scale) for _, idx, packer, st, scale in swapped]
    bit_offsets = [off for _, off in bits]
    names = tuple(f[1] for f in fast) + tuple(sw[0] for sw in swapped) + tuple(b[0] for b in bits)
    mul = operator.mul

    def values(words: Sequence[int]) -> list[float]:
        if len(words) != count:
            if len(words) < count:
                raise LocalProtocolError(f"short read: {len(words)} of {count} at {address}")
            words = words[:count]
        out: list[float]
        if whole is not None:
            # raw x scale == float(raw) x scale: Python converts an int operand exactly like float()
            out = list(map(mul, whole.unpack_from(frame.pack(*words)), scales))
        elif single:
            buf = frame.pack(*words)
            out = [float(st.unpack_from(buf, start)[0]) * scale for st, start, scale in single]
        else:
            out = []
        for idx, packer, st, scale in others:
            out.append(float(st.unpack(packer.pack(*[words[i] for i in idx]))[0]) * scale)
        for off in bit_offsets:
            out.append(1.0 if words[off] else 0.0)
        return out

    return names, values


def decode_block(block: ReadBlock, words: Sequence[int]) -> dict[str, float]:
    """Values of every point of a block, by point name, from the block's registers (or bits)."""
    if len(words) < block.count:
        raise LocalProtocolError(f"short read: {len(words)} of {block.count} at {block.address}")
    out: dict[str, float] = {}
    for p in block.points:
        off = p.address - block.address
        out[p.name] = decode_registers(p, words[off : off + p.count])
    return out


# ------------------------------------------------------------------------ TOML maps


def _enum(cls: type[Any], value: Any, where: str) -> Any:
    try:
        return cls(str(value).lower())
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ConfigError(f"{where}: {value!r} is not one of {allowed}") from None


_POINT_KEYS = {
    "name", "quantity", "address", "function", "type", "word_order", "byte_order",
    "scale", "unit", "writable", "description",
}


def parse_map(doc: Mapping[str, Any], *, name: str = "map") -> RegisterMap:
    """Build a :class:`RegisterMap` from a parsed TOML document; raise ConfigError on any problem."""
    meta = doc.get("map", {})
    defaults = doc.get("defaults", {})
    map_name = str(meta.get("name", name))
    points: dict[str, Point] = {}
    for i, raw in enumerate(doc.get("point", [])):
        where = f"{map_name}: point[{i}]"
        unknown = set(raw) - _POINT_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        merged = {**defaults, **raw}
        qty = merged.get("quantity") if "quantity" in raw else None
        pname = str(raw.get("name") or qty or "")
        if not pname:
            raise ConfigError(f"{where}: needs a name or a quantity")
        if qty is not None and not quantities.is_known(str(qty)):
            raise ConfigError(f"{where}: unknown quantity code {qty!r}")
        fn = _enum(Function, merged.get("function", "holding"), where)
        dtype = _enum(DataType, merged.get("type", "bool" if fn.is_bit else "u16"), where)
        if fn.is_bit != (dtype is DataType.BOOL):
            raise ConfigError(f"{where}: {fn} points must be bool and only they may be")
        try:
            address = int(raw["address"])
        except (KeyError, ValueError, TypeError):
            raise ConfigError(f"{where}: needs an integer address") from None
        if not 0 <= address <= 0xFFFF:
            raise ConfigError(f"{where}: address {address} outside 0..65535")
        scale = float(merged.get("scale", 1.0))
        if scale == 0 or not math.isfinite(scale):
            raise ConfigError(f"{where}: scale must be finite and non-zero")
        unit = str(merged.get("unit", quantities.get(str(qty)).unit if qty else ""))
        point = Point(
            name=pname,
            address=address,
            function=fn,
            dtype=dtype,
            word_order=_enum(WordOrder, merged.get("word_order", "big"), where),
            byte_order=_enum(ByteOrder, merged.get("byte_order", "big"), where),
            scale=scale,
            unit=unit,
            quantity=str(qty) if qty is not None else None,
            writable=bool(raw.get("writable", False)) and fn.writable,
            description=str(raw.get("description", "")),
        )
        if point.end > 0x10000:
            raise ConfigError(f"{where}: runs past address 65535")
        if pname in points:
            raise ConfigError(f"{where}: duplicate point name {pname!r}")
        points[pname] = point
    if not points:
        raise ConfigError(f"{map_name}: no points")
    _check_overlaps(map_name, points.values())
    controls: dict[str, ControlSpec] = {}
    for cmd, spec in doc.get("control", {}).items():
        where = f"{map_name}: control.{cmd}"
        if "point" not in spec or spec["point"] not in points:
            raise ConfigError(f"{where}: point {spec.get('point')!r} is not in the map")
        if not points[spec["point"]].writable:
            raise ConfigError(f"{where}: point {spec['point']!r} is not writable")
        rb = spec.get("readback")
        if rb is not None and rb not in points:
            raise ConfigError(f"{where}: read-back point {rb!r} is not in the map")
        seq = spec.get("seq_point")
        if seq is not None and (seq not in points or not points[seq].writable):
            raise ConfigError(f"{where}: seq_point {seq!r} is not a writable point of the map")
        controls[cmd] = ControlSpec(
            command=cmd,
            point=spec["point"],
            value=None if spec.get("value") is None else float(spec["value"]),
            readback=rb,
            expect=None if spec.get("expect") is None else float(spec["expect"]),
            circuit_stride=int(spec.get("circuit_stride", 0)),
            seq_point=seq,
        )
    relay = meta.get("relay_point")
    if relay is not None and relay not in points:
        raise ConfigError(f"{map_name}: relay_point {relay!r} is not in the map")
    return RegisterMap(
        name=map_name,
        description=str(meta.get("description", "")),
        points=points,
        controls=controls,
        sources=tuple(str(s) for s in meta.get("sources", ())),
        max_registers=int(meta.get("max_registers", 125)),
        max_gap=int(meta.get("max_gap", 0)),
        relay_point=relay,
    )


def _check_overlaps(map_name: str, points: Iterable[Point]) -> None:
    by_fn: dict[Function, list[Point]] = {}
    for p in points:
        by_fn.setdefault(p.function, []).append(p)
    for fn, pts in by_fn.items():
        pts.sort(key=lambda p: p.address)
        for a, b in itertools.pairwise(pts):
            if b.address < a.end:
                raise ConfigError(f"{map_name}: {fn} points {a.name!r} and {b.name!r} overlap")


def available_maps(directory: Path | None = None) -> list[str]:
    d = directory or MAP_DIR
    return sorted(p.stem for p in d.glob("*.toml"))


_CACHE: dict[str, RegisterMap] = {}


def load_map(name_or_path: str | Path, directory: Path | None = None) -> RegisterMap:
    """Load a map by name (``config/maps/<name>.toml``) or by file path; cached by path."""
    s = str(name_or_path)
    path = Path(s) if (s.endswith(".toml") or "/" in s) else (directory or MAP_DIR) / f"{s}.toml"
    key = str(path.resolve())
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    if not path.is_file():
        known = ", ".join(available_maps(directory)) or "none"
        raise ConfigError(f"register map {s!r} not found (known: {known})")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse register map {path.name}: {exc}") from None
    rmap = parse_map(doc, name=path.stem)
    _CACHE[key] = rmap
    return rmap
