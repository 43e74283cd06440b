"""Daemon test helpers: settings builders and a migrated database per test (real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from headend.fleetconfig import DaemonSettings
from headend.settings import Settings


@pytest.fixture
def daemon_dsn(fresh_dsn: str) -> str:
    """A fresh database with every migration (the store's and the daemon's) applied."""
    return str(fresh_dsn)


def make_settings(dsn: str, data_dir: Path, **daemon: Any) -> Settings:
    return Settings(data_dir=data_dir, database={"dsn": dsn}, daemon=DaemonSettings(**daemon))  # type: ignore[arg-type]


def query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return list(c.execute(sql, args).fetchall())  # type: ignore[arg-type]
