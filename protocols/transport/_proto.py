"""The asyncio protocol that feeds a :class:`ChannelABC` (shared by the serial and TCP backends)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocols.transport.base import ChannelABC

__all__ = ["ChannelProtocol"]


class ChannelProtocol(asyncio.Protocol):
    def __init__(self, channel: ChannelABC) -> None:
        self._channel = channel

    def data_received(self, data: bytes) -> None:
        self._channel._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._connection_lost(exc)
