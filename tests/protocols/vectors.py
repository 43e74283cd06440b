"""DL/T 645 frames from independent public sources, with what they mean.

Each vector names its source (repository + path @ commit, or document). None of them was
produced by this project's encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from protocols.dlt645.events import (
    BroadcastTimeSync,
    ControlCommand,
    ErrorResponse,
    Password,
    ReadAddress,
    ReadAddressResponse,
    ReadFollowUp,
    ReadRequest,
    ReadResponse,
    RemoteControl,
    WriteAddress,
)

SHIXIN = "github:shixin08052/dtl645 tests/Dlt645.Core.Tests/FrameCodecTests.cs @1a275dd"
SHIXIN_CLIENT = "github:shixin08052/dtl645 tests/Dlt645.Core.Tests/MeterClientTests.cs @c493e37"
JAYLA = "github:Jayla630/Dlt645Master tests/Dlt645Master.Core.Tests/Dlt645FrameCodecTests.cs @a91d563"
GO645 = "github:fdxxw/go-dlt645 dlt645client_test.go @268ae05 (TestSendHex)"
PY645_CPP = "github:600888/dlt645 cpp/tests/core_test.cpp @f47c07d"
HOLLEY = "Holley ProtocolMeter645_2007Util.java '645拉闸报文例子' (shared/docs/dlt645.md [C15])"
C_BROADCAST = (
    "public C concentrator code, comment '645-07广播校时' in BroadcastTime_TxDATA_DL645 "
    "(find_string '68 99 99 99 99 99 99 68 08 06'; repository not identified)"
)
C_3762 = (
    "public Qt test script Script_WrongMessage 'NWmsg': a 645 broadcast time frame inside a "
    "Q/GDW 1376.2 frame (find_string '68 99 99 99 99 99 99 68 08 06'; repository not identified)"
)


@dataclass(frozen=True)
class Vector:
    name: str
    hex: str
    source: str
    event: object | None = None  # what parse_request / parse_reply must return
    value: object | None = None  # decoded value of a read reply (first field)

    @property
    def raw(self) -> bytes:
        return bytes.fromhex(self.hex)


A = "123456789012"

VALID: list[Vector] = [
    # [SHIXIN] BuildReadAddress_MatchesStandardExample: "读通信地址" standard example.
    Vector("read_address", "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16", SHIXIN, ReadAddress("AAAAAAAAAAAA")),
    # [GO645] TestSendHex: the same request as one hex string, written independently.
    Vector("read_address_go", "fefefefe68AAAAAAAAAAAA681300df16", GO645, ReadAddress("AAAAAAAAAAAA")),
    # [SHIXIN] BuildReadData_WildcardAddress_ForwardActiveTotal.
    Vector(
        "read_wildcard", "FE FE FE FE 68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16", SHIXIN,
        ReadRequest("AAAAAAAAAAAA", 0x00010000),
    ),
    # [SHIXIN] BuildReadData_AddressIsLowByteFirst (no preamble; CS happens to be 68H).
    Vector("read_energy", "68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16", SHIXIN, ReadRequest(A, 0x00010000)),
    # [SHIXIN] BuildReadFollow_ContainsDiAndSequence: 12H with DI 03300001 and SEQ 1.
    Vector(
        "read_follow_up", "68 12 90 78 56 34 12 68 12 05 34 33 63 36 34 D1 16", SHIXIN,
        ReadFollowUp(A, 0x03300001, 1),
    ),
    # [SHIXIN] Scan_NormalResponse_DecodesDataMinus33: 1234.56 kWh.
    Vector(
        "reply_energy", "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16", SHIXIN,
        ReadResponse(A, 0x00010000, bytes.fromhex("56341200")), 1234.56,
    ),
    # [SHIXIN_CLIENT] EnergyResponse: the same reply with a 2-byte FE preamble.
    Vector(
        "reply_energy_fe2", "FE FE 68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16", SHIXIN_CLIENT,
        ReadResponse(A, 0x00010000, bytes.fromhex("56341200")), 1234.56,
    ),
    # [SHIXIN] Scan_SkipsAnyNumberOfPreambleBytes: 7 FE, read-address reply.
    Vector(
        "reply_address_fe7", "FE FE FE FE FE FE FE 68 12 90 78 56 34 12 68 93 06 45 C3 AB 89 67 45 07 16", SHIXIN,
        ReadAddressResponse(A),
    ),
    # [SHIXIN] ExceptionResponse_ErrorWordDecodedBitByBit: D1 01 35 = "no requested data".
    Vector(
        "reply_abnormal", "68 12 90 78 56 34 12 68 D1 01 35 8D 16", SHIXIN,
        ErrorResponse(A, 0x11, 0x02, ("no_data",)),
    ),
    # [JAYLA] BuildReadResponse_ForwardActiveEnergyGoldenVector: address 000072007201, 0.00 kWh.
    Vector(
        "reply_energy_zero", "68 01 72 00 72 00 00 68 91 08 33 33 34 33 33 33 33 33 E7 16", JAYLA,
        ReadResponse("000072007201", 0x00010000, bytes(4)), 0.0,
    ),
    # [PY645_CPP] "Python write-address wire vector": 15H, new address wire 12 34 56 78 10 13.
    Vector(
        "write_address", "FE FE FE FE 68 12 34 56 78 10 12 68 15 06 45 67 89 AB 43 46 8A 16", PY645_CPP,
        WriteAddress("131078563412", "121078563412"),
    ),
    # [HOLLEY] trip (N1=1A), PA 00, PW 000000, operator 00000000, valid until 2018-05-12 15:41:24.
    Vector(
        "remote_trip", "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16", HOLLEY,
        RemoteControl("111111111111", ControlCommand.TRIP, datetime(2018, 5, 12, 15, 41, 24), Password(0, "000000"),
                      "00000000", 0),
    ),
    # [C_BROADCAST] 08H broadcast time sync, ss mm hh DD MM YY = 2017-06-05 10:22:51 (+33H applied).
    Vector(
        "broadcast_time", "68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16", C_BROADCAST,
        BroadcastTimeSync(datetime(2017, 6, 5, 10, 22, 51)),
    ),
    # [C_3762] the 645 frame inside a 1376.2 AFN05 frame: 2022-03-17 14:07:47.
    Vector(
        "broadcast_time_3762", "68 99 99 99 99 99 99 68 08 06 7A 3A 47 4A 36 55 44 16", C_3762,
        BroadcastTimeSync(datetime(2022, 3, 17, 14, 7, 47)),
    ),
]

# Frames that must be rejected, with the reason word.
INVALID: list[tuple[str, str, str, str]] = [
    # [SHIXIN] Scan_ChecksumError_ReportsReason (CS 55 instead of 54).
    ("bad_checksum", "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 55 16", "checksum", SHIXIN),
    # [SHIXIN] Scan_MissingEndMarker_ReportsReason (17 instead of 16).
    ("bad_end", "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 17", "end_byte", SHIXIN),
    # [SHIXIN] Scan_SecondStartMarkerWrong_ReportsHeaderError (69 instead of the second 68).
    ("bad_second_start", "68 12 90 78 56 34 12 69 91 08 33 33 34 33 89 67 45 33 54 16", "start_byte", SHIXIN),
    # [SHIXIN] Scan_LengthTooLong_ReportsLengthError (L = FF, 2 bytes follow).
    ("length_too_long", "68 12 90 78 56 34 12 68 91 FF 33 33", "truncated", SHIXIN),
    # [SHIXIN] Scan_IncompleteFrame_NeedsMore.
    ("incomplete", "FE FE 68 12 90 78 56 34 12 68 91 08 33 33", "truncated", SHIXIN),
]

# Data-identifier wire examples: DI -> bytes on the wire (+33H, DI0 first). shared/docs/dlt645.md section 3.
DI_WIRE = [(0x00010000, "33 33 34 33"), (0x02010100, "33 34 34 35")]

# Plain data examples (after -33H): (DI, data hex, expected values, source)
DATA_EXAMPLES: list[tuple[int, str, dict[str, object], str]] = [
    # [SHIXIN_CLIENT] ResultRows_FromSuccessAndError: max demand 1.2345 kW at 2024-05-20 13:45.
    (0x01010000, "45 23 01 45 13 20 05 24", {"value": 1.2345, "time": datetime(2024, 5, 20, 13, 45)}, SHIXIN_CLIENT),
    # shared/docs/dlt645.md section 3: a single-phase meter answering 0201FF00 (B, C not supported).
    (0x0201FF00, "56 22 FF FF FF FF", {"a": 225.6, "b": None, "c": None}, "shared/docs/dlt645.md section 3"),
    # [JAYLA] BcdToDecimal_ConvertsDisplayOrderBcdBytesToDecimalValue: display order 00 00 01 86 with 2
    # decimals = 1.86; on the wire (low byte first) that is 86 01 00 00.
    (0x00010000, "86 01 00 00", {"value": 1.86}, JAYLA),
]
