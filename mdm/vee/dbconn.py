"""Database connections for the VEE, anomaly and work-order commands (blocking psycopg)."""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

import psycopg

from headend.settings import Settings
from protocols.errors import ConfigError, HeadendError

__all__ = ["DatabaseError", "connect", "dsn_for"]

LOGGER = logging.getLogger(__name__)


class DatabaseError(HeadendError):
    """The database is unreachable or refused the request."""


def dsn_for(settings: Settings) -> str:
    """The DSN: the store's resolver (starts the embedded server when none is configured), else the setting."""
    try:
        store_db = importlib.import_module("mdm.db")
        resolve = getattr(store_db, "resolve_dsn", None)
    except ImportError:
        resolve = None
    if resolve is not None:
        dsn = resolve(settings)
        if inspect.isawaitable(dsn):  # pragma: no cover - depends on the store's API
            import asyncio

            dsn = asyncio.run(_await(dsn))
        return str(dsn)
    if not settings.database.dsn:
        raise ConfigError("no database configured (set database.dsn or HEADEND_DATABASE__DSN)")
    return settings.database.dsn


async def _await(x: Any) -> Any:
    return await x


def connect(settings: Settings | str) -> psycopg.Connection[Any]:
    dsn = settings if isinstance(settings, str) else dsn_for(settings)
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database: {str(exc).splitlines()[0]}") from None
