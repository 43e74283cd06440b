"""Value formats of DL/T 645 data items (the ``XXXXXX.XX`` column of the DI tables).

Every multi-byte value is sent low byte first. Numbers are BCD; signed numbers keep the
sign in D7 of the most significant byte (sign-magnitude). Date/time layouts are named the
way the standard writes them, most significant field first (``YYMMDDhhmm``): on the wire
the bytes are reversed (``mm hh DD MM YY``). The 1C valid-until time "ss mm hh DD MM YY" is
the wire order of ``YYMMDDhhmmss``. Meters that send time fields the other way round are a
vendor quirk (``time_reversed``), not a code change.

A field whose bytes are all FF is "not supported" (e.g. phase B/C of a single-phase meter):
it decodes to ``None`` with status ``not_supported``, never to a garbage number.

Each format is a small frozen object with ``size``, ``decode(raw, opts) -> (value, status)``
and ``encode(value, opts) -> bytes``. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Protocol, TypeAlias

from protocols.errors import LocalProtocolError

__all__ = [
    "BAUD_BITS",
    "Ascii",
    "BaudWord",
    "Bcd",
    "Bits",
    "DateTime",
    "Digits",
    "Format",
    "FormatOptions",
    "Hex",
    "Raw",
    "Status",
    "Value",
    "baud_from_word",
    "baud_to_word",
    "bcd_to_int",
    "format_options",
    "int_to_bcd",
]

Value: TypeAlias = "int | float | datetime | date | time | str | bytes | None"


class Status:
    """Per-field decode status (plain strings so they print and serialise as they are)."""

    OK = "ok"
    NOT_SUPPORTED = "not_supported"  # all FF: the meter does not have this value
    INVALID = "invalid"  # not BCD / impossible date
    EMPTY = "empty"  # an all-zero time: the event never happened


@dataclass(frozen=True, slots=True)
class FormatOptions:
    """Vendor-dependent decoding switches (filled from :class:`protocols.dlt645.quirks.Quirks`)."""

    time_reversed: bool = False  # time fields sent most significant byte first (YY first)


DEFAULT_OPTIONS = FormatOptions()


_OPTIONS = {False: DEFAULT_OPTIONS, True: FormatOptions(time_reversed=True)}


def format_options(time_reversed: bool) -> FormatOptions:
    return _OPTIONS[bool(time_reversed)]


class Format(Protocol):
    @property
    def size(self) -> int | None: ...

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]: ...

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes: ...

    def describe(self) -> str: ...


def bcd_to_int(raw: bytes) -> int | None:
    """Little-endian BCD bytes to an int; ``None`` when a nibble is not a decimal digit."""
    text = raw[::-1].hex()
    if not text.isdigit():
        return None if text else 0
    return int(text)


def int_to_bcd(n: int, size: int) -> bytes:
    """A non-negative int to ``size`` little-endian BCD bytes (raises if it does not fit)."""
    if n < 0 or n >= 100**size:
        raise LocalProtocolError(f"{n} does not fit in {size} BCD bytes")
    return bytes.fromhex(f"{n:0{2 * size}d}")[::-1]


def _all_ff(raw: bytes) -> bool:
    return raw.count(0xFF) == len(raw)


def _scaled(value: object, decimals: int) -> int:
    """``value`` x 10^decimals as an int, rounded half-even on the number as written (``str(value)``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise LocalProtocolError(f"expected a number, got {value!r}")
    scale: int = 10**decimals
    if isinstance(value, int):
        return value * scale
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LocalProtocolError(f"not a finite number: {value!r}")
        # Fast path (the simulator encodes every reply): plain float rounding agrees with the
        # decimal rounding below unless the scaled value sits next to a .5 tie.
        x = value * scale
        if abs(x) < 1e15:
            n: int = round(x)
            if abs(abs(x - n) - 0.5) > 1e-6:
                return n
    return int((Decimal(str(value)) * scale).to_integral_value())


@dataclass(frozen=True, slots=True)
class Bcd:
    """``size`` BCD bytes with ``decimals`` implied decimals; ``signed``: sign in D7 of the top byte."""

    size: int
    decimals: int = 0
    signed: bool = False

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        if _all_ff(raw):
            return None, Status.NOT_SUPPORTED
        negative = False
        if self.signed and raw and raw[-1] & 0x80:
            negative = True
            raw = raw[:-1] + bytes((raw[-1] & 0x7F,))
        n = bcd_to_int(raw)
        if n is None:
            return None, Status.INVALID
        if negative:
            n = -n
        if self.decimals == 0:
            return n, Status.OK
        return n / 10**self.decimals, Status.OK

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if value is None:
            return b"\xff" * self.size
        n = _scaled(value, self.decimals)
        negative = n < 0
        if negative and not self.signed:
            raise LocalProtocolError(f"{value!r} is negative but the format is unsigned")
        n = abs(n)
        limit = 10 ** (2 * self.size - (1 if self.signed else 0))
        if n >= limit:
            raise LocalProtocolError(f"{value!r} does not fit {self.describe()}")
        out = bytearray(int_to_bcd(n, self.size))
        if negative:
            out[-1] |= 0x80
        return bytes(out)

    def describe(self) -> str:
        digits = 2 * self.size - self.decimals
        text = "X" * digits + ("." + "X" * self.decimals if self.decimals else "")
        return ("±" if self.signed else "") + text


@dataclass(frozen=True, slots=True)
class Hex:
    """A little-endian binary word (mode words, the 1997 status byte)."""

    size: int

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        return int.from_bytes(raw, "little"), Status.OK

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 256**self.size:
            raise LocalProtocolError(f"expected an int of {self.size} bytes, got {value!r}")
        return value.to_bytes(self.size, "little")

    def describe(self) -> str:
        return f"hex({self.size})"


@dataclass(frozen=True, slots=True)
class Bits:
    """A status word: a little-endian int whose bits have names (``None`` = reserved)."""

    size: int
    names: tuple[str | None, ...] = ()

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        return int.from_bytes(raw, "little"), Status.OK

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 256**self.size:
            raise LocalProtocolError(f"expected a {8 * self.size}-bit word, got {value!r}")
        return value.to_bytes(self.size, "little")

    def flags(self, word: int) -> tuple[str, ...]:
        """Names of the set bits (unnamed bits as ``bitN``)."""
        out = []
        for bit in range(8 * self.size):
            if word >> bit & 1:
                name = self.names[bit] if bit < len(self.names) else None
                out.append(name or f"bit{bit}")
        return tuple(out)

    def describe(self) -> str:
        return "X" * (2 * self.size) + " (bits)"


# Communication-rate characteristic word: a bitmap, one bit set (NOT BCD). [C2][P13]
BAUD_BITS: dict[int, int] = {600: 1 << 1, 1200: 1 << 2, 2400: 1 << 3, 4800: 1 << 4, 9600: 1 << 5, 19200: 1 << 6}
_BAUD_BY_WORD = {v: k for k, v in BAUD_BITS.items()}


def baud_to_word(baud: int) -> int:
    try:
        return BAUD_BITS[baud]
    except KeyError:
        known = sorted(BAUD_BITS)
        raise LocalProtocolError(f"baud {baud} has no characteristic-word bit; use one of {known}") from None


def baud_from_word(word: int) -> int | None:
    return _BAUD_BY_WORD.get(word)


@dataclass(frozen=True, slots=True)
class BaudWord:
    """Baud-rate characteristic word (bit1 600 .. bit6 19200); decodes to the rate in bit/s."""

    size: int = 1

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        baud = baud_from_word(raw[0])
        return (baud, Status.OK) if baud is not None else (None, Status.INVALID)

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LocalProtocolError(f"expected a baud rate, got {value!r}")
        return bytes((baud_to_word(value),))

    def describe(self) -> str:
        return "baud bitmap"


_FIELD_RANGE = {"YY": (0, 99), "MM": (1, 12), "DD": (1, 31), "WW": (0, 7), "hh": (0, 23), "mm": (0, 59), "ss": (0, 59)}


@dataclass(frozen=True, slots=True)
class DateTime:
    """A BCD date/time in ``layout`` (e.g. ``YYMMDDhhmm``), most significant field first.

    Decodes to ``datetime`` (naive, meter local time) when the layout has a date and an hour,
    ``date`` for a date only (``YYMMDDWW``: the weekday is checked loosely, not returned),
    ``time`` for ``hhmmss``; other partial layouts (``MMDDhhmm``, ``DDhh``) decode to a string
    ``"MM-DD hh:mm"`` style. A datetime value encodes with its weekday where ``WW`` is present.
    """

    layout: str

    @property
    def size(self) -> int:
        return len(self.layout) // 2

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.layout[i : i + 2] for i in range(0, len(self.layout), 2))

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        if _all_ff(raw):
            return None, Status.NOT_SUPPORTED
        if not any(raw) and ("MM" in self.layout or "DD" in self.layout):
            return None, Status.EMPTY  # an all-zero date: the event never happened
        ordered = raw if opts.time_reversed else raw[::-1]  # most significant first
        parts: dict[str, int] = {}
        for name, b in zip(self.fields, ordered, strict=True):
            v = bcd_to_int(bytes((b,)))
            lo, hi = _FIELD_RANGE[name]
            if v is None or not lo <= v <= hi:
                return None, Status.INVALID
            parts[name] = v
        try:
            if "YY" in parts and "MM" in parts and "DD" in parts:
                year = 2000 + parts["YY"]
                if "hh" in parts:
                    return datetime(
                        year, parts["MM"], parts["DD"], parts["hh"], parts.get("mm", 0), parts.get("ss", 0)
                    ), Status.OK
                return date(year, parts["MM"], parts["DD"]), Status.OK
            if "hh" in parts and "mm" in parts and "MM" not in parts and "DD" not in parts:
                return time(parts["hh"], parts["mm"], parts.get("ss", 0)), Status.OK
        except ValueError:
            return None, Status.INVALID
        text = "".join(f"{parts[f]:02d}" for f in self.fields)
        return text, Status.OK

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if value is None:
            return b"\xff" * self.size
        parts: dict[str, int]
        if isinstance(value, datetime):
            parts = {
                "YY": value.year % 100, "MM": value.month, "DD": value.day, "WW": (value.weekday() + 1) % 7,
                "hh": value.hour, "mm": value.minute, "ss": value.second,
            }
        elif isinstance(value, date):
            parts = {"YY": value.year % 100, "MM": value.month, "DD": value.day, "WW": (value.weekday() + 1) % 7}
        elif isinstance(value, time):
            parts = {"hh": value.hour, "mm": value.minute, "ss": value.second}
        elif isinstance(value, str) and len(value) == len(self.layout) and value.isdigit():
            parts = {f: int(value[2 * i : 2 * i + 2]) for i, f in enumerate(self.fields)}
        else:
            raise LocalProtocolError(f"cannot encode {value!r} as {self.layout}")
        if isinstance(value, datetime | date) and value.year // 100 != 20:
            raise LocalProtocolError(f"{value!r}: only years 2000-2099 fit YY")
        try:
            msb_first = bytes(int_to_bcd(parts[f], 1)[0] for f in self.fields)
        except KeyError as exc:
            raise LocalProtocolError(f"{value!r} has no {exc.args[0]} for {self.layout}") from None
        return msb_first if opts.time_reversed else msb_first[::-1]

    def describe(self) -> str:
        return self.layout


