"""The daemon's doorway to the meter data store (mdm): DSN resolution and the ingestor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headend.settings import Settings
from protocols.reading import Reading

__all__ = ["InterimIngestor", "migrate", "open_ingestor", "resolve_dsn"]


def resolve_dsn(settings: Settings) -> str:
    """The configured DSN, or the private embedded server's (started on demand)."""
    from mdm.db import resolve_dsn as _resolve

    return str(_resolve(settings))


def migrate(dsn: str) -> None:
    from mdm import migrate as m

    m.migrate(dsn)


class InterimIngestor:
    """Plain INSERTs into the store's read tables; used only while ``mdm.ingest`` is not installed."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def submit(self, readings: Sequence[Reading]) -> None:
        import psycopg

        rows = [(r.meter, r.quantity, r.ts, r.value, r.unit, int(r.quality), r.source) for r in readings]
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn, conn.cursor() as cur:
            for table, pick in (("interval_reads", True), ("register_reads", False)):
                batch = [row for row in rows if row[1].startswith("interval.") is pick]
                if batch:
                    await cur.executemany(
                        f"INSERT INTO {table} (meter, quantity, ts, value, unit, quality, source)"  # fixed names
                        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (meter, quantity, ts) DO NOTHING", batch)
            await conn.commit()


async def open_ingestor(settings: Settings, dsn: str) -> Any:
    """An :class:`mdm.ingest.Ingestor` with its durable spool under the data directory."""
    try:
        from mdm.ingest import Ingestor
    except ImportError:
        return InterimIngestor(dsn)

    ing = Ingestor(dsn, spool_dir=settings.data_dir / "spool")
    opener = getattr(ing, "open", None) or getattr(ing, "start", None)
    if opener is not None:
        await opener()
    return ing
