"""DL/T 645 link layer against public frames: whole, byte by byte, random chunks, trailing garbage.

Sources are named per vector in tests/protocols/vectors.py. The fuzz invariants follow h11's
``fuzz/afl-server.py``: parse it or raise a ProtocolError, never anything else.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.dlt645.connection import NEED_DATA, MasterConnection
from protocols.dlt645.describe import describe_frame
from protocols.dlt645.events import ReadAddress, ReadRequest, ReadResponse
from protocols.dlt645.frame import (
    BadFrame,
    Deframer,
    Frame,
    address_from_wire,
    address_to_wire,
    decode_frame,
    encode_frame,
)
from protocols.dlt645.services import parse_reply, parse_request
from protocols.errors import FrameError, ProtocolError
from tests.protocols.vectors import INVALID, VALID, Vector

GARBAGE = b"\x00\x55\x68\x11\x22"  # ends with a partial-looking 68: must not produce a frame


def chunkings(raw: bytes, seed: int = 7) -> Iterable[tuple[str, list[bytes]]]:
    """The h11 ``tr()`` idea: the same bytes whole, byte by byte and in random chunks."""
    yield "whole", [raw]
    yield "bytewise", [raw[i : i + 1] for i in range(len(raw))]
    rng = random.Random(seed)
    for n in range(3):
        cuts = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, 1 + n * 2)))
        parts, prev = [], 0
        for c in [*cuts, len(raw)]:
            parts.append(raw[prev:c])
            prev = c
        yield f"random{n}", parts


def deframe(chunks: list[bytes]) -> list[Frame | BadFrame]:
    d = Deframer()
    out: list[Frame | BadFrame] = []
    for c in chunks:
        d.feed(c)
        out.extend(d.events())
    return out


def frames_only(events: list[Frame | BadFrame]) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


@pytest.mark.parametrize("vec", VALID, ids=lambda v: v.name)
def test_public_frame_decodes(vec: Vector) -> None:
    frame = decode_frame(vec.raw)
    event = parse_reply(frame) if frame.is_reply else parse_request(frame)
    assert event == vec.event, vec.source
    if vec.value is not None:
        assert isinstance(event, ReadResponse)
        assert event.decoded is not None
        assert event.decoded.value == vec.value


@pytest.mark.parametrize("vec", VALID, ids=lambda v: v.name)
def test_public_frame_in_every_chunking(vec: Vector) -> None:
    expected = decode_frame(vec.raw)
    for how, chunks in chunkings(vec.raw):
        assert frames_only(deframe(chunks)) == [expected], how
    # With trailing garbage, and with garbage in front: still exactly that frame.
    for how, chunks in chunkings(vec.raw + GARBAGE):
        assert frames_only(deframe(chunks)) == [expected], f"trailing garbage, {how}"
    for how, chunks in chunkings(b"\x13\x37\x16" + vec.raw):
        assert frames_only(deframe(chunks)) == [expected], f"leading garbage, {how}"


@pytest.mark.parametrize("vec", VALID, ids=lambda v: v.name)
def test_public_frame_reencodes_identically(vec: Vector) -> None:
    frame = decode_frame(vec.raw)
    assert encode_frame(frame, preamble=frame.preamble) == vec.raw


@pytest.mark.parametrize(("name", "hexstr", "reason", "source"), INVALID, ids=[i[0] for i in INVALID])
def test_public_bad_frame_rejected_with_reason(name: str, hexstr: str, reason: str, source: str) -> None:
    raw = bytes.fromhex(hexstr)
    with pytest.raises(FrameError) as info:
        decode_frame(raw)
    assert info.value.reason == reason, source
    assert describe_frame(raw)["error"] == reason
    assert frames_only(deframe([raw])) == []


def test_deframer_resyncs_after_corrupt_frame() -> None:
    # Same scenario as github:600888/dlt645 python/test/test_protocol_core.py
    # test_parser_resynchronizes_after_corrupt_frame: noise + corrupt + valid + tail.
    good = bytes.fromhex("68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16")
    bad = bytearray(good)
    bad[-2] ^= 0x01
    for how, chunks in chunkings(b"noise" + bytes(bad) + good + b"tail"):
        events = deframe(chunks)
        assert frames_only(events) == [decode_frame(good)], how
        assert any(isinstance(e, BadFrame) and e.reason == "checksum" for e in events), how


def test_echo_then_reply_on_half_duplex_line() -> None:
    # github:shixin08052/dtl645 FrameCodecTests.cs Scan_EchoThenResponse_BothFramesFoundInOrder: our own
    # request comes back first (direction 0), then the meter's reply with 2 FE.
    echo = bytes.fromhex("FE FE FE FE 68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16")
    reply = bytes.fromhex("FE FE 68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16")
    frames = frames_only(deframe([echo + reply]))
    assert [f.is_reply for f in frames] == [False, True]
    assert frames[1].preamble == 2


def test_checksum_and_address_bytes_equal_to_16h() -> None:
    # [I1] gams/python-dlt645 PR #3: CS (or an address byte) can be 16H; the frame is delimited by L.
    for addr in ("000000000016", "161616161616"):
        for d in range(256):
            frame = Frame(addr, 0x91, bytes([0, 0, 1, 0, d]))
            raw = encode_frame(frame, preamble=0)
            if raw[-2] == 0x16:
                break
        assert raw[-2] == 0x16
        for how, chunks in chunkings(raw + b"\x16\x16"):
            assert frames_only(deframe(chunks)) == [frame], how


def test_deframer_buffer_is_bounded() -> None:
    d = Deframer(max_buffer=300)
    d.feed(b"\x68" + b"\x00" * 6 + b"\x68\x91\xff" + b"\x00" * 1000)  # header promising 255 bytes, then junk
    events = d.events()
    assert d.buffered <= 300 + 12
    assert not frames_only(events)


def test_address_helpers() -> None:
    # shared/docs/dlt645.md section 1 [P3]: 123456789012 -> 12 90 78 56 34 12.
    assert address_to_wire("123456789012") == bytes.fromhex("12 90 78 56 34 12")
    assert address_from_wire(bytes.fromhex("12 90 78 56 34 12")) == "123456789012"
    assert address_to_wire("AAAAAAAAAAAA") == b"\xaa" * 6


# ---------------------------------------------------------------- fuzz invariants


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_random_bytes_never_raise_anything_but_protocol_errors(data: bytes, cuts: list[int]) -> None:
    try:
        frame = decode_frame(data)
    except ProtocolError:
        pass
    else:
        try:
            parse_reply(frame) if frame.is_reply else parse_request(frame)
        except ProtocolError:
            pass
    describe_frame(data)  # never raises
    d = Deframer()
    conn = MasterConnection()
    conn.send(ReadRequest("AAAAAAAAAAAA", 0x00010000))
    pos = 0
    for c in [*cuts, len(data)]:
        chunk = data[pos : pos + c]
        pos += c
        d.feed(chunk)
        d.events()
        conn.receive_data(chunk)
        while True:
            try:
                ev = conn.next_event()
            except ProtocolError:
                continue
            if ev is NEED_DATA:
                break


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    address = draw(st.text("0123456789", min_size=12, max_size=12))
    control = draw(st.integers(0, 255))
    data = draw(st.binary(max_size=64))
    return encode_frame(Frame(address, control, data), preamble=0)


@settings(max_examples=400, deadline=None)
@given(valid_frames(), st.data())
def test_a_corrupt_frame_is_never_accepted(raw: bytes, data: st.DataObject) -> None:
    original = decode_frame(raw)
    i = data.draw(st.integers(0, len(raw) - 1), label="index")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]), label="byte")
    corrupt = bytearray(raw)
    corrupt[i] = new
    corrupt_b = bytes(corrupt)
    with pytest.raises(FrameError):
        decode_frame(corrupt_b)
    assert describe_frame(corrupt_b)["valid"] is False
    # The stream deframer may find some *other* frame inside the bytes, never the original one.
    assert original not in frames_only(deframe([corrupt_b]))


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_frames(), min_size=1, max_size=5), st.binary(max_size=20), st.integers(1, 17))
def test_stream_of_frames_with_garbage_in_any_chunking(frames: list[bytes], junk: bytes, step: int) -> None:
    # Garbage between frames must not contain a 68 that could start a bogus candidate overlapping the next frame
    # with a valid checksum; plain FE/00 junk keeps the expectation exact.
    junk = bytes(b for b in junk if b not in (0x68, 0xFE))
    stream = junk.join(frames) + junk
    got = frames_only(deframe([stream[i : i + step] for i in range(0, len(stream), step)]))
    assert got == [decode_frame(f) for f in frames]


_REQUEST_FOR = {
    "reply_energy": ReadRequest("123456789012", 0x00010000),
    "reply_energy_fe2": ReadRequest("123456789012", 0x00010000),
    "reply_energy_zero": ReadRequest("000072007201", 0x00010000),
    "reply_address_fe7": ReadAddress(),
    "reply_abnormal": ReadRequest("123456789012", 0x00010000),
}


@pytest.mark.parametrize("name", sorted(_REQUEST_FOR))
def test_public_replies_through_the_connection_in_every_chunking(name: str) -> None:
    # h11 style: the same reply bytes whole, byte by byte, in random chunks, after our own echo and
    # followed by garbage; the connection returns exactly the expected reply event once.
    vec = next(v for v in VALID if v.name == name)
    for how, chunks in chunkings(vec.raw + GARBAGE):
        conn = MasterConnection()
        echo = conn.send(_REQUEST_FOR[name])
        got = []
        for c in [echo, *chunks]:
            conn.receive_data(c)
            while (ev := conn.next_event()) is not NEED_DATA:
                got.append(ev)
        assert got == [vec.event], how


def test_codec_modules_do_no_io() -> None:
    # The codec is sans-I/O (h11 style): no asyncio, serial or socket import in any codec module.
    import ast
    from pathlib import Path

    import protocols.dlt645 as pkg

    codec = ["frame", "formats", "registry", "records", "events", "services", "connection", "quirks", "describe"]
    for name in codec:
        tree = ast.parse((Path(pkg.__file__).parent / f"{name}.py").read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"asyncio", "serial", "serial_asyncio_fast", "socket", "selectors"}, name
