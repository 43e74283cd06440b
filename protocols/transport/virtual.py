"""In-process channels (``virtual://NAME``), after python-can's virtual bus.

A server (a simulator) registers a name with :func:`serve`; every :class:`VirtualChannel`
opened on ``virtual://NAME`` is connected to it. Bytes are delivered on the event loop, in
order, without sockets or ptys, so tests and demos run anywhere. Not shared between
processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from protocols.errors import TransportError
from protocols.transport.base import ChannelABC

__all__ = ["Accept", "VirtualChannel", "serve", "unserve"]

# A server's accept callback: given a function that delivers bytes to the client (None = hang up),
# returns the function that delivers the client's bytes to the server (None = the client hung up).
Accept = Callable[[Callable[[bytes | None], None]], Callable[[bytes | None], None]]

_SERVERS: dict[str, Accept] = {}


def serve(name: str, accept: Accept) -> None:
    if name in _SERVERS:
        raise TransportError(f"virtual channel {name!r} is already served")
    _SERVERS[name] = accept


def unserve(name: str) -> None:
    _SERVERS.pop(name, None)


class VirtualChannel(ChannelABC):
    _to_server: Callable[[bytes | None], None] | None = None

    async def _open(self) -> None:
        accept = _SERVERS.get(self.spec.host)
        if accept is None:
            raise TransportError(f"cannot open {self.name}: nobody serves it")
        loop = asyncio.get_running_loop()

        def to_client(data: bytes | None) -> None:
            if data is None:
                loop.call_soon(self._connection_lost, None)
            else:
                loop.call_soon(self._data_received, bytes(data))

        self._to_server = accept(to_client)

    async def _close(self) -> None:
        peer, self._to_server = self._to_server, None
        if peer is not None:
            peer(None)

    def _write(self, data: bytes) -> None:
        peer = self._to_server
        if peer is None:
            raise TransportError(f"{self.name}: not open")
        asyncio.get_running_loop().call_soon(peer, bytes(data))
