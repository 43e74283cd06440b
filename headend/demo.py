"""``headend demo``: simulated buses, the embedded database and the daemon on an accelerated clock.

Hook points for other modules (add a line, do not edit the flow):

- :data:`DEMO_SETUP`: ``"module:function"`` entries, each ``async def f(ctx: DemoContext)``, run
  after the simulated DL/T 645 buses are up and before the daemon starts. A setup may start
  more simulators (Modbus terminals, an MQTT broker), append channels to
  ``ctx.settings.daemon.channels`` or plug-in modules to ``ctx.settings.daemon.plugins``, and
  register cleanups with ``ctx.stack`` (an AsyncExitStack).
- :data:`DEMO_STAGES`: ``"module:function"`` entries run after collection, over the stored data
  (VEE, work orders, remote control...). Each adds lines to ``ctx.summary`` (label -> value).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headend.fleetconfig import (
    BackfillConfig,
    BreakerConfig,
    ChannelConfig,
    ClockSyncConfig,
    DaemonSettings,
    LeaseConfig,
)
from headend.plans import PlanKind, ReadPlan
from headend.settings import Settings
from headend.timebase import Clock, wrap_clock

__all__ = ["DEMO_SETUP", "DEMO_STAGES", "DemoContext", "demo_plans", "run_demo"]

LOGGER = logging.getLogger(__name__)

DEMO_SETUP: list[str] = ["simulators.modbus.demo:setup", "simulators.mqtt.demo:setup"]
DEMO_STAGES: list[str] = [
    "simulators.modbus.demo:stage",
    "simulators.mqtt.demo:stage",
    "headend.control.demo:stage",  # before VEE, so the cut and restore show in its work orders
    "mdm.vee.demo:stage",
]


@dataclass
class DemoContext:
    settings: Settings
    dsn: str
    clock: Clock
    console: Console
    stack: contextlib.AsyncExitStack
    sims: list[Any] = field(default_factory=list)
    daemon: Any = None
    start: datetime | None = None
    end: datetime | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def demo_plans() -> list[ReadPlan]:
    """A compressed schedule, so a few simulated minutes show every plan."""
    return [
        ReadPlan(name="instant", kind=PlanKind.READ, every=120, jitter=60,
                 quantities=["voltage.a", "current.a", "power.active.total"]),
        ReadPlan(name="energy", kind=PlanKind.READ, every=300, offset=10, jitter=120,
                 quantities=["energy.active.import", "energy.active.export"]),
        ReadPlan(name="profile", kind=PlanKind.PROFILE, every=900, offset=30, jitter=180),
        ReadPlan(name="daily", kind=PlanKind.DAILY, offset=60, window="00:01-06:00", jitter=300),
        ReadPlan(name="clock", kind=PlanKind.CLOCK, every=600, offset=30, jitter=60),
    ]


def _load(entry: str) -> Callable[[DemoContext], Awaitable[None]]:
    module, _, fn = entry.partition(":")
    f: Callable[[DemoContext], Awaitable[None]] = getattr(importlib.import_module(module), fn)
    return f


def _table(ctx: DemoContext) -> Table:
    d = ctx.daemon
    t = Table(title=f"simulated time {ctx.clock.now().astimezone(ZoneInfo(ctx.settings.timezone)):%Y-%m-%d %H:%M:%S}")
    for c in ("channel", "meters", "up", "ok", "no reply", "bad", "queued", "breakers open"):
        t.add_column(c, justify="right" if c not in ("channel", "up") else "left")
    if d is None:
        return t
    for ch in list(d.channels.values()):
        t.add_row(ch.name, str(len(ch.meters)), ch.state.value, str(ch.counts["ok"]),
                  str(ch.counts["no_response"]), str(ch.counts["bad_reply"] + ch.counts["device_error"]),
                  str(ch.queue_depth()), str(len(ch.breaker.open_keys())))
    k = d.kpi.totals
    t.caption = (f"readings stored {d.sink.submitted}  scheduled {k.due}  ok {k.ok}  "
                 f"backfilled {k.backfilled}  clock syncs {len(d.clocks.syncs)}")
    return t


async def _start_buses(ctx: DemoContext, start: datetime, speed: float) -> None:
    from simulators.dlt645 import MeterBusSimulator

    specs = [
        # name, transport, meters, first address, faults
        ("tcp-bus-1", "tcp", 10, 1, {"000000000003": "silent", "000000000007": "clock_offset=150"}),
        ("pty-bus-2", "pty", 6, 101, {"000000000104": "bad_checksum"}),
        ("tcp-bus-3", "tcp", 8, 201, {"000000000205": "clock_offset=900", "000000000206": "slow=0.1"}),
    ]
    # (fraction of the run, meter, fault or None to clear): a meter silent across midnight misses
    # its daily freeze read and gets it back from meter memory when it answers again
    ctx.extras["script"] = [
        (0.5, "000000000003", None),
        (0.6, "000000000202", "silent"),
        (0.85, "000000000202", None),
    ]
    for i, (name, transport, n, first, faults) in enumerate(specs):
        addrs = [f"{first + k:012d}" for k in range(n)]
        sim = MeterBusSimulator(addresses=addrs, transport=transport, parity="N", speed=speed, start=start,
                                history_days=2, faults=faults, seed=11 + i, tz=ctx.settings.timezone)
        await ctx.stack.enter_async_context(sim)
        ctx.sims.append(sim)
        ctx.settings.daemon.channels.append(
            ChannelConfig(name=name, url=sim.url, meters=list(addrs), timeout=0.4, retries=1)
        )
    ctx.extras["silent_meter"] = ("tcp-bus-3", "000000000202")  # silent across midnight, then backfilled


async def run_demo(
    settings: Settings, dsn: str, *, console: Console, minutes: float = 60.0, speed: float = 80.0,
    start: datetime | None = None,
) -> DemoContext:
    from headend.daemon import Daemon

    tz = ZoneInfo(settings.timezone)
    if start is None:
        today = datetime.now(tz).date()
        start = datetime(today.year, today.month, today.day, tzinfo=tz) - timedelta(minutes=40)
    settings.daemon = DaemonSettings(
        name="demo", listen="127.0.0.1:0", plans=demo_plans(),
        breaker=BreakerConfig(failure_threshold=2, base_backoff=240.0, max_backoff=600.0),
        clocksync=ClockSyncConfig(max_drift=60.0, max_step=300.0, guard=120.0, recheck_after=120.0,
                                  min_interval=1800.0),
        backfill=BackfillConfig(every=300.0, lookback_days=1, not_before=start),
        leases=LeaseConfig(enabled="off"), kpi_flush=2.0, drain_timeout=5.0,
    )
    async with contextlib.AsyncExitStack() as stack:
        ctx = DemoContext(settings, dsn, wrap_clock(None), console, stack, start=start)
        await _start_buses(ctx, start, speed)
        ctx.clock = wrap_clock(ctx.sims[0].clock)
        for entry in DEMO_SETUP:
            await _load(entry)(ctx)
        daemon = Daemon(settings, dsn=dsn, clock=ctx.clock, name="demo")
        ctx.daemon = daemon
        end = start + timedelta(minutes=minutes)
        ctx.end = end
        script = list(ctx.extras["script"])
        progress = Progress(TextColumn("collecting"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeElapsedColumn(), console=console)
        task_id = progress.add_task("run", total=minutes * 60)
        runner = asyncio.create_task(daemon.run())
        try:
            with Live(Group(progress, _table(ctx)), console=console, refresh_per_second=4, transient=False) as live:
                while (now := ctx.clock.now()) < end:
                    if runner.done():
                        break
                    elapsed = (now - start).total_seconds()
                    while script and elapsed >= minutes * 60 * script[0][0]:
                        # faults come and go: breakers open and close, backfill re-reads the gaps
                        _, meter, fault = script.pop(0)
                        for sim in ctx.sims:
                            if meter in sim.meters:
                                if fault is None:
                                    sim.clear_fault(meter)
                                else:
                                    sim.set_fault(meter, fault)
                    progress.update(task_id, completed=min(elapsed, minutes * 60))
                    live.update(Group(progress, _table(ctx)))
                    await asyncio.sleep(0.25)
                progress.update(task_id, completed=minutes * 60)
                live.update(Group(progress, _table(ctx)))
        finally:
            daemon.stop()
            await runner
        ctx.summary.update(_summary(ctx))
        for entry in DEMO_STAGES:
            t0 = time.monotonic()
            try:
                await _load(entry)(ctx)
            except Exception as exc:
                LOGGER.exception("demo stage %s failed", entry)
                ctx.summary[f"stage {entry}"] = f"failed: {exc}"
            LOGGER.info("demo stage %s took %.1f s", entry, time.monotonic() - t0)
    return ctx


def _summary(ctx: DemoContext) -> dict[str, Any]:
    d = ctx.daemon
    k = d.kpi.totals
    meters = sum(len(c.meters) for c in d.channel_configs.values())
    return {
        "buses": len(d.channel_configs),
        "meters": meters,
        "simulated time": f"{ctx.start:%Y-%m-%d %H:%M} .. {ctx.end:%H:%M} ({ctx.settings.timezone})",
        "scheduled reads due": k.due,
        "read in their window": k.ok,
        "success rate": f"{100 * k.ok / k.due:.1f} %" if k.due else "n/a",
        "readings stored": d.sink.submitted,
        "backfilled values (补采)": k.backfilled,
        "clock syncs (broadcast)": len(d.clocks.syncs),
        "meters with clock flagged": len(d.clocks.flagged),
        "meters failing now": sum(len(c.breaker.open_keys()) for c in d.channels.values()),
    }
