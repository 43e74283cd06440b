"""DL/T 645 messages as frozen dataclasses (h11 style): requests a master sends, replies a meter sends.

Requests carry what the master means (``ReadRequest(address, di)``), not bytes; the
encoders and parsers in :mod:`protocols.dlt645.services` turn them into frames and back.
Passwords and operator codes never appear in ``repr`` (they reach logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import TypeAlias

from protocols.dlt645.frame import BROADCAST, WILDCARD
from protocols.dlt645.registry import Decoded
from protocols.errors import DeviceError

__all__ = [
    "ERROR_BITS",
    "Ack",
    "BroadcastTimeSync",
    "ChangeBaud",
    "ChangeBaudResponse",
    "ChangePassword",
    "ControlCommand",
    "ErrorResponse",
    "EventClear",
    "Freeze",
    "Function",
    "Function97",
    "MaxDemandReset",
    "MeterClear",
    "Password",
    "RawRequest",
    "RawResponse",
    "ReadAddress",
    "ReadAddressResponse",
    "ReadFollowUp",
    "ReadRequest",
    "ReadResponse",
    "RemoteControl",
    "Reply",
    "Request",
    "WriteAddress",
    "WriteData",
    "error_flags",
]


class Function(IntEnum):
    """DL/T 645-2007 function codes (D4..D0 of C). Names are the ``function`` words of ``headend frame decode``."""

    SECURITY_AUTH = 0x03
    BROADCAST_TIME_SYNC = 0x08
    READ_DATA = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13
    WRITE_DATA = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    MAX_DEMAND_RESET = 0x19
    METER_CLEAR = 0x1A
    EVENT_CLEAR = 0x1B
    REMOTE_CONTROL = 0x1C
    MULTI_FUNCTION_OUTPUT = 0x1D


class Function97(IntEnum):
    """DL/T 645-1997 function codes. [P6][C5]"""

    READ_DATA = 0x01
    READ_FOLLOW_UP = 0x02
    REREAD = 0x03
    WRITE_DATA = 0x04
    BROADCAST_TIME_SYNC = 0x08
    WRITE_ADDRESS = 0x0A
    CHANGE_BAUD = 0x0C
    CHANGE_PASSWORD = 0x0F
    MAX_DEMAND_RESET = 0x10


class ControlCommand(IntEnum):
    """1C N1 byte. 1A/1B/1C confirmed by a public vendor example [C15]; 2A..3B from the standard table."""

    TRIP = 0x1A
    CLOSE_PERMIT = 0x1B
    CLOSE_DIRECT = 0x1C
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A
    KEEP_POWER_RELEASE = 0x3B


# Error-information byte of an abnormal reply (bit -> name). [C1 trans_d07_data_err][C16][C3]
ERROR_BITS: tuple[str, ...] = ("other", "no_data", "password", "baud", "zones", "periods", "tariffs")


def error_flags(code: int) -> tuple[str, ...]:
    return tuple(name for bit, name in enumerate(ERROR_BITS) if code >> bit & 1)


@dataclass(frozen=True, slots=True)
class Password:
    """Password level PA (e.g. 02, 04) and the 6-digit password P0P1P2 (written as on the meter)."""

    level: int = 0
    password: str = field(default="000000", repr=False)

    def __repr__(self) -> str:
        return f"Password(level={self.level:02X}, password=***)"


NO_PASSWORD = Password()


# ------------------------------------------------------------------ requests (master -> meter)


@dataclass(frozen=True, slots=True)
class BroadcastTimeSync:
    """08H to 99..99: set every meter's clock (naive meter-local time). No reply."""

    time: datetime
    address: str = BROADCAST
    version: int = 2007


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """11H (1997: 01H). ``count``/``start``: N records [from the given time] for 06... load-profile
    and other record reads (DI + N [+ mmhhDDMMYY])."""

    address: str
    di: int
    count: int | None = None
    start: datetime | None = None
    version: int = 2007


@dataclass(frozen=True, slots=True)
class ReadFollowUp:
    """12H: next frame of a multi-frame reply (DI + SEQ). 1997: 02H with the DI only (seq ignored)."""

    address: str
    di: int
    seq: int = 1
    version: int = 2007


@dataclass(frozen=True, slots=True)
class ReadAddress:
    """13H to AA..AA: the single meter on the bus answers with its address."""

    address: str = WILDCARD


