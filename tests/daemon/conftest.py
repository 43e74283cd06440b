"""Daemon test helpers: settings builders and a migrated database per test (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from headend.fleetconfig import DaemonSettings
from headend.settings import Settings

# Only while the store's schema has not landed: the read-table columns the daemon writes and queries.
STORE_STANDIN = """
CREATE TABLE IF NOT EXISTS interval_reads (meter text NOT NULL, quantity text NOT NULL, ts timestamptz NOT NULL,
    value double precision, unit text NOT NULL DEFAULT '', quality integer NOT NULL DEFAULT 0,
    source text NOT NULL DEFAULT '', version integer NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS register_reads (LIKE interval_reads INCLUDING DEFAULTS);
"""


@pytest.fixture
def daemon_dsn(fresh_dsn: str) -> Iterator[str]:
    with psycopg.connect(str(fresh_dsn), autocommit=True) as c:
        if c.execute("SELECT to_regclass('interval_reads')").fetchone() == (None,):
            c.execute(STORE_STANDIN)
    yield str(fresh_dsn)


def make_settings(dsn: str, data_dir: Path, **daemon: Any) -> Settings:
    return Settings(data_dir=data_dir, database={"dsn": dsn}, daemon=DaemonSettings(**daemon))  # type: ignore[arg-type]


def query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return list(c.execute(sql, args).fetchall())  # type: ignore[arg-type]
