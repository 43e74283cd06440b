"""Explain one DL/T 645 frame as a JSON-ready dict (what ``headend frame decode`` prints).

``describe_frame(raw)`` never raises for bad frame bytes: an invalid frame gives
``{"valid": False, "error": "checksum" | "end_byte" | "start_byte" | "truncated" | ...}``.
Bytes after the end byte are reported as ``trailing`` (hex) and do not make the frame invalid.
Passwords and operator codes are never included (only the password level).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from protocols.dlt645.events import (
    Ack,
    BroadcastTimeSync,
    ChangeBaud,
    ChangeBaudResponse,
    ChangePassword,
    ErrorResponse,
    EventClear,
    Freeze,
    MaxDemandReset,
    MeterClear,
    RawRequest,
    RawResponse,
    ReadAddress,
    ReadAddressResponse,
    ReadFollowUp,
    ReadRequest,
    ReadResponse,
    RemoteControl,
    WriteAddress,
    WriteData,
)
from protocols.dlt645.frame import Deframer, Frame, checksum, decode_frame_prefix, encode_frame
from protocols.dlt645.quirks import DEFAULT_QUIRKS, Quirks
from protocols.dlt645.registry import decode_data, di_to_str
from protocols.dlt645.services import frame_version, function_name, parse_reply, parse_request
from protocols.errors import FrameError, LocalProtocolError

__all__ = ["describe_frame", "describe_stream", "parse_hex"]

_SEPARATORS = re.compile(r"[\s,:;\-_]+")


def parse_hex(text: str) -> bytes:
    """``"68 AA AA ..."``, ``"68AAAA..."``, ``"0x68,0xAA"`` -> bytes. Raises :class:`LocalProtocolError`."""
    t = _SEPARATORS.sub(" ", text.strip())
    t = re.sub(r"\b0[xX]", "", t).replace(" ", "")
    if not t:
        raise LocalProtocolError("no hex digits given")
    if len(t) % 2:
        raise LocalProtocolError(f"odd number of hex digits ({len(t)})")
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise LocalProtocolError(f"not hex: {text!r}") from None


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


def _request_fields(ev: object) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if isinstance(ev, ReadRequest | ReadFollowUp | WriteData | ChangePassword | EventClear):
        d["di"] = di_to_str(ev.di, getattr(ev, "version", 2007))
    if isinstance(ev, ReadRequest):
        if ev.count is not None:
            d["count"] = ev.count
        if ev.start is not None:
            d["start"] = _iso(ev.start)
    elif isinstance(ev, ReadFollowUp):
        if ev.version == 2007:
            d["seq"] = ev.seq
    elif isinstance(ev, BroadcastTimeSync):
        d["time"] = _iso(ev.time)
    elif isinstance(ev, WriteData):
        d["password_level"] = ev.password.level
        decoded = decode_data(ev.di, ev.data, ev.version)
        d.update(_decoded_fields(decoded.as_dict()))
        d["data"] = ev.data.hex()
    elif isinstance(ev, WriteAddress):
        d["new_address"] = ev.new_address
    elif isinstance(ev, Freeze):
        d["freeze"] = {"month": ev.month, "day": ev.day, "hour": ev.hour, "minute": ev.minute}
    elif isinstance(ev, ChangeBaud):
        d["baud"] = ev.baud
    elif isinstance(ev, ChangePassword):
        d["password_level"] = ev.old.level
        d["new_password_level"] = ev.new.level
    elif isinstance(ev, MaxDemandReset | MeterClear):
        d["password_level"] = ev.password.level
    elif isinstance(ev, EventClear):
        d["password_level"] = ev.password.level
    elif isinstance(ev, RemoteControl):
        d["password_level"] = ev.password.level
        d["control_cmd"] = ev.command.name.lower()
        d["control_code"] = f"{int(ev.command):02X}"
        d["n2"] = ev.n2
        d["valid_until"] = _iso(ev.valid_until)
        d["time"] = d["valid_until"]
    elif isinstance(ev, ReadAddress | RawRequest):
        pass
    return d


def _decoded_fields(dd: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in dd.items() if k != "di"}
    if "name" in out:
        out["name"] = out.pop("name")
    return out


def _reply_fields(ev: object) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if isinstance(ev, ReadResponse):
        d["di"] = di_to_str(ev.di, ev.version)
        if ev.seq is not None:
            d["seq"] = ev.seq
        d["data"] = ev.data.hex()
        if ev.decoded is not None:
            d.update(_decoded_fields(ev.decoded.as_dict()))
        else:
            d["partial"] = True  # one frame of a multi-frame reply: value after assembly
    elif isinstance(ev, ReadAddressResponse):
        d["meter_address"] = ev.address
    elif isinstance(ev, ChangeBaudResponse):
        d["baud"] = ev.baud
    elif isinstance(ev, ErrorResponse):
        d["error_code"] = f"{ev.code:02X}"
    elif isinstance(ev, Ack | RawResponse):
        if ev.data:
            d["data"] = ev.data.hex()
    return d


def describe_frame(raw: bytes, *, quirks: Quirks = DEFAULT_QUIRKS, version: int | None = None) -> dict[str, Any]:
    """Everything a field engineer wants to know about one frame (see module doc)."""
    try:
        frame, used = decode_frame_prefix(raw)
    except FrameError as exc:
        return _invalid(raw, exc)
    out = _frame_header(frame, raw[:used])
    if used < len(raw):
        out["trailing"] = raw[used:].hex(" ")
        d = Deframer()
        d.feed(raw[used:])
        more = sum(isinstance(e, Frame) for e in d.events())
        if more:
            out["trailing_frames"] = more  # e.g. request and reply pasted together: decode them separately
    v = version or frame_version(frame, quirks.version)
    out["version"] = v
    out["function"] = function_name(frame.function, v)
    try:
        if frame.is_reply:
            reply = parse_reply(frame, quirks, v)
            if isinstance(reply, ErrorResponse):
                out["error_bits"] = list(reply.flags)
            else:
                out["error_bits"] = []
            out.update(_reply_fields(reply))
        else:
            out["error_bits"] = []
            request = parse_request(frame, quirks)
            out.update(_request_fields(request))
    except FrameError as exc:
        out["data_error"] = f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
        out["data"] = frame.data.hex()
    return out


def _frame_header(frame: Frame, raw: bytes) -> dict[str, Any]:
    return {
        "valid": True,
        "preamble": frame.preamble,
        "address": frame.address,
        "control": f"{frame.control:02X}",
        "direction": "reply" if frame.is_reply else "request",
        "abnormal": frame.abnormal,
        "follow_up": frame.follow_up,
        "length": len(frame.data),
        "checksum": f"{raw[-2]:02X}",
    }


def _invalid(raw: bytes, exc: FrameError) -> dict[str, Any]:
    out: dict[str, Any] = {"valid": False, "error": exc.reason, "detail": exc.detail, "bytes": len(raw)}
    i = 0
    while i < len(raw) and raw[i] == 0xFE:
        i += 1
    out["preamble"] = i
    body = raw[i:]
    # Best-effort header so the engineer sees what the frame was meant to be.
    if len(body) >= 10 and body[0] == 0x68:
        out["address"] = body[1:7][::-1].hex().upper()
        out["control"] = f"{body[8]:02X}"
        out["function"] = function_name(body[8])
        out["length"] = body[9]
        if exc.reason == "checksum" and len(body) >= 12 + body[9]:
            cs_at = 10 + body[9]
            out["checksum"] = f"{body[cs_at]:02X}"
            out["expected_checksum"] = f"{checksum(body[:cs_at]):02X}"
    return out



def describe_stream(raw: bytes, *, quirks: Quirks = DEFAULT_QUIRKS, version: int | None = None) -> list[dict[str, Any]]:
    """Every frame in a pasted log excerpt (request, echo, replies, garbage), in order.

    Frames are found like the stream deframer finds them; bytes that failed a check appear as
    ``{"valid": False, ...}`` entries; plain garbage between frames is skipped (``skipped`` counts it).
    """
    d = Deframer(max_buffer=max(2048, len(raw) + 1))
    d.feed(raw)
    out: list[dict[str, Any]] = []
    for ev in d.events():
        if isinstance(ev, Frame):
            out.append(describe_frame(encode_frame(ev, preamble=ev.preamble), quirks=quirks, version=version))
        else:
            try:
                decode_frame_prefix(ev.raw)
            except FrameError as exc:
                out.append(_invalid(ev.raw, exc))
            else:  # pragma: no cover - the deframer only reports bytes that fail a check
                out.append(_invalid(ev.raw, FrameError(ev.reason)))
    if d.buffered:
        try:
            decode_frame_prefix(d.peek())
        except FrameError as exc:
            out.append(_invalid(d.peek(), exc))
    return out
