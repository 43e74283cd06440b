"""Monthly settlement (结算日) values: the energy registers a meter froze at its settlement instant.

Billing uses these, not a read taken minutes after the boundary (which already holds the new
month's first minutes). DL/T 645-2007 keeps twelve: DI0 = 01..0C of each energy DI (0001FF01 is
the forward active block at the last settlement). The meter does not send the settlement time;
it follows from the 1st settlement day parameter 04000B01 (DDhh) and the meter clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from protocols.arbitration import Priority
from protocols.dlt645 import registry
from protocols.errors import DeviceError, FrameError, LocalProtocolError
from protocols.reading import Quality, Reading

if TYPE_CHECKING:
    from protocols.dlt645.client import Dlt645Client

__all__ = ["SETTLEMENT_BLOCKS", "read_settlement", "settlement_instant"]

# energy block DI (current, DI0 = 00) -> quantity code of its total; tariffs get .t1 .. .t4
SETTLEMENT_BLOCKS: dict[int, str] = {
    0x0001FF00: "energy.active.import",
    0x0002FF00: "energy.active.export",
}
_TARIFF_FIELDS = ("total", "t1", "t2", "t3", "t4")


def settlement_instant(now: datetime, day: int, hour: int, n: int) -> datetime:
    """The ``n``-th previous settlement (``day`` at ``hour``:00, every month) at or before ``now``."""
    if not 1 <= day <= 28 or not 0 <= hour <= 23:
        raise LocalProtocolError(f"settlement day {day:02d} {hour:02d}:00 is not one a meter keeps")
    t = now.replace(day=day, hour=hour, minute=0, second=0, microsecond=0)
    back = n - 1 + (1 if t > now else 0)
    y, m = divmod(t.year * 12 + t.month - 1 - back, 12)
    return t.replace(year=y, month=m + 1)


def _day_hour(value: object) -> tuple[int, int]:
    text = str(value) if value is not None else ""
    if len(text) != 4 or not text.isdigit():
        raise FrameError("format", f"bad settlement day {value!r}")
    return int(text[:2]), int(text[2:])


async def read_settlement(
    client: Dlt645Client, device: str, n: int = 1, *, priority: int = Priority.SCHEDULED
) -> list[Reading]:
    """Forward and reverse active energy (total + 4 tariffs) at the ``n``-th previous settlement,
    stamped with the settlement instant in the bus's zone."""
    if not 1 <= n <= registry.SETTLEMENTS:
        raise LocalProtocolError(f"settlements are numbered 1..{registry.SETTLEMENTS}")
    day = await client.read_raw(device, 0x04000B01, priority=priority)
    dd, hh = _day_hour(day.decoded.value if day.decoded else None)
    when = settlement_instant(await client.read_clock(device, priority=priority), dd, hh, n)
    out: list[Reading] = []
    for di, base in SETTLEMENT_BLOCKS.items():
        try:
            res = await client.read_raw(device, di | n, priority=priority)
        except DeviceError as exc:
            if "no_data" in exc.flags and out:
                continue  # e.g. no reverse energy kept: the forward values still count
            raise
        values = res.decoded.values if res.decoded else {}
        for k, name in enumerate(_TARIFF_FIELDS):
            v = values.get(name)
            if isinstance(v, int | float):
                q = base if k == 0 else f"{base}.t{k}"
                out.append(Reading(device, q, when, float(v), "kWh", Quality.GOOD, "dlt645"))
    if not out:
        raise FrameError("format", f"meter {device} sent no settlement values")
    return out
