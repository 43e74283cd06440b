"""The daemon's time base: the wall clock, or an accelerated simulated clock (demo, tests).

Everything the scheduler decides (slots, windows, freeze boundaries, KPI days) uses
``clock.now()``; timeouts on the wire stay in real seconds. ``ScaledClock`` runs ``speed``
times faster than real time, so ``await clock.sleep(900)`` at speed 60 takes 15 s.
:class:`simulators.clock.SimClock` has the same ``now()``/``speed`` shape and can be wrapped.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ScaledClock", "WallClock", "wrap_clock"]


class _NowSource(Protocol):
    speed: float

    def now(self) -> datetime: ...


class Clock:
    """Interface: ``now()`` (aware, UTC), ``speed`` and ``sleep(sim_seconds)``."""

    speed: float = 1.0

    def now(self) -> datetime:
        raise NotImplementedError

    def real_seconds(self, sim_seconds: float) -> float:
        return max(0.0, sim_seconds) / self.speed if self.speed > 0 else float("inf")

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real_seconds(sim_seconds))

    async def sleep_until(self, when: datetime, *, max_real: float | None = None) -> None:
        """Sleep until simulated ``when`` (or at most ``max_real`` real seconds)."""
        real = self.real_seconds((when - self.now()).total_seconds())
        if max_real is not None:
            real = min(real, max_real)
        await asyncio.sleep(real)


class WallClock(Clock):
    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock(Clock):
    """``start`` + ``speed`` x elapsed real time."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("ScaledClock start must be timezone-aware")
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self.speed = float(speed)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)


class _Wrapped(Clock):
    def __init__(self, source: _NowSource) -> None:
        self._source = source
        self.speed = float(source.speed)

    def now(self) -> datetime:
        return self._source.now().astimezone(UTC)


def wrap_clock(source: _NowSource | Clock | None) -> Clock:
    """Use a simulator's clock (anything with ``now()`` and ``speed``) as the daemon clock."""
    if source is None:
        return WallClock()
    if isinstance(source, Clock):
        return source
    return _Wrapped(source)
