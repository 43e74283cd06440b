"""Backfill (补采): find what the store is missing and re-read it from the meter's memory.

Three kinds of holes are looked for, per channel, within ``lookback_days`` and the depth the
meter keeps: 15-minute load-profile intervals (``interval.energy.active.import`` at each
interval start), daily frozen values (``energy.active.import`` at local midnight) and monthly
settlement values (``energy.active.import`` at the monthly plan's billing day, local midnight;
twelve kept). Missing intervals are re-read with load-profile record reads (runs of consecutive
intervals in one request), missing freezes with "Nth previous daily freeze" reads, missing
settlements with "Nth previous settlement" reads. Jobs run at backfill priority, only for meters
whose breaker is closed, and the values keep the meter's own timestamps with
:attr:`Quality.BACKFILLED`.

A sweep runs every ``every`` seconds, and at once for a meter that answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from headend import meterops
from headend.channels import Channel, Job, JobKind
from headend.fleetconfig import BackfillConfig
from headend.plans import PlanKind, ReadPlan
from headend.scheduler import MONTHLY_DEFAULT
from protocols.arbitration import BreakerState, Priority

__all__ = [
    "DAILY_QUANTITY",
    "INTERVAL_QUANTITY",
    "SETTLEMENT_DEPTH",
    "Backfiller",
    "missing_daily",
    "missing_intervals",
    "missing_settlements",
    "settlement_instants",
    "settlement_number",
]

LOGGER = logging.getLogger(__name__)

INTERVAL_QUANTITY = "interval.energy.active.import"
DAILY_QUANTITY = "energy.active.import"
MAX_RECORDS_PER_READ = 8
# monthly settlements a DL/T 645-2007 meter keeps (DI0 01..0C); older ones are gone
SETTLEMENT_DEPTH = 12

# The store's tables (mdm): interval reads and register reads, keyed by (meter, quantity, ts).
INTERVAL_TABLE = "interval_reads"
REGISTER_TABLE = "register_reads"


async def _missing(
    conn: psycopg.AsyncConnection[Any], table: str, quantity: str, pairs: Sequence[tuple[str, datetime]]
) -> list[tuple[str, datetime]]:
    if not pairs:
        return []
    sql = f"""
        SELECT e.meter, e.ts FROM unnest(%s::text[], %s::timestamptz[]) AS e(meter, ts)
        WHERE NOT EXISTS (SELECT 1 FROM {table} r
                          WHERE r.meter = e.meter AND r.quantity = %s AND r.ts = e.ts)
        ORDER BY e.meter, e.ts"""  # table names are module constants, never input
    async with conn.cursor() as cur:
        await cur.execute(sql, ([p[0] for p in pairs], [p[1] for p in pairs], quantity))
        rows = await cur.fetchall()
    return [(r[0], r[1].astimezone(UTC)) for r in rows]


async def missing_intervals(
    conn: psycopg.AsyncConnection[Any], channel: Channel, meters: Sequence[str], start: datetime, end: datetime,
    step: float,
) -> list[tuple[str, datetime]]:
    """(meter, interval start) pairs in [start, end) absent from the store."""
    pairs: list[tuple[str, datetime]] = []
    for m in meters:
        tz = channel.meters[m].tz
        # intervals on local quarter hours (zones with odd offsets included)
        off = start.astimezone(tz).utcoffset() or timedelta(0)
        t0 = start.timestamp() + off.total_seconds()
        t = datetime.fromtimestamp((t0 // step + (1 if t0 % step else 0)) * step - off.total_seconds(), UTC)
        while t < end:
            pairs.append((m, t))
            t += timedelta(seconds=step)
    return await _missing(conn, INTERVAL_TABLE, INTERVAL_QUANTITY, pairs)


async def missing_daily(
    conn: psycopg.AsyncConnection[Any], channel: Channel, meters: Sequence[str], days: int, before: datetime
) -> list[tuple[str, datetime]]:
    """(meter, local midnight) pairs of the last ``days`` freezes before ``before`` absent from the store."""
    pairs: list[tuple[str, datetime]] = []
    for m in meters:
        tz = channel.meters[m].tz
        today = before.astimezone(tz).date()
        for k in range(days):
            d = today - timedelta(days=k)
            midnight = datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)
            if midnight < before:
                pairs.append((m, midnight))
    return await _missing(conn, REGISTER_TABLE, DAILY_QUANTITY, pairs)


def settlement_instants(tz: ZoneInfo, billing_day: int, before: datetime, count: int) -> list[datetime]:
    """The last ``count`` settlement instants (``billing_day`` at local midnight, as the monthly plan's
    slots) at or before ``before``, newest first, in UTC."""
    local = before.astimezone(tz)
    month = local.year * 12 + local.month - 1
    if datetime(local.year, local.month, billing_day, tzinfo=tz) > local:
        month -= 1
    out = []
    for k in range(count):
        y, m = divmod(month - k, 12)
        out.append(datetime(y, m + 1, billing_day, tzinfo=tz).astimezone(UTC))
    return out


def settlement_number(tz: ZoneInfo, billing_day: int, now: datetime, instant: datetime) -> int:
    """Which "Nth previous settlement" ``instant`` is at ``now`` (1 = the latest at or before ``now``),
    counted in months the way the meter numbers them."""
    latest = settlement_instants(tz, billing_day, now, 1)[0].astimezone(tz)
    at = instant.astimezone(tz)
    return (latest.year - at.year) * 12 + latest.month - at.month + 1


async def missing_settlements(
    conn: psycopg.AsyncConnection[Any], channel: Channel, meters: Sequence[str], billing_day: int,
    before: datetime, since: datetime,
) -> list[tuple[str, datetime]]:
    """(meter, settlement instant) pairs in [since, before], at most :data:`SETTLEMENT_DEPTH` back from
    ``before``, with no ``energy.active.import`` register value at that instant."""
    pairs: list[tuple[str, datetime]] = []
    for m in meters:
        for t in settlement_instants(channel.meters[m].tz, billing_day, before, SETTLEMENT_DEPTH):
            if t < since:
                break
            pairs.append((m, t))
    return await _missing(conn, REGISTER_TABLE, DAILY_QUANTITY, pairs)


def _runs(times: Sequence[datetime], step: timedelta, limit: int) -> list[tuple[datetime, int]]:
    """Group sorted interval starts into (first, count) runs of consecutive intervals."""
    out: list[tuple[datetime, int]] = []
    for t in times:
        if out and out[-1][1] < limit and out[-1][0] + step * out[-1][1] == t:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((t, 1))
    return out


class Backfiller:
    def __init__(self, cfg: BackfillConfig, plans: Sequence[ReadPlan]) -> None:
        self.cfg = cfg
        self.profile_plan = next((p for p in plans if p.enabled and p.kind is PlanKind.PROFILE), None)
        self.daily_plan = next((p for p in plans if p.enabled and p.kind is PlanKind.DAILY), None)
        # a monthly plan naming quantities reads current values: the meter keeps nothing of those to re-read
        self.settlement_plan = next(
            (p for p in plans if p.enabled and p.kind is PlanKind.MONTHLY and not p.quantities), None
        )
        self.queued = 0

    def _settle(self, plan: ReadPlan | None) -> timedelta:
        """How long after a boundary the scheduled read has surely had its chance."""
        if plan is None:
            return timedelta(0)
        return timedelta(seconds=plan.offset + plan.jitter + 60)

    async def sweep(
        self, conn: psycopg.AsyncConnection[Any], channel: Channel, now: datetime, meters: Sequence[str] | None = None
    ) -> int:
        """Queue backfill jobs for one channel (or some of its meters); return how many."""
        if not self.cfg.enabled:
            return 0
        alive = [
            m for m in (meters if meters is not None else list(channel.meters))
            if m in channel.meters and channel.breaker.state(m) is BreakerState.CLOSED
        ]
        if not alive:
            return 0
        jobs: list[Job] = []
        per_meter: dict[str, int] = {}
        # billing values first: a few per meter at most, and what billing cannot do without
        if self.settlement_plan is not None:
            jobs += await self._settlement_jobs(conn, channel, now, alive, per_meter)
        if self.profile_plan is not None and any(self.profile_plan.applies_to(channel.meters[m].group) for m in alive):
            plan = self.profile_plan
            step = timedelta(seconds=self.cfg.interval)
            depth = min(self.cfg.lookback_days, self.cfg.profile_depth_days)
            start = now - timedelta(days=depth)
            if self.cfg.not_before is not None:
                start = max(start, self.cfg.not_before)
            end = now - self._settle(plan) - 2 * step
            use = [m for m in alive if plan.applies_to(channel.meters[m].group)]
            gaps = await missing_intervals(conn, channel, use, start, end, self.cfg.interval)
            by_meter: dict[str, list[datetime]] = {}
            for m, t in gaps:
                by_meter.setdefault(m, []).append(t)
            for m, times in by_meter.items():
                for first, count in _runs(times, step, MAX_RECORDS_PER_READ):
                    if per_meter.get(m, 0) >= self.cfg.max_jobs_per_meter:
                        break
                    per_meter[m] = per_meter.get(m, 0) + 1
                    jobs.append(Job(Priority.BACKFILL, m, JobKind.PROFILE, plan=plan.name, start=first,
                                    count=count + 1, backfill=True))  # N intervals need N + 1 records
        if self.daily_plan is not None:
            plan = self.daily_plan
            use = [m for m in alive if plan.applies_to(channel.meters[m].group)]
            days = min(self.cfg.lookback_days, self.cfg.frozen_depth_days)
            gaps = await missing_daily(conn, channel, use, days, now - self._settle(plan))
            for m, midnight in gaps:
                if self.cfg.not_before is not None and midnight < self.cfg.not_before:
                    continue
                if per_meter.get(m, 0) >= self.cfg.max_jobs_per_meter:
                    continue
                tz = channel.meters[m].tz
                today = now.astimezone(tz).date()
                n = (today - midnight.astimezone(tz).date()).days + 1
                if n < 1:
                    continue
                per_meter[m] = per_meter.get(m, 0) + 1
                jobs.append(Job(Priority.BACKFILL, m, JobKind.DAILY, plan=plan.name, n=n, start=midnight,
                                backfill=True))
        queued = sum(1 for j in jobs if channel.submit(j))
        self.queued += queued
        if queued:
            LOGGER.info("backfill: %d jobs queued on %s", queued, channel.name, extra={"channel": channel.name})
        return queued

    async def _settlement_jobs(
        self, conn: psycopg.AsyncConnection[Any], channel: Channel, now: datetime, alive: Sequence[str],
        per_meter: dict[str, int],
    ) -> list[Job]:
        plan = self.settlement_plan
        assert plan is not None
        if channel.client is not None and not meterops.can(channel.client, "settlement"):
            return []  # the scheduled read of such a device is a current read: nothing stored to re-read
        use = [m for m in alive if plan.applies_to(channel.meters[m].group)]
        if not use:
            return []
        since = now - timedelta(days=self.cfg.lookback_days)
        if self.cfg.not_before is not None:
            since = max(since, self.cfg.not_before)
        gaps = await missing_settlements(conn, channel, use, plan.billing_day, now - self._settle(plan), since)
        jobs: list[Job] = []
        for m, instant in gaps:
            if per_meter.get(m, 0) >= self.cfg.max_jobs_per_meter:
                continue
            # numbered from now, not from the settle horizon: a settlement inside it is already the 1st
            n = settlement_number(channel.meters[m].tz, plan.billing_day, now, instant)
            if not 1 <= n <= SETTLEMENT_DEPTH:
                continue
            per_meter[m] = per_meter.get(m, 0) + 1
            jobs.append(Job(Priority.BACKFILL, m, JobKind.SETTLEMENT, plan=plan.name, n=n, start=instant,
                            quantities=MONTHLY_DEFAULT, backfill=True))
        return jobs
