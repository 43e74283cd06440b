"""The daemon's doorway to the meter data store (mdm): DSN resolution and the ingestor."""

from __future__ import annotations

from typing import Any

from headend.settings import Settings

__all__ = ["migrate", "open_ingestor", "resolve_dsn"]


def resolve_dsn(settings: Settings) -> str:
    """The configured DSN, or the private embedded server's (started on demand)."""
    from mdm.db import resolve_dsn as _resolve

    return str(_resolve(settings))


def migrate(dsn: str, settings: Settings | None = None) -> None:
    """Apply pending migrations (the store's and every area's) to ``dsn``."""
    from mdm import migrate as m

    if settings is None:
        m.migrate(dsn)
    else:
        m.migrate(dsn, timescaledb=settings.database.timescaledb, timezone=settings.timezone)


async def open_ingestor(settings: Settings, dsn: str) -> Any:
    """An :class:`mdm.ingest.Ingestor` with its durable spool under the data directory."""
    from mdm.ingest import Ingestor

    ing = Ingestor(dsn, spool_dir=settings.data_dir / "spool")
    opener = getattr(ing, "open", None) or getattr(ing, "start", None)
    if opener is not None:
        await opener()
    return ing
