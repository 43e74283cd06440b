"""The asyncio protocol that feeds a :class:`ChannelABC`, and the base of the channels that run on
an asyncio transport (shared by the serial and TCP backends)."""

from __future__ import annotations

import asyncio
from typing import cast

from protocols.errors import TransportError
from protocols.transport.base import ChannelABC

__all__ = ["ChannelProtocol", "TransportChannel"]


class ChannelProtocol(asyncio.Protocol):
    def __init__(self, channel: ChannelABC) -> None:
        self._channel = channel

    def data_received(self, data: bytes) -> None:
        self._channel._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._connection_lost(exc)


class TransportChannel(ChannelABC):
    """A channel over an asyncio transport: ``_open`` sets ``_transport``; closing and writing are shared."""

    _transport: asyncio.BaseTransport | None = None
    _closed_reason = "not open"

    async def _close(self) -> None:
        t, self._transport = self._transport, None
        if t is not None:
            t.close()
            await asyncio.sleep(0)

    def _write(self, data: bytes) -> None:
        t = self._transport
        # not isinstance(t, asyncio.WriteTransport): uvloop's transports do not derive from it
        if t is None or t.is_closing():
            raise TransportError(f"{self.name}: {self._closed_reason}")
        cast(asyncio.WriteTransport, t).write(data)
