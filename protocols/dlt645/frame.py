"""DL/T 645 link layer (2007 and 1997 share it): frame encode/decode and a stream deframer.

::

    [FE x 0..n] 68 A0 A1 A2 A3 A4 A5 68 C L DATA(L) CS 16

- A0..A5: address, 2 BCD digits a byte, low byte first; ``AA`` digits are wildcards.
- C: D7 direction (1 = reply), D6 abnormal reply, D5 follow-up frame exists, D4..D0 function.
- DATA: every byte +33H on the wire. CS: sum mod 256 from the first 68 to the last DATA byte.
- The checksum or an address byte can equal 16H, so a frame is delimited by L, never by
  scanning for 16H.

No I/O here: bytes in, :class:`Frame` or :class:`BadFrame` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from protocols.errors import FrameError, LocalProtocolError

__all__ = [
    "BROADCAST",
    "WILDCARD",
    "BadFrame",
    "Deframer",
    "Frame",
    "address_from_wire",
    "address_to_wire",
    "checksum",
    "decode_frame",
    "decode_frame_prefix",
    "encode_frame",
    "scramble",
    "unscramble",
]

START = 0x68
END = 0x16
WAKE = 0xFE
BROADCAST = "999999999999"
WILDCARD = "AAAAAAAAAAAA"
HEADER_LEN = 10  # 68 A0..A5 68 C L
MIN_FRAME = 12  # header + CS + 16
_ADDRESS_NIBBLES = frozenset("0123456789A")


_PLUS_33 = bytes((b + 0x33) & 0xFF for b in range(256))
_MINUS_33 = bytes((b - 0x33) & 0xFF for b in range(256))


def scramble(data: bytes) -> bytes:
    """+33H on every byte (what goes on the wire)."""
    return bytes(data).translate(_PLUS_33)


def unscramble(data: bytes) -> bytes:
    """-33H on every byte (plain data from the wire)."""
    return bytes(data).translate(_MINUS_33)


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def address_to_wire(address: str) -> bytes:
    """``"123456789012"`` -> ``12 90 78 56 34 12``. Shorter addresses are left-padded with 0."""
    if not isinstance(address, str):
        raise LocalProtocolError(f"bad meter address {address!r}: expected a string of digits")
    return _address_to_wire(address)


@lru_cache(maxsize=4096)
def _address_to_wire(address: str) -> bytes:
    a = address.strip().upper()
    if not a or len(a) > 12 or not set(a) <= _ADDRESS_NIBBLES:
        raise LocalProtocolError(f"bad meter address {address!r}: up to 12 digits, 'A' for wildcards")
    return bytes.fromhex(a.rjust(12, "0"))[::-1]


def address_from_wire(raw: bytes) -> str:
    """Six wire bytes to the 12-character address as printed on the meter."""
    return raw[::-1].hex().upper()


@dataclass(frozen=True, slots=True)
class Frame:
    """One DL/T 645 frame. ``data`` is plain (the +33H scrambling is removed)."""

    address: str
    control: int
    data: bytes = b""
    preamble: int = 0  # FE bytes seen before it (decode) or to send (informational)

    @property
    def function(self) -> int:
        return self.control & 0x1F

    @property
    def is_reply(self) -> bool:
        return bool(self.control & 0x80)

    @property
    def abnormal(self) -> bool:
        return bool(self.control & 0x40)

    @property
    def follow_up(self) -> bool:
        return bool(self.control & 0x20)


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Bytes that looked like a frame but failed a check; the deframer resyncs after it."""

    reason: str  # start_byte | end_byte | checksum | truncated | length | overflow
    raw: bytes


def encode_frame(frame: Frame, *, preamble: int = 4) -> bytes:
    if len(frame.data) > 255:
        raise LocalProtocolError(f"DATA too long: {len(frame.data)} bytes (L is one byte)")
    if not 0 <= frame.control <= 0xFF:
        raise LocalProtocolError(f"bad control code {frame.control!r}")
    body = bytearray((START,))
    body += address_to_wire(frame.address)
    body += bytes((START, frame.control, len(frame.data)))
    body += scramble(frame.data)
    body.append(checksum(body))
    body.append(END)
    return bytes((WAKE,)) * preamble + bytes(body)


def _check(buf: bytes | bytearray, start: int) -> tuple[Frame | None, str, int]:
    """Check a candidate frame at ``start``; return (frame, reason, total_length).

    ``reason`` is "" for a good frame and "truncated" when more bytes are needed.
    """
    avail = len(buf) - start
    if avail > 7 and buf[start + 7] != START:
        return None, "start_byte", 8
    if avail < HEADER_LEN:
        return None, "truncated", 0
    length = buf[start + 9]
    total = MIN_FRAME + length
    if avail < total:
        return None, "truncated", total
    cs_at = start + HEADER_LEN + length
    if buf[cs_at] != checksum(buf[start:cs_at]):
        return None, "checksum", total
    if buf[cs_at + 1] != END:
        return None, "end_byte", total
    frame = Frame(
        address=address_from_wire(bytes(buf[start + 1 : start + 7])),
        control=buf[start + 8],
        data=unscramble(bytes(buf[start + HEADER_LEN : cs_at])),
    )
    return frame, "", total


