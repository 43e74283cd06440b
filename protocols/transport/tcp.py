"""TCP client channel: serial servers and DTUs in transparent mode (``tcp://host:port``)."""

from __future__ import annotations

import asyncio

from protocols.errors import TransportError
from protocols.transport._proto import ChannelProtocol
from protocols.transport.base import ChannelABC

__all__ = ["TcpChannel"]


class TcpChannel(ChannelABC):
    _transport: asyncio.Transport | None = None
    connect_timeout: float = 5.0

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: ChannelProtocol(self), self.spec.host, self.spec.port
                )
        except TimeoutError:
            raise TransportError(f"cannot connect to {self.name}: timed out") from None
        self._transport = transport

    async def _close(self) -> None:
        t, self._transport = self._transport, None
        if t is not None:
            t.close()
            await asyncio.sleep(0)

    def _write(self, data: bytes) -> None:
        t = self._transport
        if t is None or t.is_closing():
            raise TransportError(f"{self.name}: connection closed")
        t.write(data)
