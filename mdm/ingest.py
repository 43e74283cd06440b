"""Lossless ingest of readings from any protocol into the meter data store.

Write path: ``Reading`` objects -> bounded in-memory batches -> binary COPY into a per-connection
temporary staging table -> ``INSERT ... ON CONFLICT DO NOTHING`` into ``register_reads`` or
``interval_reads`` (by quantity kind) -> commit. Only when some staged keys already existed does
a second statement run, which keeps every different value:

* same (meter, quantity, ts) and the same value as the current one or an earlier one: nothing
  changes (replays are idempotent);
* a different value: it becomes the current row (``version`` + 1) and the previous current row
  is copied to ``superseded_reads`` - a raw value is never silently overwritten.

``await submit(readings)`` returns once every accepted reading is durable: committed in the
database, or appended and fsynced to the local spool (:mod:`mdm.spool`) while the database is
unreachable. Spooled batches are replayed in order when the database answers again; while a
spool is pending, new batches are spooled too so arrival order is kept. Lost connections are
retried (reconnect with back-off) for ``retry_for`` seconds before a batch is spooled.

Back-pressure: at most ``max_buffered`` readings are buffered or in flight; ``submit`` waits for
room, so producers slow down to the database's pace instead of growing memory.

Unknown meters (address not in ``meters``): by default they are auto-registered with status
``discovered`` in the same transaction as their readings (nothing is lost; ``headend meters list
--status discovered`` shows them for review) and counted in ``stats.discovered``. With
``unknown_meters="reject"`` their readings are refused at submit time and returned in
:class:`SubmitResult.rejected`. Readings with a quantity code outside
:mod:`protocols.quantities` are always rejected that way.

Work runs in ``workers`` threads, each with its own synchronous psycopg connection (binary COPY
is fastest there, and the server-side upsert of one batch overlaps the encoding of the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import operator
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from mdm.db import StoreError
from mdm.spool import Spool, SpoolDamage, SpoolStats, decode_rows
from protocols.quantities import QUANTITIES, Kind
from protocols.reading import Reading

__all__ = ["IngestStats", "Ingestor", "Rejected", "SubmitResult", "reading_row"]

LOGGER = logging.getLogger(__name__)

_IS_INTERVAL: dict[str, bool] = {q.code: q.kind is Kind.INTERVAL for q in QUANTITIES.values()}
_TYPES = ["text", "text", "timestamptz", "float8", "text", "int4", "text"]
_COLS = "meter, quantity, ts, value, unit, quality, source"
_KEY = operator.attrgetter("meter", "quantity", "ts")  # the reads tables' primary key
_TABLES = (("register_reads", "mdm_stage_reg", "register"), ("interval_reads", "mdm_stage_int", "interval"))


def reading_row(r: Reading) -> tuple[str, str, datetime, float, str, int, str]:
    """The staged row of a reading (COPY column order)."""
    return (r.meter, r.quantity, r.ts, r.value, r.unit, int(r.quality), r.source)


@dataclass(frozen=True, slots=True)
class Rejected:
    reading: Reading
    reason: str


@dataclass(frozen=True, slots=True)
class SubmitResult:
    accepted: int
    rejected: list[Rejected]


@dataclass
class IngestStats:
    submitted: int = 0  # readings accepted by submit()
    inserted: int = 0  # new (meter, quantity, ts) rows
    superseded: int = 0  # keys whose current value was replaced by a different one
    unchanged: int = 0  # replays of a value already stored
    batches: int = 0  # batches committed to the database
    spooled_batches: int = 0
    replayed_batches: int = 0
    retries: int = 0  # batch attempts repeated after a lost connection
    discovered: int = 0  # unknown meters auto-registered
    rejected: int = 0
    spool_damage: list[SpoolDamage] = field(default_factory=list)


class _Batch:
    __slots__ = ("done", "intervals", "registers", "replay")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.registers: list[Reading] = []
        self.intervals: list[Reading] = []
        self.done: asyncio.Future[None] = loop.create_future()
        self.replay = False

    def __len__(self) -> int:
        return len(self.registers) + len(self.intervals)


class _DatabaseDown(Exception):
    pass


_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS {stage} (
    meter text COLLATE "C", quantity text COLLATE "C", ts timestamptz, value float8,
    unit text, quality int4, source text
) ON COMMIT DELETE ROWS"""