@dataclass(frozen=True, slots=True)
class WriteData:
    """14H (1997: 04H): DI + PA P0P1P2 + operator C0..C3 (2007 only) + data (already encoded)."""

    address: str
    di: int
    data: bytes
    password: Password = NO_PASSWORD
    operator: str = field(default="00000000", repr=False)
    version: int = 2007


@dataclass(frozen=True, slots=True)
class WriteAddress:
    """15H to AA..AA: set the comm address of the single meter on the bus."""

    new_address: str
    address: str = WILDCARD


@dataclass(frozen=True, slots=True)
class Freeze:
    """16H: freeze at minute/hour/day/month; ``None`` is the 99 wildcard (all None = instant freeze)."""

    address: str
    month: int | None = None
    day: int | None = None
    hour: int | None = None
    minute: int | None = None


@dataclass(frozen=True, slots=True)
class ChangeBaud:
    """17H: the characteristic word Z is a bitmap (bit1 600 .. bit6 19200), not BCD."""

    address: str
    baud: int


@dataclass(frozen=True, slots=True)
class ChangePassword:
    """18H: DI (04000C01..0A) + old PA+PW + new PA+PW."""

    address: str
    di: int
    old: Password
    new: Password


@dataclass(frozen=True, slots=True)
class MaxDemandReset:
    """19H: PA+PW + operator."""

    address: str
    password: Password = NO_PASSWORD
    operator: str = field(default="00000000", repr=False)


@dataclass(frozen=True, slots=True)
class MeterClear:
    """1AH: PA+PW + operator."""

    address: str
    password: Password = NO_PASSWORD
    operator: str = field(default="00000000", repr=False)


@dataclass(frozen=True, slots=True)
class EventClear:
    """1BH: PA+PW + operator + DI of the event class (FFFFFFFF = all events)."""

    address: str
    password: Password = NO_PASSWORD
    operator: str = field(default="00000000", repr=False)
    di: int = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class RemoteControl:
    """1CH: PA P0P1P2, C0..C3, N1 command, N2 (reserved, 00), N3..N8 valid-until ss mm hh DD MM YY."""

    address: str
    command: ControlCommand
    valid_until: datetime
    password: Password = NO_PASSWORD
    operator: str = field(default="00000000", repr=False)
    n2: int = 0


@dataclass(frozen=True, slots=True)
class RawRequest:
    """Any other function (03H ESAM authentication pass-through, 1DH...): plain DATA as given."""

    address: str
    control: int
    data: bytes = b""


Request: TypeAlias = (
    BroadcastTimeSync | ReadRequest | ReadFollowUp | ReadAddress | WriteData | WriteAddress | Freeze | ChangeBaud
    | ChangePassword | MaxDemandReset | MeterClear | EventClear | RemoteControl | RawRequest
)


# ------------------------------------------------------------------ replies (meter -> master)


@dataclass(frozen=True, slots=True)
class ReadResponse:
    """91H/B1H (11H read) or 92H/B2H (12H follow-up; ``seq`` set). ``more``: a follow-up frame exists."""

    address: str
    di: int
    data: bytes
    more: bool = False
    seq: int | None = None
    function: int = Function.READ_DATA
    version: int = 2007
    decoded: Decoded | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ReadAddressResponse:
    address: str


@dataclass(frozen=True, slots=True)
class ChangeBaudResponse:
    address: str
    baud: int | None  # None: the meter echoed a word that is not one valid bit


@dataclass(frozen=True, slots=True)
class Ack:
    """A normal reply without data of interest: write, write address, freeze, resets, clears,
    remote control, change password. ``data`` keeps whatever the meter sent (often nothing)."""

    address: str
    function: int
    data: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An abnormal reply (C | C0H) with the error-information byte."""

    address: str
    function: int
    code: int
    flags: tuple[str, ...] = ()

    def to_error(self) -> DeviceError:
        names = ", ".join(self.flags) or "none"
        return DeviceError(
            f"meter {self.address} refused function {self.function:02X}H: error {self.code:02X}H ({names})",
            code=self.code,
            flags=self.flags,
            device=self.address,
        )


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A normal reply to a function this codec does not interpret (03H...)."""

    address: str
    control: int
    data: bytes = b""


Reply: TypeAlias = (
    ReadResponse | ReadAddressResponse | ChangeBaudResponse | Ack | ErrorResponse | RawResponse
)