@dataclass(frozen=True, slots=True)
class Digits:
    """BCD digits read as text, e.g. the 12-digit comm address ``NNNNNNNNNNNN`` (low byte first)."""

    size: int

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        if _all_ff(raw):
            return None, Status.NOT_SUPPORTED
        return raw[::-1].hex().upper(), Status.OK

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or len(value) > 2 * self.size:
            raise LocalProtocolError(f"expected up to {2 * self.size} digits, got {value!r}")
        try:
            return bytes.fromhex(value.rjust(2 * self.size, "0"))[::-1]
        except ValueError:
            raise LocalProtocolError(f"not hex digits: {value!r}") from None

    def describe(self) -> str:
        return "N" * (2 * self.size)


@dataclass(frozen=True, slots=True)
class Ascii:
    """ASCII text stored low byte first (asset code, model, rated values)."""

    size: int

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        if _all_ff(raw):
            return None, Status.NOT_SUPPORTED
        return raw[::-1].decode("ascii", "replace").strip("\x00 "), Status.OK

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if not isinstance(value, str):
            raise LocalProtocolError(f"expected text, got {value!r}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"not ASCII: {value!r}") from None
        if len(data) > self.size:
            raise LocalProtocolError(f"{value!r} is longer than {self.size} characters")
        return data.rjust(self.size, b"\x00")[::-1]

    def describe(self) -> str:
        return f"ASCII({self.size})"


@dataclass(frozen=True, slots=True)
class Raw:
    """Opaque bytes (``size=None``: whatever is left)."""

    size: int | None = None

    def decode(self, raw: bytes, opts: FormatOptions = DEFAULT_OPTIONS) -> tuple[Value, str]:
        return bytes(raw), Status.OK

    def encode(self, value: object, opts: FormatOptions = DEFAULT_OPTIONS) -> bytes:
        if isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise LocalProtocolError(f"not hex: {value!r}") from None
        if not isinstance(value, bytes | bytearray):
            raise LocalProtocolError(f"expected bytes, got {value!r}")
        if self.size is not None and len(value) != self.size:
            raise LocalProtocolError(f"expected {self.size} bytes, got {len(value)}")
        return bytes(value)

    def describe(self) -> str:
        return "raw" if self.size is None else f"raw({self.size})"