_PLAIN = "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"
_CONFLICT_STREAK = 8
_FAST = "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT (meter, quantity, ts) DO NOTHING"

# Keys that already existed (or repeat within the batch): keep each value not seen before as a new version.
_SLOW = """
WITH s AS (
    SELECT DISTINCT ON (meter, quantity, ts, value) meter, quantity, ts, value, unit, quality, source, ctid AS pos
      FROM {stage} ORDER BY meter, quantity, ts, value, ctid
), n AS (
    SELECT s.*, r.value AS cur_value, r.unit AS cur_unit, r.quality AS cur_quality, r.source AS cur_source,
           r.received_at AS cur_received_at, r.version AS cur_version
      FROM s JOIN {table} r ON r.meter = s.meter AND r.quantity = s.quantity AND r.ts = s.ts
     WHERE s.value IS DISTINCT FROM r.value
       AND NOT EXISTS (SELECT 1 FROM superseded_reads h
                        WHERE h.kind = {kind} AND h.meter = s.meter AND h.quantity = s.quantity
                          AND h.ts = s.ts AND h.value = s.value)
), ranked AS (
    SELECT n.*, row_number() OVER (PARTITION BY meter, quantity, ts ORDER BY pos) AS rn,
           count(*) OVER (PARTITION BY meter, quantity, ts) AS k
      FROM n
), hist AS (
    INSERT INTO superseded_reads (kind, meter, quantity, ts, version, value, unit, quality, source, received_at)
    SELECT {kind}, meter, quantity, ts, cur_version, cur_value, cur_unit, cur_quality, cur_source, cur_received_at
      FROM ranked WHERE rn = 1
    UNION ALL
    SELECT {kind}, meter, quantity, ts, cur_version + rn::int, value, unit, quality, source, now()
      FROM ranked WHERE rn < k
)
UPDATE {table} r SET value = x.value, unit = x.unit, quality = x.quality, source = x.source,
       received_at = now(), version = x.cur_version + x.k::int
  FROM ranked x
 WHERE x.rn = x.k AND r.meter = x.meter AND r.quantity = x.quantity AND r.ts = x.ts"""


def _has_nul(r: Reading) -> bool:
    return any("\x00" in s for s in (r.meter, r.quantity, r.unit, r.source))


