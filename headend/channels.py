"""One worker per channel: a priority queue, one request in flight, breaker, reconnect.

A half-duplex bus carries one exchange at a time, so each channel runs one worker task
that takes the most urgent job from its queue (control > on-demand > backfill >
scheduled, then by due time) and runs it to the end before taking the next. All channels
run in parallel. A meter that stops answering opens its circuit breaker and is logged
once; when it answers again it is logged once more and the daemon is told (backfill).
A channel whose connection fails is marked down and reopened with back-off; its jobs wait.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from headend import meterops
from headend.fleetconfig import ChannelConfig
from headend.timebase import Clock
from protocols.arbitration import BreakerPolicy, CircuitBreaker, Priority
from protocols.client import MeterClient
from protocols.errors import DeviceError, HeadendError, NoResponseError, ProtocolError, TransportError
from protocols.factory import open_client
from protocols.reading import Reading

__all__ = [
    "Channel",
    "ChannelState",
    "Job",
    "JobKind",
    "MeterInfo",
    "Outcome",
    "ReadingSink",
    "ResultListener",
    "open_channel_client",
]

LOGGER = logging.getLogger(__name__)


class JobKind(StrEnum):
    READ = "read"
    PROFILE = "profile"
    DAILY = "daily"
    SETTLEMENT = "settlement"  # monthly billing values frozen by the meter at its settlement day
    CLOCK = "clock"
    CALL = "call"  # an arbitrary coroutine on the client (on-demand, control, clock sync)


class ChannelState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    STOPPED = "stopped"


class Outcome(StrEnum):
    OK = "ok"
    NO_RESPONSE = "no_response"  # timeout / silent meter
    BAD_REPLY = "bad_reply"  # garbled frames
    DEVICE_ERROR = "device_error"  # the meter answered with an error (alive)
    BREAKER_OPEN = "breaker_open"  # skipped: the meter's breaker is open
    EXPIRED = "expired"  # the read window closed before the bus got to it
    UNSUPPORTED = "unsupported"
    CHANNEL_DOWN = "channel_down"


@dataclass(frozen=True, slots=True)
class MeterInfo:
    address: str
    group: str
    tz: ZoneInfo


@dataclass(slots=True)
class Job:
    priority: Priority
    meter: str
    kind: JobKind
    plan: str = ""
    quantities: tuple[str, ...] = ()
    start: datetime | None = None  # profile: first interval; scheduled: the slot
    count: int = 1  # profile: number of intervals
    n: int = 1  # daily frozen: Nth previous
    slot: datetime | None = None  # scheduled slot (KPI / de-duplication key)
    due: datetime | None = None
    expires: datetime | None = None
    backfill: bool = False
    call: Callable[[MeterClient], Awaitable[Any]] | None = None
    future: asyncio.Future[Any] | None = None
    requeued: int = 0

    @property
    def key(self) -> tuple[str, str, datetime | None, int]:
        return (self.meter, self.plan, self.slot or self.start, self.n)


class ReadingSink(Protocol):
    async def put(self, readings: Sequence[Reading]) -> None: ...


class ResultListener(Protocol):
    def job_done(self, channel: Channel, job: Job, outcome: Outcome, readings: Sequence[Reading]) -> None: ...

    def meter_recovered(self, channel: Channel, meter: str) -> None: ...


# The daemon runs its own per-meter breaker (log once, metrics): turn the client's off.
_PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {"dlt645": {"breaker": False}, "modbus": {"breaker": False}}


def open_channel_client(cfg: ChannelConfig, tz: ZoneInfo) -> MeterClient:
    """Open the protocol client, passing only the options its ``from_url`` accepts."""
    from protocols.factory import CLIENTS

    wanted: dict[str, Any] = {"timeout": cfg.timeout, "retries": cfg.retries, "tz": tz,
                              **_PROTOCOL_DEFAULTS.get(cfg.protocol, {}), **cfg.options}
    try:
        module_name, class_name = CLIENTS[cfg.protocol]
        import importlib

        cls = getattr(importlib.import_module(module_name), class_name)
        params = inspect.signature(cls.from_url).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            wanted = {k: v for k, v in wanted.items() if k in params or k in cfg.options}
    except (KeyError, ImportError, AttributeError, ValueError, TypeError):
        pass
    return open_client(cfg.protocol, cfg.url, **wanted)


class Channel:
    """A bus and its worker. ``client_factory`` lets tests and plug-ins supply clients."""

    def __init__(
        self,
        cfg: ChannelConfig,
        meters: Sequence[MeterInfo],
        *,
        clock: Clock,
        sink: ReadingSink,
        listener: ResultListener,
        breaker: BreakerPolicy,
        source: str,
        client_factory: Callable[[ChannelConfig, ZoneInfo], MeterClient] | None = None,
        default_tz: ZoneInfo,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.tz = ZoneInfo(cfg.timezone) if cfg.timezone else default_tz
        self.meters: dict[str, MeterInfo] = {m.address: m for m in meters}
        self.clock = clock
        self.sink = sink
        self.listener = listener
        self.source = source
        self.breaker = CircuitBreaker(breaker, clock=lambda: clock.now().timestamp())
        self._factory = client_factory or open_channel_client
        self.client: MeterClient | None = None
        self.state = ChannelState.CONNECTING
        self._heap: list[tuple[int, float, int, Job]] = []
        self._keys: set[tuple[str, str, datetime | None, int]] = set()
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._stopping = False
        self.in_flight: Job | None = None
        self.busy_seconds = 0.0  # real seconds spent on the wire (utilisation)
        self.counts: dict[str, int] = {o.value: 0 for o in Outcome}
        self.requests = 0
        self._down_logged = False

    # -- queue ---------------------------------------------------------------------------
    def queue_depth(self) -> int:
        return len(self._heap)

    def queue_depths(self) -> dict[str, int]:
        out = {p.name.lower(): 0 for p in Priority}
        for prio, _, _, _ in self._heap:
            out[Priority(prio).name.lower()] += 1
        return out

    def has(self, job: Job) -> bool:
        return job.key in self._keys

    def submit(self, job: Job) -> bool:
        """Queue a job; False if stopping, the meter is not on this bus or it is already queued."""
        if self._stopping or (job.meter not in self.meters and job.kind is not JobKind.CALL):
            return False
        if job.kind is not JobKind.CALL:
            if job.key in self._keys:
                return False
            self._keys.add(job.key)
        due = job.due.timestamp() if job.due else 0.0
        heapq.heappush(self._heap, (int(job.priority), due, next(self._seq), job))
        self._wake.set()
        return True

    async def call(
        self, meter: str, fn: Callable[[MeterClient], Awaitable[Any]], priority: Priority = Priority.ON_DEMAND
    ) -> Any:
        """Run ``fn(client)`` on this bus when its turn comes (on-demand reads, control, sync)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.submit(Job(priority, meter, JobKind.CALL, plan="call", call=fn, future=fut)):
            raise TransportError(f"channel {self.name} is stopping")
        return await fut

    def stop(self) -> None:
        """Take no new jobs; the worker finishes the request in flight and exits."""
        self._stopping = True
        self._wake.set()

    def drop_queued(self) -> list[Job]:
        dropped = [j for _, _, _, j in self._heap]
        self._heap.clear()
        self._keys.clear()
        for j in dropped:
            if j.future is not None and not j.future.done():
                j.future.set_exception(TransportError(f"channel {self.name} stopped"))
        return dropped

    # -- worker --------------------------------------------------------------------------
    async def run(self) -> None:
        """The worker loop; returns after :meth:`stop` once the request in flight is done."""
        backoff = 1.0
        try:
            while not self._stopping:
                if self.client is None:
                    try:
                        client = self._factory(self.cfg, self.tz)
                        opener = getattr(client, "open", None)
                        if opener is not None:
                            try:
                                await opener()
                            except (HeadendError, OSError):
                                await client.aclose()
                                raise
                        self.client = client
                        self.state = ChannelState.UP
                        if self._down_logged:
                            LOGGER.warning("channel %s is back up", self.name, extra={"channel": self.name})
                            self._down_logged = False
                        backoff = 1.0
                    except (HeadendError, OSError) as exc:
                        self._channel_down(exc)
                        await self._pause(backoff)
                        backoff = min(backoff * 2, 30.0)
                        continue
                job = self._pop_ready()
                if job is None:
                    await self._wait_for_work()
                    continue
                self.in_flight = job
                try:
                    await self._execute(job)
                finally:
                    self.in_flight = None
                if self.state is ChannelState.DOWN:
                    await self._close_client()
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.drop_queued()
            await self._close_client()
            self.state = ChannelState.STOPPED

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                while not self._stopping:
                    await self._wake.wait()
                    self._wake.clear()
        except TimeoutError:
            pass

    def _pop_ready(self) -> Job | None:
        if not self._heap:
            return None
        now = self.clock.now().timestamp()
        # the most urgent job whose due time has come (scheduled jobs may be queued early)
        _prio, due, _, job = self._heap[0]
        if due <= now:
            heapq.heappop(self._heap)
            self._keys.discard(job.key)
            return job
        return None

    async def _wait_for_work(self) -> None:
        self._wake.clear()
        timeout = 1.0
        if self._heap:
            due = self._heap[0][1]
            timeout = min(1.0, self.clock.real_seconds(due - self.clock.now().timestamp()))
        try:
            async with asyncio.timeout(max(timeout, 0.001)):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _close_client(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                await asyncio.shield(client.aclose())
            except (HeadendError, OSError):
                pass

    def _channel_down(self, exc: BaseException) -> None:
        self.state = ChannelState.DOWN
        if not self._down_logged:
            LOGGER.warning("channel %s is down: %s", self.name, exc, extra={"channel": self.name})
            self._down_logged = True

    def _job_timeout(self, job: Job) -> float:
        per = self.cfg.timeout * (self.cfg.retries + 1) + 0.5
        return per * max(2, len(job.quantities), job.count + 1)

    async def _execute(self, job: Job) -> None:
        now = self.clock.now()
        if job.expires is not None and now >= job.expires:
            self._finish(job, Outcome.EXPIRED, [], None)
            return
        if job.priority >= Priority.BACKFILL and not self.breaker.allow(job.meter):
            self._finish(job, Outcome.BREAKER_OPEN, [], None)
            return
        client = self.client
        assert client is not None
        t0 = time.monotonic()
        self.requests += 1
        readings: list[Reading] = []
        result: Any = None
        try:
            async with asyncio.timeout(self._job_timeout(job)):
                result = await self._perform(client, job)
        except TimeoutError:
            self._meter_failed(job, NoResponseError(f"job timed out on {self.name}"))
            self._finish(job, Outcome.NO_RESPONSE, [], NoResponseError(f"no response from {job.meter}"))
            return
        except NoResponseError as exc:
            self._meter_failed(job, exc)
            self._finish(job, Outcome.NO_RESPONSE, [], exc)
            return
        except DeviceError as exc:
            self._meter_alive(job)
            self._finish(job, Outcome.DEVICE_ERROR, [], exc)
            return
        except meterops.NotSupported as exc:
            self._finish(job, Outcome.UNSUPPORTED, [], exc)
            return
        except ProtocolError as exc:
            self._meter_failed(job, exc)
            self._finish(job, Outcome.BAD_REPLY, [], exc)
            return
        except TransportError as exc:
            self._channel_down(exc)
            if job.requeued < 1 and not self._stopping and job.future is None:
                job.requeued += 1
                self.submit(job)
            else:
                self._finish(job, Outcome.CHANNEL_DOWN, [], exc)
            return
        except HeadendError as exc:
            self._finish(job, Outcome.BAD_REPLY, [], exc)
            return
        finally:
            self.busy_seconds += time.monotonic() - t0
        if isinstance(result, list) and all(isinstance(r, Reading) for r in result):
            src = self.source
            readings = [r if r.source == src else replace(r, source=src) for r in result]
        self._meter_alive(job)
        if readings and job.kind is not JobKind.CALL:
            if job.backfill:
                readings = meterops.mark_backfilled(readings)
            elif job.kind in (JobKind.PROFILE, JobKind.DAILY):
                readings = meterops.unmark_backfilled(readings)  # read on schedule, not recovered later
            await self.sink.put(readings)
        self._finish(job, Outcome.OK, readings, None, result)

    async def _perform(self, client: MeterClient, job: Job) -> Any:
        p = job.priority
        if job.kind is JobKind.READ:
            return await meterops.read_current(client, job.meter, job.quantities, p, self.clock.now(), self.source)
        if job.kind is JobKind.PROFILE:
            assert job.start is not None
            return await meterops.read_load_profile(client, job.meter, job.start, job.count, p)
        if job.kind is JobKind.DAILY:
            return await meterops.read_daily_frozen(client, job.meter, job.n, p)
        if job.kind is JobKind.SETTLEMENT:
            if meterops.can(client, "settlement"):
                return await meterops.read_settlement(client, job.meter, job.n, p)
            if job.backfill:  # registers read now are not the values at a past settlement
                raise meterops.NotSupported(f"{type(client).__name__} keeps no settlement values")
            # a device that keeps no settlement values: its registers now, just after the boundary
            return await meterops.read_current(client, job.meter, job.quantities, p, self.clock.now(), self.source)
        if job.kind is JobKind.CLOCK:
            t0 = self.clock.now()
            meter_time = await meterops.read_clock(client, job.meter, p)
            t1 = self.clock.now()
            mid = t0 + (t1 - t0) / 2
            offset = (meter_time - mid).total_seconds()
            return [Reading(job.meter, "clock.offset", mid, round(offset, 3), "s", source=self.source)]
        assert job.call is not None
        return await job.call(client)

    def _meter_failed(self, job: Job, exc: BaseException) -> None:
        if job.kind is JobKind.CALL and job.meter not in self.meters:
            return
        if self.breaker.failure(job.meter):
            LOGGER.warning(
                "meter %s on %s stopped answering (%s); skipped until its back-off expires",
                job.meter, self.name, exc, extra={"channel": self.name, "meter": job.meter},
            )

    def _meter_alive(self, job: Job) -> None:
        if job.kind is JobKind.CALL and job.meter not in self.meters:
            return
        if self.breaker.success(job.meter):
            LOGGER.warning("meter %s on %s answers again", job.meter, self.name,
                           extra={"channel": self.name, "meter": job.meter})
            self.listener.meter_recovered(self, job.meter)

    def _finish(
        self, job: Job, outcome: Outcome, readings: Sequence[Reading], exc: BaseException | None, result: Any = None
    ) -> None:
        self.counts[outcome.value] += 1
        if job.future is not None and not job.future.done():
            if exc is not None:
                job.future.set_exception(exc)
            elif outcome is Outcome.OK:
                job.future.set_result(result)
            else:
                job.future.set_exception(TransportError(f"{outcome.value} on {self.name}"))
        try:
            self.listener.job_done(self, job, outcome, readings)
        except Exception:  # a listener bug must not kill the bus
            LOGGER.exception("result listener failed on %s", self.name)

    def local_day(self, meter: str, when: datetime) -> date:
        tz = self.meters[meter].tz if meter in self.meters else self.tz
        return when.astimezone(tz).date()

    def slot_expired_by(self, when: datetime) -> timedelta:
        return self.clock.now() - when
