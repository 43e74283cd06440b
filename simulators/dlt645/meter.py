"""One simulated DL/T 645-2007 meter: state, history and the request handlers.

``SimMeter.handle(frame)`` takes a decoded request :class:`Frame` and returns the reply
frames (none for broadcasts). Byte-level faults (silence, garbage, bad checksum, delay)
are the bus's job (:mod:`simulators.dlt645.bus`); the meter only produces the replies a
real meter would, including abnormal replies where a real meter gives them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from protocols.dlt645.events import (
    Ack,
    BroadcastTimeSync,
    ChangeBaud,
    ChangeBaudResponse,
    ChangePassword,
    ErrorResponse,
    EventClear,
    Freeze,
    Function,
    MaxDemandReset,
    MeterClear,
    Password,
    ReadAddress,
    ReadAddressResponse,
    ReadFollowUp,
    ReadRequest,
    ReadResponse,
    RemoteControl,
    Reply,
    WriteAddress,
    WriteData,
)
from protocols.dlt645.frame import BROADCAST, Frame, address_to_wire
from protocols.dlt645.quirks import DEFAULT_QUIRKS, Quirks
from protocols.dlt645.services import encode_reply, parse_request, split_read_reply
from protocols.errors import FrameError, LocalProtocolError
from simulators.clock import SimClock
from simulators.dlt645.physics import SLOT_S, EnergySnapshot, MeterPhysics
from simulators.dlt645.wire import bcd, bcd_int, date4, decode_bcd_int, time3, ts5, ts6, ts7
from simulators.faults import Fault, FaultSet
from simulators.loadprofile import LoadProfile

__all__ = ["ERR_BAUD", "ERR_NO_DATA", "ERR_OTHER", "ERR_PASSWORD", "ControlEvent", "SimMeter"]

LOGGER = logging.getLogger(__name__)

ERR_OTHER = 0x01
ERR_NO_DATA = 0x02
ERR_PASSWORD = 0x04
ERR_BAUD = 0x08

MAX_REPLY_DATA = 200  # a read reply carries at most 200 data bytes; the rest goes in follow-up frames

# Characteristic word Z (17H) -> baud rate; one bit set.
BAUD_BITS: dict[int, int] = {0x02: 600, 0x04: 1200, 0x08: 2400, 0x10: 4800, 0x20: 9600, 0x40: 19200}
SUPPORTED_BAUDS = (1200, 2400, 4800, 9600)

# 1997 two-byte DIs the meter also answers (function 01), mapped to their 2007 items.
DI_1997: dict[int, tuple[int, Callable[[bytes], bytes]]] = {
    0x9010: (0x00010000, lambda b: b),
    0x9020: (0x00020000, lambda b: b),
    0x901F: (0x0001FF00, lambda b: b),
    0xB611: (0x02010100, lambda b: bcd(decode_bcd_int(b) / 10.0, 2, 0)),  # 1997 voltage is XXX V
    0xB621: (0x02020100, lambda b: bcd(decode_bcd_int(bytes((*b[:2], b[2] & 0x7F))) / 1000.0, 2, 2)),  # XX.XX A
    0xB630: (0x02030000, lambda b: b),
    0xC010: (0x04000101, lambda b: b),
    0xC011: (0x04000102, lambda b: b),
    0xC032: (0x04000401, lambda b: b),
}

_STANDARD_CONTROLS = {0x1A: "trip", 0x1B: "close_permit", 0x1C: "close_direct", 0x2A: "alarm_on",
                      0x2B: "alarm_off", 0x3A: "keep_power_on", 0x3B: "keep_power_off"}


@dataclass(frozen=True, slots=True)
class ControlEvent:
    at: datetime  # meter clock
    command: str
    operator: str  # operator code as sent (8 hex digits)
    accepted: bool
    error: int = 0


class _Reject(Exception):
    def __init__(self, err: int) -> None:
        self.err = err


@dataclass
class _Events:
    voltage_loss: list[int] = field(default_factory=lambda: [2, 0, 1])
    voltage_loss_minutes: list[int] = field(default_factory=lambda: [37, 0, 5])
    cover_open: int = 1
    programming: int = 0
    trip: int = 0
    close: int = 0
    last_cover_open: tuple[datetime, datetime] | None = None
    last_programming: tuple[datetime, str, list[int]] | None = None
    last_trip: tuple[datetime, str] | None = None
    last_close: tuple[datetime, str] | None = None


class SimMeter:
    """A three-phase DL/T 645-2007 meter on a simulated bus."""

    def __init__(
        self,
        address: str,
        *,
        index: int,
        clock: SimClock,
        profile: LoadProfile,
        history_start: datetime,
        tz: ZoneInfo,
        faults: FaultSet | None = None,
        passwords: dict[int, str] | None = None,
        pv_kw: float = 0.0,
        initial_kwh: float = 0.0,
        quirks: Quirks = DEFAULT_QUIRKS,
    ) -> None:
        self.address = address
        self.quirks = quirks  # how this meter bends the standard (time order, DI map...)
        self.index = index
        self.clock_source = clock
        self.tz = tz
        self.faults = faults or FaultSet()
        self.passwords: dict[int, str] = dict(passwords or {2: "123456", 4: "000000"})
        self.meter_number = address
        self.physics = MeterPhysics(index, profile, history_start, initial_kwh=initial_kwh, pv_kw=pv_kw)
        self.history_start = self.physics.epoch
        self.relay_open = False
        self.relay_armed = False  # close permitted, waiting for the button
        self.relay_commanded_open = False
        self.keep_power = False
        self.alarm = False
        self.baud = 2400
        self.clock_offset = 0.0  # seconds, set by time sync / writes
        self._drift_base = clock.elapsed()
        self._clear_base: EnergySnapshot | None = None
        self._clear_at: datetime | None = None
        self.events = _Events()
        self.params: dict[int, bytes] = {}
        self.control_log: list[ControlEvent] = []
        self.instant_freeze: tuple[datetime, EnergySnapshot] | None = None
        self._followups: dict[int, list[ReadResponse]] = {}

    # -- time ---------------------------------------------------------------------
    def true_now(self) -> datetime:
        return self.clock_source.now()

    def clock_error(self) -> float:
        """Seconds the meter clock is ahead of simulated time."""
        drift = self.faults.value(Fault.CLOCK_DRIFT) * (self.clock_source.elapsed() - self._drift_base) / 3600.0
        return self.clock_offset + self.faults.value(Fault.CLOCK_OFFSET) + drift

    def clock(self) -> datetime:
        """The meter's own clock, aware, in the meter's zone."""
        return (self.true_now() + timedelta(seconds=self.clock_error())).astimezone(self.tz)

    def _local(self, t: datetime) -> datetime:
        return t.astimezone(self.tz)

    def set_clock(self, local_naive: datetime) -> None:
        wanted = local_naive.replace(tzinfo=self.tz)
        self._drift_base = self.clock_source.elapsed()
        self.clock_offset = (wanted - self.true_now()).total_seconds() - self.faults.value(Fault.CLOCK_OFFSET)

    # -- energy ---------------------------------------------------------------------
    def energy(self, at: datetime | None = None) -> EnergySnapshot:
        e = self.physics.energy_at(at or self.true_now())
        if self._clear_base is not None:
            e = e.minus(self._clear_base)
        return e

    @property
    def energy_import(self) -> float:
        return self.energy().imp

    @property
    def energy_export(self) -> float:
        return self.energy().exp

    @property
    def tariff_energy(self) -> list[float]:
        return list(self.energy().imp_t)

    def _history_floor(self) -> datetime:
        return max(self.history_start, self._clear_at or self.history_start)

    def press_button(self) -> bool:
        """The customer presses the close button: closes the relay if a close was permitted."""
        if self.relay_open and self.relay_armed:
            self._close_relay("button")
            return True
        return False

    # -- status words ---------------------------------------------------------------
    def status_word(self, n: int) -> int:
        if n == 1:
            reverse = self.physics.slot_kw(self.physics.slot_of(self.true_now())) < 0
            return (1 << 4) if reverse else 0
        if n == 3:
            w = 0
            if self.relay_open:
                w |= 1 << 4
            if self.relay_commanded_open:
                w |= 1 << 6
            if self.alarm:
                w |= 1 << 7
            return w
        return 0

    # -- frame handling ---------------------------------------------------------------
    def accepts(self, address: str) -> bool:
        """Whether a request to ``address`` (exact, AA wildcards, broadcast) is for this meter."""
        if address == BROADCAST:
            return True
        if len(address) != 12:
            return False
        return all(a == "A" or a == m for a, m in zip(address, self.address, strict=True))

    def handle(self, frame: Frame) -> list[Frame]:
        """Replies to one request frame (empty: no reply), through the codec's request parser
        and reply encoder (:mod:`protocols.dlt645.services`)."""
        if frame.is_reply:
            return []
        broadcast = frame.address == BROADCAST
        fn = frame.function
        if self.faults.has(Fault.ABNORMAL) and not broadcast:
            return [encode_reply(ErrorResponse(self.address, fn, int(self.faults.value(Fault.ABNORMAL)) or 1))]
        try:
            req = parse_request(frame, self.quirks)
            handler = _HANDLERS.get(type(req))
            if handler is None:
                raise _Reject(ERR_OTHER)
            replies = handler(self, req)
        except _Reject as exc:
            replies = [ErrorResponse(self.address, fn, exc.err)]
        except FrameError:
            replies = [ErrorResponse(self.address, fn, ERR_BAUD if fn == Function.CHANGE_BAUD else ERR_OTHER)]
        except (ValueError, IndexError, KeyError, LocalProtocolError):
            replies = [ErrorResponse(self.address, fn, ERR_OTHER)]
        if broadcast:
            return []
        return [encode_reply(r, self.quirks) for r in replies]

    def _check_password(self, pw: Password) -> None:
        want = self.passwords.get(pw.level)
        if want is None or want.upper() != pw.password.upper():
            raise _Reject(ERR_PASSWORD)

    # 11H / 01H read ---------------------------------------------------------------
    def _read(self, req: ReadRequest) -> list[Reply]:
        if req.version == 1997:
            m = DI_1997.get(req.di)
            value = self.read_value(m[0]) if m else None
            if m is None or value is None:
                raise _Reject(ERR_NO_DATA)
            return [ReadResponse(self.address, req.di, m[1](value), function=0x01, version=1997)]
        extra = b""
        if req.count is not None:
            extra = bcd_int(req.count, 1) + (ts5(req.start) if req.start is not None else b"")
        di = self.quirks.standard_di(req.di)  # a vendor DI map: the wire DI serves a standard item
        if di == req.di and self.quirks.wire_di(di) != di:
            raise _Reject(ERR_NO_DATA)  # this meter serves that item under another DI only
        payload = self.read_value(di, extra)
        if payload is None:
            raise _Reject(ERR_NO_DATA)
        parts = split_read_reply(self.address, di, payload, max_data=min(MAX_REPLY_DATA, self.quirks.max_data))
        if len(parts) > 1:
            self._followups[di] = parts[1:]
        return [parts[0]]

    def _read_follow(self, req: ReadFollowUp) -> list[Reply]:
        di = self.quirks.standard_di(req.di)
        parts = self._followups.get(di)
        if not parts or not 1 <= req.seq <= len(parts):
            raise _Reject(ERR_NO_DATA)
        if req.seq == len(parts):
            self._followups.pop(di, None)
        return [parts[req.seq - 1]]

    def read_value(self, di: int, extra: bytes = b"") -> bytes | None:
        """The plain data bytes of one DI (after the DI), or None when the meter has no such data."""
        fixed = _READERS.get(di)
        if fixed is not None:
            return fixed(self)
        if di in self.params:
            return self.params[di]
        for family in _FAMILIES:
            out = family(self, di, extra)
            if out is not _NOT_MINE:
                return out if isinstance(out, bytes) else None
        return None

    # 13H read address / 15H write address ------------------------------------
    def _read_address(self, req: ReadAddress) -> list[Reply]:
        return [ReadAddressResponse(self.address)]

    def _write_address(self, req: WriteAddress) -> list[Reply]:
        if not req.new_address.isdigit():
            raise _Reject(ERR_OTHER)
        self.address = req.new_address
        return [Ack(self.address, Function.WRITE_ADDRESS)]

    # 14H write --------------------------------------------------------------------
    def _write(self, req: WriteData) -> list[Reply]:
        self._check_password(req.password)
        di, value = req.di, req.data
        now_local = self.clock().replace(tzinfo=None)
        if di == 0x04000101:  # date YYMMDDWW
            _, dd, mo, yy = (decode_bcd_int(bytes((b,))) for b in value[:4])
            self.set_clock(now_local.replace(year=2000 + yy, month=mo, day=dd))
        elif di == 0x04000102:  # time hhmmss
            ss, mm, hh = (decode_bcd_int(bytes((b,))) for b in value[:3])
            self.set_clock(now_local.replace(hour=hh, minute=mm, second=ss))
        elif di == 0x0400010C:
            ss, mm, hh, _, dd, mo, yy = (decode_bcd_int(bytes((b,))) for b in value[:7])
            self.set_clock(datetime(2000 + yy, mo, dd, hh, mm, ss))
        elif di >> 24 == 0x04:
            if di in _READERS and di not in _WRITABLE:
                raise _Reject(ERR_PASSWORD)  # read-only item: unauthorised
            self.params[di] = bytes(value)
        else:
            raise _Reject(ERR_PASSWORD)
        self.events.programming += 1
        self.events.last_programming = (self.clock(), req.operator, [di])
        return [Ack(self.address, Function.WRITE_DATA)]

    # 16H freeze ---------------------------------------------------------------------
    def _freeze(self, req: Freeze) -> list[Reply]:
        if req.month is None and req.day is None and req.hour is None and req.minute is None:
            self.instant_freeze = (self.clock(), self.energy())
        else:
            self.params[0x04001201] = bytes(
                0x99 if v is None else bcd_int(v, 1)[0] for v in (req.minute, req.hour, req.day, req.month)
            )
        return [Ack(self.address, Function.FREEZE)]

    # 17H change baud ----------------------------------------------------------------
    def _change_baud(self, req: ChangeBaud) -> list[Reply]:
        if req.baud not in SUPPORTED_BAUDS:
            raise _Reject(ERR_BAUD)
        self.baud = req.baud
        return [ChangeBaudResponse(self.address, req.baud)]

    # 19H / 1AH / 1BH -----------------------------------------------------------------
    def _md_reset(self, req: MaxDemandReset) -> list[Reply]:
        self._check_password(req.password)
        self.physics.reset_max_demand(self.true_now())
        return [Ack(self.address, Function.MAX_DEMAND_RESET)]

    def _meter_clear(self, req: MeterClear) -> list[Reply]:
        self._check_password(req.password)
        now = self.true_now()
        self._clear_base = self.physics.energy_at(now)
        self._clear_at = now
        self.physics.reset_max_demand(now)
        self.events = _Events(voltage_loss=[0, 0, 0], voltage_loss_minutes=[0, 0, 0], cover_open=0)
        return [Ack(self.address, Function.METER_CLEAR)]

    def _event_clear(self, req: EventClear) -> list[Reply]:
        self._check_password(req.password)
        di = req.di
        if di == 0xFFFFFFFF:
            self.events = _Events(voltage_loss=[0, 0, 0], voltage_loss_minutes=[0, 0, 0], cover_open=0)
        elif di >> 16 == 0x0301:
            self.events.voltage_loss = [0, 0, 0]
            self.events.voltage_loss_minutes = [0, 0, 0]
        elif di >> 8 == 0x03300D:
            self.events.cover_open = 0
            self.events.last_cover_open = None
        else:
            raise _Reject(ERR_NO_DATA)
        return [Ack(self.address, Function.EVENT_CLEAR)]

    # 1CH remote control ---------------------------------------------------------------
    def _control(self, req: RemoteControl) -> list[Reply]:
        command = _STANDARD_CONTROLS.get(int(req.command), "?")
        try:
            self._check_password(req.password)
            valid_until = req.valid_until.replace(tzinfo=self.tz)
            if valid_until < self.clock():
                raise _Reject(ERR_OTHER)  # command expired
            self._apply_control(command, req.operator)
        except _Reject as exc:
            self.control_log.append(ControlEvent(self.clock(), command, req.operator, False, exc.err))
            raise
        self.control_log.append(ControlEvent(self.clock(), command, req.operator, True))
        return [Ack(self.address, Function.REMOTE_CONTROL)]

    def _apply_control(self, command: str, operator: str) -> None:
        if command == "trip":
            if self.keep_power:
                raise _Reject(ERR_OTHER)  # keep-power (保电) blocks trips
            self.relay_commanded_open = True
            self.relay_armed = False
            if not self.relay_open:
                self.relay_open = True
                self.physics.set_supply(False, self.true_now())
                self.events.trip += 1
                self.events.last_trip = (self.clock(), operator)
        elif command == "close_permit":
            self.relay_commanded_open = False
            self.relay_armed = True
        elif command == "close_direct":
            self.relay_commanded_open = False
            self._close_relay(operator)
        elif command == "alarm_on":
            self.alarm = True
        elif command == "alarm_off":
            self.alarm = False
        elif command == "keep_power_on":
            self.keep_power = True
            self.relay_commanded_open = False
            self._close_relay(operator)
        elif command == "keep_power_off":
            self.keep_power = False
        else:
            raise _Reject(ERR_OTHER)

    def _close_relay(self, operator: str) -> None:
        self.relay_armed = False
        if self.relay_open:
            self.relay_open = False
            self.physics.set_supply(True, self.true_now())
            self.events.close += 1
            self.events.last_close = (self.clock(), operator)

    # 18H change password ------------------------------------------------------------
    def _change_password(self, req: ChangePassword) -> list[Reply]:
        level = (req.di & 0xFF) - 1  # 04000C01..0A: password of level 0..9
        if req.di >> 8 != 0x04000C or not 0 <= level <= 9 or req.new.level != level:
            raise _Reject(ERR_OTHER)
        self._check_password(req.old)
        if req.old.level > level:
            raise _Reject(ERR_PASSWORD)  # a lower authority cannot set a higher one
        self.passwords[level] = req.new.password.upper()
        self.events.programming += 1
        data = bytes((level,)) + bytes.fromhex(req.new.password.rjust(6, "0"))[::-1]
        return [Ack(self.address, Function.CHANGE_PASSWORD, data)]

    # 08H broadcast time sync --------------------------------------------------------------
    def _time_sync(self, req: BroadcastTimeSync) -> list[Reply]:
        self.set_clock(req.time)
        return []

    # -- history -------------------------------------------------------------------------
    def frozen_time(self, kind: str, n: int) -> datetime | None:
        """Meter-local time of the ``n``-th previous hourly/daily freeze, None if before history."""
        now = self.clock()
        if kind == "daily":
            last = now.replace(hour=0, minute=0, second=0, microsecond=0)
            t = (last - timedelta(days=n - 1)).replace(tzinfo=self.tz)
        else:
            last = now.replace(minute=0, second=0, microsecond=0)
            t = last - timedelta(hours=n - 1)
        true_t = t - timedelta(seconds=self.clock_error())
        if n < 1 or true_t < self._history_floor():
            return None
        return t

    def frozen_energy(self, t_meter: datetime) -> EnergySnapshot:
        return self.energy(t_meter - timedelta(seconds=self.clock_error()))

    @property
    def frozen_daily(self) -> list[tuple[datetime, EnergySnapshot]]:
        out = []
        n = 1
        while (t := self.frozen_time("daily", n)) is not None and n <= 62:
            out.append((t, self.frozen_energy(t)))
            n += 1
        return out[::-1]

    @property
    def frozen_hourly(self) -> list[tuple[datetime, EnergySnapshot]]:
        out = []
        n = 1
        while (t := self.frozen_time("hourly", n)) is not None and n <= 254:
            out.append((t, self.frozen_energy(t)))
            n += 1
        return out[::-1]

    def profile_slots(self) -> tuple[datetime, datetime]:
        """Meter-local start of the first and last complete 15-minute load-profile record."""
        err = timedelta(seconds=self.clock_error())
        first = self._local(self._history_floor() + err)
        first = _ceil_slot(first)
        last = _floor_slot(self.clock())
        return first, last

    def load_profile_record(self, t_meter: datetime) -> bytes:
        """One 2007 load record (A0 A0 len YYMMDDhhmm 6 sections split by AA, CS, E5) at ``t_meter``."""
        true_t = t_meter - timedelta(seconds=self.clock_error())
        inst = self.physics.instant(true_t)
        e = self.energy(true_t)  # registers at the record time
        kw = self.physics.slot_kw(max(0, self.physics.slot_of(true_t) - 1))  # demand of the interval just ended
        s1 = (bcd(inst["voltage.a"], 2, 1) + bcd(inst["voltage.b"], 2, 1) + bcd(inst["voltage.c"], 2, 1)
              + b"".join(bcd(inst[f"current.{p}"], 3, 3, signed=True) for p in "abc") + bcd(inst["frequency"], 2, 2))
        s2 = (b"".join(bcd(inst[k], 3, 4, signed=True) for k in
                       ("power.active.total", "power.active.a", "power.active.b", "power.active.c"))
              + bcd(inst["power.reactive.total"], 3, 4, signed=True) + b"\x00\x00\x00" * 3)
        s3 = bcd(inst["pf.total"], 2, 3, signed=True) * 4
        s4 = bcd(e.imp, 4, 2) + bcd(e.exp, 4, 2) + bcd(e.q[0] + e.q[1], 4, 2) + bcd(e.q[2] + e.q[3], 4, 2)
        s5 = b"".join(bcd(q, 4, 2) for q in e.q)
        s6 = bcd(max(kw, 0.0), 3, 4) + bcd(0.0, 3, 4)
        body = ts5(t_meter) + s1 + b"\xaa" + s2 + b"\xaa" + s3 + b"\xaa" + s4 + b"\xaa" + s5 + b"\xaa" + s6 + b"\xaa"
        rec = bytearray(b"\xa0\xa0") + bytes((len(body),)) + body
        rec.append(sum(rec) & 0xFF)
        rec.append(0xE5)
        return bytes(rec)

    @property
    def load_profile(self) -> list[tuple[datetime, float]]:
        """(meter-local interval start, forward active kWh in the interval), oldest first
        (the last record time closes the last interval)."""
        first, last = self.profile_slots()
        out: list[tuple[datetime, float]] = []
        t = first
        err = timedelta(seconds=self.clock_error())
        while t < last:
            a = self.energy(t - err)
            b = self.energy(t - err + timedelta(seconds=SLOT_S))
            out.append((t, b.imp - a.imp))
            t += timedelta(seconds=SLOT_S)
        return out


def _floor_slot(t: datetime) -> datetime:
    return t.replace(minute=(t.minute // 15) * 15, second=0, microsecond=0)


def _ceil_slot(t: datetime) -> datetime:
    f = _floor_slot(t)
    return f if f == t else f + timedelta(seconds=SLOT_S)


# -- DI readers ------------------------------------------------------------------------------
_NOT_MINE = object()
_READERS: dict[int, Callable[[SimMeter], bytes]] = {}
_WRITABLE: set[int] = {0x04000703}


def _energy_readers() -> None:
    # (DI2, getter of (total, t1..t4), signed)
    kinds: dict[int, tuple[Callable[[EnergySnapshot], tuple[float, ...]], bool]] = {
        0x00: (lambda e: (e.combined, *e.combined_t), True),
        0x01: (lambda e: (e.imp, *e.imp_t), False),
        0x02: (lambda e: (e.exp, *e.exp_t), False),
        0x03: (lambda e: (e.q[0] + e.q[1], 0.0, 0.0, 0.0, 0.0), True),
        0x04: (lambda e: (e.q[2] + e.q[3], 0.0, 0.0, 0.0, 0.0), True),
        0x05: (lambda e: (e.q[0], 0.0, 0.0, 0.0, 0.0), False),
        0x06: (lambda e: (e.q[1], 0.0, 0.0, 0.0, 0.0), False),
        0x07: (lambda e: (e.q[2], 0.0, 0.0, 0.0, 0.0), False),
        0x08: (lambda e: (e.q[3], 0.0, 0.0, 0.0, 0.0), False),
    }
    for di2, (get, signed) in kinds.items():
        for t in range(5):
            def one(m: SimMeter, get: Callable[[EnergySnapshot], tuple[float, ...]] = get, t: int = t,
                    signed: bool = signed) -> bytes:
                return bcd(get(m.energy())[t], 4, 2, signed=signed)

            _READERS[di2 << 16 | t << 8] = one

        def block(m: SimMeter, get: Callable[[EnergySnapshot], tuple[float, ...]] = get,
                  signed: bool = signed) -> bytes:
            return b"".join(bcd(v, 4, 2, signed=signed) for v in get(m.energy()))

        _READERS[di2 << 16 | 0xFF00] = block


def _md(m: SimMeter) -> bytes:
    kw, at = m.physics.max_demand
    return bcd(kw, 3, 4) + ts5(at.astimezone(m.tz))


def _instant(key: str, nbytes: int, decimals: int, signed: bool) -> Callable[[SimMeter], bytes]:
    def read(m: SimMeter) -> bytes:
        v = m.physics.instant(m.true_now())[key]
        if m.relay_open and not key.startswith(("voltage", "frequency")):
            v = 0.0 if not key.startswith("pf") else 1.0
        return bcd(v, nbytes, decimals, signed=signed)

    return read


def _instant_readers() -> None:
    table: list[tuple[int, str, int, int, bool]] = [
        (0x02010100, "voltage.a", 2, 1, False),
        (0x02010200, "voltage.b", 2, 1, False),
        (0x02010300, "voltage.c", 2, 1, False),
        (0x02020100, "current.a", 3, 3, True),
        (0x02020200, "current.b", 3, 3, True),
        (0x02020300, "current.c", 3, 3, True),
        (0x02030000, "power.active.total", 3, 4, True),
        (0x02030100, "power.active.a", 3, 4, True),
        (0x02030200, "power.active.b", 3, 4, True),
        (0x02030300, "power.active.c", 3, 4, True),
        (0x02040000, "power.reactive.total", 3, 4, True),
        (0x02050000, "power.apparent.total", 3, 4, True),
        (0x02060000, "pf.total", 2, 3, True),
        (0x02800001, "current.n", 3, 3, False),
        (0x02800002, "frequency", 2, 2, False),
    ]
    for di, key, n, dec, signed in table:
        _READERS[di] = _instant(key, n, dec, signed)
    for block, members in ((0x0201FF00, (0x02010100, 0x02010200, 0x02010300)),
                           (0x0202FF00, (0x02020100, 0x02020200, 0x02020300)),
                           (0x0203FF00, (0x02030000, 0x02030100, 0x02030200, 0x02030300))):
        _READERS[block] = _concat(members)


def _concat(members: tuple[int, ...]) -> Callable[[SimMeter], bytes]:
    return lambda m: b"".join(_READERS[d](m) for d in members)


def _status(n: int) -> Callable[[SimMeter], bytes]:
    return lambda m: m.status_word(n).to_bytes(2, "little")


def _misc_readers() -> None:
    r = _READERS
    r[0x01010000] = _md
    r[0x01020000] = lambda m: bcd(0.0, 3, 4) + ts5(m.history_start.astimezone(m.tz))
    r[0x04000101] = lambda m: date4(m.clock())
    r[0x04000102] = lambda m: time3(m.clock())
    r[0x0400010C] = lambda m: ts7(m.clock())
    r[0x04000401] = lambda m: address_to_wire(m.address)
    r[0x04000402] = lambda m: address_to_wire(m.meter_number)
    for n in range(1, 8):
        r[0x04000500 | n] = _status(n)
    r[0x040005FF] = lambda m: b"".join(m.status_word(n).to_bytes(2, "little") for n in range(1, 8))
    r[0x04000703] = lambda m: bytes((next(k for k, v in BAUD_BITS.items() if v == m.baud),))
    # Events
    r[0x03010000] = lambda m: b"".join(
        bcd_int(m.events.voltage_loss[p], 3) + bcd_int(m.events.voltage_loss_minutes[p], 3) for p in range(3)
    )
    r[0x03300D00] = lambda m: bcd_int(m.events.cover_open, 3)
    r[0x03300000] = lambda m: bcd_int(m.events.programming, 3)
    r[0x1D000001] = lambda m: bcd_int(m.events.trip, 3)
    r[0x1E000001] = lambda m: bcd_int(m.events.close, 3)


def _last_record(m: SimMeter, di: int, extra: bytes) -> bytes | object | None:
    if di == 0x03300D01:
        rec = m.events.last_cover_open
        if rec is None:
            if m.events.cover_open == 0:
                return None
            start = (m.history_start + timedelta(hours=5)).astimezone(m.tz)
            rec = (start, start + timedelta(minutes=3))
        e = m.energy(rec[0])
        return ts6(rec[0]) + ts6(rec[1]) + bcd(e.imp, 4, 2) + bcd(e.exp, 4, 2) + b"\x00" * 40
    if di == 0x03300001:
        p = m.events.last_programming
        if p is None:
            return None
        dis = b"".join(d.to_bytes(4, "little") for d in p[2])[:40]
        return ts6(p[0]) + bytes.fromhex(p[1])[::-1] + dis + b"\xff" * (40 - len(dis))
    if di in (0x1D000101, 0x1E000101):
        rec2 = m.events.last_trip if di == 0x1D000101 else m.events.last_close
        if rec2 is None:
            return None
        return ts6(rec2[0])
    if di >> 8 == 0x030101 and 1 <= di & 0xFF <= 10:  # Nth previous A-phase voltage-loss record
        if di & 0xFF > m.events.voltage_loss[0]:
            return None
        start = (m.history_start + timedelta(hours=3 * (di & 0xFF))).astimezone(m.tz)
        e = m.energy(start)
        return ts6(start) + bcd(e.imp, 4, 2) + b"\x00" * 115 + ts6(start + timedelta(minutes=20))
    return _NOT_MINE


def _frozen(m: SimMeter, di: int, extra: bytes) -> bytes | object | None:
    """0504 hourly / 0506 daily / 0501 instant frozen data: DI1 = item, DI0 = Nth previous."""
    di3, di2, item, n = di >> 24, (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF
    if di3 != 0x05 or di2 not in (0x01, 0x04, 0x06):
        return _NOT_MINE
    if di2 == 0x01:
        if n != 1 or m.instant_freeze is None:
            return None
        t, e = m.instant_freeze
    else:
        kind = "hourly" if di2 == 0x04 else "daily"
        if not 1 <= n <= (254 if kind == "hourly" else 62):
            return None
        ft = m.frozen_time(kind, n)
        if ft is None:
            return None
        t, e = ft, m.frozen_energy(ft)
    hourly = di2 == 0x04
    if item == 0x00:
        return ts5(t)
    if item in (0x01, 0x02):
        total, tariffs = (e.imp, e.imp_t) if item == 0x01 else (e.exp, e.exp_t)
        if hourly:
            return bcd(total, 4, 2)
        return bcd(total, 4, 2) + b"".join(bcd(v, 4, 2) for v in tariffs)
    if item == 0xFF and not hourly:
        return ts5(t) + bcd(e.imp, 4, 2) + b"".join(bcd(v, 4, 2) for v in e.imp_t) + bcd(e.exp, 4, 2) + b"".join(
            bcd(v, 4, 2) for v in e.exp_t
        )
    return None


def _load_profile(m: SimMeter, di: int, extra: bytes) -> bytes | object | None:
    """06000000 earliest / 06000001 from a given time / 06000002 latest: N records (N is BCD)."""
    if di >> 8 != 0x060000 or di & 0xFF > 2:
        return _NOT_MINE
    if not extra:
        raise _Reject(ERR_OTHER)
    count = decode_bcd_int(extra[:1])
    first, last = m.profile_slots()
    step = timedelta(seconds=SLOT_S)
    if di == 0x06000000:
        start = first
    elif di == 0x06000002:
        start = last - step * (count - 1)
    else:
        if len(extra) < 6:
            raise _Reject(ERR_OTHER)
        mm, hh, dd, mo, yy = (decode_bcd_int(bytes((b,))) for b in extra[1:6])
        start = _ceil_slot(datetime(2000 + yy, mo, dd, hh, mm, tzinfo=m.tz))
    start = max(start, first)
    records: list[bytes] = []
    t = start
    while t <= last and len(records) < count:
        records.append(m.load_profile_record(t))
        t += step
    if not records:
        return None
    return b"".join(records)


_FAMILIES: list[Callable[[SimMeter, int, bytes], bytes | object | None]] = [_frozen, _load_profile, _last_record]

_energy_readers()
_instant_readers()
_misc_readers()

_HANDLERS: dict[type, Callable[[SimMeter, Any], list[Reply]]] = {
    BroadcastTimeSync: SimMeter._time_sync,
    ReadRequest: SimMeter._read,
    ReadFollowUp: SimMeter._read_follow,
    ReadAddress: SimMeter._read_address,
    WriteData: SimMeter._write,
    WriteAddress: SimMeter._write_address,
    Freeze: SimMeter._freeze,
    ChangeBaud: SimMeter._change_baud,
    MaxDemandReset: SimMeter._md_reset,
    MeterClear: SimMeter._meter_clear,
    EventClear: SimMeter._event_clear,
    RemoteControl: SimMeter._control,
    ChangePassword: SimMeter._change_password,
}
