"""Simulated time: runs ``speed`` times faster than the wall clock and can be jumped forward."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["SimClock"]


class SimClock:
    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("SimClock start must be timezone-aware")
        self.start = start or datetime.now(UTC)
        self.speed = float(speed)
        self._t0 = time.monotonic()
        self._jump = 0.0

    def elapsed(self) -> float:
        """Simulated seconds since ``start``."""
        return (time.monotonic() - self._t0) * self.speed + self._jump

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed())

    def advance(self, seconds: float) -> None:
        self._jump += seconds

    def set(self, when: datetime) -> None:
        """Make ``now()`` return ``when`` (later calls continue from there)."""
        self._jump += (when - self.now()).total_seconds()

    def wall_seconds(self, sim_seconds: float) -> float:
        """Wall-clock seconds that ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.speed if self.speed > 0 else float("inf")
