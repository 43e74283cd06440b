"""Plain-SQL migrations: ``mdm/migrations/NNNN_name.sql`` applied in numeric order and recorded.

Each file runs in its own transaction and is recorded in ``schema_migrations`` (version,
name, sha256, applied_at) in that same transaction, so a failing file leaves nothing
behind. Every file not yet applied is applied, in numeric order, even when a higher number
was applied before (areas own number blocks: 0001-0009 store, 0010 daemon, 0020 mqtt,
0030 modbus, 0040 vee/work orders, 0050 remote control). A database that has a version
this code does not know was migrated by newer code: it is refused. A session advisory lock
serialises concurrent migrators.

Files read settings through custom GUCs that the runner sets per transaction:
``headend.timescaledb`` (auto/on/off) and ``headend.timezone`` (bucket zone of the
TimescaleDB continuous aggregates).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from protocols.errors import HeadendError

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS_DIR",
    "Migration",
    "MigrationError",
    "SchemaStatus",
    "applied",
    "discover",
    "migrate",
    "status",
    "sync_quantities",
]

LOGGER = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LOCK_KEY = 0x6D646D5F6D6967  # pg_advisory_lock key for migrations ("mdm_mig")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(HeadendError):
    """The schema cannot be brought to this code's version (newer database, failing file...)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    version: int  # highest applied version (0 = empty database)
    code_version: int  # highest version this code ships
    applied: list[tuple[int, str, datetime]]
    pending: list[int]
    unknown: list[int]  # applied in the database but absent from this code
    changed: list[int]  # applied files whose text changed since
    storage_mode: str  # timescaledb | partitioned | none


def discover(directory: Path | None = None) -> list[Migration]:
    """Migration files in numeric order; a malformed name or a duplicate number is an error."""
    found: dict[int, Migration] = {}
    directory = directory if directory is not None else MIGRATIONS_DIR
    entries = [(p.name, p.read_text("utf-8")) for p in directory.iterdir()]
    for name, text in entries:
        if not name.endswith(".sql"):
            continue
        m = _NAME.match(name)
        if m is None:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {name}")
        v = int(m.group(1))
        if v in found:
            raise MigrationError(f"two migrations numbered {v:04d}: {found[v].name}, {m.group(2)}")
        found[v] = Migration(v, m.group(2), text)
    return [found[v] for v in sorted(found)]


def applied(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str, datetime]]:
    """version -> (name, sha256, applied_at); empty when the table does not exist yet."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return {}
    rows = conn.execute("SELECT version, name, sha256, applied_at FROM schema_migrations").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _storage_mode(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT to_regclass('mdm_storage') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return "none"
    got = conn.execute("SELECT mode FROM mdm_storage").fetchone()
    return str(got[0]) if got else "none"


def status(conn: psycopg.Connection[Any], migrations: Sequence[Migration] | None = None) -> SchemaStatus:
    migs = list(migrations) if migrations is not None else discover()
    done = applied(conn)
    known = {m.version: m for m in migs}
    return SchemaStatus(
        version=max(done, default=0),
        code_version=max(known, default=0),
        applied=[(v, done[v][0], done[v][2]) for v in sorted(done)],
        pending=[v for v in sorted(known) if v not in done],
        unknown=[v for v in sorted(done) if v not in known],
        changed=[v for v in sorted(done) if v in known and known[v].sha256 != done[v][1]],
        storage_mode=_storage_mode(conn),
    )


def sync_quantities(conn: psycopg.Connection[Any]) -> int:
    """Upsert the shared quantity code list (protocols/quantities.py) into ``quantities``."""
    from protocols.quantities import QUANTITIES

    row = conn.execute("SELECT to_regclass('quantities') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO quantities (code, unit, kind, description) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (code) DO UPDATE SET unit = EXCLUDED.unit, kind = EXCLUDED.kind, "
            "description = EXCLUDED.description",
            [(q.code, q.unit, str(q.kind), q.description) for q in QUANTITIES.values()],
        )
    return len(QUANTITIES)


def migrate(
    dsn: str,
    *,
    timescaledb: str = "auto",
    timezone: str = "Asia/Shanghai",
    migrations: Sequence[Migration] | None = None,
    progress: Callable[[Migration], None] | None = None,
) -> list[int]:
    """Apply every pending migration; return the versions applied (in order).

    Raises :class:`MigrationError` when the database holds versions this code does not
    know (it was migrated by newer code) or when a file fails (its transaction is rolled
    back; earlier files stay applied).
    """
    if timescaledb not in ("auto", "on", "off"):
        raise MigrationError(f"database.timescaledb must be auto, on or off, not {timescaledb!r}")
    migs = list(migrations) if migrations is not None else discover()
    done_now: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(_SCHEMA_TABLE)
            st = status(conn, migs)
            if st.unknown:
                raise MigrationError(
                    "database schema is newer than this code: applied versions "
                    + ", ".join(f"{v:04d}" for v in st.unknown)
                    + f" are unknown (code knows up to {st.code_version:04d}); upgrade ami-headend"
                )
            for v in st.changed:
                LOGGER.warning("migration %04d changed since it was applied (not re-applied)", v)
            for mig in migs:
                if mig.version not in st.pending:
                    continue
                if progress is not None:
                    progress(mig)
                LOGGER.info("applying migration %04d_%s", mig.version, mig.name)
                try:
                    with conn.transaction():
                        conn.execute("SELECT set_config('headend.timescaledb', %s, true)", (timescaledb,))
                        conn.execute("SELECT set_config('headend.timezone', %s, true)", (timezone,))
                        conn.execute(mig.sql.encode())  # no parameters: simple protocol, many statements
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                            (mig.version, mig.name, mig.sha256),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {mig.version:04d}_{mig.name} failed: {exc}") from exc
                done_now.append(mig.version)
            sync_quantities(conn)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return done_now
