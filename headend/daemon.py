"""The collection daemon: channels, scheduler, backfill, clock sync, KPIs, leases, HTTP.

``Daemon(settings).run()`` (``headend run``) starts, in one asyncio TaskGroup: the HTTP
endpoint (/health, /metrics, /read), the lease loop (which starts and stops channel
workers as leases are won and lost), the scheduler, the backfill sweeper, the KPI/flag
writer and the ingest sink. ``stop()`` (SIGTERM) drains: no new jobs, the request in
flight on each bus finishes, queued readings are handed to the ingestor and flushed,
KPIs written, leases released, then ``run()`` returns.

Extension points for other channel kinds and features:

- protocol clients come from :data:`protocols.factory.CLIENTS` (Modbus, MQTT request/response);
- ``[daemon] plugins = ["pkg.module"]``: each module's ``async def run(daemon)`` runs in the
  task group (e.g. an MQTT subscriber feeding ``await daemon.sink.put(readings)``);
- :attr:`Daemon.listeners` receive every finished job (VEE on arrival, work orders).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import importlib
import json
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import psycopg

from headend import ipc
from headend.backfill import INTERVAL_QUANTITY, Backfiller
from headend.channels import Channel, ChannelState, Job, JobKind, MeterInfo, Outcome, ResultListener
from headend.clocksync import ClockManager
from headend.fleetconfig import ChannelConfig
from headend.gcwatch import GcWatch
from headend.health import HttpServer, json_response
from headend.kpi import KpiRecorder
from headend.leases import LeaseManager
from headend.scheduler import Scheduler
from headend.settings import Settings
from headend.timebase import Clock, WallClock
from mdm.journal import ReadingJournal
from protocols.arbitration import BreakerPolicy, Priority
from protocols.client import MeterClient
from protocols.errors import ConfigError, HeadendError
from protocols.reading import Reading

__all__ = ["Daemon", "IngestSink", "Ingestor"]

LOGGER = logging.getLogger(__name__)
# a stall this long holds up every bus at once: worth a log line with its time
LAG_LOG_ABOVE = 0.1


class Ingestor(Protocol):
    """What the daemon needs of :class:`mdm.ingest.Ingestor`."""

    async def submit(self, readings: Sequence[Reading]) -> Any: ...


class IngestSink:
    """Bus workers hand readings here; one task passes them to the ingestor in batches.

    Bounded: when the ingestor is slow (database back-pressure), ``put`` waits, which
    slows the buses rather than growing memory.
    """

    def __init__(self, ingestor: Ingestor, *, batch: int = 50_000, high_water: int = 200_000,
                 journal: ReadingJournal | None = None) -> None:
        self.ingestor = ingestor
        self.batch = batch
        self.high_water = high_water
        # every reading is journalled before it is buffered, so a kill -9 loses none of the buffer
        self.journal = journal
        # (readings still to be made durable, journal segments holding them), oldest first
        self._marks: deque[tuple[int, list[Path]]] = deque()
        self._buf: list[Reading] = []
        self._have = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.submitted = 0
        self.failures = 0

    def pending(self) -> int:
        return len(self._buf)

    async def put(self, readings: Sequence[Reading]) -> None:
        while len(self._buf) >= self.high_water:
            self._room.clear()
            await self._room.wait()
        if self.journal is not None:
            self.journal.append(readings)
        self._buf.extend(readings)
        self._have.set()

    async def _submit_some(self) -> bool:
        if not self._buf:
            return False
        if self.journal is not None:
            segments = self.journal.checkpoint()
            if segments:  # everything journalled so far is in the buffer now
                self._marks.append((len(self._buf), segments))
        chunk = self._buf[: self.batch]
        try:
            await self.ingestor.submit(chunk)
        except Exception:  # the ingestor spools on DB errors; anything else: retry later
            self.failures += 1
            LOGGER.exception("ingest submit failed; %d readings kept for retry", len(self._buf))
            await asyncio.sleep(1.0)
            return False
        del self._buf[: len(chunk)]
        self.submitted += len(chunk)
        if self._marks:
            self._retire(len(chunk))
        if len(self._buf) < self.high_water:
            self._room.set()
        return True

    def _retire(self, durable: int) -> None:
        """``durable`` readings from the front of the buffer are in the store: drop covered segments."""
        marks = deque((left - durable, segs) for left, segs in self._marks)
        while marks and marks[0][0] <= 0:
            assert self.journal is not None
            self.journal.retire(marks.popleft()[1])
        self._marks = marks

    async def run(self) -> None:
        while True:
            await self._have.wait()
            self._have.clear()
            await asyncio.sleep(0.2)  # let a batch build up
            while await self._submit_some():
                pass

    async def drain(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while self._buf and time.monotonic() < deadline:
            if not await self._submit_some():
                await asyncio.sleep(0.2)
        for name in ("flush", "drain"):
            fn = getattr(self.ingestor, name, None)
            if fn is not None:
                await fn()
                break


class _Rate:
    """Events per second over a sliding minute."""

    def __init__(self) -> None:
        self._t: collections.deque[float] = collections.deque()

    def tick(self) -> None:
        self._t.append(time.monotonic())

    def per_second(self) -> float:
        now = time.monotonic()
        while self._t and self._t[0] < now - 60:
            self._t.popleft()
        if not self._t:
            return 0.0
        span = max(1.0, min(60.0, now - self._t[0]))
        return len(self._t) / span


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Daemon(ResultListener):
    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str | None = None,
        ingestor: Ingestor | None = None,
        clock: Clock | None = None,
        client_factory: Callable[[ChannelConfig, ZoneInfo], MeterClient] | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.daemon
        self.name = name or self.cfg.name or _default_name()
        self.clock = clock or WallClock()
        try:
            self.default_tz = ZoneInfo(settings.timezone)
        except (ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError subclass on some versions
            raise ConfigError(f"timezone: unknown time zone {settings.timezone!r}") from None
        except KeyError:
            raise ConfigError(f"timezone: unknown time zone {settings.timezone!r}") from None
        self.dsn = dsn
        self._ingestor = ingestor
        self._journal: ReadingJournal | None = None
        self._client_factory = client_factory
        self.channel_configs: dict[str, ChannelConfig] = {}
        self.meter_infos: dict[str, list[MeterInfo]] = {}
        self.channels: dict[str, Channel] = {}
        self._channel_tasks: dict[str, asyncio.Task[None]] = {}
        self.kpi = KpiRecorder()
        self.scheduler = Scheduler(self.clock, self.cfg.plans)
        self.backfiller = Backfiller(self.cfg.backfill, self.cfg.plans)
        self.clocks = ClockManager(self.cfg.clocksync, self.clock)
        self.rate = _Rate()
        self.listeners: list[Callable[[Channel, Job, Outcome, Sequence[Reading]], None]] = []
        self.http: HttpServer | None = None
        self.leases: LeaseManager | None = None
        self.registration: ipc.Registration | None = None
        self.sink: IngestSink = IngestSink(_NullIngestor())
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.started_at = time.monotonic()
        self.loop_lag = 0.0  # worst event-loop lag over the last minute, seconds
        self.gc_watch = GcWatch()
        self._registry_dirty = False
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._db_lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._backfill_now: set[tuple[str, str]] = set()
        self._dirty: dict[tuple[str, str], datetime] = {}  # (channel, meter) -> last failed history read
        self._backfill_wake = asyncio.Event()
        self.breaker_policy = BreakerPolicy(
            failure_threshold=self.cfg.breaker.failure_threshold,
            base_backoff=self.cfg.breaker.base_backoff,
            max_backoff=self.cfg.breaker.max_backoff,
        )

    # -- configuration -------------------------------------------------------------------
    def _meters_of(self, cfg: ChannelConfig) -> list[MeterInfo]:
        ch_tz = cfg.timezone or self.settings.timezone
        return [
            MeterInfo(m.address, m.group or cfg.group, ZoneInfo(m.timezone or ch_tz))
            for m in cfg.meter_configs()
        ]

    async def load_fleet(self) -> None:
        configs: list[ChannelConfig] = []
        if self.cfg.meters_from in ("config", "both"):
            configs.extend(c for c in self.cfg.channels if c.enabled)
        if self.cfg.meters_from in ("database", "both"):
            from headend.fleetdb import load_channels

            have = {c.name for c in configs}
            async with self._db_lock:
                db = await self._conn()
                configs.extend(c for c in await load_channels(db) if c.name not in have)
        if not configs:
            raise ConfigError(
                "no channels to poll: add daemon.channels entries to the config, or channels and meters to the database"
            )
        for c in configs:
            self.channel_configs[c.name] = c
            self.meter_infos[c.name] = self._meters_of(c)

    # -- database ------------------------------------------------------------------------
    async def _conn(self) -> psycopg.AsyncConnection[Any]:
        if self.dsn is None:
            raise ConfigError("no database")
        if self._db is None or self._db.closed:
            self._db = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=5)
        return self._db

    async def _with_db(self, what: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[Any]]) -> Any:
        async with self._db_lock:
            try:
                return await fn(await self._conn())
            except (psycopg.Error, OSError) as exc:
                LOGGER.warning("%s: database error: %s", what, exc)
                if self._db is not None:
                    await self._db.close()
                    self._db = None
                return None

    def spool_size(self) -> int:
        ing = self.sink.ingestor
        stats = getattr(ing, "spool_stats", None)
        if callable(stats):
            st = stats()
            return int(getattr(st, "bytes", 0)) if st is not None else 0
        for name in ("spool_bytes", "spool_size"):
            v = getattr(ing, name, None)
            if v is not None:
                try:
                    return int(v() if callable(v) else v)
                except (TypeError, ValueError, OSError):
                    return 0
        return 0

    def success_ratio(self) -> float:
        t = self.kpi.totals
        return t.ok / t.due if t.due else 1.0

    # -- channels ------------------------------------------------------------------------
    def start_channel(self, name: str) -> None:
        if name in self.channels or self._tg is None or self.stopping.is_set():
            return
        cfg = self.channel_configs[name]
        ch = Channel(
            cfg, self.meter_infos[name], clock=self.clock, sink=self.sink, listener=self,
            breaker=self.breaker_policy, source=f"{cfg.protocol}@{self.name}",
            client_factory=self._client_factory, default_tz=self.default_tz,
        )
        self.channels[name] = ch
        self._channel_tasks[name] = self._tg.create_task(ch.run(), name=f"channel {name}")
        self.scheduler.add_channel(ch)
        self._backfill_now.add((name, "*"))
        self._backfill_wake.set()
        self._registry_dirty = True  # written by the lag loop: once per batch of lease changes
        LOGGER.info("polling channel %s (%d meters)", name, len(ch.meters), extra={"channel": name})

    def stop_channel(self, name: str) -> None:
        ch = self.channels.pop(name, None)
        self.scheduler.remove_channel(name)
        if ch is not None:
            ch.stop()
            ch.drop_queued()
        self._channel_tasks.pop(name, None)
        self._registry_dirty = True

    def _register(self) -> None:
        if self.registration is not None:
            try:
                self.registration.write({n: c.cfg.url for n, c in self.channels.items()})
            except OSError as exc:
                LOGGER.warning("cannot write daemon registration: %s", exc)

    # -- results (ResultListener) --------------------------------------------------------
    def job_done(self, channel: Channel, job: Job, outcome: Outcome, readings: Sequence[Reading]) -> None:
        self.rate.tick()
        ok = outcome is Outcome.OK
        if outcome in _MISSED and job.kind in (JobKind.PROFILE, JobKind.DAILY, JobKind.SETTLEMENT):
            self._dirty[(channel.name, job.meter)] = self.clock.now()  # a gap to backfill
        if job.backfill:
            if ok and readings:
                self._count_backfill(channel, job, readings)
        elif job.slot is not None and job.plan in self.scheduler.plans:
            self.kpi.scheduled(channel.local_day(job.meter, job.slot), job.meter, job.plan, channel.name, ok)
        if ok and job.kind is JobKind.CLOCK and readings:
            r = readings[0]
            self.clocks.observe(channel, job.meter, r.value, r.ts)
        for fn in self.listeners:
            fn(channel, job, outcome, readings)

    def _count_backfill(self, channel: Channel, job: Job, readings: Sequence[Reading]) -> None:
        if job.kind is JobKind.PROFILE:
            stamps = {r.ts for r in readings if r.quantity == INTERVAL_QUANTITY}
            for ts in stamps:
                self.kpi.backfilled(channel.local_day(job.meter, ts), job.meter, job.plan, channel.name)
        elif job.kind in (JobKind.DAILY, JobKind.SETTLEMENT) and job.start is not None:
            # the daily (monthly) plan's slot is the midnight the freeze (settlement) was taken: the day it is due
            self.kpi.backfilled(channel.local_day(job.meter, job.start), job.meter, job.plan, channel.name)

    def meter_recovered(self, channel: Channel, meter: str) -> None:
        self._backfill_now.add((channel.name, meter))
        self._backfill_wake.set()

    # -- on-demand ---------------------------------------------------------------------
    async def read_items(self, channel: str, meter: str, items: Sequence[str],
                         priority: Priority = Priority.ON_DEMAND) -> list[dict[str, Any]]:
        ch = self.channels.get(channel)
        if ch is None or ch.state is ChannelState.STOPPED:
            raise ConfigError(f"channel {channel} is not polled by this daemon")

        async def run(client: MeterClient) -> list[dict[str, Any]]:
            return await ipc.read_items_on_client(client, meter, items, priority)

        result: list[dict[str, Any]] = await ch.call(meter, run, priority)
        return result

    # -- HTTP ----------------------------------------------------------------------------
    async def _health(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, str, bytes]:
        up = sum(1 for c in self.channels.values() if c.state is ChannelState.UP)
        status = "stopping" if self.stopping.is_set() else ("ok" if self.ready.is_set() else "starting")
        return json_response(200 if status == "ok" else 503, {
            "status": status, "daemon": self.name, "channels": len(self.channels), "channels_up": up,
            "meters": sum(len(c.meters) for c in self.channels.values()),
            "queued": sum(c.queue_depth() for c in self.channels.values()),
            "reads_per_second": round(self.rate.per_second(), 2), "success_ratio": round(self.success_ratio(), 5),
            "ingest_pending": self.sink.pending(), "spool_bytes": self.spool_size(),
            "uptime_s": round(time.monotonic() - self.started_at, 1), "now": self.clock.now().isoformat(),
        })

    async def _metrics(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, str, bytes]:
        from headend.metrics import render

        return 200, "text/plain; version=0.0.4; charset=utf-8", render(self)

    async def _read(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str, bytes]:
        if method != "POST":
            return json_response(405, {"error": {"type": "ConfigError", "message": "POST a JSON body"}})
        try:
            req = json.loads(body)
            rows = await self.read_items(str(req["channel"]), str(req["meter"]), [str(i) for i in req["items"]])
        except HeadendError as exc:
            return json_response(200, {"daemon": self.name, "error": ipc.error_payload(exc)})
        except (ValueError, KeyError, TypeError) as exc:
            return json_response(400, {"error": {"type": "ConfigError", "message": f"bad request: {exc}"}})
        return json_response(200, {"daemon": self.name, "items": rows})

    # -- background loops ----------------------------------------------------------------
    async def _backfill_loop(self) -> None:
        every = self.cfg.backfill.every
        next_sweep = self.clock.now() + timedelta(seconds=min(every, 120))
        next_full = self.clock.now() + timedelta(seconds=max(every, 86400.0))  # channel start did one
        while True:
            try:
                async with asyncio.timeout(min(5.0, self.clock.real_seconds(every))):
                    await self._backfill_wake.wait()
            except TimeoutError:
                pass
            self._backfill_wake.clear()
            now = self.clock.now()
            todo = set(self._backfill_now)
            self._backfill_now.clear()
            if now >= next_full:
                # a full sweep now and then; between them only meters whose reads failed
                todo |= {(n, "*") for n in self.channels}
                next_full = now + timedelta(seconds=max(every, 86400.0))
            if now >= next_sweep:
                todo |= set(self._dirty)
                next_sweep = now + timedelta(seconds=every)
                horizon = timedelta(seconds=every + 4 * self.cfg.backfill.interval + 3600)
                for key, t in list(self._dirty.items()):
                    if now - t > horizon:  # its gaps have had their chance in several sweeps
                        del self._dirty[key]
            by_channel: dict[str, set[str]] = {}
            for name, meter in todo:
                by_channel.setdefault(name, set()).add(meter)
            for name, meters in sorted(by_channel.items()):
                ch = self.channels.get(name)
                if ch is None or self.dsn is None:
                    continue
                which = None if "*" in meters else sorted(meters)
                await self._with_db("backfill", self._sweeper(ch, which))

    def _sweeper(
        self, ch: Channel, meters: list[str] | None
    ) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[int]]:
        async def sweep(db: psycopg.AsyncConnection[Any]) -> int:
            return await self.backfiller.sweep(db, ch, self.clock.now(), meters)

        return sweep

    async def _flush_state(self) -> None:
        if self.dsn is None:
            return

        batch = self.kpi.take()
        if batch:
            assert self.dsn is not None
            try:
                await asyncio.to_thread(self.kpi.write_sync, self.dsn, batch)
            except (psycopg.Error, OSError) as exc:
                self.kpi.restore(batch)
                LOGGER.warning("kpi: database error: %s", exc)

        async def write(db: psycopg.AsyncConnection[Any]) -> None:
            flags, self.clocks.pending_flags = self.clocks.pending_flags, []
            syncs, self.clocks.syncs_unsaved = self.clocks.syncs_unsaved, []
            try:
                async with db.cursor() as cur:
                    for f in flags:
                        if f.raised:
                            await cur.execute(
                                """INSERT INTO meter_flags (meter, flag, detail) VALUES (%s, %s, %s)
                                   ON CONFLICT (meter, flag) DO UPDATE SET raised_at = now(),
                                   detail = EXCLUDED.detail, cleared_at = NULL""",
                                (f.meter, f.flag, json.dumps(f.detail)))
                        else:
                            await cur.execute(
                                "UPDATE meter_flags SET cleared_at = now() WHERE meter = %s AND flag = %s",
                                (f.meter, f.flag))
                    for ch, at, n, worst in syncs:
                        await cur.execute(
                            "INSERT INTO clock_syncs (channel, owner, at, meters, max_offset) VALUES (%s,%s,%s,%s,%s)",
                            (ch, self.name, at, n, worst))
                await db.commit()
            except psycopg.Error:
                self.clocks.pending_flags[:0] = flags
                self.clocks.syncs_unsaved[:0] = syncs
                raise

        await self._with_db("kpi", write)

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.kpi_flush)
            await self._flush_state()

    async def _lag_loop(self) -> None:
        """Event-loop lag (how late a 0.25 s sleep wakes up): a stalled loop delays every bus."""
        window: collections.deque[tuple[float, float]] = collections.deque()
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.25)
            now = time.monotonic()
            lag = now - t0 - 0.25
            window.append((now, lag))
            if lag >= LAG_LOG_ABOVE:
                LOGGER.info("event loop stalled %.3f s", lag)
            while window and window[0][0] < now - 60:
                window.popleft()
            self.loop_lag = max(v for _, v in window)
            if self._registry_dirty:
                self._registry_dirty = False
                self._register()

    async def _lease_or_take_all(self) -> None:
        names = sorted(self.channel_configs)
        if self.leases is None:
            for n in names:
                self.start_channel(n)
            self._mark_ready()
            return
        self.leases.want(names)
        # Ready (and registered for `headend read`/`load`) only once the first lease round has
        # started our channels: a client arriving earlier would open the port as a second master.
        await self.leases.step()
        self._mark_ready()
        await asyncio.sleep(self.leases.renew)
        await self.leases.run()

    def _mark_ready(self) -> None:
        self._registry_dirty = False
        self._register()
        self.ready.set()

    # -- life cycle ----------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM via :func:`run_daemon`); then drain and return."""
        if self.dsn is None and self._ingestor is None:
            from headend.storeglue import resolve_dsn

            self.dsn = await asyncio.to_thread(resolve_dsn, self.settings)
        try:
            await self.load_fleet()  # configuration errors surface before anything is opened
        except BaseException:
            if self._db is not None:
                await self._db.close()
            raise
        if self._ingestor is None:
            from headend.storeglue import open_ingestor

            assert self.dsn is not None
            self._ingestor = await open_ingestor(self.settings, self.dsn)
            self._journal = await self._replay_journal(self._ingestor)
        self.sink = IngestSink(self._ingestor, journal=self._journal)
        if self.cfg.listen:
            host, _, port = self.cfg.listen.rpartition(":")
            self.http = HttpServer(host or "127.0.0.1", int(port or 0))
            self.http.route("/health", self._health)
            self.http.route("/metrics", self._metrics)
            self.http.route("/read", self._read)
            await self.http.start()
            self.registration = ipc.Registration(self.settings.data_dir, self.name, self.http.url)
            LOGGER.info("daemon %s listening on %s", self.name, self.http.url)
        lc = self.cfg.leases
        if self.dsn is not None and lc.enabled != "off":
            self.leases = LeaseManager(
                self.dsn, self.name, ttl=lc.ttl, renew=lc.renew, endpoint=self.http.url if self.http else None,
                max_channels=self.cfg.max_channels, on_acquire=self.start_channel, on_lose=self.stop_channel,
            )
        elif lc.enabled == "on":
            raise ConfigError("leases.enabled = 'on' needs a database")
        plugins = [importlib.import_module(m) for m in self.cfg.plugins]
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                background = [
                    tg.create_task(self.sink.run(), name="ingest sink"),
                    tg.create_task(self.scheduler.run(), name="scheduler"),
                    tg.create_task(self._backfill_loop(), name="backfill"),
                    tg.create_task(self._state_loop(), name="kpi"),
                    tg.create_task(self._lease_or_take_all(), name="leases"),
                    tg.create_task(self._lag_loop(), name="lag"),
                ]
                background += [tg.create_task(p.run(self), name=f"plugin {p.__name__}") for p in plugins]
                LOGGER.warning("daemon %s started: %d channels configured, event loop %s", self.name,
                               len(self.channel_configs), type(asyncio.get_running_loop()).__module__)
                await self.stopping.wait()
                await self._shutdown(background)
        finally:
            self._tg = None
            if self.registration is not None:
                self.registration.remove()
            if self.http is not None:
                await self.http.aclose()
            if self.leases is not None:
                await self.leases.aclose()
            if self._db is not None:
                await self._db.close()
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            closer = getattr(self._ingestor, "aclose", None) or getattr(self._ingestor, "close", None)
            if closer is not None:
                res = closer()
                if asyncio.iscoroutine(res):
                    await res

    async def _replay_journal(self, ingestor: Ingestor) -> ReadingJournal:
        """Open the reading journal and store what a run killed before its readings were durable left."""
        journal = ReadingJournal(self.settings.data_dir / "journal")
        n = 0
        pending: list[Reading] = []
        for record in journal.leftovers():  # one record per job: submitted in large chunks, not one by one
            pending += record
            if len(pending) >= 20_000:
                await ingestor.submit(pending)  # idempotent: readings that did reach the store change nothing
                n, pending = n + len(pending), []
        if pending:
            await ingestor.submit(pending)
            n += len(pending)
        journal.retire_leftovers()
        if n or journal.damage:
            LOGGER.warning("journal: %d readings from an unfinished run stored again, %d damaged stretch(es) kept",
                           n, len(journal.damage))
        return journal

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        LOGGER.warning("daemon %s stopping: draining %d channels", self.name, len(self.channels))
        for t in background:
            if t.get_name() in ("scheduler", "backfill", "leases") or t.get_name().startswith("plugin"):
                t.cancel()
        for ch in self.channels.values():
            ch.stop()
        tasks = list(self._channel_tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.cfg.drain_timeout)
            for t in pending:
                t.cancel()
        await self.sink.drain()
        await self._flush_state()
        if self.leases is not None:
            await self.leases.release_all()
        for t in background:
            t.cancel()
        LOGGER.warning("daemon %s stopped: %d readings handed to the store", self.name, self.sink.submitted)


