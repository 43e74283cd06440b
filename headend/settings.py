"""Configuration: defaults < TOML file < ``HEADEND_*`` environment < explicit arguments.

Nested keys use ``__`` in the environment: ``HEADEND_DATABASE__DSN=postgresql://...``.
The TOML file comes from ``--config`` or ``HEADEND_CONFIG``. Unknown keys are
errors, so a typo in a config file is reported instead of silently ignored.
Secrets (meter passwords, operator codes) never live here: see the secrets file.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from headend.configbase import Section as _Section
from headend.control.config import ControlSettings
from headend.fleetconfig import DaemonSettings
from headend.loadmon import LoadSettings
from protocols.errors import ConfigError

__all__ = ["DatabaseSettings", "MqttSettings", "Settings", "default_data_dir", "load_settings"]

_TOML_PATH: ContextVar[Path | None] = ContextVar("_TOML_PATH", default=None)


def default_data_dir() -> Path:
    """Where state lives when not configured.

    As root, the embedded PostgreSQL opens permissions on every parent of its data
    directory, so never default to a path inside a home directory then.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/ami-headend")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ami-headend"


class DatabaseSettings(_Section):
    dsn: str | None = Field(default=None, description="PostgreSQL DSN; unset = private embedded server")
    embedded_dir: Path | None = Field(default=None, description="embedded server data dir (default DATA_DIR/pg)")
    pool_min: int = 1
    pool_max: int = 8
    timescaledb: Literal["auto", "on", "off"] = "auto"
    retention_days: int | None = Field(default=None, description="drop raw reads older than this (None = keep)")
    compress_after_days: int = 7


class MqttSettings(_Section):
    host: str | None = Field(default=None, description="broker host; unset = in-process broker on 127.0.0.1")
    port: int = 1883
    username: str | None = None
    client_id: str = "ami-headend"
    topic_prefix: str = "ami"
    shared_group: str | None = Field(default=None, description="$share group name when several daemons split load")
    ack_window: int = Field(default=1000, ge=1, description="unacknowledged QoS 1 messages the ingest expects at once:"
                            " the broker's max_inflight_messages (docs/mqtt.md)")
    max_pending: int = Field(default=20000, ge=1, description="received messages not yet durable above which the"
                             " ingest stops reading the broker socket (back-pressure), resuming below half")
    keepalive: int = Field(default=30, ge=1, le=65535, description="MQTT keepalive, seconds; a back-pressure pause"
                           " longer than about 1.5 x this ends the connection (the broker re-sends what was unacked)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEADEND_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: str = "INFO"
    log_json: bool = False
    timezone: str = "Asia/Shanghai"
    secrets_file: Path | None = Field(default=None, description="TOML file with meter passwords and operator codes")
    database: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    daemon: DaemonSettings = DaemonSettings()  # collection daemon: channels, meters, read plans
    load: LoadSettings = LoadSettings()  # load monitoring: power/demand limits, terminal -> customer
    control: ControlSettings = ControlSettings()  # remote disconnect/reconnect: policies, roles, calendar

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _TOML_PATH.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(config: Path | str | None = None, **overrides: object) -> Settings:
    """Load settings; raise :class:`ConfigError` with every problem listed."""
    path_s = config if config is not None else os.environ.get("HEADEND_CONFIG")
    path = Path(path_s) if path_s else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    token = _TOML_PATH.set(path)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration{where}: {problems}") from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"cannot read {path}: {exc}") from None
    finally:
        _TOML_PATH.reset(token)