def decode_frame(raw: bytes) -> Frame:
    """Decode exactly one frame, optionally preceded by FE bytes.

    Raises :class:`FrameError` with reason ``start_byte``, ``truncated``, ``checksum``,
    ``end_byte`` or ``length`` (bytes left over after the end byte).
    """
    frame, consumed = decode_frame_prefix(raw)
    if consumed != len(raw):
        raise FrameError("length", f"{len(raw) - consumed} bytes after the end byte")
    return frame


def _checksum_detail(raw: bytes, start: int) -> str:
    cs_at = start + HEADER_LEN + raw[start + 9]
    return f"checksum is {raw[cs_at]:02X}H, computed {checksum(raw[start:cs_at]):02X}H"


def decode_frame_prefix(raw: bytes) -> tuple[Frame, int]:
    """Decode the frame at the start of ``raw`` (after any FE bytes); return it and the number
    of bytes it used, so a caller can report trailing bytes. Raises :class:`FrameError`."""
    i = 0
    while i < len(raw) and raw[i] == WAKE:
        i += 1
    if i >= len(raw):
        raise FrameError("truncated", "no frame start")
    if raw[i] != START:
        raise FrameError("start_byte", f"expected 68H at offset {i}, got {raw[i]:02X}H")
    frame, reason, total = _check(raw, i)
    if frame is None:
        if reason == "checksum":
            detail = _checksum_detail(raw, i)
        else:
            detail = {
                "truncated": f"need {total or HEADER_LEN} bytes from offset {i}, have {len(raw) - i}",
                "start_byte": "second 68H missing at offset 7",
                "end_byte": "16H missing after the checksum",
            }[reason]
        raise FrameError(reason, detail)
    return Frame(frame.address, frame.control, frame.data, preamble=i), i + total


class Deframer:
    """Turns arbitrary chunks of a byte stream into frames.

    Accepts garbage before or between frames, any FE preamble, frames split at any
    byte and several frames in one chunk. A candidate that fails a check yields a
    :class:`BadFrame` and the search restarts one byte later, so a real frame hidden
    inside garbage is still found. The buffer is bounded. Never raises.
    On half-duplex adapters the echo of our own request comes back as a normal
    (direction 0) frame; the client ignores frames that are not replies.
    """

    def __init__(self, max_buffer: int = 2048) -> None:
        self._buf = bytearray()
        self._max = max(max_buffer, MIN_FRAME + 255)
        self._pending: list[Frame | BadFrame] = []
        self.discarded = 0  # bytes thrown away (garbage, FE, bad frames)

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._parse()
        if len(self._buf) > self._max:
            drop = len(self._buf) - self._max
            self._pending.append(BadFrame("overflow", bytes(self._buf[:drop])))
            del self._buf[:drop]
            self.discarded += drop
            self._parse()

    def next_event(self) -> Frame | BadFrame | None:
        return self._pending.pop(0) if self._pending else None

    def events(self) -> list[Frame | BadFrame]:
        out, self._pending = self._pending, []
        return out

    def clear(self) -> None:
        """Forget buffered bytes (e.g. before sending a new request after a timeout)."""
        self.discarded += len(self._buf)
        self._buf.clear()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def peek(self) -> bytes:
        """The buffered bytes not yet part of a frame (an incomplete frame still arriving)."""
        return bytes(self._buf)

    def _parse(self) -> None:
        buf = self._buf
        while True:
            start = buf.find(START)
            if start < 0:
                # Keep a trailing FE run: it is the preamble of a frame still arriving.
                keep = 0
                while keep < min(len(buf), 64) and buf[len(buf) - 1 - keep] == WAKE:
                    keep += 1
                self.discarded += len(buf) - keep
                del buf[: len(buf) - keep]
                return
            preamble = 0
            while preamble < start and buf[start - 1 - preamble] == WAKE:
                preamble += 1
            if start - preamble:
                self.discarded += start - preamble
                del buf[: start - preamble]
            s = preamble  # the FE run stays buffered until the frame is complete
            frame, reason, total = _check(buf, s)
            if frame is not None:
                self._pending.append(Frame(frame.address, frame.control, frame.data, preamble))
                self.discarded += s
                del buf[: s + total]
                continue
            if reason == "truncated":
                # Garbage can look like a frame header with a large L. If a complete good
                # frame already follows in the buffer, this candidate was garbage.
                nxt = self._later_good_frame(s)
                if nxt is None:
                    return
                self._pending.append(BadFrame("truncated", bytes(buf[s:nxt])))
                self.discarded += nxt
                del buf[:nxt]
                continue
            if reason != "start_byte":
                self._pending.append(BadFrame(reason, bytes(buf[s : s + total])))
            self.discarded += s + 1
            del buf[: s + 1]

    def _later_good_frame(self, start: int) -> int | None:
        buf = self._buf
        pos = buf.find(START, start + 1)
        while pos >= 0:
            frame, _, _ = _check(buf, pos)
            if frame is not None:
                return pos
            pos = buf.find(START, pos + 1)
        return None
