"""The interfaces the head-end talks to, whatever the protocol (after zigpy's radio adapters).

Every protocol client implements :class:`MeterClient` (reads). Clients of devices with a
supply relay also implement :class:`RelayControl`; load-management terminals implement
:class:`LoadControl`. The head-end never sees a frame format, only these calls.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from protocols.arbitration import Priority
from protocols.reading import Reading

__all__ = [
    "ControlResult",
    "Credentials",
    "LoadCommand",
    "LoadControl",
    "LoadControlRequest",
    "MeterClient",
    "RelayCommand",
    "RelayControl",
    "RelayRequest",
    "RelayState",
]


class MeterClient(abc.ABC):
    """A connection to one bus or endpoint holding one or more devices.

    Implementations own their bus arbitration (one request in flight per half-duplex
    line, by :class:`Priority`) and raise only :class:`protocols.errors.HeadendError`
    subclasses.
    """

    protocol: ClassVar[str]

    @abc.abstractmethod
    async def read(
        self, device: str, quantities: Sequence[str], *, priority: Priority = Priority.ON_DEMAND
    ) -> list[Reading]:
        """Read the given quantity codes from one device."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the underlying channel."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Meter password and operator code. ``repr`` never shows the secrets."""

    password: str = field(repr=False)  # hex digits, e.g. "000000"
    password_level: int = 2
    operator: str = field(default="00000000", repr=False)  # operator code as sent to the meter

    def __repr__(self) -> str:
        return f"Credentials(password_level={self.password_level}, password=***, operator=***)"

    __str__ = __repr__


class RelayCommand(StrEnum):
    TRIP = "trip"
    CLOSE_PERMIT = "close_permit"  # the customer presses the button to close
    CLOSE_DIRECT = "close_direct"
    ALARM_ON = "alarm_on"
    ALARM_OFF = "alarm_off"
    KEEP_POWER_ON = "keep_power_on"  # 保电: trips are blocked
    KEEP_POWER_OFF = "keep_power_off"


class RelayState(StrEnum):
    CLOSED = "closed"  # supply on
    OPEN = "open"  # supply off
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RelayRequest:
    device: str
    command: RelayCommand
    valid_until: datetime
    credentials: Credentials
    operator_id: str  # the person (audit identity), not the meter operator code
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class ControlResult:
    """What the device said. ``accepted`` False carries the device's reason.

    ``tx``/``rx`` are the raw frames (or payloads) for the audit trail; secrets inside
    them are the caller's to mask before logging.
    """

    request_id: str
    accepted: bool
    reason: str = ""
    tx: bytes = b""
    rx: bytes = b""


class RelayControl(abc.ABC):
    @abc.abstractmethod
    async def relay_command(self, request: RelayRequest) -> ControlResult:
        """Send one relay command with control priority."""

    @abc.abstractmethod
    async def relay_state(self, device: str) -> RelayState:
        """Read the relay state back (DL/T 645 status word 3, a coil, an MQTT status)."""


class LoadCommand(StrEnum):
    SET_POWER_LIMIT = "set_power_limit"  # value: kW
    TRIP_CIRCUIT = "trip_circuit"
    RESTORE_CIRCUIT = "restore_circuit"
    KEEP_POWER_ON = "keep_power_on"
    KEEP_POWER_OFF = "keep_power_off"
    PURCHASE_ENERGY = "purchase_energy"  # value: kWh added to the prepaid balance (购电)


@dataclass(frozen=True, slots=True)
class LoadControlRequest:
    device: str
    command: LoadCommand
    operator_id: str
    value: float | None = None
    circuit: int = 1
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class LoadControl(abc.ABC):
    @abc.abstractmethod
    async def load_command(self, request: LoadControlRequest) -> ControlResult:
        """Send one load-control command. Implementations must be idempotent by request_id."""
