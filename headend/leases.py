"""Channel leases in PostgreSQL: several daemons share a fleet, no bus is polled by two.

A daemon polls a channel only while it holds an unexpired lease on it. It renews its
leases every ``renew`` seconds; a lease it cannot renew is given up locally *before* it
can expire in the database (local deadline = start of the last successful renewal +
ttl - renew), so a daemon cut off from the database stops polling before anyone else may
start. A dead daemon's leases expire after ``ttl`` and the others take its channels.
Acquisition only takes channels that are free or expired, so a returning daemon never
fights for channels another one holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

__all__ = ["LeaseManager"]

LOGGER = logging.getLogger(__name__)


class LeaseManager:
    def __init__(
        self,
        dsn: str,
        owner: str,
        *,
        ttl: float,
        renew: float,
        endpoint: str | None = None,
        max_channels: int | None = None,
        on_acquire: Callable[[str], None],
        on_lose: Callable[[str], None],
    ) -> None:
        self.dsn = dsn
        self.owner = owner
        self.ttl = ttl
        self.renew = renew
        self.endpoint = endpoint
        self.max_channels = max_channels
        self.on_acquire = on_acquire
        self.on_lose = on_lose
        self.wanted: set[str] = set()
        self.held: set[str] = set()
        self._deadline = 0.0  # monotonic: held leases are surely ours until then
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def want(self, channels: Iterable[str]) -> None:
        self.wanted = set(channels)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
        return self._conn

    async def _log(self, cur: psycopg.AsyncCursor[Any], channels: Iterable[str], event: str) -> None:
        rows = [(c, self.owner, event) for c in channels]
        if rows:
            await cur.executemany(
                "INSERT INTO channel_lease_log (channel, owner, event) VALUES (%s, %s, %s)", rows
            )

    async def step(self) -> None:
        """One renew-and-acquire round (the loop calls this every ``renew`` seconds)."""
        t0 = time.monotonic()
        try:
            conn = await self._connection()
            async with conn.cursor() as cur:
                kept: set[str] = set()
                if self.held:
                    await cur.execute(
                        """UPDATE channel_leases SET expires_at = now() + make_interval(secs => %s),
                               renewed_at = now(), endpoint = %s
                           WHERE channel = ANY(%s) AND owner = %s RETURNING channel""",
                        (self.ttl, self.endpoint, sorted(self.held), self.owner),
                    )
                    kept = {r[0] for r in await cur.fetchall()}
                lost = self.held - kept - (self.held - self.wanted)
                for ch in sorted(self.held - self.wanted):  # no longer configured: release
                    await cur.execute("DELETE FROM channel_leases WHERE channel = %s AND owner = %s",
                                      (ch, self.owner))
                    await self._log(cur, [ch], "released")
                    self.held.discard(ch)
                    self.on_lose(ch)
                for ch in sorted(lost):
                    LOGGER.warning("lease on channel %s was lost", ch, extra={"channel": ch})
                    self.held.discard(ch)
                    self.on_lose(ch)
                await self._log(cur, lost, "lost")
                self._deadline = t0 + self.ttl - self.renew
                await self._acquire(cur)
        except (psycopg.Error, OSError) as exc:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            if self.held and time.monotonic() >= self._deadline:
                LOGGER.error("cannot renew channel leases (%s): giving up %d channels", exc, len(self.held))
                for ch in sorted(self.held):
                    self.on_lose(ch)
                self.held.clear()
            else:
                LOGGER.warning("lease renewal failed (%s); retrying", exc)

    async def _acquire(self, cur: psycopg.AsyncCursor[Any]) -> None:
        free = sorted(self.wanted - self.held)
        if not free:
            return
        limit = self.max_channels if self.max_channels is not None else len(self.wanted)
        await cur.execute(
            "SELECT count(DISTINCT owner) FROM channel_leases WHERE expires_at > now() AND owner <> %s",
            (self.owner,),
        )
        row = await cur.fetchone()
        others = int(row[0]) if row else 0
        fair = math.ceil(len(self.wanted) / (others + 1))
        room = min(limit, fair) - len(self.held)
        if room <= 0:
            return
        await cur.execute(
            """INSERT INTO channel_leases AS l (channel, owner, endpoint, expires_at)
               SELECT c, %(owner)s, %(endpoint)s, now() + make_interval(secs => %(ttl)s)
               FROM unnest(%(channels)s::text[]) AS c
               ON CONFLICT (channel) DO UPDATE
                   SET owner = EXCLUDED.owner, endpoint = EXCLUDED.endpoint, acquired_at = now(),
                       renewed_at = now(), expires_at = EXCLUDED.expires_at
                   WHERE l.expires_at < now() OR l.owner = EXCLUDED.owner
               RETURNING channel""",
            {"owner": self.owner, "endpoint": self.endpoint, "ttl": self.ttl, "channels": free[: room * 4]},
        )
        got = sorted(r[0] for r in await cur.fetchall())
        # Taken more than our share in one go (several were free): give the excess back at once.
        excess = got[room:]
        got = got[:room]
        if excess:
            await cur.execute("DELETE FROM channel_leases WHERE channel = ANY(%s) AND owner = %s",
                              (excess, self.owner))
        await self._log(cur, got, "acquired")
        for ch in got:
            self.held.add(ch)
            LOGGER.info("acquired lease on channel %s", ch, extra={"channel": ch})
            self.on_acquire(ch)

    def valid(self) -> bool:
        return time.monotonic() < self._deadline

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.renew)

    async def release_all(self) -> None:
        if not self.held:
            return
        try:
            conn = await self._connection()
            async with conn.cursor() as cur:
                await cur.execute("DELETE FROM channel_leases WHERE channel = ANY(%s) AND owner = %s",
                                  (sorted(self.held), self.owner))
                await self._log(cur, sorted(self.held), "released")
        except (psycopg.Error, OSError) as exc:
            LOGGER.warning("could not release leases (%s); they expire in %.0f s", exc, self.ttl)
        self.held.clear()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
