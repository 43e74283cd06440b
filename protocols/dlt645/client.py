"""Asyncio DL/T 645 master over any :class:`ChannelABC` (RS-485 serial or a TCP serial server).

- One request in flight per bus, granted by :class:`PriorityLock` (control and on-demand
  reads go ahead of backfill and scheduled collection). A multi-frame read (follow-up
  frames) holds the bus for the whole exchange.
- Replies are matched by (address, function, DI); anything else on the line (the echo
  of our own request on half-duplex adapters, a late reply to an earlier request, noise)
  is skipped. Wildcard requests match the replying meter's real address.
- Reads are retried; commands with side effects are never re-sent blindly: a missing
  reply raises :class:`UnknownOutcomeError`.
- A per-meter :class:`CircuitBreaker`: a silent meter costs its timeout a few times, then
  it is skipped until its back-off expires. Opening and recovery are logged once each.

The frame and value codecs are the sans-I/O modules of this package; this module only
does I/O and bus discipline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from protocols.arbitration import BreakerPolicy, CircuitBreaker, Priority, PriorityLock
from protocols.client import (
    ControlResult,
    Credentials,
    MeterClient,
    RelayCommand,
    RelayControl,
    RelayRequest,
    RelayState,
)
from protocols.dlt645.frame import (
    BROADCAST,
    WILDCARD,
    BadFrame,
    Deframer,
    Frame,
    address_from_wire,
    address_to_wire,
    encode_frame,
)
from protocols.errors import (
    DeviceError,
    FrameError,
    LocalProtocolError,
    NoResponseError,
    TransportError,
    UnknownOutcomeError,
)
from protocols.reading import Quality, Reading
from protocols.transport.base import ChannelABC, open_channel
from protocols.transport.url import ChannelSpec

__all__ = [
    "CONTROL_CODES",
    "ERROR_BITS",
    "Dlt645Client",
    "ReadResult",
    "error_flags",
]

LOGGER = logging.getLogger(__name__)

# Error-information byte of an abnormal reply.
ERROR_BITS: tuple[str, ...] = (
    "other",
    "no_data",
    "password",
    "baud",
    "zone_count",
    "period_count",
    "tariff_count",
    "reserved",
)

# 1C N1 codes.
CONTROL_CODES: dict[RelayCommand, int] = {
    RelayCommand.TRIP: 0x1A,
    RelayCommand.CLOSE_PERMIT: 0x1B,
    RelayCommand.CLOSE_DIRECT: 0x1C,
    RelayCommand.ALARM_ON: 0x2A,
    RelayCommand.ALARM_OFF: 0x2B,
    RelayCommand.KEEP_POWER_ON: 0x3A,
    RelayCommand.KEEP_POWER_OFF: 0x3B,
}

_BAUD_WORD = {600: 0x02, 1200: 0x04, 2400: 0x08, 4800: 0x10, 9600: 0x20, 19200: 0x40}
_READ_FUNCTIONS = frozenset({0x11, 0x12, 0x01, 0x02})
_CLIENT_OPTIONS = frozenset({"retries", "breaker", "breaker_policy", "tz", "preamble", "max_follow_ups", "quirks"})


def error_flags(code: int) -> tuple[str, ...]:
    return tuple(name for bit, name in enumerate(ERROR_BITS) if code & (1 << bit))


def _bcd_byte(n: int) -> int:
    return ((n // 10) % 10) << 4 | (n % 10)


def _time6(t: datetime) -> bytes:
    """``YYMMDDhhmmss`` in wire order: ss mm hh DD MM YY."""
    return bytes(_bcd_byte(x) for x in (t.second, t.minute, t.hour, t.day, t.month, t.year % 100))


def _time5(t: datetime) -> bytes:
    """``YYMMDDhhmm`` in wire order: mm hh DD MM YY."""
    return bytes(_bcd_byte(x) for x in (t.minute, t.hour, t.day, t.month, t.year % 100))


def _hex_le(text: str, nbytes: int, what: str) -> bytes:
    t = text.strip()
    if len(t) > 2 * nbytes or not t or any(c not in "0123456789abcdefABCDEF" for c in t):
        raise LocalProtocolError(f"bad {what}: expected up to {2 * nbytes} hex digits")
    return bytes.fromhex(t.rjust(2 * nbytes, "0"))[::-1]


def _auth(credentials: Credentials) -> bytes:
    """PA P0 P1 P2 C0 C1 C2 C3 (plain)."""
    if not 0 <= credentials.password_level <= 0xFF:
        raise LocalProtocolError("password level must fit one byte")
    return (
        bytes((credentials.password_level,))
        + _hex_le(credentials.password, 3, "password")
        + _hex_le(credentials.operator, 4, "operator code")
    )


def _di_bytes(di: int | str) -> tuple[int, bytes]:
    if isinstance(di, str):
        try:
            value = int(di, 16)
        except ValueError:
            raise LocalProtocolError(f"bad data identifier {di!r}: 8 hex digits (4 for 1997)") from None
    else:
        value = di
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"bad data identifier {di!r}")
    return value, value.to_bytes(4, "little")


def _address_matches(pattern: str, address: str) -> bool:
    p = pattern.rjust(12, "0").upper()
    return len(address) == 12 and all(a == "A" or a == b for a, b in zip(p, address, strict=True))


@dataclass(frozen=True, slots=True)
class ReadResult:
    """The plain data of one read (after the DI), assembled from all follow-up frames."""

    address: str
    di: int
    data: bytes
    frames: int  # how many reply frames carried it
    received_at: datetime


class Dlt645Client(MeterClient, RelayControl):
    """DL/T 645-2007 master for one bus. ``async with Dlt645Client.from_url(url) as c: ...``."""

    protocol = "dlt645"

    def __init__(
        self,
        channel: ChannelABC,
        *,
        retries: int = 1,
        breaker: CircuitBreaker | bool = True,
        breaker_policy: BreakerPolicy | None = None,
        tz: str | tzinfo = "Asia/Shanghai",
        preamble: int = 4,
        max_follow_ups: int = 64,
        quirks: Any = None,
    ) -> None:
        self.channel = channel
        self.retries = max(0, int(retries))
        if isinstance(breaker, CircuitBreaker):
            self.breaker: CircuitBreaker | None = breaker
        elif breaker:
            self.breaker = CircuitBreaker(breaker_policy)
        else:
            self.breaker = None
        self.tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else tz
        self.preamble = preamble
        self.max_follow_ups = max_follow_ups
        self.quirks = quirks
        self.lock = PriorityLock()
        self._deframer = Deframer()
        self._failing: set[str] = set()  # meters whose last request failed: no retries for them
        self.stats: dict[str, int] = {"requests": 0, "replies": 0, "timeouts": 0, "bad_frames": 0, "skipped": 0}

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str | ChannelSpec, **options: Any) -> Dlt645Client:
        """``serial:///dev/ttyUSB0?baud=2400&parity=E`` or ``tcp://host:port``.

        Channel options (``timeout``, ``inter_byte_timeout``, ``turnaround``, ``baud``,
        ``parity``) may be given here too; the rest go to the client.
        """
        client_opts = {k: v for k, v in options.items() if k in _CLIENT_OPTIONS}
        chan_opts = {k: v for k, v in options.items() if k not in _CLIENT_OPTIONS}
        return cls(open_channel(url, **chan_opts), **client_opts)

    async def open(self) -> None:
        await self.channel.open()

    async def aclose(self) -> None:
        await self.channel.aclose()

    async def __aenter__(self) -> Dlt645Client:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the transaction core ----------------------------------------------------------
    def _matches(self, req: Frame, reply: Frame) -> bool:
        if not reply.is_reply or reply.function != req.function:
            return False
        if not _address_matches(req.address, reply.address):
            return False
        if reply.abnormal or req.function not in _READ_FUNCTIONS:
            return True
        n = 2 if req.function in (0x01, 0x02) else 4
        return reply.data[:n] == req.data[:n]

    async def _exchange(self, req: Frame, reply_timeout: float | None) -> tuple[Frame, bytes]:
        """Send one frame and wait for its matching reply (the caller holds the bus)."""
        spec = self.channel.spec
        raw = encode_frame(req, preamble=self.preamble)
        self.channel.discard_input()
        self._deframer.clear()
        self._deframer.events()
        await self.channel.send(raw)
        self.stats["requests"] += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (spec.timeout if reply_timeout is None else reply_timeout)
        bad: BadFrame | None = None
        discarded = self._deframer.discarded
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                chunk = await self.channel.read_chunk(remaining)
            except NoResponseError:
                break
            deadline = max(deadline, loop.time() + spec.inter_byte_timeout)
            self._deframer.feed(chunk)
            for ev in self._deframer.events():
                if isinstance(ev, BadFrame):
                    bad = ev
                    self.stats["bad_frames"] += 1
                elif self._matches(req, ev):
                    self.stats["replies"] += 1
                    return ev, raw
        if bad is not None:
            raise FrameError(bad.reason, f"no valid reply from {req.address}; last bad frame {bad.raw[:40].hex(' ')}")
        if self._deframer.buffered:
            raise FrameError("truncated", f"incomplete reply from {req.address}")
        if self._deframer.discarded > discarded:
            n = self._deframer.discarded - discarded
            raise FrameError("garbage", f"no valid reply from {req.address}, only {n} bytes of line noise")
        self.stats["timeouts"] += 1
        raise NoResponseError(f"no reply from {req.address} within {spec.timeout:g} s")

    async def transact(
        self,
        req: Frame,
        *,
        priority: int = Priority.ON_DEMAND,
        side_effect: bool = False,
        reply_timeout: float | None = None,
        follow: bool = False,
    ) -> list[Frame]:
        """Send ``req`` and return its reply frame(s); raise on an abnormal reply.

        ``follow``: keep reading follow-up frames (12H/02H with SEQ) while the reply says
        more follow, all while holding the bus. ``side_effect``: no retries, and a lost
        reply becomes :class:`UnknownOutcomeError`.
        """
        key = req.address
        if self.breaker is not None and key not in (BROADCAST,) and "A" not in key:
            try:
                self.breaker.check(key)
            except Exception:
                self.stats["skipped"] += 1
                raise
        async with self.lock.hold(priority):
            try:
                frames = await self._with_retries(req, side_effect=side_effect, reply_timeout=reply_timeout)
                while follow and frames[-1].follow_up and not frames[-1].abnormal:
                    if len(frames) > self.max_follow_ups:
                        raise FrameError("length", f"more than {self.max_follow_ups} follow-up frames")
                    seq = len(frames)
                    fn = 0x12 if req.function == 0x11 else 0x02
                    nxt = Frame(frames[0].address, fn, req.data[: 4 if fn == 0x12 else 2] + bytes((seq,)))
                    frames += await self._with_retries(nxt, side_effect=False, reply_timeout=reply_timeout)
            except (NoResponseError, FrameError, TransportError) as exc:
                self._note_failure(key, exc)
                raise
        self._note_success(key)
        last = frames[-1]
        if last.abnormal:
            code = last.data[0] if last.data else 0
            flags = error_flags(code)
            raise DeviceError(
                f"meter {last.address} refused {req.function:02X}H: error {code:02X}H ({', '.join(flags) or 'none'})",
                code=code,
                flags=flags,
                device=last.address,
            )
        return frames

    async def _with_retries(self, req: Frame, *, side_effect: bool, reply_timeout: float | None) -> list[Frame]:
        attempts = 1 if side_effect or req.address in self._failing else 1 + self.retries
        for attempt in range(attempts):
            try:
                reply, _ = await self._exchange(req, reply_timeout)
                return [reply]
            except TransportError as exc:
                if not isinstance(exc, NoResponseError):
                    await self.channel.aclose()  # reopened by the next send
                if side_effect:
                    raise UnknownOutcomeError(f"{req.function:02X}H to {req.address}: {exc}") from exc
                if attempt + 1 >= attempts:
                    raise
                LOGGER.debug("retrying %02XH to %s after: %s", req.function, req.address, exc)
            except FrameError as exc:
                if side_effect:
                    raise UnknownOutcomeError(f"{req.function:02X}H to {req.address}: garbled reply ({exc})") from exc
                if attempt + 1 >= attempts:
                    raise
                LOGGER.debug("retrying %02XH to %s after: %s", req.function, req.address, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_failure(self, key: str, exc: BaseException) -> None:
        if "A" in key or key == BROADCAST:
            return
        self._failing.add(key)
        if self.breaker is not None and self.breaker.failure(key):
            LOGGER.warning("meter %s on %s stopped answering (%s): skipped until its back-off expires",
                           key, self.channel.name, exc)

    def _note_success(self, key: str) -> None:
        self._failing.discard(key)
        if self.breaker is not None and self.breaker.success(key):
            LOGGER.warning("meter %s on %s answers again", key, self.channel.name)

    async def broadcast(self, function: int, data: bytes, *, priority: int = Priority.CONTROL) -> bytes:
        """Send a broadcast frame (no reply) and keep the bus quiet for the turnaround."""
        raw = encode_frame(Frame(BROADCAST, function, data), preamble=self.preamble)
        async with self.lock.hold(priority):
            self.channel.discard_input()
            await self.channel.send(raw)
            self.stats["requests"] += 1
            spec = self.channel.spec
            await asyncio.sleep(max(spec.turnaround, len(raw) * spec.char_time()))
        return raw

    # -- services ------------------------------------------------------------------------
    async def read_raw(
        self, address: str, di: int | str, extra: bytes = b"", *, priority: int = Priority.ON_DEMAND
    ) -> ReadResult:
        """11H read of one DI (block DIs too), follow-up frames assembled into one result."""
        value, di_raw = _di_bytes(di)
        frames = await self.transact(Frame(address, 0x11, di_raw + extra), priority=priority, follow=True)
        data = bytearray(frames[0].data[4:])
        for f in frames[1:]:
            data += f.data[4:-1]  # DI ... SEQ
        return ReadResult(frames[0].address, value, bytes(data), len(frames), datetime.now(UTC))

    async def read_raw_1997(self, address: str, di: int, *, priority: int = Priority.ON_DEMAND) -> ReadResult:
        """01H read of a 1997 two-byte DI."""
        di_raw = (di & 0xFFFF).to_bytes(2, "little")
        frames = await self.transact(Frame(address, 0x01, di_raw), priority=priority, follow=True)
        data = bytearray(frames[0].data[2:])
        for f in frames[1:]:
            data += f.data[2:-1]
        return ReadResult(frames[0].address, di, bytes(data), len(frames), datetime.now(UTC))

    async def read_address(self, address: str = WILDCARD, *, priority: int = Priority.ON_DEMAND) -> str:
        """13H: the address of the meter answering ``address`` (AA…AA: the single meter on the bus)."""
        frames = await self.transact(Frame(address, 0x13), priority=priority)
        f = frames[0]
        return address_from_wire(f.data[:6]) if len(f.data) >= 6 else f.address

    async def write(
        self,
        address: str,
        di: int | str,
        data: bytes,
        credentials: Credentials,
        *,
        priority: int = Priority.CONTROL,
    ) -> None:
        """14H write of plain ``data`` to one DI."""
        _, di_raw = _di_bytes(di)
        await self.transact(Frame(address, 0x14, di_raw + _auth(credentials) + data), priority=priority,
                            side_effect=True)

    async def write_address(self, new_address: str, *, address: str = WILDCARD,
                            priority: int = Priority.CONTROL) -> None:
        """15H: give the single meter on the bus a new address."""
        if not new_address.isdigit() or len(new_address) > 12:
            raise LocalProtocolError("a new address is up to 12 decimal digits")
        await self.transact(Frame(address, 0x15, address_to_wire(new_address)), priority=priority,
                            side_effect=True)

    async def freeze(self, address: str, when: str = "instant", *, priority: int = Priority.CONTROL) -> None:
        """16H freeze. ``when``: "instant", or ``mmhhDDMM`` digits with 99 wildcards (e.g. "00009999" daily 00:00)."""
        if when == "instant":
            data = b"\x99\x99\x99\x99"
        else:
            if len(when) != 8 or not when.isdigit():
                raise LocalProtocolError("freeze time is 8 digits mmhhDDMM (99 = any)")
            data = bytes.fromhex(when)  # mm hh DD MM, already in wire order
        if address == BROADCAST:
            await self.broadcast(0x16, data, priority=priority)
            return
        await self.transact(Frame(address, 0x16, data), priority=priority, side_effect=True)

    async def change_baud(self, address: str, baud: int, *, priority: int = Priority.CONTROL) -> int:
        """17H: ask the meter to switch its rate; returns the rate it confirmed."""
        word = _BAUD_WORD.get(baud)
        if word is None:
            raise LocalProtocolError(f"unsupported baud rate {baud}; one of {sorted(_BAUD_WORD)}")
        frames = await self.transact(Frame(address, 0x17, bytes((word,))), priority=priority, side_effect=True)
        got = frames[0].data[:1]
        inverse = {v: k for k, v in _BAUD_WORD.items()}
        return inverse.get(got[0], baud) if got else baud

    async def max_demand_reset(self, address: str, credentials: Credentials, *,
                               priority: int = Priority.CONTROL) -> None:
        await self.transact(Frame(address, 0x19, _auth(credentials)), priority=priority, side_effect=True)

    async def meter_clear(self, address: str, credentials: Credentials, *, priority: int = Priority.CONTROL) -> None:
        await self.transact(Frame(address, 0x1A, _auth(credentials)), priority=priority, side_effect=True)

    async def event_clear(self, address: str, credentials: Credentials, di: int | str = 0xFFFFFFFF, *,
                          priority: int = Priority.CONTROL) -> None:
        _, di_raw = _di_bytes(di)
        await self.transact(Frame(address, 0x1B, _auth(credentials) + di_raw), priority=priority, side_effect=True)

    def control_frame(self, address: str, command: RelayCommand, credentials: Credentials,
                      valid_until: datetime) -> Frame:
        """The 1C request: PA P0..P2, C0..C3, N1, N2=00, N3..N8 valid-until (meter-local BCD)."""
        until = valid_until.astimezone(self.tz) if valid_until.tzinfo else valid_until
        return Frame(address, 0x1C, _auth(credentials) + bytes((CONTROL_CODES[command], 0)) + _time6(until))

    async def control(
        self, address: str, command: RelayCommand, credentials: Credentials, valid_until: datetime, *,
        priority: int = Priority.CONTROL,
    ) -> ControlResult:
        """1CH remote control. A refusal is returned (accepted=False, reason), not raised."""
        req = self.control_frame(address, command, credentials, valid_until)
        tx = encode_frame(req, preamble=self.preamble)
        try:
            frames = await self.transact(req, priority=priority, side_effect=True)
        except DeviceError as exc:
            rx = encode_frame(Frame(address, 0xDC, bytes((exc.code,))), preamble=0)
            return ControlResult("", False, "refused: " + (", ".join(exc.flags) or f"error {exc.code:02X}H"), tx, rx)
        return ControlResult("", True, "", tx, encode_frame(frames[0], preamble=0))

    async def broadcast_time_sync(self, when: datetime | None = None) -> datetime:
        """08H to 99…99 with ss mm hh DD MM YY in the bus's zone; no reply."""
        t = (when or datetime.now(UTC)).astimezone(self.tz)
        await self.broadcast(0x08, _time6(t))
        return t

    # -- typed helpers used by the daemon and the CLI -----------------------------------------
    async def read_clock(self, address: str, *, priority: int = Priority.ON_DEMAND) -> datetime:
        """The meter clock (04000101 date + 04000102 time), aware in the bus's zone."""
        d = (await self.read_raw(address, 0x04000101, priority=priority)).data
        t = (await self.read_raw(address, 0x04000102, priority=priority)).data
        try:
            yy, mo, dd = _bcd(d[3]), _bcd(d[2]), _bcd(d[1])
            hh, mm, ss = _bcd(t[2]), _bcd(t[1]), _bcd(t[0])
            return datetime(2000 + yy, mo, dd, hh, mm, ss, tzinfo=self.tz)
        except (IndexError, ValueError) as exc:
            raise FrameError("format", f"bad clock from {address}: {d.hex()} {t.hex()}") from exc

    async def relay_state(self, device: str) -> RelayState:
        data = (await self.read_raw(device, 0x04000503, priority=Priority.CONTROL)).data
        if len(data) < 2:
            return RelayState.UNKNOWN
        word = int.from_bytes(data[:2], "little")
        return RelayState.OPEN if word & (1 << 4) else RelayState.CLOSED

    async def relay_command(self, request: RelayRequest) -> ControlResult:
        result = await self.control(request.device, request.command, request.credentials, request.valid_until)
        return ControlResult(request.request_id, result.accepted, result.reason, result.tx, result.rx)

    async def read(
        self, device: str, quantities: Sequence[str], *, priority: Priority = Priority.ON_DEMAND
    ) -> list[Reading]:
        return await self.read_quantities(device, quantities, priority=priority)

    async def read_quantities(
        self, device: str, quantities: Sequence[str], *, priority: int = Priority.ON_DEMAND
    ) -> list[Reading]:
        """Map quantity codes to DIs, read them (one request per DI) and decode to Readings.

        ``ts`` is the receive time (instantaneous values and registers); an unsupported
        item (all FF) is returned with :attr:`Quality.NOT_SUPPORTED`; a DI the meter does
        not have (abnormal reply "no data") raises :class:`DeviceError`.
        """
        out: list[Reading] = []
        for code in quantities:
            item = _QUANTITY_ITEMS.get(code)
            if item is None:
                raise LocalProtocolError(f"no DL/T 645 data identifier for quantity {code!r}")
            res = await self.read_raw(device, item.di, priority=priority)
            value, quality = item.decode(res.data)
            out.append(Reading(res.address, code, res.received_at, value, item.unit, quality, source="dlt645"))
        return out

    async def read_decoded(
        self, device: str, di: int | str, extra: bytes = b"", *, priority: int = Priority.ON_DEMAND
    ) -> dict[str, Any]:
        """Read one DI and decode it with the DI registry: a JSON-ready dict (``di``, ``name``,
        ``value`` or ``values``, ``unit``; unknown DIs give the raw hex with ``unknown: true``)."""
        res = await self.read_raw(device, di, extra, priority=priority)
        out: dict[str, Any]
        try:
            from protocols.dlt645 import registry
        except ImportError:  # pragma: no cover - the registry ships with the codec
            out = {"di": f"{res.di:08X}", "name": "unknown", "unknown": True, "value": res.data.hex()}
        else:
            out = registry.decode_data(res.di, res.data).as_dict()
        out["meter"] = res.address
        out["ts"] = res.received_at.isoformat()
        out["frames"] = res.frames
        return out

    def __repr__(self) -> str:
        return f"<Dlt645Client {self.channel.spec}>"


