"""Asyncio DL/T 645 master over any :class:`ChannelABC` (RS-485 serial or a TCP serial server).

It wraps the sans-I/O :class:`~protocols.dlt645.connection.MasterConnection` (frames,
reply matching by (address, function, DI), follow-up assembly, quirks) and adds the I/O
and the bus discipline:

- One request in flight per bus, granted by :class:`PriorityLock` (control and on-demand
  reads go ahead of backfill and scheduled collection). A multi-frame read (follow-up
  frames) holds the bus for the whole exchange.
- Anything else on the line (the echo of our own request on half-duplex adapters, a late
  reply to an earlier request, noise) is skipped by the connection.
- Reads are retried; commands with side effects are never re-sent blindly: a missing or
  garbled reply raises :class:`UnknownOutcomeError`.
- A per-meter :class:`CircuitBreaker`: a silent meter costs its timeout a few times, then it
  is skipped (:class:`CircuitOpenError`, no bus time) until its back-off expires. A meter
  that failed its last request is not retried. Opening and recovery are logged once each.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
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
from protocols.dlt645 import registry
from protocols.dlt645.connection import NEED_DATA, FrameDiscarded, MasterConnection
from protocols.dlt645.events import (
    Ack,
    BroadcastTimeSync,
    ChangeBaud,
    ChangeBaudResponse,
    ChangePassword,
    ControlCommand,
    ErrorResponse,
    EventClear,
    Freeze,
    MaxDemandReset,
    MeterClear,
    Password,
    RawRequest,
    ReadAddress,
    ReadAddressResponse,
    ReadRequest,
    ReadResponse,
    RemoteControl,
    Reply,
    Request,
    WriteAddress,
    WriteData,
)
from protocols.dlt645.frame import BROADCAST, WILDCARD, encode_frame
from protocols.dlt645.quirks import DEFAULT_QUIRKS, Quirks
from protocols.dlt645.registry import Decoded
from protocols.dlt645.services import FollowUpAssembler, encode_request, masked_hex
from protocols.errors import (
    CircuitOpenError,
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

__all__ = ["CONTROL_CODES", "Dlt645Client", "ReadResult"]

LOGGER = logging.getLogger(__name__)

_COMM_ADDRESS_DI = 0x04000401  # parameter "comm address" (registry): what ping() reads

CONTROL_CODES: dict[RelayCommand, ControlCommand] = {
    RelayCommand.TRIP: ControlCommand.TRIP,
    RelayCommand.CLOSE_PERMIT: ControlCommand.CLOSE_PERMIT,
    RelayCommand.CLOSE_DIRECT: ControlCommand.CLOSE_DIRECT,
    RelayCommand.ALARM_ON: ControlCommand.ALARM,
    RelayCommand.ALARM_OFF: ControlCommand.ALARM_RELEASE,
    RelayCommand.KEEP_POWER_ON: ControlCommand.KEEP_POWER,
    RelayCommand.KEEP_POWER_OFF: ControlCommand.KEEP_POWER_RELEASE,
}

_CLIENT_OPTIONS = frozenset(
    {"retries", "breaker", "breaker_policy", "tz", "quirks", "meter_quirks", "max_follow_ups", "preamble"}
)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One read (11H/01H), follow-up frames assembled: plain data after the DI, and its decoding."""

    address: str
    di: int
    data: bytes
    frames: int  # how many reply frames carried it
    received_at: datetime
    decoded: Decoded | None = None


def _password(c: Credentials) -> tuple[Password, str]:
    return Password(c.password_level, c.password), c.operator


