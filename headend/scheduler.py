"""The scheduler: turns read plans into jobs on channel queues when they fall due.

One heap holds the next slot of every (channel, meter, plan); a single task pops what is
due and queues it on its channel with scheduled priority, the slot's expiry, and the slot
as de-duplication key. Jitter spreads a fleet's reads over the slot (no thundering herd).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from datetime import timedelta

from headend.channels import Channel, Job, JobKind
from headend.plans import PlanKind, ReadPlan, Slot, next_slot
from headend.timebase import Clock
from protocols.arbitration import Priority

__all__ = ["MONTHLY_DEFAULT", "Scheduler", "job_for_slot"]

LOGGER = logging.getLogger(__name__)

MONTHLY_DEFAULT = (
    "energy.active.import", "energy.active.import.t1", "energy.active.import.t2",
    "energy.active.import.t3", "energy.active.import.t4", "energy.active.export",
)


def job_for_slot(plan: ReadPlan, meter: str, slot: Slot) -> Job:
    common = dict(priority=Priority.SCHEDULED, meter=meter, plan=plan.name, slot=slot.start,
                  due=slot.due, expires=slot.expires)
    if plan.kind is PlanKind.PROFILE:
        assert plan.every is not None
        step = timedelta(seconds=plan.every)
        # Interval energy comes from consecutive records: N intervals need N + 1 records. The
        # newest complete record at boundary T is T - step, so the last full interval starts at T - 2 step.
        return Job(kind=JobKind.PROFILE, start=slot.start - step * (plan.intervals + 1), count=plan.intervals + 1,
                   **common)  # type: ignore[arg-type]
    if plan.kind is PlanKind.DAILY:
        return Job(kind=JobKind.DAILY, n=1, **common)  # type: ignore[arg-type]
    if plan.kind is PlanKind.CLOCK:
        return Job(kind=JobKind.CLOCK, **common)  # type: ignore[arg-type]
    if plan.kind is PlanKind.MONTHLY and not plan.quantities:
        # billing values are the ones the meter froze at the settlement instant, not a read minutes later
        return Job(kind=JobKind.SETTLEMENT, n=1, quantities=MONTHLY_DEFAULT, **common)  # type: ignore[arg-type]
    return Job(kind=JobKind.READ, quantities=tuple(plan.quantities), **common)  # type: ignore[arg-type]


class Scheduler:
    def __init__(self, clock: Clock, plans: list[ReadPlan]) -> None:
        self.clock = clock
        self.plans = {p.name: p for p in plans if p.enabled}
        self._heap: list[tuple[float, int, str, str, str, Slot]] = []
        self._seq = itertools.count()
        self._channels: dict[str, Channel] = {}
        self._wake = asyncio.Event()
        self._slot_cache: dict[tuple[str, str, object], Slot] = {}
        self.submitted = 0

    def add_channel(self, channel: Channel) -> None:
        self._channels[channel.name] = channel
        now = self.clock.now()
        for meter in channel.meters.values():
            for plan in self.plans.values():
                if plan.applies_to(meter.group):
                    self._push(channel.name, meter.address, plan, now)
        self._wake.set()

    def remove_channel(self, name: str) -> None:
        self._channels.pop(name, None)  # heap entries of a removed channel are dropped lazily

    def _push(self, channel: str, meter: str, plan: ReadPlan, after: object) -> None:
        ch = self._channels.get(channel)
        if ch is None:
            return
        tz = ch.meters[meter].tz
        if plan.jitter == 0:
            # every meter of the plan shares the slot: compute it once per (plan, zone, time)
            key = (plan.name, tz.key, after)
            slot = self._slot_cache.get(key)
            if slot is None:
                if len(self._slot_cache) > 4096:
                    self._slot_cache.clear()
                slot = self._slot_cache[key] = next_slot(plan, tz, meter, after)  # type: ignore[arg-type]
        else:
            slot = next_slot(plan, tz, meter, after)  # type: ignore[arg-type]
        heapq.heappush(self._heap, (slot.due.timestamp(), next(self._seq), channel, meter, plan.name, slot))

    def pending(self) -> int:
        return len(self._heap)

    def due_now(self, limit: int | None = None) -> int:
        """Queue the jobs that are due (at most ``limit``); return how many were looked at."""
        now = self.clock.now()
        ts = now.timestamp()
        n = 0
        seen = 0
        while self._heap and self._heap[0][0] <= ts and (limit is None or seen < limit):
            seen += 1
            _, _, channel, meter, plan_name, slot = heapq.heappop(self._heap)
            ch = self._channels.get(channel)
            plan = self.plans.get(plan_name)
            if ch is None or plan is None or meter not in ch.meters:
                continue
            if ch.submit(job_for_slot(plan, meter, slot)):
                n += 1
            self._push(channel, meter, plan, slot.due + timedelta(microseconds=1))
        self.submitted += n
        return seen

    async def run(self) -> None:
        while True:
            # in slices, so a fleet-wide slot boundary does not stall the buses already polling
            for _ in range(100_000):
                if self.due_now(limit=200) < 200:
                    break
                await asyncio.sleep(0)
            self._wake.clear()
            wait = 1.0
            if self._heap:
                wait = min(1.0, self.clock.real_seconds(self._heap[0][0] - self.clock.now().timestamp()))
            try:
                async with asyncio.timeout(max(wait, 0.005)):
                    await self._wake.wait()
            except TimeoutError:
                pass
