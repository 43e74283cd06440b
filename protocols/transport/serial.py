"""RS-485 / RS-232 serial channel via pyserial-asyncio-fast (imported lazily).

Baud rate, parity, data and stop bits come from the URL (``serial:///dev/ttyUSB0?baud=2400&parity=E``);
DL/T 645 lines run 8E1. A pty rejects even parity, so tests use ``parity=N``.
"""

from __future__ import annotations

import asyncio
import termios
from typing import Any

from protocols.errors import TransportError
from protocols.transport._proto import ChannelProtocol, TransportChannel

__all__ = ["SerialChannel"]


class SerialChannel(TransportChannel):
    async def _open(self) -> None:
        try:
            import serial_asyncio_fast
        except ImportError as exc:  # pragma: no cover - dependency is declared
            raise TransportError("serial channels need pyserial-asyncio-fast") from exc
        loop = asyncio.get_running_loop()
        s = self.spec
        kwargs: dict[str, Any] = {
            "baudrate": s.baud,
            "parity": s.parity,
            "bytesize": s.bytesize,
            "stopbits": s.stopbits,
        }
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop, lambda: ChannelProtocol(self), s.path, **kwargs
            )
        except termios.error as exc:
            hint = " (a pseudo-terminal rejects even parity: use parity=N)" if s.parity != "N" else ""
            line = f"{s.baud} 8{s.parity}{s.stopbits}"
            raise TransportError(f"cannot configure {s.path} for {line}: {exc}{hint}") from exc
        self._transport = transport
