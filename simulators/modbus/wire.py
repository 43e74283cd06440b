"""Server side of the Modbus wire, sans-I/O: RTU request framing with CRC-16, MBAP headers,
and the PDU dispatcher (FC01-06, 15, 16) over a :class:`RegisterSpace`.

The simulator frames requests itself instead of using pymodbus' server so that it can
behave like a real RS-485 line: a unit that is absent or silent sends nothing at all
(pymodbus' server answers unknown unit ids with exception 4, see docs/modbus.md), and
faults (bad CRC, delays, busy replies) are injected at the frame level.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from protocols.modbus.maps import Function

__all__ = [
    "MbapHeader",
    "ModbusFault",
    "RegisterSpace",
    "RtuRequestDeframer",
    "crc16",
    "handle_pdu",
    "rtu_frame",
]


class ModbusFault(Exception):
    """Raised by a register space to answer with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"modbus exception {code}")


class RegisterSpace(Protocol):
    def read(self, function: Function, address: int, count: int) -> list[int]: ...

    def write(self, function: Function, address: int, values: list[int]) -> None: ...


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


class RtuRequestDeframer:
    """Splits a byte stream from the master into request frames ``(unit, pdu)``.

    Request length follows from the function code (FC15/16 carry a byte count).
    Bytes that cannot start a frame, or a frame with a bad CRC, are dropped one byte
    at a time (hunting), which is what a slave does after line noise.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad_crc = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf.extend(data)
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= 4:
            fc = self._buf[1]
            if fc in (1, 2, 3, 4, 5, 6):
                need = 8
            elif fc in (15, 16):
                if len(self._buf) < 7:
                    break
                need = 9 + self._buf[6]
            else:
                del self._buf[0]
                continue
            if len(self._buf) < need:
                break
            frame = bytes(self._buf[:need])
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self.bad_crc += 1
                del self._buf[0]
                continue
            del self._buf[:need]
            out.append((frame[0], frame[1:-2]))
        return out

    def clear(self) -> None:
        self._buf.clear()


@dataclass(frozen=True, slots=True)
class MbapHeader:
    transaction: int
    protocol: int
    length: int  # unit id + PDU
    unit: int

    SIZE = 7

    @classmethod
    def parse(cls, raw: bytes) -> MbapHeader:
        tid, pid, length, unit = struct.unpack(">HHHB", raw[:7])
        return cls(tid, pid, length, unit)

    def reply(self, pdu: bytes) -> bytes:
        return struct.pack(">HHHB", self.transaction, 0, len(pdu) + 1, self.unit) + pdu


_READ_FN = {1: Function.COILS, 2: Function.DISCRETE, 3: Function.HOLDING, 4: Function.INPUT}


def _pack_bits(bits: list[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]


def handle_pdu(space: RegisterSpace, pdu: bytes) -> bytes:
    """Answer one request PDU (function code + data) with a response PDU."""
    if not pdu:
        return bytes([0x80, 1])
    fc = pdu[0]
    try:
        if fc in _READ_FN:
            if len(pdu) != 5:
                raise ModbusFault(3)
            address, count = struct.unpack(">HH", pdu[1:5])
            fn = _READ_FN[fc]
            if not 1 <= count <= fn.max_read or address + count > 0x10000:
                raise ModbusFault(3)
            values = space.read(fn, address, count)
            if fn.is_bit:
                data = _pack_bits(values)
                return bytes([fc, len(data)]) + data
            return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *values)
        if fc == 5:
            address, value = struct.unpack(">HH", pdu[1:5])
            if value not in (0xFF00, 0x0000):
                raise ModbusFault(3)
            space.write(Function.COILS, address, [1 if value else 0])
            return pdu[:5]
        if fc == 6:
            address, value = struct.unpack(">HH", pdu[1:5])
            space.write(Function.HOLDING, address, [value])
            return pdu[:5]
        if fc in (15, 16):
            address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
            data = pdu[6:]
            if fc == 15:
                if not 1 <= count <= 0x7B0 or nbytes != (count + 7) // 8 or len(data) != nbytes:
                    raise ModbusFault(3)
                space.write(Function.COILS, address, _unpack_bits(data, count))
            else:
                if not 1 <= count <= 0x7B or nbytes != 2 * count or len(data) != nbytes:
                    raise ModbusFault(3)
                space.write(Function.HOLDING, address, list(struct.unpack(f">{count}H", data)))
            return pdu[:5]
        raise ModbusFault(1)
    except ModbusFault as fault:
        return bytes([(fc | 0x80) & 0xFF, fault.code])
    except struct.error:
        return bytes([(fc | 0x80) & 0xFF, 3])