@lru_cache(maxsize=256)
def _read_plan(wanted: tuple[str, ...]) -> tuple[tuple[tuple[int, tuple[str, ...]], ...],
                                                 tuple[tuple[int, tuple[str, ...]], ...]]:
    """(single DI, quantities) and (block DI, quantities) to read ``wanted`` (largest blocks first).

    Cached: a fleet asks the same few quantity lists for every meter, every cycle."""
    plan: dict[int, list[str]] = {}
    blocks: dict[int, list[str]] = {}
    for code in wanted:
        if code == "clock.offset":
            continue
        dis = registry.dis_for_quantity(code)
        if not dis:
            raise LocalProtocolError(f"no DL/T 645 data identifier carries quantity {code!r}")
        plan.setdefault(dis[0], []).append(code)
        # Coalesce: quantities sharing a block DI are read with it.
        for di in dis[1:]:
            blocks.setdefault(di, []).append(code)
    return (tuple((di, tuple(c)) for di, c in plan.items()),
            tuple((di, tuple(c)) for di, c in sorted(blocks.items(), key=lambda kv: -len(kv[1]))))


def _is_unicast(address: str) -> bool:
    return address != BROADCAST and "A" not in address.upper()


class Dlt645Client(MeterClient, RelayControl):
    """DL/T 645-2007 master for one bus. ``async with Dlt645Client.from_url(url) as c: ...``.

    ``quirks``: the bus default (:class:`Quirks`); ``meter_quirks``: per-meter overrides
    (address -> Quirks) or a callable returning them. ``tz``: the zone meter clocks keep
    (time stamps on the wire carry no zone).
    """

    protocol = "dlt645"

    def __init__(
        self,
        channel: ChannelABC,
        *,
        retries: int = 1,
        breaker: CircuitBreaker | bool = True,
        breaker_policy: BreakerPolicy | None = None,
        tz: str | tzinfo = "Asia/Shanghai",
        quirks: Quirks | None = None,
        meter_quirks: Mapping[str, Quirks] | Callable[[str], Quirks | None] | None = None,
        max_follow_ups: int = 64,
        preamble: int | None = None,
    ) -> None:
        self.channel = channel
        channel.trace_format = masked_hex  # passwords and operator codes never reach the trace
        self.retries = max(0, int(retries))
        if isinstance(breaker, CircuitBreaker):
            self.breaker: CircuitBreaker | None = breaker
        elif breaker:
            self.breaker = CircuitBreaker(breaker_policy)
        else:
            self.breaker = None
        self.tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else tz
        q = quirks or DEFAULT_QUIRKS
        if preamble is not None:
            q = replace(q, request_preamble=preamble)
        self.quirks = q
        self._meter_quirks = meter_quirks
        self.max_follow_ups = max_follow_ups
        self.lock = PriorityLock()
        self.conn = MasterConnection(self.quirks)
        self._failing: set[str] = set()  # meters whose last request failed: not retried
        self._no_block: set[tuple[str, int]] = set()  # (meter, block DI) the meter refused
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

    def quirks_for(self, address: str) -> Quirks:
        mq = self._meter_quirks
        if mq is None:
            return self.quirks
        q = mq(address) if callable(mq) else mq.get(address)
        return q or self.quirks

    def meter_time(self, t: datetime) -> datetime:
        """An aware time as the naive meter-local time sent on the wire."""
        return t.astimezone(self.tz).replace(tzinfo=None) if t.tzinfo else t

    # -- the transaction core ----------------------------------------------------------
    async def _exchange(self, req: Request, q: Quirks) -> Reply:
        """Send one request and wait for its matching reply (the caller holds the bus)."""
        spec = self.channel.spec
        self.conn.cancel()
        raw = self.conn.send(req, quirks=q)
        self.channel.discard_input()
        echoes, bad_before = self.conn.ignored_echoes, self.conn.bad_frames
        await self.channel.send(raw)
        self.stats["requests"] += 1
        loop = asyncio.get_running_loop()
        # The bus's timeouts come from its URL; a meter with its own quirks entry uses the entry's.
        own = self._meter_quirks is not None and self.quirks_for(req.address) is not self.quirks
        timeout, ibt = (q.response_timeout, q.inter_byte_timeout) if own else (spec.timeout, spec.inter_byte_timeout)
        deadline = loop.time() + timeout
        received = 0
        bad: FrameDiscarded | None = None
        try:
            while True:
                ev = self.conn.next_event()
                if ev is NEED_DATA:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        chunk = await self.channel.read_chunk(remaining)
                    except NoResponseError:
                        break
                    received += len(chunk)
                    deadline = max(deadline, loop.time() + ibt)
                    self.conn.receive_data(chunk)
                elif isinstance(ev, FrameDiscarded):
                    bad = ev
                    self.stats["bad_frames"] += 1
                else:
                    self.stats["replies"] += 1
                    return ev
            partial = self.conn.buffered
        finally:
            self.conn.cancel()
            self.channel.trace_flush()
        if partial and bad is None:
            raise FrameError("truncated", f"incomplete reply from {req.address} ({partial} bytes, then silence)")
        if bad is not None:
            raise FrameError(bad.reason, f"no valid reply from {req.address}; last bad frame {bad.raw[:40].hex(' ')}")
        noise = received - len(raw) * (self.conn.ignored_echoes - echoes)
        if noise > 0 and self.conn.bad_frames == bad_before:
            raise FrameError("garbage", f"no valid reply from {req.address}, only {noise} bytes of line noise")
        self.stats["timeouts"] += 1
        raise NoResponseError(f"no reply from {req.address} within {timeout:g} s")

    async def request(
        self, req: Request, *, priority: int = Priority.ON_DEMAND, side_effect: bool = False
    ) -> Reply:
        """Send ``req``, return its reply (follow-up frames assembled); raise on an abnormal reply.

        ``side_effect``: no retries, and a lost or garbled reply is :class:`UnknownOutcomeError`.
        """
        reply, _ = await self._request(req, priority=priority, side_effect=side_effect)
        return reply

    async def _request(self, req: Request, *, priority: int, side_effect: bool) -> tuple[Reply, int]:
        key = req.address
        frames = 1
        unicast = _is_unicast(key)
        if unicast and self.breaker is not None:
            try:
                self.breaker.check(key)
            except CircuitOpenError:
                self.stats["skipped"] += 1
                raise
        q = self.quirks_for(key)
        async with self.lock.hold(priority):
            try:
                reply = await self._with_retries(req, q, side_effect=side_effect)
                if isinstance(reply, ReadResponse) and reply.more:
                    asm = FollowUpAssembler(reply, q, max_frames=self.max_follow_ups)
                    nxt = asm.next_request()
                    while nxt is not None:
                        part = await self._with_retries(nxt, q, side_effect=False)
                        if isinstance(part, ErrorResponse):
                            reply = part
                            break
                        if not isinstance(part, ReadResponse):
                            raise FrameError("sequence", f"unexpected reply to a follow-up: {part!r}")
                        nxt = asm.add(part)
                    else:
                        reply = asm.result()
                        frames = asm.frames
            except (NoResponseError, FrameError, TransportError, UnknownOutcomeError) as exc:
                if unicast:
                    self._note_failure(key, exc)
                raise
        if unicast:
            self._note_success(key)
        if isinstance(reply, ErrorResponse):
            raise reply.to_error()
        return reply, frames

    async def _with_retries(self, req: Request, q: Quirks, *, side_effect: bool) -> Reply:
        attempts = 1 if side_effect or req.address in self._failing else 1 + self.retries
        if side_effect:
            await self.channel.open()  # a port that cannot open is a plain TransportError: nothing was sent
        for attempt in range(attempts):
            if attempt:  # escalate: a longer FE wake-up run for a meter that did not hear us
                q = replace(q, request_preamble=min(16, max(8, q.request_preamble * 2)))
            try:
                return await self._exchange(req, q)
            except (TransportError, FrameError) as exc:
                if isinstance(exc, TransportError) and not isinstance(exc, NoResponseError):
                    await self.channel.aclose()  # reopened by the next send
                if side_effect:
                    raise UnknownOutcomeError(f"{type(req).__name__} to {req.address}: {exc}") from exc
                if attempt + 1 >= attempts:
                    raise
                LOGGER.debug("retrying %s to %s after: %s", type(req).__name__, req.address, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_failure(self, key: str, exc: BaseException) -> None:
        self._failing.add(key)
        if self.breaker is not None and self.breaker.failure(key):
            LOGGER.warning("meter %s on %s stopped answering (%s): skipped until its back-off expires",
                           key, self.channel.name, exc)

    def _note_success(self, key: str) -> None:
        self._failing.discard(key)
        if self.breaker is not None and self.breaker.success(key):
            LOGGER.warning("meter %s on %s answers again", key, self.channel.name)

    async def broadcast(self, req: Request, *, priority: int = Priority.CONTROL) -> bytes:
        """Send a broadcast request (no reply) and keep the bus quiet for the turnaround."""
        async with self.lock.hold(priority):
            self.conn.cancel()
            raw = self.conn.send(req, quirks=self.quirks)
            self.channel.discard_input()
            await self.channel.send(raw)
            self.stats["requests"] += 1
            spec = self.channel.spec
            await asyncio.sleep(max(spec.turnaround, self.quirks.turnaround, len(raw) * spec.char_time()))
        return raw

    # -- services ------------------------------------------------------------------------
    async def read_raw(
        self,
        address: str,
        di: int | str,
        *,
        count: int | None = None,
        start: datetime | None = None,
        version: int = 2007,
        priority: int = Priority.ON_DEMAND,
    ) -> ReadResult:
        """11H (1997: 01H) read of one DI, block DIs too, ``count`` [+ ``start``] for record reads;
        follow-up frames assembled into one result."""
        n = registry.parse_di(di, version)
        req = ReadRequest(address, n, count, self.meter_time(start) if start else None, version)
        reply, frames = await self._request(req, priority=priority, side_effect=False)
        if not isinstance(reply, ReadResponse):
            raise FrameError("format", f"unexpected reply to a read: {reply!r}")
        decoded = reply.decoded or registry.decode_data(reply.di, reply.data, version,
                                                        self.quirks_for(address).format_options)
        return ReadResult(reply.address, reply.di, reply.data, frames, datetime.now(UTC), decoded)

    async def read_raw_1997(self, address: str, di: int | str, *, priority: int = Priority.ON_DEMAND) -> ReadResult:
        return await self.read_raw(address, di, version=1997, priority=priority)

    async def read_decoded(
        self, device: str, di: int | str, *, count: int | None = None, start: datetime | None = None,
        version: int = 2007, priority: int = Priority.ON_DEMAND,
    ) -> dict[str, Any]:
        """Read one DI and decode it with the DI registry: a JSON-ready dict (``di``, ``name``,
        ``value`` or ``values``, ``unit``; unknown DIs give the raw hex with ``unknown: true``)."""
        res = await self.read_raw(device, di, count=count, start=start, version=version, priority=priority)
        assert res.decoded is not None
        out = res.decoded.as_dict()
        out["meter"] = res.address
        out["ts"] = res.received_at.isoformat()
        out["frames"] = res.frames
        return out

    async def read_address(self, address: str = WILDCARD, *, priority: int = Priority.ON_DEMAND) -> str:
        """13H: the address of the meter answering ``address`` (AA…AA: the single meter on the bus)."""
        reply = await self.request(ReadAddress(address), priority=priority)
        if not isinstance(reply, ReadAddressResponse):
            raise FrameError("format", f"unexpected reply to read-address: {reply!r}")
        return reply.address

    async def ping(self, address: str, *, priority: int = Priority.ON_DEMAND) -> str:
        """Is a meter at ``address``? 11H read of its communication address (04000401): the address that
        answered (13H read-address only works with the wildcard, so a scan asks each address this way)."""
        return (await self.read_raw(address, _COMM_ADDRESS_DI, priority=priority)).address

    async def write(
        self, address: str, di: int | str, value: object, credentials: Credentials, *,
        version: int = 2007, priority: int = Priority.CONTROL,
    ) -> None:
        """14H (1997: 04H) write. ``value``: plain bytes, or a value the DI registry encodes
        (with the meter's quirks, e.g. YY-first times)."""
        n = registry.parse_di(di, version)
        opts = self.quirks_for(address).format_options
        data = bytes(value) if isinstance(value, bytes | bytearray) else registry.encode_data(n, value, version, opts)
        pw, op = _password(credentials)
        req = WriteData(address, n, data, pw, op, version)
        await self.request(req, priority=priority, side_effect=True)

    async def write_address(self, new_address: str, *, address: str = WILDCARD,
                            priority: int = Priority.CONTROL) -> None:
        """15H: give the single meter on the bus a new address."""
        if not new_address.isdigit() or len(new_address) > 12:
            raise LocalProtocolError("a new address is up to 12 decimal digits")
        await self.request(WriteAddress(new_address.rjust(12, "0"), address), priority=priority, side_effect=True)

    async def freeze(
        self, address: str, *, month: int | None = None, day: int | None = None, hour: int | None = None,
        minute: int | None = None, priority: int = Priority.CONTROL,
    ) -> None:
        """16H freeze; ``None`` fields are the 99 wildcard (all None: instant freeze). 99…99: broadcast."""
        req = Freeze(address, month, day, hour, minute)
        if address == BROADCAST:
            await self.broadcast(req, priority=priority)
            return
        await self.request(req, priority=priority, side_effect=True)

    async def change_baud(self, address: str, baud: int, *, priority: int = Priority.CONTROL) -> int:
        """17H: ask the meter to switch its rate; returns the rate it confirmed."""
        reply = await self.request(ChangeBaud(address, baud), priority=priority, side_effect=True)
        if isinstance(reply, ChangeBaudResponse) and reply.baud is not None:
            return reply.baud
        return baud

    async def change_password(
        self, address: str, credentials: Credentials, level: int, new_password: str, *,
        priority: int = Priority.CONTROL,
    ) -> None:
        """18H: set the password of ``level`` (DI 04000C01 + level) with the authority of ``credentials``."""
        if not 0 <= level <= 9:
            raise LocalProtocolError("password levels are 0..9")
        req = ChangePassword(address, 0x04000C01 + level, Password(credentials.password_level, credentials.password),
                             Password(level, new_password))
        await self.request(req, priority=priority, side_effect=True)

    async def max_demand_reset(self, address: str, credentials: Credentials, *,
                               priority: int = Priority.CONTROL) -> None:
        pw, op = _password(credentials)
        await self.request(MaxDemandReset(address, pw, op), priority=priority, side_effect=True)

    async def meter_clear(self, address: str, credentials: Credentials, *, priority: int = Priority.CONTROL) -> None:
        pw, op = _password(credentials)
        await self.request(MeterClear(address, pw, op), priority=priority, side_effect=True)

    async def event_clear(self, address: str, credentials: Credentials, di: int | str = 0xFFFFFFFF, *,
                          priority: int = Priority.CONTROL) -> None:
        pw, op = _password(credentials)
        req = EventClear(address, pw, op, registry.parse_di(di))
        await self.request(req, priority=priority, side_effect=True)

    def control_request(self, address: str, command: RelayCommand, credentials: Credentials,
                        valid_until: datetime) -> RemoteControl:
        pw, op = _password(credentials)
        return RemoteControl(address, CONTROL_CODES[command], self.meter_time(valid_until), pw, op)

    async def control(
        self, address: str, command: RelayCommand, credentials: Credentials, valid_until: datetime, *,
        priority: int = Priority.CONTROL,
    ) -> ControlResult:
        """1CH remote control. A refusal is returned (accepted=False, reason), not raised;
        no reply raises :class:`UnknownOutcomeError`. ``tx``/``rx`` are the frames (they contain
        the password: mask before logging)."""
        req = self.control_request(address, command, credentials, valid_until)
        q = self.quirks_for(address)
        tx = encode_frame(encode_request(req, q), preamble=q.request_preamble)
        try:
            reply = await self.request(req, priority=priority, side_effect=True)
        except DeviceError as exc:
            from protocols.dlt645.services import reply_bytes

            rx = reply_bytes(ErrorResponse(address, 0x1C, exc.code, exc.flags))
            return ControlResult("", False, "refused: " + (", ".join(exc.flags) or f"error {exc.code:02X}H"), tx, rx)
        from protocols.dlt645.services import reply_bytes

        rx = reply_bytes(reply) if isinstance(reply, Ack) else b""
        return ControlResult("", True, "", tx, rx)

    async def raw(
        self, address: str, control: int, data: bytes = b"", *, priority: int = Priority.CONTROL,
        side_effect: bool = True,
    ) -> Reply:
        """Any function as plain DATA (03H ESAM authentication, 1C with PA 98H ciphertext produced by
        the utility's encryption machine...): opaque pass-through, the reply as an event."""
        return await self.request(RawRequest(address, control, bytes(data)), priority=priority,
                                  side_effect=side_effect)

    async def broadcast_time_sync(self, when: datetime | None = None) -> datetime:
        """08H to 99…99 with the time in the bus's zone (ss mm hh DD MM YY); no reply."""
        t = (when or datetime.now(UTC)).astimezone(self.tz)
        await self.broadcast(BroadcastTimeSync(t.replace(tzinfo=None)))
        return t

    # -- typed reads used by the daemon and the CLI --------------------------------------------
    async def read_clock(self, address: str, *, priority: int = Priority.ON_DEMAND) -> datetime:
        """The meter clock (04000101 date + 04000102 time), aware in the bus's zone."""
        d = (await self.read_raw(address, 0x04000101, priority=priority)).decoded
        t = (await self.read_raw(address, 0x04000102, priority=priority)).decoded
        dv = d.value if d else None
        tv = t.value if t else None
        if not hasattr(dv, "year") or not hasattr(tv, "hour"):
            raise FrameError("format", f"bad clock from {address}: {dv!r} {tv!r}")
        return datetime(dv.year, dv.month, dv.day, tv.hour, tv.minute, tv.second,  # type: ignore[union-attr]
                        tzinfo=self.tz)

    async def relay_state(self, device: str) -> RelayState:
        res = await self.read_raw(device, 0x04000503, priority=Priority.CONTROL)
        if len(res.data) < 2:
            return RelayState.UNKNOWN
        word = int.from_bytes(res.data[:2], "little")
        return RelayState.OPEN if word & (1 << 4) else RelayState.CLOSED

    async def relay_command(self, request: RelayRequest) -> ControlResult:
        result = await self.control(request.device, request.command, request.credentials, request.valid_until)
        return ControlResult(request.request_id, result.accepted, result.reason, result.tx, result.rx)

    async def read(
        self, device: str, quantities: Sequence[str], *, priority: Priority = Priority.ON_DEMAND
    ) -> list[Reading]:
        """Map quantity codes to DIs (via the registry), read and decode them, one Reading each.

        Several quantities carried by one block DI (e.g. voltage.a/b/c in 0201FF00) are read
        with one request; if the meter refuses the block, they are read one by one. ``ts`` is
        the receive time (registers, instantaneous values); ``clock.offset`` reads the clock.
        """
        wanted = list(dict.fromkeys(quantities))
        plan, blocks = _read_plan(tuple(wanted))
        got: dict[str, Reading] = {}
        for di, block_codes in blocks:
            codes = [c for c in block_codes if c not in got]
            singles = {registry.dis_for_quantity(c)[0] for c in codes}
            if len(codes) < 2 or len(singles) < 2 or (device, di) in self._no_block:
                continue
            try:
                res = await self.read_raw(device, di, priority=priority)
            except DeviceError:
                self._no_block.add((device, di))  # remembered: next time the items are read one by one
                continue
            for r in self._readings(res):
                if r.quantity in codes and r.quantity not in got:
                    got[r.quantity] = r
        for di, single_codes in plan:
            if all(c in got for c in single_codes):
                continue
            res = await self.read_raw(device, di, priority=priority)
            for r in self._readings(res):
                if r.quantity in single_codes and r.quantity not in got:
                    got[r.quantity] = r
        if "clock.offset" in wanted:
            clock = await self.read_clock(device, priority=priority)
            now = datetime.now(UTC)
            got["clock.offset"] = Reading(device, "clock.offset", now, (clock - now).total_seconds(), "s",
                                          source="dlt645")
        missing = [c for c in wanted if c not in got]
        if missing:
            raise FrameError("format", f"meter {device} replied without {', '.join(missing)}")
        return [got[c] for c in wanted]

    def _readings(self, res: ReadResult, quality: Quality = Quality.GOOD) -> list[Reading]:
        if res.decoded is None:
            return []
        return res.decoded.readings(res.address, res.received_at, tz=self.tz, quality=quality)

    # -- history (backfill) ---------------------------------------------------------------------
    async def read_daily_frozen(
        self, device: str, n: int = 1, *, priority: int = Priority.BACKFILL
    ) -> list[Reading]:
        """The ``n``-th previous daily freeze (0506FF nn: time + forward/reverse blocks), stamped with
        the freeze time. Falls back to 05060001 + 05060101 + 05060201 when the block is refused."""
        if not 1 <= n <= 62:
            raise LocalProtocolError("daily frozen records are numbered 1..62")
        try:
            res = await self.read_raw(device, 0x0506FF00 | n, priority=priority)
            readings = self._readings(res, Quality.BACKFILLED)
            if readings:
                return readings
        except DeviceError as exc:
            if "no_data" not in exc.flags and "other" not in exc.flags:
                raise
        t = await self.read_raw(device, 0x05060000 | n, priority=priority)
        stamp = t.decoded.value if t.decoded else None
        if not isinstance(stamp, datetime):
            raise FrameError("format", f"bad freeze time from {device}")
        when = stamp.replace(tzinfo=self.tz)
        out: list[Reading] = []
        for item in (0x01, 0x02):
            res = await self.read_raw(device, 0x05060000 | item << 8 | n, priority=priority)
            if res.decoded is not None:
                out += res.decoded.readings(res.address, when, tz=self.tz, quality=Quality.BACKFILLED)
        return out

    async def read_settlement(
        self, device: str, n: int = 1, *, priority: int = Priority.SCHEDULED
    ) -> list[Reading]:
        """Energy registers frozen at the ``n``-th previous monthly settlement (结算日), stamped with
        that instant: :func:`protocols.dlt645.settlement.read_settlement`."""
        from protocols.dlt645.settlement import read_settlement  # it types against this class

        return await read_settlement(self, device, n, priority=priority)

    async def read_load_profile(
        self, device: str, start: datetime, count: int, *, priority: int = Priority.BACKFILL,
        per_request: int = 8,
    ) -> list[Reading]:
        """Load-profile records (06000001: N records from ``start``), stamped with each record's time.

        Returns the register values of each record (forward/reverse active energy, demand,
        voltages...) and ``interval.energy.active.import`` computed from consecutive records.
        """
        out: list[Reading] = []
        t = start
        left = count
        prev: tuple[datetime, float] | None = None
        while left > 0:
            n = min(per_request, left, 99)
            try:
                res = await self.read_raw(device, 0x06000001, count=n, start=t, priority=priority)
            except DeviceError as exc:
                if "no_data" in exc.flags:
                    break
                raise
            readings = self._readings(res, Quality.BACKFILLED)
            if not readings:
                break
            out += readings
            stamps = sorted({r.ts for r in readings})
            for r in sorted((r for r in readings if r.quantity == "energy.active.import"), key=lambda r: r.ts):
                if prev is not None and not math.isnan(r.value) and r.ts > prev[0]:
                    out.append(Reading(r.meter, "interval.energy.active.import", prev[0],
                                       round(r.value - prev[1], 4), "kWh", Quality.BACKFILLED, "dlt645"))
                prev = (r.ts, r.value)
            left -= len(stamps)
            t = stamps[-1] + timedelta(minutes=1)
            if len(stamps) < n:
                break
        return out

    def __repr__(self) -> str:
        return f"<Dlt645Client {self.channel.spec}>"
