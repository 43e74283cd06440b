"""One byte-channel abstraction over RS-485 serial and TCP (after python-can's ``BusABC``).

A channel moves raw bytes; framing belongs to the protocol on top. Backends implement
``_open``, ``_close`` and ``_write``, and push received chunks with ``_data_received``;
the base class does the waiting (response and inter-byte timeouts), the bus turnaround
delay and the frame trace (``headend.trace`` logger at level 5: one TX line per request, one RX line
for everything received until the reader's reply is complete), once for all backends.

Backends are registered by URL scheme in :data:`BACKENDS` and imported lazily, so a
machine without pyserial can still use TCP.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from protocols.errors import ConfigError, NoResponseError, TransportError
from protocols.transport.url import ChannelSpec

__all__ = ["BACKENDS", "TRACE", "TRACE_LOG", "ChannelABC", "open_channel"]

LOGGER = logging.getLogger(__name__)
TRACE = 5
TRACE_LOG = logging.getLogger("headend.trace")

# scheme -> (module, class)
BACKENDS: dict[str, tuple[str, str]] = {
    "serial": ("protocols.transport.serial", "SerialChannel"),
    "tcp": ("protocols.transport.tcp", "TcpChannel"),
    "virtual": ("protocols.transport.virtual", "VirtualChannel"),
}


def _hex(data: bytes) -> str:
    return data.hex(" ")


class ChannelABC(abc.ABC):
    """A half-duplex byte channel. Not safe for concurrent requests: callers arbitrate.

    ``read_chunk(within)`` returns the next chunk of received bytes; protocol code
    calls it with the response timeout for the first byte and then with
    :attr:`ChannelSpec.inter_byte_timeout` until its frame is complete.
    """

    def __init__(self, spec: ChannelSpec) -> None:
        self.spec = spec
        self.name = spec.name
        # Received chunks and a connection-lost error, in order; one reader waits on ``_rx_waiter``.
        # (A deque and a bare future, not an asyncio.Queue and asyncio.timeout: at fleet scale every
        # reply chunk passed through them, and their bookkeeping was a visible share of a request's CPU.)
        self._rx: collections.deque[bytes | BaseException] = collections.deque()
        self._rx_waiter: asyncio.Future[None] | None = None
        self._last_rx = 0.0
        self._opened = False
        self.bytes_tx = 0
        self.bytes_rx = 0
        self._rx_trace = bytearray()  # received bytes not yet in the trace (one RX line per reply)
        # How bytes appear in the trace; a protocol client sets one that hides secrets.
        self.trace_format: Callable[[bytes], str] = _hex

    # -- backend hooks -------------------------------------------------------------
    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...

    def _data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        self.bytes_rx += len(data)
        self._rx.append(data)
        self._wake_reader()

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._opened:
            self._opened = False
            self._rx.append(TransportError(f"{self.name}: connection lost ({exc or 'closed by peer'})"))
            self._wake_reader()

    def _wake_reader(self) -> None:
        w = self._rx_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- public API ---------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._opened

    async def open(self) -> None:
        if self._opened:
            return
        self._rx = collections.deque()
        try:
            await self._open()
        except TransportError:
            raise
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot open {self.name}: {exc}") from exc
        self._opened = True
        LOGGER.debug("opened channel %s", self.name)

    async def aclose(self) -> None:
        self.trace_flush()
        if not self._opened:
            return
        self._opened = False
        try:
            await self._close()
        finally:
            LOGGER.debug("closed channel %s", self.name)

    async def __aenter__(self) -> ChannelABC:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def discard_input(self) -> int:
        """Drop everything received but not yet read (stale bytes before a new request)."""
        n = 0
        rx = self._rx
        while rx and not isinstance(rx[0], BaseException):
            n += len(rx.popleft())  # type: ignore[arg-type]
        return n

    async def send(self, data: bytes) -> None:
        """Write one request, after the bus turnaround delay since the last reception."""
        if not self._opened:
            await self.open()
        wait = self._last_rx + self.spec.turnaround - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if TRACE_LOG.isEnabledFor(TRACE):
            self.trace_flush()
            TRACE_LOG.log(TRACE, "%s %s %s", self.name, "TX", self.trace_format(data))
        try:
            self._write(data)
        except OSError as exc:
            raise TransportError(f"{self.name}: write failed: {exc}") from exc
        self.bytes_tx += len(data)

    async def read_chunk(self, within: float) -> bytes:
        """The bytes received since the last call (chunks that arrived meanwhile are joined);
        :class:`NoResponseError` if none within ``within`` seconds."""
        rx = self._rx
        if not rx:
            if self._rx_waiter is not None:
                raise RuntimeError(f"{self.name}: concurrent read_chunk calls")
            loop = asyncio.get_running_loop()
            waiter = self._rx_waiter = loop.create_future()
            timer = loop.call_later(max(within, 0.0), _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._rx_waiter = None
            if not rx:
                raise NoResponseError(f"{self.name}: no data within {within:.3g} s")
        item = rx.popleft()
        if isinstance(item, BaseException):
            raise item
        if rx and not isinstance(rx[0], BaseException):
            parts = [item]
            while rx and not isinstance(rx[0], BaseException):
                parts.append(rx.popleft())  # type: ignore[arg-type]
            item = b"".join(parts)
        if TRACE_LOG.isEnabledFor(TRACE):
            self._rx_trace += item
        return item

    def trace_flush(self) -> None:
        """Put the bytes received since the last request in the trace as one RX line.

        The reader calls it when its reply is complete (or given up); the next request and
        closing the channel call it too. A reply that arrives in several chunks is one line.
        """
        if self._rx_trace:
            data, self._rx_trace = bytes(self._rx_trace), bytearray()
            TRACE_LOG.log(TRACE, "%s %s %s", self.name, "RX", self.trace_format(data))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def open_channel(url: str | ChannelSpec, **options: Any) -> ChannelABC:
    """Build (not yet open) the channel for a URL: ``serial:///dev/ttyUSB0?baud=2400`` or ``tcp://h:p``.

    ``options`` override URL fields (``timeout=``, ``turnaround=``, ``parity=`` ...).
    """
    spec = url if isinstance(url, ChannelSpec) else ChannelSpec.parse(url)
    if options:
        try:
            spec = spec.with_options(**options)
        except TypeError as exc:
            raise ConfigError(f"bad channel option: {exc}") from None
    try:
        module_name, class_name = BACKENDS[spec.scheme]
    except KeyError:
        raise ConfigError(f"no channel backend for scheme {spec.scheme!r}; known: {sorted(BACKENDS)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    channel: ChannelABC = cls(spec)
    return channel
