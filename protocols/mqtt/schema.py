"""The MQTT topic and payload schema for load-management terminals (docs/mqtt.md).

Topics (``P`` = ``settings.mqtt.topic_prefix``, ``T`` = terminal id)::

    P/terminal/T/telemetry  terminal -> head-end  QoS 1          Telemetry
    P/terminal/T/event      terminal -> head-end  QoS 1          Event
    P/terminal/T/status     terminal -> head-end  QoS 1 retained Status (Last Will: offline)
    P/terminal/T/cmd        head-end -> terminal  QoS 1          Command
    P/terminal/T/resp       terminal -> head-end  QoS 1          Response

Every payload is one UTF-8 JSON object with ``"v": 1``. Unknown fields are refused
(``extra="forbid"``): a payload that does not validate goes to the dead-letter table.
Values are keyed by the shared quantity codes of :mod:`protocols.quantities`.
This module is pure data (no I/O).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols import quantities
from protocols.client import LoadCommand
from protocols.errors import RemoteProtocolError

__all__ = [
    "COMMANDS",
    "SCHEMA_VERSION",
    "Channel",
    "Command",
    "Event",
    "PayloadError",
    "Response",
    "Status",
    "Telemetry",
    "Topics",
    "decode",
    "encode",
]

SCHEMA_VERSION = 1
_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
_ID_RE = re.compile(_ID)

# Commands a terminal understands: the load-control commands plus two without side effects.
COMMANDS: tuple[str, ...] = (*(c.value for c in LoadCommand), "read", "status")
# Commands that change something on the terminal (never re-sent with a new request id).
SIDE_EFFECT_COMMANDS: frozenset[str] = frozenset(c.value for c in LoadCommand)


class PayloadError(RemoteProtocolError):
    """A message that does not follow the schema. ``reason`` is a short word for the dead-letter table."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    COMMAND = "cmd"
    RESPONSE = "resp"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix, and the reverse parse."""

    prefix: str = "ami"

    def topic(self, terminal: str, channel: Channel) -> str:
        if not _ID_RE.match(terminal):
            raise PayloadError("terminal_id", f"{terminal!r} is not a valid terminal id")
        return f"{self.prefix}/terminal/{terminal}/{channel.value}"

    def filter(self, channel: Channel, terminal: str = "+", shared_group: str | None = None) -> str:
        """Subscription filter; with ``shared_group``, a ``$share/<group>/...`` shared subscription."""
        base = f"{self.prefix}/terminal/{terminal}/{channel.value}"
        return f"$share/{shared_group}/{base}" if shared_group else base

    def parse(self, topic: str) -> tuple[str, Channel]:
        """``(terminal, channel)`` of a topic under this prefix; :class:`PayloadError` otherwise."""
        head = f"{self.prefix}/terminal/"
        if not topic.startswith(head):
            raise PayloadError("topic", f"{topic!r} is not under {head}")
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or not _ID_RE.match(parts[0]):
            raise PayloadError("topic", f"{topic!r} is not {head}<terminal>/<channel>")
        try:
            return parts[0], Channel(parts[1])
        except ValueError:
            raise PayloadError("topic", f"unknown channel {parts[1]!r}") from None


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = 1


_KNOWN = frozenset(quantities.QUANTITIES)


def _check_codes(values: dict[str, float]) -> dict[str, float]:
    if not values.keys() <= _KNOWN:  # one set operation in the common case (finiteness: allow_inf_nan)
        bad = sorted(set(values) - _KNOWN)
        raise ValueError(f"unknown quantity code {bad[0]!r}")
    return values


class Telemetry(_Msg):
    """Measured values at one time. Interval quantities (``interval.*``): ts = interval start."""

    ts: AwareDatetime
    values: dict[str, float] = Field(min_length=1, max_length=256)
    seq: int | None = Field(default=None, ge=0)

    _codes = field_validator("values")(_check_codes)


class Event(_Msg):
    """Something that happened on the terminal (cover open, power down, limit exceeded, relay trip...)."""

    ts: AwareDatetime
    event: str = Field(pattern=r"^[a-z0-9_.]{1,64}$")
    severity: int = Field(default=3, ge=1, le=5)  # 1 critical .. 5 info (as meter_events.severity)
    ended: AwareDatetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Status(_Msg):
    """Retained terminal state. The Last Will is ``{"v": 1, "state": "offline"}`` (retained)."""

    state: Literal["online", "offline"]
    ts: AwareDatetime | None = None
    relay: Literal["closed", "open"] | None = None
    keep_power: bool | None = None
    limit_kw: float | None = None
    balance_kwh: float | None = None
    last_request_id: str | None = Field(default=None, pattern=_ID)
    firmware: str | None = Field(default=None, max_length=64)


class Command(_Msg):
    """Head-end -> terminal. The terminal acts once per ``request_id`` and answers repeats from its record."""

    request_id: str = Field(pattern=_ID)
    command: Literal[
        "set_power_limit", "trip_circuit", "restore_circuit", "keep_power_on", "keep_power_off",
        "purchase_energy", "read", "status",
    ]
    issued_at: AwareDatetime
    operator: str = Field(default="", max_length=64)
    value: float | None = None
    circuit: int = Field(default=1, ge=1, le=64)
    quantities: list[str] = Field(default_factory=list, max_length=256)
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _needs(self) -> Command:
        if self.command in ("set_power_limit", "purchase_energy") and self.value is None:
            raise ValueError(f"{self.command} needs a value")
        if self.command == "purchase_energy" and self.value is not None and self.value <= 0:
            raise ValueError("purchase_energy needs a positive value")
        for code in self.quantities:
            if not quantities.is_known(code):
                raise ValueError(f"unknown quantity code {code!r}")
        return self

    @property
    def has_side_effects(self) -> bool:
        return self.command in SIDE_EFFECT_COMMANDS


class Response(_Msg):
    """Terminal -> head-end answer to one command. ``duplicate``: answered from the record, not re-done."""

    request_id: str = Field(pattern=_ID)
    status: Literal["accepted", "rejected", "error"]
    ts: AwareDatetime
    reason: str = Field(default="", max_length=256)
    values: dict[str, float] = Field(default_factory=dict, max_length=256)
    duplicate: bool = False

    _codes = field_validator("values")(_check_codes)


_MODELS: dict[Channel, type[_Msg]] = {
    Channel.TELEMETRY: Telemetry,
    Channel.EVENT: Event,
    Channel.STATUS: Status,
    Channel.COMMAND: Command,
    Channel.RESPONSE: Response,
}


def decode(channel: Channel, payload: bytes | bytearray | str) -> _Msg:
    """Validate one payload for its channel; :class:`PayloadError` (reason json/schema/empty) otherwise."""
    if not payload:
        raise PayloadError("empty", "empty payload")
    try:
        return _MODELS[channel].model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise PayloadError("json", errors[0]["msg"]) from None
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors[:5]
        )
        raise PayloadError("schema", detail) from None


def encode(message: BaseModel) -> bytes:
    """Compact JSON bytes (unset optional fields left out)."""
    return message.model_dump_json(exclude_none=True).encode()
