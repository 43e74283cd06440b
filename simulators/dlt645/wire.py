"""Small value encoders the simulated meter uses for its replies (BCD numbers, time layouts).

Wire order is low byte first; a data item written ``YYMMDDhhmm`` goes out as
``mm hh DD MM YY``. Signed values carry the sign in D7 of the most significant byte.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["bcd", "bcd_int", "date4", "decode_bcd_int", "decode_time6", "time3", "ts5", "ts6", "ts7"]


def _b(n: int) -> int:
    return ((n // 10) % 10) << 4 | (n % 10)


def bcd(value: float, nbytes: int, decimals: int = 0, *, signed: bool = False) -> bytes:
    """Encode a number as little-endian BCD; wraps like a register when it overflows."""
    neg = value < 0
    digits = 2 * nbytes - (1 if signed else 0)
    n = round(abs(value) * 10**decimals) % (10**digits)
    out = bytearray()
    for _ in range(nbytes):
        out.append(_b(n % 100))
        n //= 100
    if signed and neg:
        out[-1] |= 0x80
    return bytes(out)


def bcd_int(value: int, nbytes: int) -> bytes:
    return bcd(value, nbytes)


def decode_bcd_int(raw: bytes) -> int:
    """Little-endian BCD to int; raises ValueError on a non-BCD nibble."""
    n = 0
    for byte in reversed(raw):
        hi, lo = byte >> 4, byte & 0x0F
        if hi > 9 or lo > 9:
            raise ValueError(f"not BCD: {raw.hex()}")
        n = n * 100 + hi * 10 + lo
    return n


def ts5(t: datetime) -> bytes:
    """YYMMDDhhmm."""
    return bytes(_b(x) for x in (t.minute, t.hour, t.day, t.month, t.year % 100))


def ts6(t: datetime) -> bytes:
    """YYMMDDhhmmss."""
    return bytes(_b(x) for x in (t.second, t.minute, t.hour, t.day, t.month, t.year % 100))


def ts7(t: datetime) -> bytes:
    """YYMMDDWWhhmmss (0400010C)."""
    wd = (t.weekday() + 1) % 7  # 0 = Sunday
    return bytes(_b(x) for x in (t.second, t.minute, t.hour, wd, t.day, t.month, t.year % 100))


def date4(t: datetime) -> bytes:
    """YYMMDDWW (04000101), WW 0 = Sunday."""
    wd = (t.weekday() + 1) % 7
    return bytes(_b(x) for x in (wd, t.day, t.month, t.year % 100))


def time3(t: datetime) -> bytes:
    """hhmmss (04000102)."""
    return bytes(_b(x) for x in (t.second, t.minute, t.hour))


def decode_time6(raw: bytes) -> datetime:
    """ss mm hh DD MM YY (broadcast time sync, 1C valid-until) to a naive datetime."""
    ss, mm, hh, dd, mo, yy = (decode_bcd_int(bytes((b,))) for b in raw[:6])
    return datetime(2000 + yy, mo, dd, hh, mm, ss)
