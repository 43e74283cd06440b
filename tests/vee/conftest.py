"""VEE test database: the store's ``pg_dsn`` (fresh, fully migrated) when it exists, else a private
database with only the VEE migrations (0040-0049) applied, dropped at the end of the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

MIGRATIONS = Path(__file__).resolve().parents[2] / "mdm" / "migrations"

# Only when the store's fixture is absent: the few store columns VEE reads, so its tests can run.
STORE_STANDIN = """
CREATE TABLE IF NOT EXISTS interval_reads (meter text NOT NULL, quantity text NOT NULL, ts timestamptz NOT NULL,
    value double precision, unit text NOT NULL DEFAULT '', quality integer NOT NULL DEFAULT 0,
    source text NOT NULL DEFAULT '', version integer NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS register_reads (LIKE interval_reads INCLUDING DEFAULTS);
CREATE TABLE IF NOT EXISTS meters (address text PRIMARY KEY, meter_class text, ct_ratio double precision,
    pt_ratio double precision, installed_at date, capacity_kva double precision);
CREATE TABLE IF NOT EXISTS meter_events (meter text NOT NULL, ts timestamptz NOT NULL, event_type text NOT NULL);
"""


@pytest.fixture(scope="session")
def vee_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    try:
        dsn = request.getfixturevalue("pg_dsn")
    except pytest.FixtureLookupError:
        dsn = None
    if dsn:
        with psycopg.connect(str(dsn), autocommit=True) as c:
            if c.execute("SELECT to_regclass('interval_reads')").fetchone() == (None,):
                c.execute(STORE_STANDIN)  # the store's schema has not landed yet
        yield str(dsn)
        return
    base = os.environ.get("HEADEND_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"vee_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    dsn = psycopg.conninfo.make_conninfo(base, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(STORE_STANDIN)
        for f in sorted(MIGRATIONS.glob("004*.sql")):
            c.execute(f.read_text())  # type: ignore[arg-type]
    try:
        yield dsn
    finally:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture()
def conn(vee_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(vee_dsn, autocommit=True) as c:
        yield c
