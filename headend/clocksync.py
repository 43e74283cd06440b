"""Meter clock management: measure offsets, broadcast-sync a bus, flag clocks that stay off.

Clock reads come from the ``clock`` plan (and re-checks after a sync). When a meter on a
bus is off by more than ``max_drift``, the bus gets one broadcast time sync (08H to
99…99), at most once per ``min_interval``, and never across a freeze boundary: the sync is
held back while the head-end time or any drifted meter's time is within ``guard`` seconds
of a boundary (local midnight for daily freezes, every full hour with hourly freezes), so
no meter skips or repeats a freeze. A broadcast may move a clock by ``max_step`` at most;
meters beyond it, and meters still off when re-read ``recheck_after`` seconds after a
sync, are flagged (``clock_off``) for a per-meter fix or a site visit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from headend import meterops
from headend.channels import Channel, Job, JobKind
from headend.fleetconfig import ClockSyncConfig
from headend.timebase import Clock
from protocols.arbitration import Priority
from protocols.dlt645.frame import BROADCAST
from protocols.errors import HeadendError

__all__ = ["ClockManager", "Flag", "crosses_boundary"]

LOGGER = logging.getLogger(__name__)


def crosses_boundary(a: datetime, b: datetime, tz: ZoneInfo, guard: float, hourly: bool) -> bool:
    """Whether [min(a,b) - guard, max(a,b) + guard] contains a freeze boundary (local)."""
    lo = min(a, b) - timedelta(seconds=guard)
    hi = max(a, b) + timedelta(seconds=guard)
    lo_l, hi_l = lo.astimezone(tz), hi.astimezone(tz)
    if hourly:
        first = lo_l.replace(minute=0, second=0, microsecond=0)
        if first < lo_l:
            first += timedelta(hours=1)
        return first <= hi_l or lo_l.hour != hi_l.hour
    return lo_l.date() != hi_l.date() or (lo_l.hour == 0 and lo_l.minute == 0 and lo_l.second == 0)


@dataclass(frozen=True, slots=True)
class Flag:
    meter: str
    flag: str
    raised: bool  # False = cleared
    detail: dict[str, Any]


@dataclass(slots=True)
class _SyncRecord:
    at: datetime
    meters: frozenset[str]


class ClockManager:
    def __init__(self, cfg: ClockSyncConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.offsets: dict[str, tuple[float, datetime]] = {}
        self.last_sync: dict[str, _SyncRecord] = {}
        self.flagged: set[str] = set()
        self.pending_flags: list[Flag] = []
        self.syncs: list[tuple[str, datetime, int, float]] = []  # channel, at, meters, max offset
        self.syncs_unsaved: list[tuple[str, datetime, int, float]] = []  # not yet written to the store
        self.deferred = 0  # syncs held back by a freeze boundary
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _flag(self, meter: str, flag: str, raised: bool, **detail: Any) -> None:
        if raised and meter not in self.flagged:
            self.flagged.add(meter)
            LOGGER.warning("meter %s clock flagged: %s %s", meter, flag, detail, extra={"meter": meter})
            self.pending_flags.append(Flag(meter, flag, True, detail))
        elif not raised and meter in self.flagged:
            self.flagged.discard(meter)
            LOGGER.warning("meter %s clock back within tolerance", meter, extra={"meter": meter})
            self.pending_flags.append(Flag(meter, flag, False, detail))

    def observe(self, channel: Channel, meter: str, offset: float, at: datetime) -> None:
        """A clock reading came in (offset = meter clock - head-end clock, seconds)."""
        self.offsets[meter] = (offset, at)
        if not self.cfg.enabled:
            return
        off = abs(offset) > self.cfg.max_drift
        rec = self.last_sync.get(channel.name)
        after_sync = (rec is not None and meter in rec.meters
                      and at >= rec.at + timedelta(seconds=self.cfg.recheck_after * 0.9))
        if off and (after_sync or abs(offset) > self.cfg.max_step):
            why = "still off after a broadcast sync" if after_sync else "beyond what a broadcast may correct"
            self._flag(meter, "clock_off", True, offset_s=round(offset, 1), reason=why)
        elif not off:
            self._flag(meter, "clock_off", False, offset_s=round(offset, 1))
        if off:
            self.maybe_sync(channel)

    def _drifted(self, channel: Channel) -> dict[str, float]:
        horizon = self.clock.now() - timedelta(days=1)
        return {
            m: off for m, (off, at) in self.offsets.items()
            if m in channel.meters and at >= horizon and self.cfg.max_drift < abs(off) <= self.cfg.max_step
        }

    def safe_now(self, channel: Channel, drifted: dict[str, float]) -> bool:
        now = self.clock.now()
        for m, off in drifted.items():
            tz = channel.meters[m].tz
            if crosses_boundary(now, now + timedelta(seconds=off), tz, self.cfg.guard, self.cfg.hourly_freezes):
                return False
        return not crosses_boundary(now, now, channel.tz, self.cfg.guard, self.cfg.hourly_freezes)

    def maybe_sync(self, channel: Channel) -> bool:
        if channel.name in self._busy:
            return False
        now = self.clock.now()
        rec = self.last_sync.get(channel.name)
        if rec is not None and now < rec.at + timedelta(seconds=self.cfg.min_interval):
            return False
        drifted = self._drifted(channel)
        if not drifted:
            return False
        if not self.safe_now(channel, drifted):
            self.deferred += 1
            LOGGER.debug("clock sync on %s deferred: too close to a freeze boundary", channel.name)
            return False
        self._busy.add(channel.name)
        task = asyncio.get_running_loop().create_task(self._sync(channel, drifted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _sync(self, channel: Channel, drifted: dict[str, float]) -> None:
        try:
            sent = self.clock.now()

            async def send(client: Any) -> None:
                await meterops.broadcast_time(client, self.clock.now())

            await channel.call(BROADCAST, send, Priority.CONTROL)
            worst = max(abs(v) for v in drifted.values())
            self.last_sync[channel.name] = _SyncRecord(sent, frozenset(drifted))
            self.syncs.append((channel.name, sent, len(drifted), worst))
            self.syncs_unsaved.append((channel.name, sent, len(drifted), worst))
            LOGGER.warning(
                "broadcast time sync on %s: %d meters off by up to %.0f s", channel.name, len(drifted), worst,
                extra={"channel": channel.name},
            )
            due = sent + timedelta(seconds=self.cfg.recheck_after)
            for m in drifted:
                channel.submit(Job(Priority.SCHEDULED, m, JobKind.CLOCK, plan="clock-recheck", due=due, start=due))
        except HeadendError as exc:
            LOGGER.warning("broadcast time sync on %s failed: %s", channel.name, exc)
        finally:
            self._busy.discard(channel.name)

    def utc_now(self) -> datetime:
        return self.clock.now().astimezone(UTC)
