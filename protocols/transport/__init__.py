"""Byte channels (RS-485 serial, TCP) behind one abstraction, chosen by URL."""

from protocols.transport.url import ChannelSpec

__all__ = ["ChannelSpec"]
