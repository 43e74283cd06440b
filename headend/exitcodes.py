"""Process exit codes of the ``headend`` command: one per kind of failure, so scripts can branch."""

from __future__ import annotations

from enum import IntEnum

from protocols.errors import (
    CircuitOpenError,
    ConfigError,
    DeviceError,
    FrameError,
    HeadendError,
    LocalProtocolError,
    NoResponseError,
    TransportError,
    UnknownOutcomeError,
)

__all__ = ["ExitCode", "exit_code_for"]


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad arguments (also what click uses)
    NO_RESPONSE = 3  # timeout / no reply from the device
    ABNORMAL = 4  # the device answered with an error (abnormal reply, exception code)
    BAD_FRAME = 5  # a frame failed a check (checksum, end byte, truncated...)
    TRANSPORT = 6  # could not open or lost the channel
    CONFIG = 7  # invalid configuration
    DATABASE = 8  # database unreachable or refused
    BLOCKED = 9  # an interlock or policy refused the action
    PARTIAL = 10  # some items succeeded, some failed (e.g. import with rejected rows)
    UNKNOWN_OUTCOME = 11  # a command was sent but its result is unknown
    CIRCUIT_OPEN = 12  # the device is being skipped by its circuit breaker


# Most specific first: the first isinstance match wins.
_TABLE: list[tuple[type[BaseException], ExitCode]] = [
    (NoResponseError, ExitCode.NO_RESPONSE),
    (DeviceError, ExitCode.ABNORMAL),
    (FrameError, ExitCode.BAD_FRAME),
    (CircuitOpenError, ExitCode.CIRCUIT_OPEN),
    (UnknownOutcomeError, ExitCode.UNKNOWN_OUTCOME),
    (TransportError, ExitCode.TRANSPORT),
    (ConfigError, ExitCode.CONFIG),
    (LocalProtocolError, ExitCode.USAGE),
    (HeadendError, ExitCode.ERROR),
]


def exit_code_for(exc: BaseException) -> ExitCode:
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return code
    return ExitCode.ERROR
