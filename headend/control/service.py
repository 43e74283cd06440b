"""Glue for commands, the demo and the daemon: settings -> DSN, secrets, directory, executor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from headend.control.directory import MeterDirectory
from headend.control.executor import Executor
from headend.control.planner import Planner
from headend.control.secrets import SecretStore, install_log_masking, load_secrets
from headend.settings import Settings

__all__ = ["ControlEnv", "open_env"]


class ControlEnv:
    """Everything a control command needs, built once from the settings."""

    def __init__(self, settings: Settings, dsn: str, *, secrets: SecretStore | None = None,
                 clients: Mapping[str, Any] | None = None, now: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.dsn = dsn
        self.secrets = secrets if secrets is not None else load_secrets(settings.secrets_file)
        install_log_masking(self.secrets)
        self.directory = MeterDirectory.from_settings(settings)
        self.clients = clients
        self.now = now

    def planner(self) -> Planner:
        return Planner(self.settings.control, self.directory, timezone=self.settings.timezone)

    def executor(self, pool_size: int | None = None) -> Executor:
        return Executor(self.dsn, self.settings.control, self.directory, self.secrets, clients=self.clients,
                        timezone=self.settings.timezone, now=self.now, pool_size=pool_size)


def open_env(settings: Settings, *, migrate: bool = True) -> ControlEnv:
    """Resolve the database (embedded when no DSN), apply migrations, load secrets."""
    from headend.storeglue import migrate as _migrate
    from headend.storeglue import resolve_dsn

    dsn = resolve_dsn(settings)
    if migrate:
        _migrate(dsn)
    env = ControlEnv(settings, dsn)
    env.directory.add_from_database(_db_routes(dsn), settings.timezone)
    return env


#: Meters the store knows with the channel (bus) they are read over.
ROUTES_SQL = """SELECT m.address, c.name, c.protocol, c.url, m.time_zone
                  FROM meters m JOIN channels c ON c.name = m.channel WHERE c.enabled"""


def _db_routes(dsn: str) -> list[tuple[Any, ...]]:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return conn.execute(ROUTES_SQL).fetchall()
    except psycopg.errors.UndefinedTable:  # a store without the asset tables: config routes only
        return []
