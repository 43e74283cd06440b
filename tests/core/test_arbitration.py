"""Priority lock ordering and cancellation; circuit breaker transitions and back-off."""

from __future__ import annotations

import asyncio

import pytest

from protocols.arbitration import BreakerPolicy, BreakerState, CircuitBreaker, Priority, PriorityLock
from protocols.errors import CircuitOpenError


async def test_priority_lock_serves_by_priority_then_arrival() -> None:
    lock = PriorityLock()
    order: list[str] = []
    await lock.acquire(Priority.SCHEDULED)  # the bus is busy

    async def worker(name: str, prio: Priority) -> None:
        async with lock.hold(prio):
            order.append(name)
            await asyncio.sleep(0)

    tasks = [
        asyncio.create_task(worker("bulk1", Priority.SCHEDULED)),
        asyncio.create_task(worker("backfill", Priority.BACKFILL)),
        asyncio.create_task(worker("bulk2", Priority.SCHEDULED)),
        asyncio.create_task(worker("control", Priority.CONTROL)),
        asyncio.create_task(worker("ondemand", Priority.ON_DEMAND)),
    ]
    await asyncio.sleep(0.01)
    assert lock.queue_depth() == 5
    lock.release()
    await asyncio.gather(*tasks)
    assert order == ["control", "ondemand", "backfill", "bulk1", "bulk2"]
    assert not lock.locked()


async def test_priority_lock_cancelled_waiter_does_not_block_others() -> None:
    lock = PriorityLock()
    await lock.acquire()
    waiter = asyncio.create_task(lock.acquire(Priority.CONTROL))
    other = asyncio.create_task(lock.acquire(Priority.SCHEDULED))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lock.release()
    await asyncio.wait_for(other, 1)
    assert lock.locked()
    lock.release()
    assert not lock.locked()


async def test_priority_lock_release_unlocked_raises() -> None:
    with pytest.raises(RuntimeError):
        PriorityLock().release()


def test_breaker_opens_after_threshold_and_recovers_once() -> None:
    now = [0.0]
    br = CircuitBreaker(BreakerPolicy(failure_threshold=3, base_backoff=10, max_backoff=25), clock=lambda: now[0])
    assert [br.failure("m1"), br.failure("m1")] == [False, False]
    assert br.allow("m1")
    assert br.failure("m1") is True  # opens exactly once
    assert br.state("m1") is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        br.check("m1")
    assert br.allow("m2")  # other meters unaffected
    now[0] = 10.0
    assert br.state("m1") is BreakerState.HALF_OPEN  # one trial allowed
    assert br.failure("m1") is False  # trial failed: not a new "opened" event
    assert br.state("m1") is BreakerState.OPEN
    now[0] = 29.0  # back-off doubled to 20 s from t=10
    assert br.state("m1") is BreakerState.OPEN
    now[0] = 30.0
    assert br.allow("m1")
    assert br.success("m1") is True  # recovered: log once
    assert br.success("m1") is False
    assert br.state("m1") is BreakerState.CLOSED


def test_breaker_backoff_is_capped() -> None:
    now = [0.0]
    br = CircuitBreaker(BreakerPolicy(failure_threshold=1, base_backoff=10, max_backoff=25), clock=lambda: now[0])
    br.failure("m")
    for _ in range(5):
        now[0] += 1000
        br.failure("m")
    now[0] += 24.9
    assert not br.allow("m")
    now[0] += 0.2
    assert br.allow("m")
    assert br.counts()["half_open"] == 1


async def test_priority_lock_try_acquire_only_when_free_and_nobody_waits() -> None:
    lock = PriorityLock()
    assert lock.try_acquire() and lock.locked()
    assert not lock.try_acquire()  # held
    waiter = asyncio.create_task(lock.acquire(Priority.CONTROL))
    await asyncio.sleep(0)
    lock.release()  # handed to the waiter: stays locked
    assert not lock.try_acquire()
    await waiter
    lock.release()
    assert lock.try_acquire()
    lock.release()


def test_breaker_check_raises_exactly_while_open() -> None:
    now = [0.0]
    br = CircuitBreaker(BreakerPolicy(failure_threshold=2, base_backoff=10), clock=lambda: now[0])
    for t, fail in [(0.0, True), (1.0, True), (5.0, False), (9.99, False), (10.0, False), (10.0, True), (29.0, False)]:
        now[0] = t
        if br.state("m") is BreakerState.OPEN:
            with pytest.raises(CircuitOpenError):
                br.check("m")
        else:
            br.check("m")
        if fail:
            br.failure("m")
    assert br.state("m") is BreakerState.OPEN  # the half-open trial at t=10 failed: 20 s more
