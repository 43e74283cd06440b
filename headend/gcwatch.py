"""Garbage-collection pauses of the daemon process, for /metrics and the log.

A full collection walks every live object; at fleet scale that is a stall of every bus at once, so
the daemon records how long each collection took (``gc.callbacks``, a few microseconds each).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

LOGGER = logging.getLogger(__name__)

__all__ = ["GcWatch"]


class GcWatch:
    def __init__(self, log_above: float = 0.05) -> None:
        self.log_above = log_above
        self.seconds = [0.0, 0.0, 0.0]  # total pause per generation
        self.counts = [0, 0, 0]
        self.worst = 0.0
        self._t0 = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._t0
        gen = int(info.get("generation", 2))
        self.seconds[gen] += took
        self.counts[gen] += 1
        self.worst = max(self.worst, took)
        if took >= self.log_above:
            LOGGER.info("gc: generation %d collection took %.3f s (%d collected)", gen, took,
                        int(info.get("collected", 0)))
