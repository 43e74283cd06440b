"""The one reading model every protocol produces and the meter data store ingests."""

from __future__ import annotations

from dataclasses import dataclass
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
