"""Byte channels (RS-485 serial, TCP) behind one abstraction, chosen by URL."""

from protocols.transport.base import BACKENDS, ChannelABC, open_channel
from protocols.transport.url import ChannelSpec

__all__ = ["BACKENDS", "ChannelABC", "ChannelSpec", "open_channel"]
