"""DL/T 645 services: request events <-> frames (master side) and reply events <-> frames (meter side).

Master::

    frame = encode_request(ReadRequest("000000000001", 0x00010000), quirks)   # -> Frame
    raw = request_bytes(req, quirks)                                           # -> bytes with FE preamble
    reply = parse_reply(frame, quirks)                 # ReadResponse / Ack / ErrorResponse / ...

Meter (the simulator)::

    req = parse_request(frame)                         # ReadRequest / RemoteControl / ...
    raw = reply_bytes(ReadResponse(addr, di, encode_data(di, 123.45)), quirks)
    raw = reply_bytes(ErrorResponse(addr, 0x11, 0x02), quirks)   # D1 01 35: no requested data

Both directions are tables keyed by the event type / function code, not if-chains.
Multi-frame replies (11H answered with B1H, then 12H follow-ups) are joined by
:class:`FollowUpAssembler`. Data layouts of 2007 requests are in dlt645.md section 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

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
    Function,
    Function97,
    MaxDemandReset,
    MeterClear,
    Password,
    RawRequest,
    RawResponse,
    ReadAddress,
    ReadAddressResponse,
    ReadFollowUp,
    ReadRequest,
    ReadResponse,
    RemoteControl,
    Reply,
    Request,
    WriteAddress,
    WriteData,
    error_flags,
)
from protocols.dlt645.formats import BaudWord, Bcd, DateTime, Digits, FormatOptions, baud_from_word, baud_to_word
from protocols.dlt645.frame import Frame, address_from_wire, address_to_wire, encode_frame
from protocols.dlt645.quirks import DEFAULT_QUIRKS, Quirks
from protocols.dlt645.registry import decode_data
from protocols.errors import FrameError, LocalProtocolError

__all__ = [
    "FUNCTIONS_1997",
    "FollowUpAssembler",
    "address_matches",
    "encode_reply",
    "encode_request",
    "frame_version",
    "function_name",
    "masked_hex",
    "parse_reply",
    "parse_request",
    "reply_bytes",
    "reply_control",
    "request_bytes",
    "request_function",
    "request_key",
    "split_read_reply",
]

TIME6 = DateTime("YYMMDDhhmmss")  # wire: ss mm hh DD MM YY
TIME5 = DateTime("YYMMDDhhmm")  # wire: mm hh DD MM YY
_PW = Digits(3)
_OP = Digits(4)
_COUNT = Bcd(1)
FUNCTIONS_1997 = frozenset(int(f) for f in Function97 if f not in (Function97.BROADCAST_TIME_SYNC, Function97.REREAD))


def function_name(function: int, version: int | None = None) -> str:
    """``0x11`` -> ``"read_data"``; 1997 codes (01, 02, 04, 0A...) -> their 1997 names."""
    f = function & 0x1F
    if version == 1997 or (version is None and f in FUNCTIONS_1997):
        try:
            return Function97(f).name.lower()
        except ValueError:
            pass
    try:
        return Function(f).name.lower()
    except ValueError:
        return f"function_{f:02x}"


def _di_bytes(di: int, version: int) -> bytes:
    size = 2 if version == 1997 else 4
    if not 0 <= di < 256**size:
        raise LocalProtocolError(f"DI {di:X} does not fit DL/T 645-{version}")
    return di.to_bytes(size, "little")


def _pw(p: Password) -> bytes:
    if not 0 <= p.level <= 0xFF:
        raise LocalProtocolError(f"bad password level {p.level!r}")
    return bytes((p.level,)) + _PW.encode(p.password)


def _auth(p: Password, operator: str) -> bytes:
    return _pw(p) + _OP.encode(operator)


def _wildcard_99(v: int | None, lo: int, hi: int, what: str) -> int:
    if v is None:
        return 0x99
    if not lo <= v <= hi:
        raise LocalProtocolError(f"freeze {what} {v} out of range {lo}..{hi}")
    return (v // 10) << 4 | v % 10


# ------------------------------------------------------------------ master: request -> frame

_ReqT = TypeVar("_ReqT")


def _enc_broadcast(r: BroadcastTimeSync, o: FormatOptions) -> tuple[int, bytes]:
    return Function.BROADCAST_TIME_SYNC, TIME6.encode(r.time, o)


def _enc_read(r: ReadRequest, o: FormatOptions) -> tuple[int, bytes]:
    if r.version == 1997:
        return Function97.READ_DATA, _di_bytes(r.di, 1997)
    data = _di_bytes(r.di, 2007)
    if r.count is not None:
        data += _COUNT.encode(r.count)
    elif r.start is not None:
        raise LocalProtocolError("a start time needs a count")
    if r.start is not None:
        data += TIME5.encode(r.start, o)
    return Function.READ_DATA, data


def _enc_follow(r: ReadFollowUp, o: FormatOptions) -> tuple[int, bytes]:
    if r.version == 1997:
        return Function97.READ_FOLLOW_UP, _di_bytes(r.di, 1997)
    if not 0 <= r.seq <= 0xFF:
        raise LocalProtocolError(f"bad follow-up SEQ {r.seq}")
    return Function.READ_FOLLOW_UP, _di_bytes(r.di, 2007) + bytes((r.seq,))


def _enc_write(r: WriteData, o: FormatOptions) -> tuple[int, bytes]:
    if r.version == 1997:
        return Function97.WRITE_DATA, _di_bytes(r.di, 1997) + _pw(r.password) + r.data
    return Function.WRITE_DATA, _di_bytes(r.di, 2007) + _auth(r.password, r.operator) + r.data


def _enc_freeze(r: Freeze, o: FormatOptions) -> tuple[int, bytes]:
    return Function.FREEZE, bytes(
        (
            _wildcard_99(r.minute, 0, 59, "minute"),
            _wildcard_99(r.hour, 0, 23, "hour"),
            _wildcard_99(r.day, 1, 31, "day"),
            _wildcard_99(r.month, 1, 12, "month"),
        )
    )


def _enc_control(r: RemoteControl, o: FormatOptions) -> tuple[int, bytes]:
    if not 0 <= r.n2 <= 0xFF:
        raise LocalProtocolError(f"bad N2 {r.n2!r}")
    cmd = int(r.command)
    if not 0 <= cmd <= 0xFF:
        raise LocalProtocolError(f"bad control command {r.command!r}")
    return Function.REMOTE_CONTROL, _auth(r.password, r.operator) + bytes((cmd, r.n2)) + TIME6.encode(r.valid_until, o)


_REQUEST_ENCODERS: dict[type, Callable[[Any, FormatOptions], tuple[int, bytes]]] = {
    BroadcastTimeSync: _enc_broadcast,
    ReadRequest: _enc_read,
    ReadFollowUp: _enc_follow,
    ReadAddress: lambda r, o: (Function.READ_ADDRESS, b""),
    WriteData: _enc_write,
    WriteAddress: lambda r, o: (Function.WRITE_ADDRESS, address_to_wire(r.new_address)),
    Freeze: _enc_freeze,
    ChangeBaud: lambda r, o: (Function.CHANGE_BAUD, bytes((baud_to_word(r.baud),))),
    ChangePassword: lambda r, o: (Function.CHANGE_PASSWORD, _di_bytes(r.di, 2007) + _pw(r.old) + _pw(r.new)),
    MaxDemandReset: lambda r, o: (Function.MAX_DEMAND_RESET, _auth(r.password, r.operator)),
    MeterClear: lambda r, o: (Function.METER_CLEAR, _auth(r.password, r.operator)),
    EventClear: lambda r, o: (Function.EVENT_CLEAR, _auth(r.password, r.operator) + _di_bytes(r.di, 2007)),
    RemoteControl: _enc_control,
    RawRequest: lambda r, o: (r.control, r.data),
}


def _with_wire_di(req: Request, quirks: Quirks) -> Request:
    if quirks.di_map and isinstance(req, ReadRequest | ReadFollowUp | WriteData):
        return replace(req, di=quirks.wire_di(req.di))
    return req


def encode_request(req: Request, quirks: Quirks = DEFAULT_QUIRKS) -> Frame:
    """The frame for a request (address padded per quirks, DI remapped per quirks)."""
    try:
        encoder = _REQUEST_ENCODERS[type(req)]
    except KeyError:
        raise LocalProtocolError(f"not a DL/T 645 request: {req!r}") from None
    req = _with_wire_di(req, quirks)
    control, data = encoder(req, quirks.format_options)
    address = quirks.pad_address(req.address)
    address_to_wire(address)  # validates
    return Frame(address, control, data, preamble=quirks.request_preamble)


def request_bytes(req: Request, quirks: Quirks = DEFAULT_QUIRKS) -> bytes:
    return encode_frame(encode_request(req, quirks), preamble=quirks.request_preamble)


_FUNCTION_OF: dict[type, tuple[int, int]] = {  # type -> (2007 function, 1997 function)
    BroadcastTimeSync: (Function.BROADCAST_TIME_SYNC, Function97.BROADCAST_TIME_SYNC),
    ReadRequest: (Function.READ_DATA, Function97.READ_DATA),
    ReadFollowUp: (Function.READ_FOLLOW_UP, Function97.READ_FOLLOW_UP),
    ReadAddress: (Function.READ_ADDRESS, Function.READ_ADDRESS),
    WriteData: (Function.WRITE_DATA, Function97.WRITE_DATA),
    WriteAddress: (Function.WRITE_ADDRESS, Function.WRITE_ADDRESS),
    Freeze: (Function.FREEZE, Function.FREEZE),
    ChangeBaud: (Function.CHANGE_BAUD, Function.CHANGE_BAUD),
    ChangePassword: (Function.CHANGE_PASSWORD, Function.CHANGE_PASSWORD),
    MaxDemandReset: (Function.MAX_DEMAND_RESET, Function.MAX_DEMAND_RESET),
    MeterClear: (Function.METER_CLEAR, Function.METER_CLEAR),
    EventClear: (Function.EVENT_CLEAR, Function.EVENT_CLEAR),
    RemoteControl: (Function.REMOTE_CONTROL, Function.REMOTE_CONTROL),
}


def request_function(req: Request) -> int:
    """The function code a request uses (without encoding it)."""
    if isinstance(req, RawRequest):
        return req.control & 0x1F
    f07, f97 = _FUNCTION_OF[type(req)]
    return int(f97 if getattr(req, "version", 2007) == 1997 else f07)


def request_key(req: Request, quirks: Quirks = DEFAULT_QUIRKS) -> tuple[str, int, int | None]:
    """(address pattern, function, DI or None) a reply must match; the address may hold A wildcards."""
    di = req.di if isinstance(req, ReadRequest | ReadFollowUp) else None
    return quirks.pad_address(req.address), request_function(req), di


def address_matches(pattern: str, address: str) -> bool:
    """Does a reply address match the request address (``A`` digits match anything)?"""
    if pattern == address:
        return True
    return len(pattern) == len(address) and all(p in ("A", a) for p, a in zip(pattern, address, strict=True))


# ------------------------------------------------------------------ master: frame -> reply


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise FrameError("format", f"{what}: DATA has {len(data)} bytes, need {n}")


def _parse_read_reply(frame: Frame, quirks: Quirks, version: int) -> ReadResponse:
    width = 2 if version == 1997 else 4
    data = frame.data
    follow = frame.function in (Function.READ_FOLLOW_UP,) and version == 2007
    _need(data, width + (1 if follow else 0), "read reply")
    di = quirks.standard_di(int.from_bytes(data[:width], "little"))
    seq: int | None = None
    payload = data[width:]
    if follow:
        seq = payload[-1]
        payload = payload[:-1]
    more = frame.follow_up
    decoded = None
    if not more and seq is None:
        decoded = decode_data(di, payload, version, quirks.format_options)
        if quirks.strict and decoded.error and not decoded.unknown:
            raise FrameError("format", f"DI {decoded.di_str}: {decoded.error} ({len(payload)} data bytes)")
    return ReadResponse(frame.address, di, payload, more, seq, frame.function, version, decoded)


def _parse_address_reply(frame: Frame, quirks: Quirks, version: int) -> ReadAddressResponse:
    if not frame.data:
        return ReadAddressResponse(frame.address)
    _need(frame.data, 6, "read-address reply")
    return ReadAddressResponse(address_from_wire(frame.data[:6]))


def _parse_baud_reply(frame: Frame, quirks: Quirks, version: int) -> ChangeBaudResponse:
    _need(frame.data, 1, "change-baud reply")
    return ChangeBaudResponse(frame.address, baud_from_word(frame.data[0]))


_ACK_FUNCTIONS = (
    Function.WRITE_DATA, Function.WRITE_ADDRESS, Function.FREEZE, Function.CHANGE_PASSWORD,
    Function.MAX_DEMAND_RESET, Function.METER_CLEAR, Function.EVENT_CLEAR, Function.REMOTE_CONTROL,
    Function.MULTI_FUNCTION_OUTPUT,
)
_REPLY_PARSERS: dict[tuple[int, int], Callable[[Frame, Quirks, int], Reply]] = {
    (2007, Function.READ_DATA): _parse_read_reply,
    (2007, Function.READ_FOLLOW_UP): _parse_read_reply,
    (2007, Function.READ_ADDRESS): _parse_address_reply,
    (2007, Function.CHANGE_BAUD): _parse_baud_reply,
    (1997, Function97.READ_DATA): _parse_read_reply,
    (1997, Function97.READ_FOLLOW_UP): _parse_read_reply,
    **{(2007, int(f)): (lambda fr, q, v: Ack(fr.address, fr.function, fr.data)) for f in _ACK_FUNCTIONS},
    **{
        (1997, int(f)): (lambda fr, q, v: Ack(fr.address, fr.function, fr.data))
        for f in (Function97.WRITE_DATA, Function97.WRITE_ADDRESS, Function97.CHANGE_BAUD,
                  Function97.CHANGE_PASSWORD, Function97.MAX_DEMAND_RESET)
    },
}


def frame_version(frame: Frame, default: int = 2007) -> int:
    f = frame.function
    if f in FUNCTIONS_1997:
        return 1997
    return default


def parse_reply(frame: Frame, quirks: Quirks = DEFAULT_QUIRKS, version: int | None = None) -> Reply:
    """A meter's reply frame as an event. Raises :class:`FrameError` (a RemoteProtocolError)
    when the frame is not a reply or its DATA is too short for the function."""
    if not frame.is_reply:
        raise FrameError("direction", "a request frame (direction bit 0), not a reply")
    v = version or frame_version(frame, quirks.version)
    if frame.abnormal:
        code = frame.data[0] if frame.data else 0
        return ErrorResponse(frame.address, frame.function, code, error_flags(code))
    parser = _REPLY_PARSERS.get((v, frame.function))
    if parser is None:
        return RawResponse(frame.address, frame.control, frame.data)
    return parser(frame, quirks, v)


# ------------------------------------------------------------------ meter: frame -> request


def _dec_time(fmt: DateTime, raw: bytes, o: FormatOptions, what: str) -> datetime:
    value, status = fmt.decode(raw, o)
    if not isinstance(value, datetime):
        raise FrameError("format", f"{what}: not a valid time ({raw.hex(' ')}, {status})")
    return value


def _dec_pw(raw: bytes) -> Password:
    return Password(raw[0], raw[1:4][::-1].hex().upper())


def _dec_op(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def _p_broadcast(f: Frame, o: FormatOptions) -> BroadcastTimeSync:
    _need(f.data, 6, "broadcast time")
    return BroadcastTimeSync(_dec_time(TIME6, f.data[:6], o, "broadcast time"), f.address)


def _p_read(f: Frame, o: FormatOptions) -> ReadRequest:
    _need(f.data, 4, "read")
    di = int.from_bytes(f.data[:4], "little")
    count: int | None = None
    start = None
    if len(f.data) >= 5:
        c, _ = _COUNT.decode(f.data[4:5])
        if not isinstance(c, int):
            raise FrameError("format", f"bad record count {f.data[4]:02X}")
        count = c
    if len(f.data) >= 10:
        start = _dec_time(TIME5, f.data[5:10], o, "start time")
    if len(f.data) not in (4, 5, 10):
        raise FrameError("format", f"read request with {len(f.data)} DATA bytes")
    return ReadRequest(f.address, di, count, start)


def _p_follow(f: Frame, o: FormatOptions) -> ReadFollowUp:
    _need(f.data, 5, "follow-up read")
    return ReadFollowUp(f.address, int.from_bytes(f.data[:4], "little"), f.data[4])


def _p_write(f: Frame, o: FormatOptions) -> WriteData:
    _need(f.data, 12, "write")
    return WriteData(f.address, int.from_bytes(f.data[:4], "little"), f.data[12:], _dec_pw(f.data[4:8]),
                     _dec_op(f.data[8:12]))


def _p_write_address(f: Frame, o: FormatOptions) -> WriteAddress:
    _need(f.data, 6, "write address")
    return WriteAddress(address_from_wire(f.data[:6]), f.address)


def _p_freeze(f: Frame, o: FormatOptions) -> Freeze:
    _need(f.data, 4, "freeze")
    vals: list[int | None] = []
    for b in f.data[:4]:
        if b == 0x99:
            vals.append(None)
            continue
        v, _ = Bcd(1).decode(bytes((b,)))
        if not isinstance(v, int):
            raise FrameError("format", f"bad freeze time byte {b:02X}")
        vals.append(v)
    minute, hour, day, month = vals
    return Freeze(f.address, month, day, hour, minute)


def _p_baud(f: Frame, o: FormatOptions) -> ChangeBaud:
    _need(f.data, 1, "change baud")
    baud, _ = BaudWord().decode(f.data[:1])
    if not isinstance(baud, int):
        raise FrameError("format", f"characteristic word {f.data[0]:02X} is not one baud bit")
    return ChangeBaud(f.address, baud)


def _p_password(f: Frame, o: FormatOptions) -> ChangePassword:
    _need(f.data, 12, "change password")
    return ChangePassword(f.address, int.from_bytes(f.data[:4], "little"), _dec_pw(f.data[4:8]), _dec_pw(f.data[8:12]))


def _p_auth(cls: type[_ReqT]) -> Callable[[Frame, FormatOptions], _ReqT]:
    def parse(f: Frame, o: FormatOptions) -> _ReqT:
        _need(f.data, 8, cls.__name__)
        return cls(f.address, _dec_pw(f.data[:4]), _dec_op(f.data[4:8]))  # type: ignore[call-arg]

    return parse


def _p_event_clear(f: Frame, o: FormatOptions) -> EventClear:
    _need(f.data, 12, "event clear")
    return EventClear(f.address, _dec_pw(f.data[:4]), _dec_op(f.data[4:8]), int.from_bytes(f.data[8:12], "little"))


def _p_control(f: Frame, o: FormatOptions) -> RemoteControl:
    _need(f.data, 16, "remote control")
    try:
        command = ControlCommand(f.data[8])
    except ValueError:
        raise FrameError("format", f"unknown control command N1={f.data[8]:02X}") from None
    valid = _dec_time(TIME6, f.data[10:16], o, "valid-until")
    return RemoteControl(f.address, command, valid, _dec_pw(f.data[:4]), _dec_op(f.data[4:8]), f.data[9])


def _p97_read(f: Frame, o: FormatOptions) -> ReadRequest:
    _need(f.data, 2, "1997 read")
    return ReadRequest(f.address, int.from_bytes(f.data[:2], "little"), version=1997)


def _p97_follow(f: Frame, o: FormatOptions) -> ReadFollowUp:
    _need(f.data, 2, "1997 follow-up read")
    return ReadFollowUp(f.address, int.from_bytes(f.data[:2], "little"), 0, version=1997)


def _p97_write(f: Frame, o: FormatOptions) -> WriteData:
    _need(f.data, 6, "1997 write")
    return WriteData(f.address, int.from_bytes(f.data[:2], "little"), f.data[6:], _dec_pw(f.data[2:6]), version=1997)


_REQUEST_PARSERS: dict[int, Callable[[Frame, FormatOptions], Request]] = {
    Function.BROADCAST_TIME_SYNC: _p_broadcast,
    Function.READ_DATA: _p_read,
    Function.READ_FOLLOW_UP: _p_follow,
    Function.READ_ADDRESS: lambda f, o: ReadAddress(f.address),
    Function.WRITE_DATA: _p_write,
    Function.WRITE_ADDRESS: _p_write_address,
    Function.FREEZE: _p_freeze,
    Function.CHANGE_BAUD: _p_baud,
    Function.CHANGE_PASSWORD: _p_password,
    Function.MAX_DEMAND_RESET: _p_auth(MaxDemandReset),
    Function.METER_CLEAR: _p_auth(MeterClear),
    Function.EVENT_CLEAR: _p_event_clear,
    Function.REMOTE_CONTROL: _p_control,
    Function97.READ_DATA: _p97_read,
    Function97.READ_FOLLOW_UP: _p97_follow,
    Function97.WRITE_DATA: _p97_write,
}


def parse_request(frame: Frame, quirks: Quirks = DEFAULT_QUIRKS) -> Request:
    """A master's request frame as an event (the meter side). Unknown functions give
    :class:`RawRequest`. Raises :class:`FrameError` for a reply frame or malformed DATA."""
    if frame.is_reply:
        raise FrameError("direction", "a reply frame (direction bit 1), not a request")
    parser = _REQUEST_PARSERS.get(frame.function)
    if parser is None:
        return RawRequest(frame.address, frame.control, frame.data)
    return parser(frame, quirks.format_options)


# ------------------------------------------------------------------ meter: reply -> frame


def reply_control(function: int, *, abnormal: bool = False, more: bool = False) -> int:
    return (function & 0x1F) | 0x80 | (0x40 if abnormal else 0) | (0x20 if more else 0)


def _r_read(r: ReadResponse, o: FormatOptions) -> tuple[int, bytes]:
    data = _di_bytes(r.di, r.version) + r.data
    if r.function == Function.READ_FOLLOW_UP and r.version == 2007:
        data += bytes(((r.seq or 0) & 0xFF,))
    return reply_control(r.function, more=r.more), data


_REPLY_ENCODERS: dict[type, Callable[[Any, FormatOptions], tuple[int, bytes]]] = {
    ReadResponse: _r_read,
    ReadAddressResponse: lambda r, o: (reply_control(Function.READ_ADDRESS), address_to_wire(r.address)),
    ChangeBaudResponse: lambda r, o: (
        reply_control(Function.CHANGE_BAUD),
        bytes((baud_to_word(r.baud),)) if r.baud is not None else b"\x00",
    ),
    Ack: lambda r, o: (reply_control(r.function), r.data),
    ErrorResponse: lambda r, o: (reply_control(r.function, abnormal=True), bytes((r.code,))),
    RawResponse: lambda r, o: (r.control, r.data),
}


def encode_reply(reply: Reply, quirks: Quirks = DEFAULT_QUIRKS) -> Frame:
    try:
        encoder = _REPLY_ENCODERS[type(reply)]
    except KeyError:
        raise LocalProtocolError(f"not a DL/T 645 reply: {reply!r}") from None
    if isinstance(reply, ReadResponse) and quirks.di_map:
        reply = replace(reply, di=quirks.wire_di(reply.di))
    control, data = encoder(reply, quirks.format_options)
    return Frame(reply.address, control, data, preamble=quirks.reply_preamble)


def reply_bytes(reply: Reply, quirks: Quirks = DEFAULT_QUIRKS) -> bytes:
    return encode_frame(encode_reply(reply, quirks), preamble=quirks.reply_preamble)


def split_read_reply(
    address: str, di: int, data: bytes, *, max_data: int = 200, version: int = 2007
) -> list[ReadResponse]:
    """Meter side: cut a long read reply into a first frame (91/B1) and follow-ups (92/B2, SEQ 1..).
    The master fetches frame k+1 with ``ReadFollowUp(address, di, seq=k)``."""
    width = 2 if version == 1997 else 4
    first_room = max_data - width
    follow_room = max_data - width - 1
    if first_room <= 0 or follow_room <= 0:
        raise LocalProtocolError(f"max_data {max_data} too small")
    chunks = [data[:first_room]]
    rest = data[first_room:]
    while rest:
        chunks.append(rest[:follow_room])
        rest = rest[follow_room:]
    out = []
    follow_fn = Function97.READ_FOLLOW_UP if version == 1997 else Function.READ_FOLLOW_UP
    read_fn = Function97.READ_DATA if version == 1997 else Function.READ_DATA
    for i, chunk in enumerate(chunks):
        more = i < len(chunks) - 1
        if i == 0:
            out.append(ReadResponse(address, di, chunk, more, None, read_fn, version))
        else:
            out.append(ReadResponse(address, di, chunk, more, i if version == 2007 else None, follow_fn, version))
    return out


# ------------------------------------------------------------------ follow-up assembly


class FollowUpAssembler:
    """Joins a multi-frame read reply (11H -> B1H, 12H SEQ=1 -> B2H, ..., last 92H) into one result.

    ::

        asm = FollowUpAssembler(first_reply)            # the 91H/B1H reply to the ReadRequest
        while (req := asm.next_request()) is not None:
            asm.add(await exchange(req))                # each a ReadResponse to ReadFollowUp
        result = asm.result()                           # ReadResponse with all data, decoded

    Raises :class:`FrameError` (``sequence``) for a reply of another DI, a wrong SEQ or too many frames.
    """

    def __init__(self, first: ReadResponse, quirks: Quirks = DEFAULT_QUIRKS, *, max_frames: int = 255) -> None:
        self._first = first
        self._quirks = quirks
        self._chunks = [first.data]
        self._more = first.more
        self._seq = 0
        self._max = max_frames

    @property
    def complete(self) -> bool:
        return not self._more

    @property
    def frames(self) -> int:
        return len(self._chunks)

    def next_request(self) -> ReadFollowUp | None:
        if not self._more:
            return None
        return ReadFollowUp(self._first.address, self._first.di, self._seq + 1, self._first.version)

    def add(self, reply: ReadResponse) -> ReadFollowUp | None:
        """Add the reply to the last follow-up request; returns the next request or ``None`` when complete."""
        if not self._more:
            raise FrameError("sequence", "follow-up frame after the last frame")
        if reply.di != self._first.di:
            raise FrameError("sequence", f"follow-up for DI {reply.di:08X}, expected {self._first.di:08X}")
        expected = self._seq + 1
        if self._first.version == 2007 and reply.seq is not None and reply.seq != expected & 0xFF:
            raise FrameError("sequence", f"follow-up SEQ {reply.seq}, expected {expected}")
        if len(self._chunks) >= self._max:
            raise FrameError("sequence", f"more than {self._max} follow-up frames")
        self._seq = expected
        self._chunks.append(reply.data)
        self._more = reply.more
        return self.next_request()

    def result(self) -> ReadResponse:
        if self._more:
            raise LocalProtocolError("follow-up frames still missing")
        data = b"".join(self._chunks)
        f = self._first
        decoded = decode_data(f.di, data, f.version, self._quirks.format_options)
        if self._quirks.strict and decoded.error and not decoded.unknown:
            raise FrameError("format", f"DI {decoded.di_str}: {decoded.error} ({len(data)} data bytes)")
        return ReadResponse(f.address, f.di, data, False, None, f.function, f.version, decoded)



# ------------------------------------------------------------------ secrets in traces

#: Requests that carry a password and operator code: (offset of PA in DATA, bytes after PA to hide).
#: 04H is the 1997 write (DI + PA + P0..P2); 2007 has no 04H function.
SECRET_FIELDS: dict[int, tuple[tuple[int, int], ...]] = {
    0x04: ((2, 3),),
    0x14: ((4, 7),),  # DI + PA + P0..P2 + C0..C3
    0x18: ((4, 3), (8, 3)),  # DI + old PA P0..P2 + new PA P0..P2
    0x19: ((0, 7),),
    0x1A: ((0, 7),),
    0x1B: ((0, 7),),
    0x1C: ((0, 7),),
}


def masked_hex(raw: bytes) -> str:
    """Hex of wire bytes (one frame, or a stream of frames and noise) for logs, with the password
    and operator-code bytes of every frame that carries them shown as ``**``, and that frame's
    checksum too (it would give away the sum of the secret bytes). The PA level stays visible;
    the reply to 18H (it echoes the new password) is masked after its first byte."""
    parts = [f"{b:02x}" for b in raw]
    i, n = 0, len(raw)
    while i + 12 <= n:
        if raw[i] != 0x68 or raw[i + 7] != 0x68:
            i += 1
            continue
        control, length = raw[i + 8], raw[i + 9]
        data_at = i + 10
        end = data_at + length + 2  # checksum and 16H
        hide: list[int] = []
        if not control & 0x80:
            for pa, count in SECRET_FIELDS.get(control & 0x1F, ()):
                hide += [k for k in range(pa + 1, pa + 1 + count) if k < length]
        elif control & 0x1F == 0x18 and not control & 0x40:
            hide += list(range(1, length))
        for k in hide:
            if data_at + k < n:
                parts[data_at + k] = "**"
        if hide and data_at + length < n:
            parts[data_at + length] = "**"
        i = end if end <= n else i + 1
    return " ".join(parts)
