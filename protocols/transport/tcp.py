"""TCP client channel: serial servers and DTUs in transparent mode (``tcp://host:port``)."""

from __future__ import annotations

import asyncio

from protocols.errors import TransportError
from protocols.transport._proto import ChannelProtocol, TransportChannel

__all__ = ["TcpChannel"]


class TcpChannel(TransportChannel):
    _closed_reason = "connection closed"
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