def _bcd(b: int) -> int:
    hi, lo = b >> 4, b & 0x0F
    if hi > 9 or lo > 9:
        raise ValueError(f"not BCD: {b:02X}")
    return hi * 10 + lo



@dataclass(frozen=True, slots=True)
class _Item:
    di: int
    size: int
    decimals: int
    signed: bool
    unit: str
    offset: int = 0  # byte offset inside the DI's data (blocks, bit fields)
    bit: int = -1  # >= 0: a single bit of a status word

    def decode(self, data: bytes) -> tuple[float, Quality]:
        raw = data[self.offset : self.offset + self.size]
        if len(raw) < self.size:
            raise FrameError("truncated", f"DI {self.di:08X}: {len(data)} bytes, need {self.offset + self.size}")
        if self.bit >= 0:
            return float((int.from_bytes(raw, "little") >> self.bit) & 1), Quality.GOOD
        if all(b == 0xFF for b in raw):
            return float("nan"), Quality.NOT_SUPPORTED
        b = bytearray(raw)
        neg = False
        if self.signed and b[-1] & 0x80:
            neg = True
            b[-1] &= 0x7F
        try:
            n = 0
            for byte in reversed(b):
                n = n * 100 + _bcd(byte)
        except ValueError:
            raise FrameError("bcd", f"DI {self.di:08X}: not BCD {raw.hex()}") from None
        v = n / 10**self.decimals
        return (-v if neg else v), Quality.GOOD


