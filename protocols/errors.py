"""One exception tree for every protocol and transport.

Errors say whose fault it was (after h11): a *local* error is our misuse of an API
or a bad argument; a *remote* error is the peer breaking the protocol or refusing a
request. Callers catch :class:`HeadendError` and map the subclass to an exit code.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "DeviceError",
    "FrameError",
    "HeadendError",
    "LocalProtocolError",
    "NoResponseError",
    "ProtocolError",
    "RemoteProtocolError",
    "TransportError",
    "UnknownOutcomeError",
]


class HeadendError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(HeadendError):
    """Configuration is missing or invalid."""


class ProtocolError(HeadendError):
    """Something about the bytes or the protocol exchange was wrong."""


class LocalProtocolError(ProtocolError):
    """We asked for something the protocol cannot express (bad DI, value out of range...)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol."""


class FrameError(RemoteProtocolError):
    """A frame failed a structural check. ``reason`` is a short machine-readable word.

    Reasons used across codecs: ``start_byte``, ``end_byte``, ``checksum``, ``truncated``,
    ``length``, ``overflow``, ``bcd``, ``format``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class DeviceError(RemoteProtocolError):
    """The device answered, but with an error (DL/T 645 abnormal reply, Modbus exception).

    ``code`` is the raw error byte or exception code; ``flags`` names the bits that are set.
    """

    def __init__(self, message: str, *, code: int, flags: tuple[str, ...] = (), device: str = "") -> None:
        self.code = code
        self.flags = flags
        self.device = device
        super().__init__(message)


class TransportError(HeadendError):
    """The channel failed: could not open, connection lost, write failed."""


class NoResponseError(TransportError):
    """No (complete) reply arrived within the response timeout."""


class CircuitOpenError(HeadendError):
    """The device's circuit breaker is open: it is skipped until its back-off expires."""

    def __init__(self, device: str, retry_at: float) -> None:
        self.device = device
        self.retry_at = retry_at
        super().__init__(f"circuit open for {device}")


class UnknownOutcomeError(HeadendError):
    """A command was sent but its result could not be established (e.g. no response in time).

    Commands with side effects must never be blindly re-sent after this.
    """
