"""DL/T 645 services (every 2007 service + 1997 reads), follow-up assembly and the sans-I/O connection."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    Function,
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
    WriteAddress,
    WriteData,
    error_flags,
)
from protocols.dlt645.formats import BAUD_BITS
from protocols.dlt645.frame import decode_frame, encode_frame
from protocols.dlt645.quirks import Quirks
from protocols.dlt645.registry import encode_data
from protocols.dlt645.services import (
    FollowUpAssembler,
    encode_reply,
    parse_reply,
    parse_request,
    reply_bytes,
    request_bytes,
    split_read_reply,
)
from protocols.errors import DeviceError, FrameError, LocalProtocolError, ProtocolError

M = "000000000001"


def wire(req: object, quirks: Quirks | None = None) -> bytes:
    return request_bytes(req, quirks or Quirks())  # type: ignore[arg-type]


def data_of(raw: bytes) -> bytes:
    return decode_frame(raw).data


# ---------------------------------------------------------------- request layouts (dlt645.md section 2)


def test_remote_control_matches_holley_example_bytes() -> None:
    # dlt645.md [C15]: the Holley "645拉闸报文例子" frame, produced by our encoder.
    req = RemoteControl("111111111111", ControlCommand.TRIP, datetime(2018, 5, 12, 15, 41, 24))
    assert wire(req, Quirks(request_preamble=0)) == bytes.fromhex(
        "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16"
    )


def test_remote_control_carries_password_operator_and_bcd_valid_until() -> None:
    req = RemoteControl(M, ControlCommand.CLOSE_DIRECT, datetime(2026, 11, 27, 8, 30, 5), Password(2, "123456"),
                        "87654321")
    # PA P0P1P2 (low byte first), C0..C3, N1, N2, ss mm hh DD MM YY (BCD, not binary).
    assert data_of(wire(req)) == bytes.fromhex("02 56 34 12 21 43 65 87 1C 00 05 30 08 27 11 26")
    assert "123456" not in repr(req) and "87654321" not in repr(req)


@pytest.mark.parametrize(
    ("cmd", "code"),
    [(ControlCommand.TRIP, 0x1A), (ControlCommand.CLOSE_PERMIT, 0x1B), (ControlCommand.CLOSE_DIRECT, 0x1C),
     (ControlCommand.ALARM, 0x2A), (ControlCommand.ALARM_RELEASE, 0x2B), (ControlCommand.KEEP_POWER, 0x3A),
     (ControlCommand.KEEP_POWER_RELEASE, 0x3B)],
)
def test_remote_control_n1_codes(cmd: ControlCommand, code: int) -> None:
    assert data_of(wire(RemoteControl(M, cmd, datetime(2026, 1, 1))))[8] == code


def test_change_baud_word_is_bitmap() -> None:
    # dlt645.md section 4: 600888/dlt645 sends BCD(rate/300) (9600 -> 32H) and gets D7 01 3B; the bitmap is 20H.
    assert data_of(wire(ChangeBaud(M, 9600))) == b"\x20"
    assert data_of(wire(ChangeBaud(M, 4800))) == b"\x10"
    with pytest.raises(LocalProtocolError):
        wire(ChangeBaud(M, 2000))
    reply = parse_reply(decode_frame(reply_bytes(ChangeBaudResponse(M, 9600))))
    assert reply == ChangeBaudResponse(M, 9600)
    refused = parse_reply(decode_frame(bytes.fromhex(_abnormal_hex(0x17, 0x08))))
    assert isinstance(refused, ErrorResponse) and refused.flags == ("baud",)


def _abnormal_hex(function: int, code: int) -> str:
    return reply_bytes(ErrorResponse(M, function, code)).hex()


def test_freeze_wildcards() -> None:
    # dlt645.md section 2 [C3 client_service.freeze]: mm hh DD MM, 99 = wildcard.
    assert data_of(wire(Freeze(M))) == bytes.fromhex("99 99 99 99")  # instant
    assert data_of(wire(Freeze(M, hour=0, minute=0))) == bytes.fromhex("00 00 99 99")  # daily 9999hhmm
    assert data_of(wire(Freeze(M, minute=15))) == bytes.fromhex("15 99 99 99")  # hourly 999999mm
    assert data_of(wire(Freeze(M, day=1, hour=0, minute=0))) == bytes.fromhex("00 00 01 99")  # monthly 99DDhhmm


def test_broadcast_time_sync_order_and_scrambling() -> None:
    # Independent frames (tests/protocols/vectors.py C_BROADCAST): ss first, +33H applied.
    raw = wire(BroadcastTimeSync(datetime(2017, 6, 5, 10, 22, 51)), Quirks(request_preamble=0))
    assert raw == bytes.fromhex("68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16")


def test_read_with_count_and_start_time() -> None:
    req = ReadRequest(M, 0x06000001, count=4, start=datetime(2026, 11, 26, 23, 45))
    assert data_of(wire(req)) == bytes.fromhex("01 00 00 06 04 45 23 26 11 26")
    assert parse_request(decode_frame(wire(req))) == req
    with pytest.raises(LocalProtocolError):
        wire(ReadRequest(M, 0x06000001, start=datetime(2026, 1, 1)))


def test_write_and_clears_layouts() -> None:
    pw, op = Password(2, "123456"), "00000001"
    w = WriteData(M, 0x04000102, encode_data(0x04000102, datetime(2026, 1, 1, 12, 34, 56).time()), pw, op)
    assert data_of(wire(w)) == bytes.fromhex("02 01 00 04 02 56 34 12 01 00 00 00 56 34 12")
    assert data_of(wire(MaxDemandReset(M, pw, op))) == bytes.fromhex("02 56 34 12 01 00 00 00")
    assert data_of(wire(MeterClear(M, pw, op))) == bytes.fromhex("02 56 34 12 01 00 00 00")
    assert data_of(wire(EventClear(M, pw, op))) == bytes.fromhex("02 56 34 12 01 00 00 00 FF FF FF FF")
    assert data_of(wire(ChangePassword(M, 0x04000C03, Password(2, "123456"), Password(2, "654321")))) == bytes.fromhex(
        "03 0C 00 04 02 56 34 12 02 21 43 65"
    )


def test_1997_read_follow_up_and_write() -> None:
    # dlt645.md section 2: 1997 read 01, follow-up 02, write 04, 2-byte DI (DI0 first, +33H).
    raw = wire(ReadRequest(M, 0x9010, version=1997), Quirks(request_preamble=0))
    f = decode_frame(raw)
    assert f.control == 0x01 and f.data == bytes.fromhex("10 90")
    assert raw[10:12] == bytes.fromhex("43 C3")
    assert decode_frame(wire(ReadFollowUp(M, 0x9010, version=1997))).control == 0x02
    w = WriteData(M, 0xC011, bytes.fromhex("00 00 12"), Password(0, "000000"), version=1997)
    assert data_of(wire(w)) == bytes.fromhex("11 C0 00 00 00 00 00 00 12")
    reply = parse_reply(decode_frame(reply_bytes(ReadResponse(M, 0x9010, bytes.fromhex("00 01 00 00"),
                                                                 function=0x01, version=1997))))
    assert isinstance(reply, ReadResponse) and reply.decoded is not None and reply.decoded.value == 1.0
    assert reply.version == 1997


def test_abnormal_reply_is_a_typed_error_with_named_bits() -> None:
    # [C16] shixin08052/dtl645 ExceptionResponse_ErrorWordDecodedBitByBit: 7F = all seven bits.
    assert error_flags(0x7F) == ("other", "no_data", "password", "baud", "zones", "periods", "tariffs")
    ev = parse_reply(decode_frame(bytes.fromhex("68 12 90 78 56 34 12 68 D1 01 35 8D 16")))
    assert isinstance(ev, ErrorResponse)
    err = ev.to_error()
    assert isinstance(err, DeviceError) and err.code == 0x02 and err.flags == ("no_data",)
    assert err.device == "123456789012"


def test_strict_quirk_turns_length_mismatch_into_frame_error() -> None:
    raw = reply_bytes(ReadResponse(M, 0x00010000, b"\x01\x02\x03"))
    lenient = parse_reply(decode_frame(raw))
    assert isinstance(lenient, ReadResponse) and lenient.decoded is not None and lenient.decoded.error == "length"
    with pytest.raises(FrameError):
        parse_reply(decode_frame(raw), Quirks(strict=True))


def test_direction_checks() -> None:
    with pytest.raises(FrameError):
        parse_reply(decode_frame(wire(ReadRequest(M, 0x00010000))))
    with pytest.raises(FrameError):
        parse_request(decode_frame(reply_bytes(Ack(M, 0x14))))


# ---------------------------------------------------------------- hypothesis round trips, every service

addresses = st.text("0123456789", min_size=12, max_size=12)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
passwords = st.builds(Password, st.integers(0, 255), st.text("0123456789", min_size=6, max_size=6))
operators = st.text("0123456789", min_size=8, max_size=8)
dis = st.integers(0, 0xFFFFFFFF)

requests = st.one_of(
    st.builds(BroadcastTimeSync, times),
    st.builds(ReadRequest, addresses, dis),
    st.builds(ReadRequest, addresses, dis, st.integers(0, 99)),
    st.builds(ReadRequest, addresses, dis, st.integers(0, 99), times.map(lambda d: d.replace(second=0))),
    st.builds(ReadRequest, addresses, st.integers(0, 0xFFFF), version=st.just(1997)),
    st.builds(ReadFollowUp, addresses, dis, st.integers(0, 255)),
    st.builds(ReadFollowUp, addresses, st.integers(0, 0xFFFF), st.just(0), st.just(1997)),
    st.builds(ReadAddress, addresses),
    st.builds(WriteData, addresses, dis, st.binary(max_size=40), passwords, operators),
    st.builds(WriteData, addresses, st.integers(0, 0xFFFF), st.binary(max_size=40), passwords, version=st.just(1997)),
    st.builds(WriteAddress, addresses, addresses),
    st.builds(Freeze, addresses, st.none() | st.integers(1, 12), st.none() | st.integers(1, 31),
              st.none() | st.integers(0, 23), st.none() | st.integers(0, 59)),
    st.builds(ChangeBaud, addresses, st.sampled_from(sorted(BAUD_BITS))),
    st.builds(ChangePassword, addresses, dis, passwords, passwords),
    st.builds(MaxDemandReset, addresses, passwords, operators),
    st.builds(MeterClear, addresses, passwords, operators),
    st.builds(EventClear, addresses, passwords, operators, dis),
    st.builds(RemoteControl, addresses, st.sampled_from(list(ControlCommand)), times, passwords, operators,
              st.integers(0, 255)),
    st.builds(RawRequest, addresses, st.sampled_from([0x03, 0x1D]), st.binary(max_size=30)),
)


@settings(max_examples=400, deadline=None)
@given(requests, st.booleans())
def test_every_request_round_trips(req: object, reversed_time: bool) -> None:
    q = Quirks(time_reversed=reversed_time)
    raw = request_bytes(req, q)  # type: ignore[arg-type]
    assert parse_request(decode_frame(raw), q) == req


replies = st.one_of(
    st.builds(ReadResponse, addresses, dis, st.binary(max_size=60)),
    st.builds(ReadResponse, addresses, dis, st.binary(max_size=60), st.just(True)),
    st.builds(ReadResponse, addresses, dis, st.binary(max_size=60), st.booleans(), st.integers(0, 255),
              st.just(int(Function.READ_FOLLOW_UP))),
    st.builds(ReadResponse, addresses, st.integers(0, 0xFFFF), st.binary(max_size=60), st.booleans(), st.none(),
              st.just(0x01), st.just(1997)),
    st.builds(ReadAddressResponse, addresses),
    st.builds(ChangeBaudResponse, addresses, st.sampled_from(sorted(BAUD_BITS))),
    st.builds(Ack, addresses, st.sampled_from([0x14, 0x15, 0x16, 0x18, 0x19, 0x1A, 0x1B, 0x1C]),
              st.binary(max_size=8)),
    st.builds(ErrorResponse, addresses, st.sampled_from([0x11, 0x12, 0x14, 0x17, 0x1C]), st.integers(0, 255)).map(
        lambda e: ErrorResponse(e.address, e.function, e.code, error_flags(e.code))
    ),
    st.builds(RawResponse, addresses, st.just(0x83), st.binary(max_size=20)),
)


@settings(max_examples=400, deadline=None)
@given(replies)
def test_every_reply_round_trips(reply: object) -> None:
    assert parse_reply(decode_frame(reply_bytes(reply))) == reply  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0x1F), st.binary(max_size=40), st.booleans())
def test_parsers_raise_only_protocol_errors(function: int, data: bytes, reply: bool) -> None:
    from protocols.dlt645.frame import Frame

    frame = Frame(M, function | (0x80 if reply else 0), data)
    try:
        parse_reply(frame) if reply else parse_request(frame)
    except ProtocolError:
        pass


# ---------------------------------------------------------------- follow-up frames


def test_follow_up_assembly_through_the_connection() -> None:
    # A 60-byte cover-open record split into 3 frames (max_data 30): 11->B1, 12 SEQ1->B2, 12 SEQ2->92.
    di = 0x03300D01
    record = encode_data(di, {"start": datetime(2026, 1, 2, 3, 4, 5), "end": datetime(2026, 1, 2, 3, 9, 0),
                              **{f"before_{n}": 1.0 for n in ("forward_active", "reverse_active", "q1_reactive",
                                                              "q2_reactive", "q3_reactive", "q4_reactive")},
                              **{f"after_{n}": 2.0 for n in ("forward_active", "reverse_active", "q1_reactive",
                                                             "q2_reactive", "q3_reactive", "q4_reactive")}})
    assert len(record) == 60
    parts = split_read_reply(M, di, record, max_data=30)
    assert [encode_reply(p).control for p in parts] == [0xB1, 0xB2, 0x92]
    conn = MasterConnection()
    conn.send(ReadRequest(M, di))
    conn.receive_data(reply_bytes(parts[0]))
    first = conn.next_event()
    assert isinstance(first, ReadResponse) and first.more and first.decoded is None
    asm = FollowUpAssembler(first)
    seqs = []
    while (req := asm.next_request()) is not None:
        seqs.append(req.seq)
        sent = conn.send(req)
        assert decode_frame(sent).data[-1] == req.seq
        conn.receive_data(reply_bytes(parts[req.seq]))
        ev = conn.next_event()
        assert isinstance(ev, ReadResponse)
        asm.add(ev)
    assert seqs == [1, 2]
    result = asm.result()
    assert result.data == record and result.decoded is not None and result.decoded.error is None
    assert result.decoded.values["start"] == datetime(2026, 1, 2, 3, 4, 5)


def test_follow_up_rejects_wrong_sequence() -> None:
    parts = split_read_reply(M, 0x03300D01, bytes(60), max_data=30)
    asm = FollowUpAssembler(parts[0])
    with pytest.raises(FrameError):
        asm.add(parts[2])  # SEQ 2 where 1 was expected


# ---------------------------------------------------------------- connection


def test_connection_ignores_echo_and_foreign_replies() -> None:
    conn = MasterConnection()
    req = ReadRequest(M, 0x00010000)
    out = conn.send(req)
    assert out == wire(req)
    good = reply_bytes(ReadResponse(M, 0x00010000, encode_data(0x00010000, 42.5)))
    other_meter = reply_bytes(ReadResponse("000000000002", 0x00010000, bytes(4)))
    other_di = reply_bytes(ReadResponse(M, 0x00020000, bytes(4)))
    stream = out + other_meter + other_di + b"\x00\xff" + good
    chunks = [stream[i : i + 3] for i in range(0, len(stream), 3)]
    events = []
    for c in chunks:
        conn.receive_data(c)
        while (ev := conn.next_event()) is not NEED_DATA:
            events.append(ev)
    replies = [e for e in events if isinstance(e, ReadResponse)]
    assert len(replies) == 1 and replies[0].decoded is not None and replies[0].decoded.value == 42.5
    assert conn.ignored_echoes == 1 and conn.ignored_replies == 2
    assert not conn.expecting_reply


def test_connection_wildcard_request_matches_real_address() -> None:
    conn = MasterConnection()
    conn.send(ReadAddress())
    conn.receive_data(reply_bytes(ReadAddressResponse("123456789012")))
    assert conn.next_event() == ReadAddressResponse("123456789012")


def test_connection_abnormal_reply_and_bad_frames() -> None:
    conn = MasterConnection()
    conn.send(RemoteControl(M, ControlCommand.TRIP, datetime(2026, 1, 1), Password(2, "111111")))
    bad = bytearray(reply_bytes(Ack(M, 0x1C)))
    bad[-2] ^= 0xFF
    conn.receive_data(bytes(bad) + reply_bytes(ErrorResponse(M, 0x1C, 0x04)))
    assert isinstance(conn.next_event(), FrameDiscarded)
    ev = conn.next_event()
    assert isinstance(ev, ErrorResponse) and ev.flags == ("password",)


def test_connection_broadcast_expects_nothing_and_one_request_at_a_time() -> None:
    conn = MasterConnection()
    raw = conn.send(BroadcastTimeSync(datetime(2026, 1, 1, 0, 0, 0)))
    assert decode_frame(raw).address == "999999999999" and not conn.expecting_reply
    conn.send(ReadRequest(M, 0x00010000))
    with pytest.raises(LocalProtocolError):
        conn.send(ReadRequest(M, 0x00020000))
    conn.cancel()
    conn.send(ReadRequest(M, 0x00020000))
    # A late reply to the cancelled request is not taken for the new one.
    conn.receive_data(reply_bytes(ReadResponse(M, 0x00010000, bytes(4))))
    assert conn.next_event() is NEED_DATA


def test_connection_quirks_padding_preamble_and_di_map() -> None:
    q = Quirks(address_padding="AA", request_preamble=2, di_map={0x00010000: 0x00010001}, accept_any_address=False)
    conn = MasterConnection(q)
    raw = conn.send(ReadRequest("1234", 0x00010000))
    f = decode_frame(raw)
    assert raw[:3] == b"\xfe\xfe\x68" and f.address == "AAAAAAAA1234"
    assert f.data[:4] == (0x00010001).to_bytes(4, "little")
    conn.receive_data(reply_bytes(ReadResponse("000000001234", 0x00010001, encode_data(0x00010000, 7.0))))
    ev = conn.next_event()
    assert isinstance(ev, ReadResponse) and ev.di == 0x00010000
    assert ev.decoded is not None and ev.decoded.value == 7.0


def test_connection_random_chunking_with_noise() -> None:
    rng = random.Random(3)
    for _ in range(20):
        conn = MasterConnection()
        req = ReadRequest(M, 0x0201FF00)
        echo = conn.send(req)
        reply = reply_bytes(ReadResponse(M, 0x0201FF00, encode_data(0x0201FF00, [220.0, 221.0, None])),
                            Quirks(reply_preamble=rng.randint(0, 4)))
        stream = bytes(rng.randrange(256) for _ in range(rng.randint(0, 6)) if True).replace(b"\x68", b"") + echo
        stream += reply
        got = None
        pos = 0
        while pos < len(stream):
            n = rng.randint(1, 9)
            conn.receive_data(stream[pos : pos + n])
            pos += n
            while (ev := conn.next_event()) is not NEED_DATA:
                if isinstance(ev, ReadResponse):
                    got = ev
        assert got is not None and got.decoded is not None
        assert got.decoded.values == {"a": 220.0, "b": 221.0, "c": None}


def test_encode_frame_still_rejects_long_data() -> None:
    from protocols.dlt645.frame import Frame

    with pytest.raises(LocalProtocolError):
        encode_frame(Frame(M, 0x11, bytes(256)))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=60))
def test_describe_never_raises_on_any_valid_frame(control: int, data: bytes) -> None:
    from protocols.dlt645.describe import describe_frame
    from protocols.dlt645.frame import Frame

    out = describe_frame(encode_frame(Frame(M, control, data)))
    assert out["valid"] is True and out["control"] == f"{control:02X}"


def test_masked_hex_hides_passwords_and_operator_codes_in_any_stream() -> None:
    from protocols.dlt645.services import masked_hex

    pw = Password(2, "123456")
    write97 = wire(WriteData(M, 0xC011, bytes.fromhex("00 00 12"), pw, version=1997), Quirks(request_preamble=0))
    assert masked_hex(write97).split()[10:17] == ["44", "f3", "35", "**", "**", "**", "33"]  # DI, PA, P0..P2, data
    control = wire(RemoteControl(M, ControlCommand.TRIP, datetime(2026, 1, 1), pw, "12345678"))
    echo_reply = reply_bytes(Ack(M, 0x18, bytes.fromhex("02 56 34 12")))  # 18H reply echoes the new password
    text = masked_hex(b"\x00\x68" + control + echo_reply)
    assert text.count("**") == 8 + 4  # 1C: 7 secret bytes + CS; 18H reply: 3 + CS
    assert "89 67 45" not in text and "35 **" in text and text.startswith("00 68 fe fe")
    plain = wire(ReadRequest(M, 0x00010000))
    assert masked_hex(plain) == plain.hex(" ")
