"""``headend db migrate|status|maintain``: the meter data store's schema and storage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from psycopg.conninfo import conninfo_to_dict

from headend.cliutil import ConfigOpt, JsonOpt, console, err_console, fail, print_json, print_table, settings_from
from headend.exitcodes import ExitCode
from headend.settings import Settings
from protocols.errors import HeadendError

__all__ = ["db_app", "register", "safe_dsn", "store_conn", "store_dsn"]

db_app = typer.Typer(help="Meter data store: schema migrations, status, maintenance.", no_args_is_help=True)


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for display."""
    try:
        p = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    p.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in p.items())


def store_dsn(ctx: typer.Context, config: Path | None, *, ensure: bool = True) -> tuple[Settings, str]:
    """Settings and DSN (embedded server started when no DSN is set); schema ensured on first use."""
    from mdm.db import StoreError, resolve_dsn
    from mdm.migrate import MigrationError
    from mdm.store import ensure_schema

    settings = settings_from(ctx, config)
    try:
        dsn = resolve_dsn(settings)
        if ensure:
            ensure_schema(dsn, settings)
    except (StoreError, MigrationError) as exc:
        raise fail(exc, ExitCode.DATABASE) from None
    except psycopg.OperationalError as exc:
        raise fail(f"database unreachable: {str(exc).strip()}", ExitCode.DATABASE) from None
    except HeadendError as exc:
        raise fail(exc) from None
    return settings, dsn


@contextmanager
def store_conn(ctx: typer.Context, config: Path | None, *, autocommit: bool = False) -> Iterator[
        tuple[Settings, psycopg.Connection[Any]]]:
    """(settings, connection) with database failures mapped to exit code DATABASE."""
    from mdm.db import StoreError, connect

    settings, dsn = store_dsn(ctx, config)
    try:
        with connect(dsn, autocommit=autocommit) as conn:
            yield settings, conn
    except StoreError as exc:
        raise fail(exc, ExitCode.DATABASE) from None
    except psycopg.OperationalError as exc:
        raise fail(f"database error: {str(exc).strip()}", ExitCode.DATABASE) from None


@db_app.command("migrate")
def migrate_cmd(ctx: typer.Context, json_: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Apply every pending migration (one transaction per file) and the storage policies."""
    from mdm.db import StoreError, connect
    from mdm.migrate import Migration, MigrationError, migrate
    from mdm.store import apply_policies

    settings, dsn = store_dsn(ctx, config, ensure=False)

    def show(m: Migration) -> None:
        if not json_:
            err_console.print(f"applying {m.version:04d}_{m.name}")

    try:
        applied = migrate(dsn, timescaledb=settings.database.timescaledb, timezone=settings.timezone, progress=show)
        with connect(dsn, autocommit=True) as conn:
            mode = apply_policies(conn, settings)
    except (MigrationError, StoreError) as exc:
        raise fail(exc, ExitCode.DATABASE) from None
    if json_:
        print_json({"applied": applied, "storage_mode": mode})
    else:
        console.print(f"{len(applied)} migration(s) applied; storage mode {mode}")


@db_app.command("status")
def status_cmd(ctx: typer.Context, json_: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Schema version (database and code), pending migrations and the storage mode (timescaledb/partitioned)."""
    from mdm.db import StoreError, connect
    from mdm.migrate import status
    from mdm.store import storage_info

    settings, dsn = store_dsn(ctx, config, ensure=False)
    try:
        with connect(dsn) as conn:
            st = status(conn)
            info = storage_info(conn)
    except StoreError as exc:
        raise fail(exc, ExitCode.DATABASE) from None
    out = {
        "database": safe_dsn(dsn),
        "embedded": not settings.database.dsn,
        "schema_version": st.version,
        "code_version": st.code_version,
        "pending": st.pending,
        "unknown": st.unknown,
        "changed": st.changed,
        "storage_mode": st.storage_mode,
        **info,
    }
    if json_:
        print_json(out)
        return
    print_table(["", ""], [[k, ", ".join(f"{v:04d}" for v in val) if isinstance(val, list) else val]
                           for k, val in out.items()], title="meter data store")
    if st.unknown:
        raise typer.Exit(int(ExitCode.DATABASE))


@db_app.command("maintain")
def maintain_cmd(
    ctx: typer.Context,
    months_ahead: Annotated[int, typer.Option(help="Partitions to keep ready ahead of today.")] = 3,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Create partitions ahead of the data and apply retention/compression (run daily; the daemon does)."""
    from mdm.store import apply_policies

    with store_conn(ctx, config, autocommit=True) as (settings, conn):
        row = conn.execute("SELECT mdm_maintain(%s)", (months_ahead,)).fetchone()
        mode = apply_policies(conn, settings)
    made = int(row[0]) if row else 0
    if json_:
        print_json({"partitions_created": made, "storage_mode": mode})
    else:
        console.print(f"{made} partition(s) created; policies applied ({mode})")


@db_app.command("stop")
def stop_cmd(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Stop the private embedded server (it keeps running between commands otherwise)."""
    from mdm.db import embedded_dir, start_embedded, stop_embedded

    settings = settings_from(ctx, config)
    if settings.database.dsn:
        raise fail("database.dsn is set: there is no embedded server to stop", ExitCode.USAGE)
    if not (embedded_dir(settings) / "postmaster.pid").exists():
        console.print("embedded server not running")
        return
    start_embedded(embedded_dir(settings))  # attach to it, then stop it
    stop_embedded(settings)
    console.print(f"embedded server in {embedded_dir(settings)} stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
