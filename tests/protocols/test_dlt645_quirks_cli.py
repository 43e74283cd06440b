"""Vendor quirks as data (TOML) and the ``headend frame decode`` command."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import app
from protocols.dlt645.events import BroadcastTimeSync
from protocols.dlt645.frame import decode_frame
from protocols.dlt645.quirks import DEFAULT_QUIRKS, load_quirks
from protocols.dlt645.services import parse_request, request_bytes
from protocols.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_shipped_quirks_file_loads_and_matches() -> None:
    book = load_quirks(REPO / "config" / "quirks" / "dlt645.toml")
    legacy = book.match("example-legacy", "DDS97-1", "2.0")
    assert legacy.version == 1997 and legacy.address_padding == "AA" and legacy.response_timeout == 2.0
    assert book.match("Example-YYFirst", "any").time_reversed is True  # case-insensitive
    assert book.match("someone", "else") == book.defaults


def test_more_specific_entry_wins_regardless_of_order() -> None:
    book = load_quirks(text="""
[[meter]]
vendor = "acme"
model = "X1"
firmware = "2.*"
reply_preamble = 3
[[meter]]
vendor = "acme"
reply_preamble = 1
request_preamble = 0
""")
    q = book.match("acme", "X1", "2.4")
    assert q.reply_preamble == 3 and q.request_preamble == 0
    assert book.match("acme", "X1", "1.0").reply_preamble == 1


@pytest.mark.parametrize(
    "text",
    ["[[meter]]\nvendor='a'\ntypo_key=1", "[defaults]\naddress_padding='FF'", "[oops]\nx=1", "[[meter]]\nversion=1999",
     "not toml ["],
)
def test_bad_quirks_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        load_quirks(text=text)


def test_time_reversed_meter_needs_only_a_config_entry() -> None:
    # dlt645.md section 4: one public implementation writes broadcast time YY first. A meter doing
    # that is served by `time_reversed = true`, no code change.
    q = load_quirks(text="[[meter]]\nvendor='yy'\ntime_reversed=true").match("yy")
    req = BroadcastTimeSync(datetime(2017, 6, 5, 10, 22, 51))
    assert decode_frame(request_bytes(req, q)).data == bytes.fromhex("17 06 05 10 22 51")
    assert decode_frame(request_bytes(req, DEFAULT_QUIRKS)).data == bytes.fromhex("51 22 10 05 06 17")
    assert parse_request(decode_frame(request_bytes(req, q)), q) == req


def test_di_map_in_toml() -> None:
    q = load_quirks(text='[[meter]]\nvendor="v"\ndi_map={ "00010000" = "00010001" }').match("v")
    assert q.wire_di(0x00010000) == 0x00010001 and q.standard_di(0x00010001) == 0x00010000


# ---------------------------------------------------------------- headend frame decode


def _json(*args: str) -> tuple[int, dict[str, object]]:
    r = runner.invoke(app, ["frame", "decode", *args, "--json"])
    return r.exit_code, json.loads(r.stdout)


def test_frame_decode_json_read_reply() -> None:
    # github:shixin08052/dtl645 FrameCodecTests.cs Scan_NormalResponse_DecodesDataMinus33, pasted without spaces.
    code, out = _json("6812907856341268910833333433896745335416")
    assert code == 0
    assert out["valid"] is True and out["address"] == "123456789012" and out["control"] == "91"
    assert out["function"] == "read_data" and out["direction"] == "reply" and out["abnormal"] is False
    assert out["di"] == "00010000" and out["value"] == 1234.56 and out["unit"] == "kWh"
    assert out["preamble"] == 0 and out["error_bits"] == []


def test_frame_decode_json_per_function_fields() -> None:
    # Holley 1C example (dlt645.md [C15]) with trailing garbage.
    code, out = _json("68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16", "00 01")
    assert code == 0 and out["function"] == "remote_control" and out["control_cmd"] == "trip"
    assert out["time"] == "2018-05-12T15:41:24" and out["trailing"] == "00 01"
    assert "password" not in json.dumps(out).replace("password_level", "")
    # Broadcast time (public C code vector, tests/protocols/vectors.py).
    code, out = _json("68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16")
    assert out["function"] == "broadcast_time_sync" and out["time"] == "2017-06-05T10:22:51"
    # Follow-up request with SEQ (shixin08052/dtl645 BuildReadFollow_ContainsDiAndSequence).
    code, out = _json("68 12 90 78 56 34 12 68 12 05 34 33 63 36 34 D1 16")
    assert out["function"] == "read_follow_up" and out["seq"] == 1 and out["di"] == "03300001"
    # Write address (600888/dlt645 cpp/tests/core_test.cpp).
    code, out = _json("FE FE FE FE 68 12 34 56 78 10 12 68 15 06 45 67 89 AB 43 46 8A 16")
    assert out["function"] == "write_address" and out["new_address"] == "131078563412" and out["preamble"] == 4
    # Abnormal reply D1 01 35.
    code, out = _json("68 12 90 78 56 34 12 68 D1 01 35 8D 16")
    assert code == 0 and out["abnormal"] is True and out["error_bits"] == ["no_data"]


@pytest.mark.parametrize(
    ("hexstr", "reason"),
    [
        ("68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 55 16", "checksum"),
        ("68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 17", "end_byte"),
        ("69 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16", "start_byte"),
        ("68 12 90 78 56 34 12 68 91 08 33 33", "truncated"),
    ],
)
def test_frame_decode_invalid_exit_code(hexstr: str, reason: str) -> None:
    code, out = _json(hexstr)
    assert code == 5 and out["valid"] is False and out["error"] == reason


def test_frame_decode_human_table_and_bad_hex() -> None:
    r = runner.invoke(app, ["frame", "decode", "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16"])
    assert r.exit_code == 0 and "read_data" in r.stdout and "1234.56" in r.stdout
    assert "error_bits" not in r.stdout  # a normal reply has none to show
    r = runner.invoke(app, ["frame", "decode", "68 12 90 78 56 34 12 68 D1 01 35 8D 16"])  # abnormal D1 01 35
    assert r.exit_code == 0 and re.search(r"error_bits +│ no_data ", r.stdout)
    r = runner.invoke(app, ["frame", "decode", "68 1"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["frame", "decode", "--help"])
    assert r.exit_code == 0 and "HEX" in r.stdout


def test_frame_decode_request_and_reply_pasted_together() -> None:
    # The echo + reply of github:shixin08052/dtl645 MeterClientTests.cs ReadData_FiltersEcho_AndReturnsPayload.
    code, out = _json("FE FE FE FE 68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16",
                      "FE FE 68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16")
    assert code == 0 and out["direction"] == "request" and out["di"] == "00010000"
    assert out["trailing_frames"] == 1


def test_quirks_are_hashable_and_equal_by_value() -> None:
    from protocols.dlt645.quirks import Quirks

    a, b = Quirks(di_map={1: 2}), Quirks(di_map={1: 2})
    assert a == b and hash(a) == hash(b) and {a: "x"}[b] == "x"


def test_frame_decode_1997_read() -> None:
    # 1997 read 01H with the 2-byte DI 9010 (wire 43 C3), dlt645.md section 2.
    code, out = _json("68 01 00 00 00 00 00 68 01 02 43 C3 DA 16")
    assert code == 0 and out["version"] == 1997 and out["function"] == "read_data" and out["di"] == "9010"


def test_frame_decode_all_frames_of_a_log_excerpt() -> None:
    # Echo + corrupt reply + good reply + a truncated tail (frames from github:shixin08052/dtl645 FrameCodecTests.cs).
    text = ("FE FE FE FE 68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16 00 11 "
            "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 55 16 "
            "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16 68 12")
    r = runner.invoke(app, ["frame", "decode", "--all", "--json", text])
    out = json.loads(r.stdout)
    assert r.exit_code == 5
    assert [(o["valid"], o.get("error"), o.get("direction")) for o in out] == [
        (True, None, "request"), (False, "checksum", None), (True, None, "reply"), (False, "truncated", None)
    ]
    assert out[2]["value"] == 1234.56
    ok = runner.invoke(app, ["frame", "decode", "--all", text.rsplit(" 68 12", 1)[0].replace(
        "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 55 16 ", "")])
    assert ok.exit_code == 0 and "1234.56" in ok.stdout
