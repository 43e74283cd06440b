"""Bus arbitration shared by every half-duplex line: a priority lock and a circuit breaker.

A half-duplex bus (RS-485, a DTU in transparent mode) can carry one request at a
time. Control commands and operator reads must jump ahead of bulk collection, so
waiters are served by priority and then in arrival order. A meter that does not
answer costs its timeout a few times, then the breaker skips it until its back-off
expires (then one trial request is let through).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum

from protocols.errors import CircuitOpenError

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker", "Priority", "PriorityLock"]

LOGGER = logging.getLogger(__name__)


class Priority(IntEnum):
    """Lower value goes first."""

    CONTROL = 0
    ON_DEMAND = 1
    BACKFILL = 2
    SCHEDULED = 3


class PriorityLock:
    """An asyncio lock granted by (priority, arrival order); cancellation-safe."""

    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def locked(self) -> bool:
        return self._locked

    def queue_depth(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    def try_acquire(self) -> bool:
        """Take the lock if it is free and nobody waits (no await: the uncontended polling case)."""
        if not self._locked and (not self._waiters or self.queue_depth() == 0):
            self._locked = True
            return True
        return False

    async def acquire(self, priority: int = Priority.SCHEDULED) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted and cancelled in the same tick: pass the lock on.
                self.release()
            raise

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("release of an unlocked PriorityLock")
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # hand over: stays locked
                return
        self._locked = False

    @asynccontextmanager
    async def hold(self, priority: int = Priority.SCHEDULED) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 3  # consecutive failures that open the breaker
    base_backoff: float = 60.0  # seconds the first time it opens
    max_backoff: float = 3600.0
    factor: float = 2.0


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    opened: int = 0  # how many times it opened in a row (drives the back-off)
    retry_at: float = 0.0
    open: bool = False


class CircuitBreaker:
    """Per-device failure counter with exponential back-off.

    ``failure()`` returns True when the call opened the breaker and ``success()``
    returns True when the device recovered from an open breaker, so callers can log
    exactly once on each transition.
    """

    def __init__(self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def state(self, key: str) -> BreakerState:
        e = self._entries.get(key)
        if e is None or not e.open:
            return BreakerState.CLOSED
        return BreakerState.HALF_OPEN if self._clock() >= e.retry_at else BreakerState.OPEN

    def allow(self, key: str) -> bool:
        return self.state(key) is not BreakerState.OPEN

    def check(self, key: str) -> None:
        """Raise CircuitOpenError while the key's breaker is OPEN (same test as ``state``, inlined:
        it runs before every request)."""
        e = self._entries.get(key)
        if e is not None and e.open and self._clock() < e.retry_at:
            raise CircuitOpenError(key, e.retry_at)

    def success(self, key: str) -> bool:
        e = self._entries.pop(key, None)
        return e is not None and e.open

    def failure(self, key: str) -> bool:
        e = self._entries.setdefault(key, _Entry())
        e.failures += 1
        if e.open:
            # A half-open trial failed: back off further.
            e.opened += 1
            e.retry_at = self._clock() + self._backoff(e.opened)
            return False
        if e.failures >= self.policy.failure_threshold:
            e.open = True
            e.opened = 1
            e.retry_at = self._clock() + self._backoff(1)
            return True
        return False

    def _backoff(self, n: int) -> float:
        p = self.policy
        return float(min(p.max_backoff, p.base_backoff * p.factor ** (n - 1)))

    def open_keys(self) -> list[str]:
        return [k for k, e in self._entries.items() if e.open]

    def counts(self) -> dict[str, int]:
        out = {s.name.lower(): 0 for s in BreakerState}
        for k in self._entries:
            out[self.state(k).name.lower()] += 1
        return out
