"""One simulated DL/T 645-2007 meter: state, history and the request handlers.

``SimMeter.handle(frame)`` takes a decoded request :class:`Frame` and returns the reply
frames (none for broadcasts). Byte-level faults (silence, garbage, bad checksum, delay)
are the bus's job (:mod:`simulators.dlt645.bus`); the meter only produces the replies a
real meter would, including abnormal replies where a real meter gives them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
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
    Function97,
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
from protocols.dlt645.formats import Bcd, DateTime, bcd_to_int
from protocols.dlt645.frame import BROADCAST, Frame
from protocols.dlt645.quirks import DEFAULT_QUIRKS, Quirks
from protocols.dlt645.registry import DI97_TO_DI07, FROZEN_KINDS, SETTLEMENTS, decode_data, encode_data, lookup
from protocols.dlt645.services import encode_reply, parse_request, split_read_reply
from protocols.errors import FrameError, LocalProtocolError
from simulators.clock import SimClock
from simulators.dlt645.physics import SLOT_S, EnergySnapshot, MeterPhysics
from simulators.faults import Fault, FaultSet
from simulators.loadprofile import LoadProfile

__all__ = ["ERR_BAUD", "ERR_NO_DATA", "ERR_OTHER", "ERR_PASSWORD", "ControlEvent", "SimMeter"]

LOGGER = logging.getLogger(__name__)

ERR_OTHER = 0x01
ERR_NO_DATA = 0x02
ERR_PASSWORD = 0x04
ERR_BAUD = 0x08

MAX_REPLY_DATA = 200  # a read reply carries at most 200 data bytes; the rest goes in follow-up frames

SUPPORTED_BAUDS = (1200, 2400, 4800, 9600)
# How many hourly / daily freezes a meter keeps: the Nth-previous range of the registry's DIs.
FROZEN_DEPTH = {"hourly": FROZEN_KINDS[0x04][2], "daily": FROZEN_KINDS[0x06][2]}

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
        max_data = min(MAX_REPLY_DATA, self.quirks.max_data)
        if req.version == 1997:
            data = self.read_value_1997(req.di)
            if data is None:
                raise _Reject(ERR_NO_DATA)
            parts = split_read_reply(self.address, req.di, data, max_data=max_data, version=1997)
            self._followups[req.di] = parts[1:]  # 1997 follow-ups (02H) carry no SEQ: served in order
            return [parts[0]]
        di = self.quirks.standard_di(req.di)  # a vendor DI map: the wire DI serves a standard item
        if di == req.di and self.quirks.wire_di(di) != di:
            raise _Reject(ERR_NO_DATA)  # this meter serves that item under another DI only
        payload = self.read_value(di, req)
        if payload is None:
            raise _Reject(ERR_NO_DATA)
        parts = split_read_reply(self.address, di, payload, max_data=max_data)
        if len(parts) > 1:
            self._followups[di] = parts[1:]
        return [parts[0]]

    def _read_follow(self, req: ReadFollowUp) -> list[Reply]:
        if req.version == 1997:
            queue = self._followups.get(req.di)
            if not queue:
                raise _Reject(ERR_NO_DATA)
            return [queue.pop(0)]
        di = self.quirks.standard_di(req.di)
        parts = self._followups.get(di)
        if not parts or not 1 <= req.seq <= len(parts):
            raise _Reject(ERR_NO_DATA)
        if req.seq == len(parts):
            self._followups.pop(di, None)
        return [parts[req.seq - 1]]

    def read_item(self, di: int, req: ReadRequest | None = None) -> object:
        """The value of one 2007 DI in the registry's shape (see ``registry.encode_data``), raw
        bytes for a written parameter, or None when the meter has no such data. ``req`` carries
        the record count and start time of record reads (06...)."""
        fixed = _READERS.get(di)
        if fixed is not None:
            return fixed(self)
        if di in self.params:
            return self.params[di]
        for family in _FAMILIES:
            out = family(self, di, req)
            if out is not _NOT_MINE:
                return out
        return None

    def read_value(self, di: int, req: ReadRequest | None = None) -> bytes | None:
        """The plain data bytes of one DI (after the DI), or None when the meter has no such data;
        encoded by the codec registry with this meter's quirks (e.g. YY-first times)."""
        value = self.read_item(di, req)
        if value is None or isinstance(value, bytes):
            return value
        return encode_data(di, value, opts=self.quirks.format_options)

    def read_value_1997(self, di: int) -> bytes | None:
        """A 1997 item, served from its 2007 counterpart (the registry's 1997<->2007 mapping)."""
        d07 = DI97_TO_DI07.get(di)
        item = lookup(di, 1997)
        value = self.read_item(d07) if d07 is not None and item is not None else None
        if value is None or isinstance(value, bytes) or item is None:
            return None
        if len(item.fields) == 1 and isinstance(value, list | tuple):
            value = value[0]  # e.g. max demand without its time
        # 1997 formats are unsigned: magnitudes only.
        if isinstance(value, list | tuple):
            value = [abs(v) if isinstance(v, float) else v for v in value]
        elif isinstance(value, float):
            value = abs(value)
        return encode_data(di, value, 1997, self.quirks.format_options)

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
        if req.version == 1997:  # a 1997 item is written as its 2007 counterpart
            d07 = DI97_TO_DI07.get(di)
            decoded = decode_data(di, value, 1997, self.quirks.format_options)
            if d07 is None or decoded.unknown or decoded.error or decoded.value is None:
                raise _Reject(ERR_PASSWORD if d07 is None else ERR_OTHER)
            di, value = d07, encode_data(d07, decoded.value, opts=self.quirks.format_options)
        now_local = self.clock().replace(tzinfo=None)
        if di in (0x04000101, 0x04000102, 0x0400010C):  # date YYMMDDWW / time hhmmss / both
            when = decode_data(di, value, opts=self.quirks.format_options).value
            if isinstance(when, datetime):
                self.set_clock(when)
            elif isinstance(when, date):
                self.set_clock(now_local.replace(year=when.year, month=when.month, day=when.day))
            elif isinstance(when, time):
                self.set_clock(now_local.replace(hour=when.hour, minute=when.minute, second=when.second))
            else:
                raise _Reject(ERR_OTHER)
        elif di >> 24 == 0x04:
            if di in _READERS and di not in _WRITABLE:
                raise _Reject(ERR_PASSWORD)  # read-only item: unauthorised
            self.params[di] = bytes(value)
        else:
            raise _Reject(ERR_PASSWORD)
        self.events.programming += 1
        self.events.last_programming = (self.clock(), req.operator, [di])
        return [Ack(self.address, Function97.WRITE_DATA if req.version == 1997 else Function.WRITE_DATA)]

    # 16H freeze ---------------------------------------------------------------------
    def _freeze(self, req: Freeze) -> list[Reply]:
        if req.month is None and req.day is None and req.hour is None and req.minute is None:
            self.instant_freeze = (self.clock(), self.energy())
        else:
            self.params[0x04001201] = b"".join(
                b"\x99" if v is None else _BYTE.encode(v) for v in (req.minute, req.hour, req.day, req.month)
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

    def settlement_day(self) -> tuple[int, int]:
        """(day, hour) of the 1st settlement day (04000B01, DDhh; written value or 01 00:00)."""
        raw = self.params.get(0x04000B01)
        if raw is not None and len(raw) == 2:
            hh, dd = bcd_to_int(raw[:1]), bcd_to_int(raw[1:])
            if dd is not None and hh is not None and 1 <= dd <= 28 and 0 <= hh <= 23:
                return dd, hh
        return 1, 0

    def settlement_time(self, n: int) -> datetime | None:
        """Meter-local time of the ``n``-th previous monthly settlement (结算), None if before history."""
        if not 1 <= n <= SETTLEMENTS:
            return None
        day, hour = self.settlement_day()
        now = self.clock()
        t = now.replace(day=day, hour=hour, minute=0, second=0, microsecond=0)
        months = n - 1 + (1 if t > now else 0)
        y, m = divmod(t.year * 12 + t.month - 1 - months, 12)
        t = t.replace(year=y, month=m + 1)
        if t - timedelta(seconds=self.clock_error()) < self._history_floor():
            return None
        return t

    def frozen_energy(self, t_meter: datetime) -> EnergySnapshot:
        return self.energy(t_meter - timedelta(seconds=self.clock_error()))

    def frozen_history(self, kind: str) -> list[tuple[datetime, EnergySnapshot]]:
        """(freeze time, registers) of every stored ``"hourly"``/``"daily"`` freeze, oldest first."""
        out = []
        n = 1
        while n <= FROZEN_DEPTH[kind] and (t := self.frozen_time(kind, n)) is not None:
            out.append((t, self.frozen_energy(t)))
            n += 1
        return out[::-1]

    @property
    def frozen_daily(self) -> list[tuple[datetime, EnergySnapshot]]:
        return self.frozen_history("daily")

    @property
    def frozen_hourly(self) -> list[tuple[datetime, EnergySnapshot]]:
        return self.frozen_history("hourly")

    def profile_slots(self) -> tuple[datetime, datetime]:
        """Meter-local start of the first and last complete 15-minute load-profile record."""
        err = timedelta(seconds=self.clock_error())
        first = self._local(self._history_floor() + err)
        first = _ceil_slot(first)
        last = _floor_slot(self.clock())
        return first, last

    def load_profile_record(self, t_meter: datetime) -> dict[str, object]:
        """One load-profile record at ``t_meter`` as the registry's record columns
        (:data:`protocols.dlt645.records.LOAD_SECTIONS`); all six classes are recorded."""
        true_t = t_meter - timedelta(seconds=self.clock_error())
        inst = self.physics.instant(true_t)
        e = self.energy(true_t)  # registers at the record time
        kw = self.physics.slot_kw(max(0, self.physics.slot_of(true_t) - 1))  # demand of the interval just ended
        pf = inst["pf.total"]
        return {
            "time": t_meter,
            "ua": inst["voltage.a"], "ub": inst["voltage.b"], "uc": inst["voltage.c"],
            "ia": inst["current.a"], "ib": inst["current.b"], "ic": inst["current.c"], "freq": inst["frequency"],
            "p_total": inst["power.active.total"], "p_a": inst["power.active.a"], "p_b": inst["power.active.b"],
            "p_c": inst["power.active.c"], "q_total": inst["power.reactive.total"], "q_a": 0.0, "q_b": 0.0,
            "q_c": 0.0,
            "pf_total": pf, "pf_a": pf, "pf_b": pf, "pf_c": pf,
            "fwd_active": _register(e.imp), "rev_active": _register(e.exp),
            "rc1": _register(e.q[0] + e.q[1]), "rc2": _register(e.q[2] + e.q[3]),
            "q1": _register(e.q[0]), "q2": _register(e.q[1]), "q3": _register(e.q[2]), "q4": _register(e.q[3]),
            "active_demand": max(kw, 0.0), "reactive_demand": 0.0,
        }

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
# Each reader returns the item's value in the shape the codec registry encodes (a number, a
# sequence of field values in order, or a mapping by field name); ``SimMeter.read_value`` encodes
# it with ``registry.encode_data``: one table for the meter and the master.
_NOT_MINE = object()
_READERS: dict[int, Callable[[SimMeter], object]] = {}
_WRITABLE: set[int] = {0x04000703}
_REGISTER_SPAN = 1_000_000.0  # XXXXXX.XX energy registers roll over like a real meter's


def _register(kwh: float) -> float:
    """An energy register value as the meter shows it (2 decimals, wrapped past 999999.99)."""
    return math.fmod(round(kwh, 2), _REGISTER_SPAN)


def _energy_readers() -> None:
    # DI2 -> getter of (total, t1..t4)
    kinds: dict[int, Callable[[EnergySnapshot], tuple[float, ...]]] = {
        0x00: lambda e: (e.combined, *e.combined_t),
        0x01: lambda e: (e.imp, *e.imp_t),
        0x02: lambda e: (e.exp, *e.exp_t),
        0x03: lambda e: (e.q[0] + e.q[1], 0.0, 0.0, 0.0, 0.0),
        0x04: lambda e: (e.q[2] + e.q[3], 0.0, 0.0, 0.0, 0.0),
        0x05: lambda e: (e.q[0], 0.0, 0.0, 0.0, 0.0),
        0x06: lambda e: (e.q[1], 0.0, 0.0, 0.0, 0.0),
        0x07: lambda e: (e.q[2], 0.0, 0.0, 0.0, 0.0),
        0x08: lambda e: (e.q[3], 0.0, 0.0, 0.0, 0.0),
    }
    for di2, get in kinds.items():
        for t in range(5):
            def one(m: SimMeter, get: Callable[[EnergySnapshot], tuple[float, ...]] = get, t: int = t) -> object:
                return _register(get(m.energy())[t])

            _READERS[di2 << 16 | t << 8] = one

        def block(m: SimMeter, get: Callable[[EnergySnapshot], tuple[float, ...]] = get) -> object:
            return [_register(v) for v in get(m.energy())]

        _READERS[di2 << 16 | 0xFF00] = block
        # DI0 01..0C: the registers as they stood at the Nth previous settlement (no data before history)
        for n in range(1, SETTLEMENTS + 1):
            for t in range(5):
                def one_s(m: SimMeter, get: Callable[[EnergySnapshot], tuple[float, ...]] = get, t: int = t,
                          n: int = n) -> object:
                    at = m.settlement_time(n)
                    return None if at is None else _register(get(m.frozen_energy(at))[t])

                _READERS[di2 << 16 | t << 8 | n] = one_s

            def block_s(m: SimMeter, get: Callable[[EnergySnapshot], tuple[float, ...]] = get, n: int = n) -> object:
                at = m.settlement_time(n)
                return None if at is None else [_register(v) for v in get(m.frozen_energy(at))]

            _READERS[di2 << 16 | 0xFF00 | n] = block_s


def _instant(key: str) -> Callable[[SimMeter], float]:
    def read(m: SimMeter) -> float:
        v = m.physics.instant(m.true_now())[key]
        if m.relay_open and not key.startswith(("voltage", "frequency")):
            v = 0.0 if not key.startswith("pf") else 1.0
        return v

    return read


# DI -> key of MeterPhysics.instant(); the format comes from the registry.
INSTANT_ITEMS: dict[int, str] = {
    0x02010100: "voltage.a", 0x02010200: "voltage.b", 0x02010300: "voltage.c",
    0x02020100: "current.a", 0x02020200: "current.b", 0x02020300: "current.c",
    0x02030000: "power.active.total", 0x02030100: "power.active.a", 0x02030200: "power.active.b",
    0x02030300: "power.active.c", 0x02040000: "power.reactive.total", 0x02050000: "power.apparent.total",
    0x02060000: "pf.total", 0x02800001: "current.n", 0x02800002: "frequency",
}


def _instant_readers() -> None:
    for di, key in INSTANT_ITEMS.items():
        _READERS[di] = _instant(key)
    for block, members in ((0x0201FF00, (0x02010100, 0x02010200, 0x02010300)),
                           (0x0202FF00, (0x02020100, 0x02020200, 0x02020300)),
                           (0x0203FF00, (0x02030000, 0x02030100, 0x02030200, 0x02030300))):
        _READERS[block] = _concat(members)


def _concat(members: tuple[int, ...]) -> Callable[[SimMeter], object]:
    return lambda m: [_READERS[d](m) for d in members]


def _energy_fields(e: EnergySnapshot, prefix: str = "") -> dict[str, float]:
    """The registry's six-register energy snapshot (event records) of ``e``."""
    values = (e.imp, e.exp, *e.q)
    names = ("forward_active", "reverse_active", "q1_reactive", "q2_reactive", "q3_reactive", "q4_reactive")
    return {prefix + n: _register(v) for n, v in zip(names, values, strict=True)}


def _status(n: int) -> Callable[[SimMeter], int]:
    return lambda m: m.status_word(n)


def _misc_readers() -> None:
    r = _READERS
    r[0x01010000] = lambda m: (m.physics.max_demand[0], m.physics.max_demand[1].astimezone(m.tz))
    r[0x01020000] = lambda m: (0.0, m.history_start.astimezone(m.tz))
    r[0x04000101] = lambda m: m.clock()
    r[0x04000102] = lambda m: m.clock()
    r[0x0400010C] = lambda m: m.clock()
    r[0x04000401] = lambda m: m.address
    r[0x04000402] = lambda m: m.meter_number
    for n in range(1, 8):
        r[0x04000500 | n] = _status(n)
    r[0x040005FF] = lambda m: [m.status_word(n) for n in range(1, 8)]
    r[0x04000703] = lambda m: m.baud
    r[0x04000B01] = lambda m: "{:02d}{:02d}".format(*m.settlement_day())
    # Events
    r[0x03010000] = lambda m: {
        f"{p}_{k}": v[i]
        for i, p in enumerate("abc")
        for k, v in (("count", m.events.voltage_loss), ("minutes", m.events.voltage_loss_minutes))
    }
    r[0x03300D00] = lambda m: m.events.cover_open
    r[0x03300000] = lambda m: m.events.programming
    r[0x1D000001] = lambda m: m.events.trip
    r[0x1E000001] = lambda m: m.events.close


def _last_record(m: SimMeter, di: int, req: ReadRequest | None) -> object:
    if di == 0x03300D01:
        rec = m.events.last_cover_open
        if rec is None:
            if m.events.cover_open == 0:
                return None
            start = (m.history_start + timedelta(hours=5)).astimezone(m.tz)
            rec = (start, start + timedelta(minutes=3))
        e = m.energy(rec[0])
        before = {k: 0.0 for k in _energy_fields(e, "before_")}
        before.update(before_forward_active=_register(e.imp), before_reverse_active=_register(e.exp))
        return {"start": rec[0], "end": rec[1], **before, **{k: 0.0 for k in _energy_fields(e, "after_")}}
    if di == 0x03300001:
        p = m.events.last_programming
        if p is None:
            return None
        dis = (p[2] + [0xFFFFFFFF] * 10)[:10]
        return {"time": p[0], "operator": p[1], **{f"di{k}": d for k, d in enumerate(dis, start=1)}}
    if di in (0x1D000101, 0x1E000101):
        rec2 = m.events.last_trip if di == 0x1D000101 else m.events.last_close
        if rec2 is None:
            return None
        operator = rec2[1] if len(rec2[1]) == 8 and all(c in _HEX for c in rec2[1]) else "FFFFFFFF"  # "button"
        return {"time": rec2[0], "operator": operator, **_energy_fields(m.energy(rec2[0]))}
    if di >> 8 == 0x030101 and 1 <= di & 0xFF <= 10:  # Nth previous A-phase voltage-loss record
        if di & 0xFF > m.events.voltage_loss[0]:
            return None
        start = (m.history_start + timedelta(hours=3 * (di & 0xFF))).astimezone(m.tz)
        o = m.quirks.format_options
        rest = _ENERGY.encode(_register(m.energy(start).imp), o) + b"\x00" * 115
        return {"start": start, "rest": rest + _EVENT_TIME.encode(start + timedelta(minutes=20), o)}
    return _NOT_MINE


_BYTE = Bcd(1)
_HEX = frozenset("0123456789ABCDEFabcdef")
_ENERGY = Bcd(4, 2)
_EVENT_TIME = DateTime("YYMMDDhhmmss")


def _frozen(m: SimMeter, di: int, req: ReadRequest | None) -> object:
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
        if not 1 <= n <= FROZEN_DEPTH[kind]:
            return None
        ft = m.frozen_time(kind, n)
        if ft is None:
            return None
        t, e = ft, m.frozen_energy(ft)
    hourly = di2 == 0x04
    imp = [_register(v) for v in (e.imp, *e.imp_t)]
    exp = [_register(v) for v in (e.exp, *e.exp_t)]
    if item == 0x00:
        return t
    if item in (0x01, 0x02):
        values = imp if item == 0x01 else exp
        return values[0] if hourly else values
    if item == 0xFF:
        if hourly:
            return {"time": t, "fwd_total": imp[0], "rev_total": exp[0]}
        names = ("total", "t1", "t2", "t3", "t4")
        return {"time": t, **{f"fwd_{k}": v for k, v in zip(names, imp, strict=True)},
                **{f"rev_{k}": v for k, v in zip(names, exp, strict=True)}}
    return None


def _load_profile(m: SimMeter, di: int, req: ReadRequest | None) -> object:
    """06000000 earliest / 06000001 from a given time / 06000002 latest: N records."""
    if di >> 8 != 0x060000 or di & 0xFF > 2:
        return _NOT_MINE
    if req is None or req.count is None:
        raise _Reject(ERR_OTHER)
    count = req.count
    first, last = m.profile_slots()
    step = timedelta(seconds=SLOT_S)
    if di == 0x06000000:
        start = first
    elif di == 0x06000002:
        start = last - step * (count - 1)
    else:
        if req.start is None:
            raise _Reject(ERR_OTHER)
        start = _ceil_slot(req.start.replace(tzinfo=m.tz))
    start = max(start, first)
    records: list[dict[str, object]] = []
    t = start
    while t <= last and len(records) < count:
        records.append(m.load_profile_record(t))
        t += step
    return records or None


_FAMILIES: list[Callable[[SimMeter, int, ReadRequest | None], object]] = [_frozen, _load_profile, _last_record]

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
