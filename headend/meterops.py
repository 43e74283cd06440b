"""What the daemon asks of a protocol client, in one place (adapters over :class:`MeterClient`).

Every client reads current values (``MeterClient.read``). History (daily frozen records,
load-profile records) and clock services are optional capabilities, found by duck typing,
so Modbus or MQTT clients without them still plug into the same channels: their plans
that need history fall back to current reads or are skipped (``NotSupported``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from protocols.arbitration import Priority
from protocols.client import MeterClient
from protocols.errors import HeadendError
from protocols.reading import Quality, Reading

__all__ = [
    "NotSupported",
    "broadcast_time",
    "can",
    "read_clock",
    "read_current",
    "read_daily_frozen",
    "read_load_profile",
    "read_settlement",
]


class NotSupported(HeadendError):
    """The channel's client has no such service."""


# capability -> method names tried in order (the first the client has is used)
_METHODS: dict[str, tuple[str, ...]] = {
    "daily_frozen": ("read_daily_frozen", "read_frozen_daily"),
    "settlement": ("read_settlement",),
    "load_profile": ("read_load_profile", "read_profile"),
    "clock": ("read_clock",),
    "broadcast_time": ("broadcast_time_sync", "broadcast_time"),
}


def _method(client: MeterClient, capability: str) -> Any:
    for name in _METHODS[capability]:
        fn = getattr(client, name, None)
        if fn is not None:
            return fn
    raise NotSupported(f"{type(client).__name__} cannot {capability.replace('_', ' ')}")


def can(client: MeterClient, capability: str) -> bool:
    return any(getattr(client, n, None) is not None for n in _METHODS[capability])


async def read_current(
    client: MeterClient, meter: str, quantities: Sequence[str], priority: Priority, now: datetime, source: str = ""
) -> list[Reading]:
    """Current values, stamped with the daemon clock (the time the head-end read them) and ``source``."""
    out = await client.read(meter, list(quantities), priority=priority)
    if source:
        return [Reading(r.meter, r.quantity, now, r.value, r.unit, r.quality, source) for r in out]
    return [replace(r, ts=now) for r in out]


async def read_daily_frozen(client: MeterClient, meter: str, n: int, priority: Priority) -> list[Reading]:
    """The Nth previous daily freeze; timestamps are the meter's own (the freeze time)."""
    out: list[Reading] = await _method(client, "daily_frozen")(meter, n, priority=priority)
    return out


async def read_settlement(client: MeterClient, meter: str, n: int, priority: Priority) -> list[Reading]:
    """Billing registers frozen at the Nth previous monthly settlement, stamped with its time."""
    out: list[Reading] = await _method(client, "settlement")(meter, n, priority=priority)
    return out


async def read_load_profile(
    client: MeterClient, meter: str, start: datetime, count: int, priority: Priority
) -> list[Reading]:
    out: list[Reading] = await _method(client, "load_profile")(meter, start, count, priority=priority)
    return out


async def read_clock(client: MeterClient, meter: str, priority: Priority) -> datetime:
    when: datetime = await _method(client, "clock")(meter, priority=priority)
    return when


async def broadcast_time(client: MeterClient, when: datetime) -> None:
    await _method(client, "broadcast_time")(when)


def mark_backfilled(readings: Sequence[Reading]) -> list[Reading]:
    return [replace(r, quality=r.quality | Quality.BACKFILLED) for r in readings]


def unmark_backfilled(readings: Sequence[Reading]) -> list[Reading]:
    return [replace(r, quality=r.quality & ~Quality.BACKFILLED) if r.quality & Quality.BACKFILLED else r
            for r in readings]


__all__ += ["mark_backfilled", "unmark_backfilled"]
