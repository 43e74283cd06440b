"""Read plans (what to read, when) and the slot arithmetic behind them.

A plan applies to meter groups and has a kind:

- ``read``: current values (instantaneous block, energy block, event counters) every ``every`` s;
- ``profile``: the last load-profile interval(s) from the meter's records, every ``every`` s (900);
- ``daily``: yesterday's daily frozen record, after local midnight;
- ``monthly``: billing values on the billing day: the registers the meter froze at its settlement
  instant (结算日), or a current read where the device keeps none;
- ``clock``: the meter clock (feeds clock management).

Slots are computed in the meter's local zone (zoneinfo, so DST days have 23 or 25 hours).
A slot's read is due at ``slot + offset + jitter(meter)``, only if the due time falls in the
plan's read window, and expires at the next slot or the end of the window, whichever is first:
an expired read counts as a failure for the KPI and is left to backfill.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols import quantities as q

__all__ = ["PlanKind", "ReadPlan", "Slot", "default_plans", "jitter_for", "next_slot", "parse_window"]


class PlanKind(StrEnum):
    READ = "read"
    PROFILE = "profile"
    DAILY = "daily"
    MONTHLY = "monthly"
    CLOCK = "clock"


_PERIODIC = {PlanKind.READ, PlanKind.PROFILE, PlanKind.CLOCK}


def parse_window(text: str) -> tuple[time, time | None]:
    """``"00:05-06:00"`` -> (00:05, 06:00); an end of ``24:00`` is None (end of day)."""
    try:
        a, b = (s.strip() for s in text.split("-"))
        start = time.fromisoformat(a)
        end = None if b in ("24:00", "24:00:00") else time.fromisoformat(b)
    except ValueError:
        raise ValueError(f"bad read window {text!r}: expected HH:MM-HH:MM") from None
    if end is not None and end <= start:
        raise ValueError(f"bad read window {text!r}: end must be after start")
    return start, end


class ReadPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: PlanKind = PlanKind.READ
    groups: list[str] = Field(default_factory=lambda: ["*"], description="meter groups; '*' = all")
    every: float | None = Field(default=None, gt=0, description="seconds between slots (read/profile/clock)")
    offset: float = Field(default=0.0, ge=0, description="seconds after the slot boundary")
    window: str = Field(default="00:00-24:00", description="local time-of-day window for starting reads")
    jitter: float = Field(default=0.0, ge=0, description="spread of start times over meters, seconds")
    quantities: list[str] = Field(default_factory=list)
    billing_day: int = Field(default=1, ge=1, le=28)
    intervals: int = Field(default=1, ge=1, description="profile: intervals read per slot")
    enabled: bool = True

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: str) -> str:
        parse_window(v)
        return v

    @field_validator("quantities")
    @classmethod
    def _check_quantities(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if not q.is_known(c)]
        if unknown:
            raise ValueError(f"unknown quantity codes: {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _check_kind(self) -> ReadPlan:
        if self.kind in _PERIODIC and self.every is None:
            raise ValueError(f"plan {self.name!r}: kind {self.kind.value} needs 'every' (seconds)")
        if self.kind is PlanKind.READ and not self.quantities:
            raise ValueError(f"plan {self.name!r}: kind read needs 'quantities'")
        return self

    def applies_to(self, group: str) -> bool:
        return self.enabled and ("*" in self.groups or group in self.groups)


def default_plans() -> list[ReadPlan]:
    """A typical residential schedule (used when the config names no plans)."""
    return [
        ReadPlan(
            name="instant", kind=PlanKind.READ, every=300, jitter=60,
            quantities=["voltage.a", "voltage.b", "voltage.c", "current.a", "power.active.total"],
        ),
        ReadPlan(name="energy", kind=PlanKind.READ, every=900, offset=30, jitter=120,
                 quantities=["energy.active.import", "energy.active.export"]),
        ReadPlan(name="profile", kind=PlanKind.PROFILE, every=900, offset=60, jitter=120),
        ReadPlan(name="daily", kind=PlanKind.DAILY, offset=300, window="00:05-06:00", jitter=600),
        ReadPlan(name="billing", kind=PlanKind.MONTHLY, billing_day=1, offset=600, window="00:10-08:00", jitter=600),
        ReadPlan(name="clock", kind=PlanKind.CLOCK, every=3600, offset=1200, jitter=300),
        ReadPlan(name="events", kind=PlanKind.READ, every=3600, offset=900, jitter=300, enabled=False,
                 quantities=["event.cover_open.count", "event.programming.count", "event.power_down.count"]),
    ]


def jitter_for(meter: str, plan: str, jitter: float) -> float:
    """Deterministic per (meter, plan) start offset in [0, jitter): spreads a fleet evenly."""
    if jitter <= 0:
        return 0.0
    h = int.from_bytes(hashlib.blake2b(f"{meter}/{plan}".encode(), digest_size=8).digest(), "big")
    return (h / 2**64) * jitter


@dataclass(frozen=True, slots=True)
class Slot:
    plan: str
    start: datetime  # the slot boundary (UTC)
    due: datetime  # when the read may start (boundary + offset + jitter)
    expires: datetime  # the read is abandoned after this (KPI failure, backfill later)


def _local_midnight(day_local: datetime, tz: ZoneInfo) -> datetime:
    return datetime(day_local.year, day_local.month, day_local.day, tzinfo=tz)


def _boundaries(plan: ReadPlan, tz: ZoneInfo, after: datetime) -> tuple[datetime, datetime]:
    """The first slot boundary strictly after ``after - offset - jitter_max`` lookback, and the next one."""
    if plan.kind in _PERIODIC:
        assert plan.every is not None
        every = plan.every
        utc = after.astimezone(UTC)
        off = utc.astimezone(tz).utcoffset() or timedelta(0)
        local_s = utc.timestamp() + off.total_seconds()
        k = local_s // every
        start = datetime.fromtimestamp(k * every - off.total_seconds(), UTC)
        return start, start + timedelta(seconds=every)
    local = after.astimezone(tz)
    if plan.kind is PlanKind.DAILY:
        start = _local_midnight(local, tz)
        d = local.date() + timedelta(days=1)  # date arithmetic: DST days have 23 or 25 hours
        nxt = datetime(d.year, d.month, d.day, tzinfo=tz)
        return start.astimezone(UTC), nxt.astimezone(UTC)
    # monthly: local midnight of the billing day
    y, m = local.year, local.month
    this = datetime(y, m, plan.billing_day, tzinfo=tz)
    if this > local:
        y2, m2 = (y - 1, 12) if m == 1 else (y, m - 1)
        prev = datetime(y2, m2, plan.billing_day, tzinfo=tz)
        return prev.astimezone(UTC), this.astimezone(UTC)
    y2, m2 = (y + 1, 1) if m == 12 else (y, m + 1)
    return this.astimezone(UTC), datetime(y2, m2, plan.billing_day, tzinfo=tz).astimezone(UTC)


def _in_window(plan: ReadPlan, tz: ZoneInfo, when: datetime) -> tuple[bool, datetime | None]:
    """Whether ``when`` is inside the plan's window, and when that window closes (UTC)."""
    w_start, w_end = parse_window(plan.window)
    local = when.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    if t < w_start or (w_end is not None and t >= w_end):
        return False, None
    if w_end is None:
        d = local.date() + timedelta(days=1)
        close = datetime(d.year, d.month, d.day, tzinfo=tz)
    else:
        close = datetime.combine(local.date(), w_end, tzinfo=tz)
    return True, close.astimezone(UTC)


def next_slot(plan: ReadPlan, tz: ZoneInfo, meter: str, after: datetime) -> Slot:
    """The first slot of ``plan`` for ``meter`` whose due time is at or after ``after``.

    Slots whose due time falls outside the read window are skipped (they are not due).
    """
    jit = timedelta(seconds=plan.offset + jitter_for(meter, plan.name, plan.jitter))
    start, nxt = _boundaries(plan, tz, after - jit)
    for _ in range(10_000):
        due = start + jit
        if due >= after:
            ok, close = _in_window(plan, tz, due)
            if ok and close is not None:
                return Slot(plan.name, start, due, min(nxt + jit, close))
        start, nxt = _boundaries(plan, tz, nxt)
    raise ValueError(f"plan {plan.name!r} has no slot in its window")