class Ingestor:
    """Durable, idempotent, back-pressured ingest of :class:`Reading` objects.

    ``async with Ingestor(dsn, spool_dir=...) as ing: await ing.submit(readings)``
    (or ``await ing.open()`` ... ``await ing.aclose()``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        spool_dir: Path | str | None = None,
        batch_size: int = 20_000,
        max_buffered: int = 200_000,
        workers: int = 2,
        retry_for: float = 3.0,
        unknown_meters: Literal["register", "reject"] = "register",
        replay_interval: float = 1.0,
        fast_path: Literal["copy", "stage"] = "copy",
    ) -> None:
        if unknown_meters not in ("register", "reject"):
            raise ValueError("unknown_meters must be 'register' or 'reject'")
        self.dsn = dsn
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.batch_size = batch_size
        self.max_buffered = max(max_buffered, batch_size)
        self.workers = max(1, workers)
        self.retry_for = retry_for
        self.unknown_meters = unknown_meters
        self.replay_interval = replay_interval
        if fast_path not in ("copy", "stage"):
            raise ValueError("fast_path must be 'copy' or 'stage'")
        self.fast_path = fast_path
        self.stats = IngestStats()
        self.rejected: deque[Rejected] = deque(maxlen=10_000)  # rows refused at write time (poison data)
        self._spool: Spool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tls = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._conns_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._known: set[str] = set()
        self._known_loaded = False
        self._known_at = 0.0
        self._months: set[tuple[str, int]] = set()
        self._conflicts: dict[str, int] = {}
        self._open_batch: _Batch | None = None
        self._queue: deque[_Batch] = deque()
        self._work = asyncio.Event()
        self._space = asyncio.Condition()
        self._buffered = 0
        self._outstanding: set[asyncio.Future[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._replayer: asyncio.Task[None] | None = None
        self._closing = False
        self._opened = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> Ingestor:
        if self._opened:
            return self
        self._loop = asyncio.get_running_loop()
        self._work = asyncio.Event()
        self._space = asyncio.Condition()
        self._executor = ThreadPoolExecutor(self.workers + 1, thread_name_prefix="mdm-ingest")
        if self.spool_dir is not None:
            self._spool = Spool(self.spool_dir)
        try:
            await self._loop.run_in_executor(self._executor, self._load_known)
        except _DatabaseDown as exc:
            if self._spool is None:
                raise StoreError(f"database unreachable and no spool configured: {exc}") from exc
            LOGGER.warning("database unreachable at start (%s): spooling until it answers", exc)
            self._spool.spooling = True
        self._tasks = [asyncio.create_task(self._worker(i), name=f"mdm-ingest-{i}") for i in range(self.workers)]
        self._opened = True
        if self._spool is not None and self._spool.spooling:
            self._start_replayer()
        return self

    async def __aenter__(self) -> Ingestor:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable (database or spool)."""
        self._seal()
        pending = list(self._outstanding)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self, *, drain_timeout: float = 10.0) -> None:
        """Flush, try to drain a pending spool for ``drain_timeout`` seconds, stop, close connections."""
        if not self._opened:
            return
        await self.flush()
        if self._replayer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._replayer), drain_timeout)
        self._closing = True
        self._work.set()
        for t in self._tasks:
            t.cancel()
        if self._replayer is not None:
            self._replayer.cancel()
        await asyncio.gather(*self._tasks, *([self._replayer] if self._replayer else []), return_exceptions=True)
        if self._executor is not None:
            self._executor.submit(self._close_conns).result()
            self._executor.shutdown(wait=True)
        if self._spool is not None:
            if self._spool.segments():
                LOGGER.warning("closing with %d spool segment(s) pending: replayed at next start",
                               len(self._spool.segments()))
            self._spool.close()
        self._opened = False

    async def wait_spool_drained(self, wait_s: float | None = None) -> bool:
        """Wait until a pending spool has been replayed (True) or ``wait_s`` seconds pass (False)."""
        if self._spool is None or not self._spool.spooling:
            return True
        self._start_replayer()
        assert self._replayer is not None
        try:
            async with asyncio.timeout(wait_s):
                await asyncio.shield(self._replayer)
        except TimeoutError:
            return False
        return not self._spool.spooling

    def spool_stats(self) -> SpoolStats | None:
        """Segments, bytes and mode of the spool (None without a spool): cheap, for /metrics."""
        return self._spool.stats() if self._spool is not None else None

    @property
    def buffered(self) -> int:
        """Readings accepted but not yet durable."""
        return self._buffered

    # -- submit ----------------------------------------------------------------------------------

    async def submit(self, readings: Iterable[Reading]) -> SubmitResult:
        """Queue readings and return once the accepted ones are durable (database or spool)."""
        if not self._opened or self._closing:
            raise StoreError("ingestor is not open")
        rejected: list[Rejected] = []
        waits: set[asyncio.Future[None]] = set()
        accepted = 0
        is_interval = _IS_INTERVAL
        # while the meter list could not be read (database down at start) nothing is rejected as unknown
        reject_unknown = self.unknown_meters == "reject" and self._known_loaded
        known = self._known
        chunk: list[Reading] = []
        it = iter(readings)
        while True:
            chunk = [r for _, r in zip(range(self.batch_size), it, strict=False)]
            if not chunk:
                break
            qset = {r.quantity for r in chunk}
            kinds = {is_interval.get(q) for q in qset}
            mset = {r.meter for r in chunk} if (reject_unknown or "" in {r.meter[:1] for r in chunk}) else None
            if reject_unknown and mset and not mset <= known:
                await self._refresh_known()  # meters added since: re-read the list (at most every 30 s)
            # no await between taking the open batch and filling it: a worker must not take it half-filled
            async with self._space:
                await self._space.wait_for(lambda: self._buffered < self.max_buffered)
            batch = self._current_batch()
            regs, ints = batch.registers, batch.intervals
            n0 = len(batch)
            if None not in kinds and mset is None:
                # fast path (the usual chunk): every quantity known, no empty address, nothing to reject
                if kinds == {True}:
                    ints.extend(chunk)
                elif kinds == {False}:
                    regs.extend(chunk)
                else:
                    ints.extend([r for r in chunk if is_interval[r.quantity]])
                    regs.extend([r for r in chunk if not is_interval[r.quantity]])
            else:
                for r in chunk:
                    iv = is_interval.get(r.quantity)
                    if iv is None:
                        rejected.append(Rejected(r, f"unknown quantity code {r.quantity!r}"))
                        continue
                    if not r.meter:
                        rejected.append(Rejected(r, "empty meter address"))
                        continue
                    if reject_unknown and r.meter not in known:
                        rejected.append(Rejected(r, f"unknown meter {r.meter!r}"))
                        continue
                    (ints if iv else regs).append(r)
            added = len(batch) - n0
            accepted += added
            self._buffered += added
            waits.add(batch.done)
            if len(batch) >= self.batch_size:
                self._seal()
            self._work.set()
        self.stats.submitted += accepted
        self.stats.rejected += len(rejected)
        for rj in rejected[:5]:
            LOGGER.warning("reading rejected: %s", rj.reason)
        if waits:
            results = await asyncio.gather(*waits, return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
        return SubmitResult(accepted, rejected)

    def _current_batch(self) -> _Batch:
        if self._open_batch is None:
            assert self._loop is not None
            self._open_batch = _Batch(self._loop)
            self._outstanding.add(self._open_batch.done)
            self._open_batch.done.add_done_callback(self._outstanding.discard)
        return self._open_batch

    def _seal(self) -> None:
        b = self._open_batch
        if b is not None:
            self._open_batch = None
            if len(b):
                self._queue.append(b)
                self._work.set()
            else:
                self._outstanding.discard(b.done)
                b.done.set_result(None)

    async def _next_batch(self) -> _Batch | None:
        while not self._closing:
            if self._queue:
                return self._queue.popleft()
            if self._open_batch is not None and len(self._open_batch):
                self._seal()  # a worker is idle: take what is there (group commit)
                continue
            self._work.clear()
            await self._work.wait()
        return None

    async def _worker(self, i: int) -> None:
        assert self._loop is not None and self._executor is not None
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            try:
                await self._loop.run_in_executor(self._executor, self._durable, batch)
            except Exception as exc:  # a batch that can be neither committed nor spooled
                LOGGER.exception("ingest batch of %d readings failed", len(batch))
                if not batch.done.done():
                    batch.done.set_exception(StoreError(f"ingest failed: {exc}"))
            else:
                if not batch.done.done():
                    batch.done.set_result(None)
            finally:
                async with self._space:
                    self._buffered -= len(batch)
                    self._space.notify_all()
            if self._spool is not None and self._spool.spooling:
                self._start_replayer()

    # -- the write path (worker threads) ---------------------------------------------------------

    def _durable(self, batch: _Batch) -> None:
        """Commit ``batch`` to the database, or spool it; return only once it is durable."""
        spool = self._spool
        if spool is not None and spool.append_if_spooling(batch.registers, batch.intervals):
            with self._stats_lock:
                self.stats.spooled_batches += 1
            return
        try:
            self._write_with_retry(batch.registers, batch.intervals)
        except _DatabaseDown as exc:
            if spool is None:
                raise StoreError(f"database unreachable and no spool configured: {exc}") from exc
            spool.append(batch.registers, batch.intervals)
            with self._stats_lock:
                self.stats.spooled_batches += 1
            LOGGER.warning("database unreachable (%s): batch of %d readings spooled", exc, len(batch))

    def _write_with_retry(
        self, registers: list[Reading], intervals: list[Reading], *, deadline: float | None = None
    ) -> None:
        end = time.monotonic() + (self.retry_for if deadline is None else deadline)
        delay = 0.05
        while True:
            try:
                self._write(registers, intervals)
                return
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop_conn()
                err: Exception = exc
            except (psycopg.errors.UniqueViolation, psycopg.errors.SerializationFailure,
                    psycopg.errors.DeadlockDetected, psycopg.errors.DuplicateTable,
                    psycopg.errors.LockNotAvailable) as exc:
                # two writers raced on the same key's next version: redo, it is idempotent
                err = exc
            except psycopg.DataError as exc:
                registers, intervals = self._drop_poison(registers, intervals, exc)
                continue
            with self._stats_lock:
                self.stats.retries += 1
            if time.monotonic() >= end:
                raise _DatabaseDown(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _drop_poison(
        self, registers: list[Reading], intervals: list[Reading], exc: Exception
    ) -> tuple[list[Reading], list[Reading]]:
        """Reject the rows PostgreSQL cannot store (NUL bytes, out-of-range times) and keep the rest."""
        self._drop_conn()
        bad = [r for r in (*registers, *intervals) if _has_nul(r) or not math.isfinite(r.ts.timestamp())]
        if not bad:
            raise StoreError(f"batch refused by the database: {exc}") from exc
        badset = {id(r) for r in bad}
        for r in bad:
            self.rejected.append(Rejected(r, f"refused by the database: {str(exc).strip()}"))
        with self._stats_lock:
            self.stats.rejected += len(bad)
        LOGGER.error("%d reading(s) refused by the database and reported: %s", len(bad), exc)
        return [r for r in registers if id(r) not in badset], [r for r in intervals if id(r) not in badset]

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._tls, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=5, application_name="headend-ingest")
        except psycopg.OperationalError:
            raise
        with conn.transaction():
            for _, stage, _ in _TABLES:
                conn.execute(sql.SQL(_STAGE_DDL).format(stage=sql.Identifier(stage)))
        self._tls.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _drop_conn(self) -> None:
        conn: psycopg.Connection[Any] | None = getattr(self._tls, "conn", None)
        self._tls.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _close_conns(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()

    async def _refresh_known(self) -> None:
        if time.monotonic() - self._known_at < 30 or self._loop is None:
            return
        with contextlib.suppress(_DatabaseDown):
            await self._loop.run_in_executor(self._executor, self._load_known)

    def _load_known(self) -> None:
        self._known_at = time.monotonic()
        try:
            conn = self._conn()
            with conn.transaction():
                self._known.update(r[0] for r in conn.execute("SELECT address FROM meters"))
            self._known_loaded = True
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop_conn()
            raise _DatabaseDown(str(exc).strip()) from exc

    def _ensure_partitions(self, conn: psycopg.Connection[Any], table: str, rows: list[Reading]) -> None:
        """Create the monthly partitions this batch needs, in their own short transaction.

        The months are taken from a sample of the batch (first, last and every n-th row); a row of
        a month missed here lands in the DEFAULT partition and is moved when that month's
        partition is created, so the sample only affects speed, never correctness.
        """
        step = max(1, len(rows) // 64)
        sample = [r.ts for r in rows[::step]]
        sample.append(rows[-1].ts)
        need = {(table, t.astimezone(UTC).year * 12 + t.astimezone(UTC).month - 1) for t in sample}
        if need <= self._months:
            return
        lo, hi = min(sample), max(sample)
        with conn.transaction():
            conn.execute("SELECT mdm_ensure_partitions(%s, %s, %s)", (table, lo, hi))
        self._months |= {(table, y * 12 + m - 1) for y, m in _month_span(lo.astimezone(UTC), hi.astimezone(UTC))}

    def _write(self, registers: list[Reading], intervals: list[Reading]) -> None:
        conn = self._conn()
        for (table, _stage, _kind), rows in zip(_TABLES, (registers, intervals), strict=True):
            if rows:
                self._ensure_partitions(conn, table, rows)
        inserted = superseded = unchanged = 0
        new_meters: set[str] = set()
        discovered = 0
        if self.unknown_meters == "register":
            new_meters = {r.meter for r in registers} | {r.meter for r in intervals}
            new_meters -= self._known
        with conn.transaction():
            if new_meters:
                with conn.cursor() as cur:
                    protos = _protocols_of(new_meters, registers, intervals)
                    addrs = sorted(new_meters)
                    cur.execute(
                        "INSERT INTO meters (address, status, protocol, notes) "
                        "SELECT a, 'discovered', p, 'auto-registered by ingest' FROM unnest(%s::text[], %s::text[]) "
                        "AS u(a, p) ON CONFLICT (address) DO NOTHING",
                        (addrs, [protos.get(a, "unknown") for a in addrs]),
                    )
                    discovered = max(cur.rowcount, 0)
            for (table, stage, kind), rows in zip(_TABLES, (registers, intervals), strict=True):
                if not rows:
                    continue
                ids = {"table": sql.Identifier(table), "stage": sql.Identifier(stage), "cols": sql.SQL(_COLS)}
                with conn.cursor() as cur:
                    n_new = -1
                    streak = self._conflicts.get(table, 0)
                    if self.fast_path == "copy" and streak <= 0:
                        # usual case, all keys new: COPY straight into the reads table inside a savepoint;
                        # any existing key fails it as a whole (primary key) -> staging path below
                        try:
                            with conn.transaction():
                                self._copy(cur, sql.SQL("COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)"), ids,
                                           rows)
                            n_new = len(rows)
                        except psycopg.errors.UniqueViolation:
                            self._conflicts[table] = streak = _CONFLICT_STREAK
                    if n_new < 0:
                        self._copy(cur, sql.SQL("COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)"), ids, rows)
                        if self.fast_path == "stage" and streak <= 0:
                            try:
                                with conn.transaction():
                                    cur.execute(sql.SQL(_PLAIN).format(**ids))
                                    n_new = cur.rowcount
                            except psycopg.errors.UniqueViolation:
                                self._conflicts[table] = streak = _CONFLICT_STREAK
                        elif streak > 0:
                            self._conflicts[table] = streak - 1
                    if n_new < 0:
                        cur.execute(sql.SQL(_FAST).format(**ids))
                        n_new = cur.rowcount
                    inserted += n_new
                    if n_new < len(rows):
                        cur.execute(sql.SQL(_SLOW).format(kind=sql.Literal(kind), **ids))
                        superseded += max(cur.rowcount, 0)
                        unchanged += len(rows) - n_new - max(cur.rowcount, 0)
        if new_meters:
            if discovered:
                LOGGER.info("auto-registered %d unknown meter(s) as 'discovered'", discovered)
            self._known |= new_meters
        with self._stats_lock:
            self.stats.inserted += inserted
            self.stats.superseded += superseded
            self.stats.unchanged += unchanged
            self.stats.batches += 1
            self.stats.discovered += discovered

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], stmt: sql.SQL, ids: dict[str, Any], rows: list[Reading]) -> None:
        # In primary-key order: the btree inserts then walk the leaf pages in order (+7-15 % measured,
        # docs/bench/mdm.md). The sort is stable, so repeats of one key keep their arrival order,
        # which the versioning statement relies on.
        rows = sorted(rows, key=_KEY)
        with cur.copy(stmt.format(**ids)) as cp:
            cp.set_types(_TYPES)
            write = cp.write_row
            for r in rows:  # transient tuples: freed at once, so no garbage-collector pressure
                write((r.meter, r.quantity, r.ts, r.value, r.unit, r.quality, r.source))

    # -- spool replay ----------------------------------------------------------------------------

    def _start_replayer(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.create_task(self._replay_loop(), name="mdm-ingest-replay")

    async def _replay_loop(self) -> None:
        assert self._loop is not None and self._executor is not None and self._spool is not None
        spool = self._spool
        while True:
            try:
                finished = await self._loop.run_in_executor(self._executor, self._replay_once)
            except _DatabaseDown as exc:
                LOGGER.debug("spool replay waiting for the database: %s", exc)
                finished = False
            if finished:
                LOGGER.warning("spool replayed: back to direct writes")
                return
            if not spool.segments() and spool.finish_if_empty():
                return
            await asyncio.sleep(self.replay_interval)

    def _replay_once(self) -> bool:
        """Replay every closed segment in order; True when the spool is empty and spooling is off."""
        spool = self._spool
        assert spool is not None
        self._probe()
        while True:
            segments = spool.rotate()
            if not segments:
                return spool.finish_if_empty()
            for seg in segments:
                for payload, damage in spool.read(seg):
                    if damage is not None:
                        with self._stats_lock:
                            if all((d.segment, d.offset) != (damage.segment, damage.offset)
                                   for d in self.stats.spool_damage):
                                self.stats.spool_damage.append(damage)
                        continue
                    regs, ints = decode_rows(payload)
                    self._write_with_retry(regs, ints, deadline=self.retry_for)
                    with self._stats_lock:
                        self.stats.replayed_batches += 1
                spool.remove(seg)
            if spool.finish_if_empty():
                return True

    def _probe(self) -> None:
        try:
            conn = self._conn()
            with conn.transaction():
                conn.execute("SELECT 1")
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop_conn()
            raise _DatabaseDown(str(exc).strip()) from exc


def _month_span(lo: datetime, hi: datetime) -> list[tuple[int, int]]:
    out = []
    y, m = lo.year, lo.month
    while (y, m) <= (hi.year, hi.month):
        out.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _protocols_of(meters: set[str], registers: Sequence[Reading], intervals: Sequence[Reading]) -> dict[str, str]:
    """meter -> protocol guessed from the source of its first reading ("dlt645", "modbus:..." -> "modbus")."""
    out: dict[str, str] = {}
    for rows in (registers, intervals):
        for r in rows:
            if r.meter in meters and r.meter not in out:
                out[r.meter] = r.source.split(":", 1)[0] or "unknown"
    return out
