"""Sans-I/O DL/T 645 master connection (h11 style): bytes in, events out, no I/O.

::

    conn = MasterConnection(quirks)
    transport.write(conn.send(ReadRequest("000000000001", 0x00010000)))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await transport.read())   # b"" is fine; the caller owns timeouts
            continue
        if isinstance(event, FrameDiscarded):             # garbage / bad checksum: keep waiting
            continue
        break                                             # the reply (ReadResponse, Ack, ErrorResponse...)

- One request in flight. A reply is accepted when it matches the key (address, function, DI):
  the address may contain ``A`` wildcard digits (the reply carries the real address); abnormal
  replies carry no DI and match on address and function.
- The echo of our own request (direction bit 0, half-duplex adapters) and replies that do not
  match (late replies to an earlier request, another meter) are dropped and counted.
- A broadcast (99..99) request expects no reply: ``send`` returns the bytes and the connection
  stays idle.
- ``next_event`` and ``receive_data`` raise nothing but :class:`~protocols.errors.ProtocolError`
  subclasses: :class:`~protocols.errors.LocalProtocolError` for API misuse (send while a
  reply is pending), :class:`~protocols.errors.FrameError` for a matching reply whose DATA is
  malformed for its function.
- After a timeout the caller calls :meth:`cancel` (the pending key is forgotten and buffered
  bytes dropped), then may send again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Final

from protocols.dlt645.events import ReadResponse, Reply, Request
from protocols.dlt645.frame import BROADCAST, BadFrame, Deframer, Frame, encode_frame
from protocols.dlt645.quirks import DEFAULT_QUIRKS, Quirks
from protocols.dlt645.services import address_matches, encode_request, parse_reply, request_key
from protocols.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = ["NEED_DATA", "FrameDiscarded", "MasterConnection", "NeedData"]

LOGGER = logging.getLogger(__name__)


class NeedData(Enum):
    """Sentinel: feed more bytes with :meth:`MasterConnection.receive_data`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class FrameDiscarded:
    """Bytes that failed a frame check (``reason``: checksum, end_byte, truncated, overflow ...).
    Informational: the reply may still follow; a client may count these or retry early."""

    reason: str
    raw: bytes


class MasterConnection:
    """State of one master on one bus: at most one outstanding request."""

    def __init__(self, quirks: Quirks = DEFAULT_QUIRKS, *, max_buffer: int = 2048) -> None:
        self.quirks = quirks
        self._deframer = Deframer(max_buffer)
        self._key: tuple[str, int, int | None] | None = None
        self._request: Request | None = None
        self.ignored_echoes = 0
        self.ignored_replies = 0
        self.bad_frames = 0
        self._active_quirks = quirks

    # -- state
    @property
    def pending(self) -> Request | None:
        """The request whose reply we wait for (None when idle)."""
        return self._request

    @property
    def expecting_reply(self) -> bool:
        return self._key is not None

    @property
    def buffered(self) -> int:
        return self._deframer.buffered

    # -- outgoing
    def send(self, request: Request, *, quirks: Quirks | None = None) -> bytes:
        """Encode ``request`` (per quirks) and remember what reply to expect. Broadcasts expect none."""
        if self._key is not None:
            raise LocalProtocolError("a request is already in flight; wait for its reply or cancel()")
        q = quirks or self.quirks
        frame = encode_request(request, q)
        data = encode_frame(frame, preamble=q.request_preamble)
        if frame.address != BROADCAST:
            addr, function, di = request_key(request, q)
            self._key = (addr, function, di)
            self._request = request
            self._active_quirks = q
        return data

    def cancel(self) -> None:
        """Forget the pending request and any partial reply (after a timeout)."""
        self._key = None
        self._request = None
        self._deframer.clear()

    # -- incoming
    def receive_data(self, data: bytes) -> None:
        self._deframer.feed(bytes(data))

    def next_event(self) -> Reply | FrameDiscarded | NeedData:
        """The next reply to the pending request, a discarded-bytes notice, or NEED_DATA."""
        while True:
            item = self._deframer.next_event()
            if item is None:
                return NEED_DATA
            if isinstance(item, BadFrame):
                self.bad_frames += 1
                return FrameDiscarded(item.reason, item.raw)
            reply = self._match(item)
            if reply is not None:
                return reply

    def _match(self, frame: Frame) -> Reply | None:
        if not frame.is_reply:
            self.ignored_echoes += 1
            LOGGER.debug("ignoring a request frame (echo) to %s C=%02X", frame.address, frame.control)
            return None
        key = self._key
        if key is None:
            self.ignored_replies += 1
            LOGGER.debug("ignoring an unsolicited reply from %s C=%02X", frame.address, frame.control)
            return None
        addr, function, di = key
        q = self._active_quirks
        if frame.function != function or not (q.accept_any_address or address_matches(addr, frame.address)):
            self.ignored_replies += 1
            LOGGER.debug("ignoring a reply from %s C=%02X (waiting for %s %02X)", frame.address, frame.control,
                         addr, function)
            return None
        try:
            reply = parse_reply(frame, q)
        except ProtocolError:
            self._key = None
            self._request = None
            raise
        except Exception as exc:  # pragma: no cover - parse_reply raises only ProtocolError by design
            self._key = None
            self._request = None
            raise RemoteProtocolError(f"cannot parse reply: {exc}") from exc
        if isinstance(reply, ReadResponse) and di is not None and reply.di != di:
            self.ignored_replies += 1
            LOGGER.debug("ignoring a reply for DI %08X (waiting for %08X)", reply.di, di)
            return None
        self._key = None
        self._request = None
        return reply
