"""PostgreSQL fixtures (owned by the meter data store): a fresh database per test run.

Server choice: ``HEADEND_TEST_DSN`` (any database on the server; we create our own), else the
PostgreSQL at 127.0.0.1:5432 (user postgres, TCP) when it answers, else a private embedded
server in a temporary directory (stopped and deleted at the end).

Fixtures:
- ``pg_dsn`` (session): a database created for this run with every migration applied, dropped at the end.
- ``fresh_dsn`` (function): an isolated migrated database for one test (cloned from a template).
- ``pg_db_factory`` (function): ``make() -> dsn``, as many isolated migrated databases as a test needs.
- ``pg_server_dsn`` (session): the server's maintenance database, for admin work such as
  ``pg_terminate_backend`` filtered by ``datname`` (never restart the system server).
- ``timescaledb_available`` (session): bool; tests marked ``timescaledb`` are skipped when False.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from mdm.migrate import migrate

__all__ = ["fresh_dsn", "pg_db_factory", "pg_dsn", "pg_server_dsn", "pg_template", "timescaledb_available"]

LOCAL_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
_PREFIX = "headend_t_"
_STALE = re.compile(rf"^{_PREFIX}(\d+)_[0-9a-f]+")


def _reachable(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def _drop(server_dsn: str, name: str) -> None:
    with _admin(server_dsn) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


def _create(server_dsn: str, name: str, template: str | None = None) -> str:
    q = psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
    if template:
        q = psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            psycopg.sql.Identifier(name), psycopg.sql.Identifier(template)
        )
    for attempt in range(50):
        try:
            with _admin(server_dsn) as conn:
                conn.execute(q)
            break
        except psycopg.errors.ObjectInUse:  # a session on the template is just going away
            if attempt == 49:
                raise
            time.sleep(0.1)
    return make_conninfo(server_dsn, dbname=name)


def _drop_stale(server_dsn: str) -> None:
    """Databases left by killed test runs on this machine (their pid is gone)."""
    with _admin(server_dsn) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (_PREFIX + "%",))]
    for name in names:
        m = _STALE.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # still running (another helper's run)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(psycopg.Error):
            _drop(server_dsn, name)


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    env = os.environ.get("HEADEND_TEST_DSN")
    if env:
        yield make_conninfo(env, dbname="postgres")
        return
    if _reachable(LOCAL_DSN):
        yield LOCAL_DSN
        return
    from mdm.db import start_embedded, stop_embedded

    tmp = Path(tempfile.mkdtemp(prefix="headend-pg-"))
    try:
        dsn = start_embedded(tmp / "pgdata")
        yield make_conninfo(dsn, dbname="postgres")
    finally:
        stop_embedded(tmp / "pgdata")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_server_dsn: str) -> Iterator[str]:
    """Name of a migrated template database for this run (never connect to it: clones need it idle)."""
    _drop_stale(pg_server_dsn)
    name = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(3)}_tpl"
    dsn = _create(pg_server_dsn, name)
    try:
        migrate(dsn, timescaledb=os.environ.get("HEADEND_TEST_TIMESCALEDB", "auto"))
        # clones need an idle template: no connections at all (TimescaleDB's background scheduler
        # connects to every database with the extension unless connections are disallowed)
        with _admin(pg_server_dsn) as conn:
            conn.execute(psycopg.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                psycopg.sql.Identifier(name)))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        yield name
    finally:
        _drop(pg_server_dsn, name)


@pytest.fixture(scope="session")
def pg_dsn(pg_server_dsn: str, pg_template: str) -> Iterator[str]:
    name = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
    dsn = _create(pg_server_dsn, name, pg_template)
    try:
        yield dsn
    finally:
        _drop(pg_server_dsn, name)


@pytest.fixture
def pg_db_factory(pg_server_dsn: str, pg_template: str) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        name = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        made.append(name)
        return _create(pg_server_dsn, name, pg_template)

    yield make
    for name in made:
        with contextlib.suppress(psycopg.Error):
            _drop(pg_server_dsn, name)


@pytest.fixture
def fresh_dsn(pg_db_factory: Callable[[], str]) -> str:
    return pg_db_factory()


@pytest.fixture(scope="session")
def timescaledb_available(pg_server_dsn: str) -> bool:
    with _admin(pg_server_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return bool(row and row[0])


@pytest.fixture(autouse=True)
def _skip_without_timescaledb(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("timescaledb") is not None and not request.getfixturevalue(
        "timescaledb_available"
    ):
        pytest.skip("the timescaledb extension is not available on the test server")