def _quantity_items() -> dict[str, _Item]:
    t: dict[str, _Item] = {}
    for di2, code, signed, unit in (
        (0x00, "energy.active.combined", True, "kWh"),
        (0x01, "energy.active.import", False, "kWh"),
        (0x02, "energy.active.export", False, "kWh"),
    ):
        t[code] = _Item(di2 << 16, 4, 2, signed, unit)
        for n in range(1, 5):
            t[f"{code}.t{n}"] = _Item(di2 << 16 | n << 8, 4, 2, signed, unit)
    for di2, code, signed in ((0x03, "energy.reactive.combined1", True), (0x04, "energy.reactive.combined2", True),
                              (0x05, "energy.reactive.q1", False), (0x06, "energy.reactive.q2", False),
                              (0x07, "energy.reactive.q3", False), (0x08, "energy.reactive.q4", False)):
        t[code] = _Item(di2 << 16, 4, 2, signed, "kvarh")
    t["demand.active.import.max"] = _Item(0x01010000, 3, 4, False, "kW")
    t["demand.active.export.max"] = _Item(0x01020000, 3, 4, False, "kW")
    for i, p in enumerate("abc"):
        t[f"voltage.{p}"] = _Item(0x02010100 + (i << 8), 2, 1, False, "V")
        t[f"current.{p}"] = _Item(0x02020100 + (i << 8), 3, 3, True, "A")
        t[f"power.active.{p}"] = _Item(0x02030100 + (i << 8), 3, 4, True, "kW")
    t["power.active.total"] = _Item(0x02030000, 3, 4, True, "kW")
    t["power.reactive.total"] = _Item(0x02040000, 3, 4, True, "kvar")
    t["power.apparent.total"] = _Item(0x02050000, 3, 4, True, "kVA")
    t["pf.total"] = _Item(0x02060000, 2, 3, True, "")
    t["current.n"] = _Item(0x02800001, 3, 3, False, "A")
    t["frequency"] = _Item(0x02800002, 2, 2, False, "Hz")
    for n in range(1, 8):
        t[f"status.word{n}"] = _Item(0x04000500 | n, 2, 0, False, "")
    t["relay.state"] = _Item(0x04000503, 2, 0, False, "", bit=4)
    t["event.voltage_loss.a.count"] = _Item(0x03010000, 3, 0, False, "")
    t["event.voltage_loss.b.count"] = _Item(0x03010000, 3, 0, False, "", offset=6)
    t["event.voltage_loss.c.count"] = _Item(0x03010000, 3, 0, False, "", offset=12)
    t["event.cover_open.count"] = _Item(0x03300D00, 3, 0, False, "")
    t["event.programming.count"] = _Item(0x03300000, 3, 0, False, "")
    t["event.trip.count"] = _Item(0x1D000001, 3, 0, False, "")
    t["event.close.count"] = _Item(0x1E000001, 3, 0, False, "")
    return t


# Interim quantity map; replaced by the codec's DI registry (protocols.dlt645.registry) when it lands.
_QUANTITY_ITEMS = _quantity_items()
