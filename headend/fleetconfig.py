"""The daemon's configuration section (``[daemon]`` in the TOML file): channels, meters, plans.

::

    [daemon]
    name = "collector-1"
    listen = "127.0.0.1:9645"        # health, /metrics and on-demand reads; "" disables

    [[daemon.channels]]
    name = "bus-1"
    url = "tcp://10.0.0.5:4001"
    timezone = "Asia/Shanghai"
    meters = ["000000000001", { address = "000000000002", group = "industrial" }]

    [[daemon.plans]]
    name = "instant"
    kind = "read"
    every = 300
    quantities = ["voltage.a", "current.a"]

Validated at start; every problem is reported with its key path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from headend.configbase import Section as _Section
from headend.configbase import check_zone
from headend.plans import ReadPlan, default_plans

__all__ = [
    "BackfillConfig",
    "BreakerConfig",
    "ChannelConfig",
    "ClockSyncConfig",
    "DaemonSettings",
    "LeaseConfig",
    "MeterConfig",
]


class MeterConfig(_Section):
    address: str
    group: str | None = Field(default=None, description="read-plan group (default: the channel's)")
    timezone: str | None = Field(default=None, description="meter's local zone (default: the channel's)")

    _zone = field_validator("timezone")(check_zone)


class ChannelConfig(_Section):
    name: str
    url: str = Field(description="tcp://host:port or serial:///dev/ttyX?baud=2400&parity=E")
    protocol: str = "dlt645"
    timezone: str | None = Field(default=None, description="zone of the meters' clocks (default: global)")
    group: str = "default"
    meters: list[str | MeterConfig] = Field(default_factory=list)
    timeout: float = Field(default=1.0, gt=0, description="response timeout per request, real seconds")
    retries: int = Field(default=1, ge=0, description="re-sends after a timeout")
    options: dict[str, Any] = Field(default_factory=dict, description="extra options for the protocol client")
    enabled: bool = True

    _zone = field_validator("timezone")(check_zone)

    def meter_configs(self) -> list[MeterConfig]:
        return [MeterConfig(address=m) if isinstance(m, str) else m for m in self.meters]


class BreakerConfig(_Section):
    failure_threshold: int = Field(default=3, ge=1)
    base_backoff: float = Field(default=300.0, gt=0, description="seconds (daemon clock) the first time")
    max_backoff: float = Field(default=3600.0, gt=0)


class ClockSyncConfig(_Section):
    enabled: bool = True
    max_drift: float = Field(default=60.0, gt=0, description="broadcast a sync when a clock is off by more (s)")
    max_step: float = Field(default=300.0, gt=0, description="largest correction one broadcast may make (s)")
    guard: float = Field(default=300.0, ge=0, description="no sync this close to a freeze boundary (s)")
    hourly_freezes: bool = Field(default=True, description="meters freeze hourly: guard every hour, not just 00:00")
    recheck_after: float = Field(default=120.0, gt=0, description="re-read clocks this long after a sync (s)")
    min_interval: float = Field(default=86400.0, ge=0, description="at most one broadcast per bus per this (s)")


class BackfillConfig(_Section):
    enabled: bool = True
    every: float = Field(default=3600.0, gt=0, description="look for gaps of meters whose reads failed this often (s)")
    lookback_days: int = Field(default=3, ge=1, description="how far back to look (<= what meters keep)")
    frozen_depth_days: int = Field(default=62, ge=1, description="daily frozen records a meter keeps")
    profile_depth_days: int = Field(default=10, ge=1, description="days of load profile a meter keeps")
    interval: float = Field(default=900.0, gt=0, description="load-profile interval (s)")
    max_jobs_per_meter: int = Field(default=8, ge=1)
    not_before: datetime | None = Field(default=None, description="ignore gaps before this (commissioning date)")


class LeaseConfig(_Section):
    enabled: Literal["auto", "on", "off"] = Field(
        default="auto", description="channel leases in PostgreSQL ('auto': on when channels come from the database)"
    )
    ttl: float = Field(default=30.0, gt=1, description="lease length, real seconds")
    renew: float = Field(default=10.0, gt=0, description="renew this often, real seconds")

    @model_validator(mode="after")
    def _check(self) -> LeaseConfig:
        if self.renew * 2 >= self.ttl:
            raise ValueError("leases.renew must be less than half of leases.ttl")
        return self


class DaemonSettings(_Section):
    name: str | None = Field(default=None, description="daemon id in leases and logs (default host-pid)")
    listen: str = Field(default="127.0.0.1:0", description="host:port for /health, /metrics, /read; '' = off")
    meters_from: Literal["config", "database", "both"] = "config"
    channels: list[ChannelConfig] = Field(default_factory=list)
    plans: list[ReadPlan] = Field(default_factory=default_plans)
    breaker: BreakerConfig = BreakerConfig()
    clocksync: ClockSyncConfig = ClockSyncConfig()
    backfill: BackfillConfig = BackfillConfig()
    leases: LeaseConfig = LeaseConfig()
    max_channels: int | None = Field(default=None, ge=1, description="take at most this many channel leases")
    drain_timeout: float = Field(default=15.0, gt=0, description="SIGTERM: wait this long for in-flight reads")
    kpi_flush: float = Field(default=5.0, gt=0, description="write KPI counters every this many real seconds")
    plugins: list[str] = Field(default_factory=list, description="modules with `async def run(daemon)` to start")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto", description="`headend run`'s event loop; auto = uvloop if installed (not on Windows)")

    @model_validator(mode="after")
    def _check_unique(self) -> DaemonSettings:
        names = [c.name for c in self.channels]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate channel names: {', '.join(dup)}")
        plans = [p.name for p in self.plans]
        dup = sorted({n for n in plans if plans.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate plan names: {', '.join(dup)}")
        seen: dict[str, str] = {}
        for c in self.channels:
            for m in c.meter_configs():
                if m.address in seen:
                    raise ValueError(f"meter {m.address} is on channels {seen[m.address]} and {c.name}")
                seen[m.address] = c.name
        return self