# outcomes that leave a gap in the store (a meter that answered "no such data" leaves none to fill)
_MISSED = frozenset({Outcome.NO_RESPONSE, Outcome.BAD_REPLY, Outcome.BREAKER_OPEN, Outcome.EXPIRED,
                     Outcome.CHANNEL_DOWN})


class _NullIngestor:
    async def submit(self, readings: Sequence[Reading]) -> None:
        raise HeadendError("no ingestor")


def restamp(readings: Sequence[Reading], source: str) -> list[Reading]:
    return [replace(r, source=source) for r in readings]


async def run_daemon(settings: Settings, **kwargs: Any) -> Daemon:
    """Run a daemon until SIGTERM/SIGINT, then drain and return it (``headend run``)."""
    import signal

    d = Daemon(settings, **kwargs)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, d.stop)
    tuner = loop.create_task(_tune_runtime_when_ready(d), name="runtime tuning")
    try:
        await d.run()
    finally:
        tuner.cancel()
        d.gc_watch.remove()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return d


# Young-generation threshold while polling (CPython's default is 700). A fleet cycle allocates
# objects (frames, readings, futures) at tens of thousands a second and most die young by
# reference counting; with the default every reading buffered for ingest was traversed again and
# again by gen-1 collections of 25-75 ms each (measured at 20,000 meters), stalling every bus.
GC_THRESHOLDS = (50_000, 20, 100)
SWITCH_INTERVAL = 0.001


async def _tune_runtime_when_ready(d: Daemon) -> None:
    """Once the fleet is loaded and the first channels run, move what start-up built (configuration,
    meters, schedules, modules) out of the collector's reach and collect young objects less often.
    Process-wide, so only for ``headend run`` (a daemon embedded in another program is left alone)."""
    await d.ready.wait()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    d.gc_watch.install()
    # The ingest and KPI threads run Python (row building) while the buses wait on this loop: hand the
    # GIL back to the loop within 1 ms instead of CPython's 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL)
    LOGGER.info("gc: %d start-up objects frozen, thresholds %s; GIL switch interval %g s",
                gc.get_freeze_count(), GC_THRESHOLDS, SWITCH_INTERVAL)


__all__ += ["run_daemon"]
