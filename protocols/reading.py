"""The one reading model every protocol produces and the meter data store ingests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from enum import IntFlag

__all__ = ["Quality", "Reading"]


class Quality(IntFlag):
    """Quality flags stored with each value (a bit set, 0 = good raw read)."""

    GOOD = 0
    ESTIMATED = 1 << 0  # produced by VEE estimation
    EDITED = 1 << 1  # manual edit
    SUSPECT = 1 << 2  # failed a validation rule
    BACKFILLED = 1 << 3  # re-read later from the meter's stored history (补采)
    CLOCK_SUSPECT = 1 << 4  # the meter clock was off beyond tolerance when read
    NOT_SUPPORTED = 1 << 5  # the device answered "no such data" (e.g. FF-filled phase)
    OVERFLOW = 1 << 6  # register rolled over
    IMPORTED = 1 << 7  # loaded from a file (handheld reader, other system)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one meter at one time.

    ``meter`` is the meter's address as printed on it (DL/T 645: 12 digits) or the
    device id used by its protocol. ``ts`` is timezone-aware: when the value was
    measured (for frozen or interval data, the meter's own timestamp).
    ``quantity`` is a code from :mod:`protocols.quantities`.
    """

    meter: str
    quantity: str
    ts: datetime
    value: float
    unit: str = ""
    quality: Quality = Quality.GOOD
    source: str = ""

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None:
            raise ValueError("Reading.ts must be timezone-aware")

    @classmethod
    def batch(
        cls,
        meter: str,
        ts: datetime,
        quantities: Sequence[str],
        values: Iterable[float],
        units: Sequence[str],
        quality: Quality = Quality.GOOD,
        source: str = "",
    ) -> list[Reading]:
        """The readings of one meter taken at one instant (one poll): ``quantities[i]`` with ``units[i]``
        and the i-th value. Equal to calling the constructor per value; the check runs once and the
        fields are set directly, which takes half the time of the frozen dataclass' ``__init__`` plus
        ``__post_init__`` per reading (polling loops build thousands a second)."""
        if ts.tzinfo is None:
            raise ValueError("Reading.ts must be timezone-aware")
        new = object.__new__
        s_meter, s_quantity, s_ts, s_value, s_unit, s_quality, s_source = _SLOT_SETTERS
        out: list[Reading] = []
        for quantity, value, unit in zip(quantities, values, units, strict=True):
            r = new(cls)
            s_meter(r, meter)
            s_quantity(r, quantity)
            s_ts(r, ts)
            s_value(r, value)
            s_unit(r, unit)
            s_quality(r, quality)
            s_source(r, source)
            out.append(r)
        return out


# the slots' own setters (a frozen dataclass refuses attribute assignment), in batch()'s order
_BATCH_FIELDS = ("meter", "quantity", "ts", "value", "unit", "quality", "source")
if tuple(f.name for f in fields(Reading)) != _BATCH_FIELDS:  # a new field must be set by batch() too
    raise RuntimeError("Reading.batch() is out of date with Reading's fields")
_SLOT_SETTERS = tuple(Reading.__dict__[name].__set__ for name in _BATCH_FIELDS)
