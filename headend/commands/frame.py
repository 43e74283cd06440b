"""``headend frame decode HEX [--json]``: explain a DL/T 645 frame pasted from a log.

Spaces are optional (``68AAAA...`` or ``68 AA AA ...``, several arguments are joined).
Exit codes: 0 valid frame (also an abnormal reply: the frame itself is fine), 5 (BAD_FRAME)
invalid frame, 2 hex that cannot be parsed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from headend.cliutil import JsonOpt, console, fail, print_json
from headend.exitcodes import ExitCode
from protocols.dlt645.describe import describe_frame, describe_stream, parse_hex
from protocols.errors import LocalProtocolError

__all__ = ["decode_cmd", "register"]

frame_app = typer.Typer(help="DL/T 645 frame tools.", no_args_is_help=True)

_ORDER = (
    "valid", "error", "detail", "preamble", "address", "control", "function", "direction", "abnormal", "follow_up",
    "error_bits", "error_code", "version", "length", "checksum", "expected_checksum", "di", "name", "value",
    "unit", "status", "flags", "seq", "time", "control_cmd", "valid_until", "new_address", "meter_address",
    "baud", "count", "start", "freeze", "password_level", "data", "data_error", "trailing", "trailing_frames",
)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return ", ".join(v)  # error bits, status-word flags
    if isinstance(v, list | dict):
        return json.dumps(v, ensure_ascii=False)
    return "" if v is None else str(v)


def _human(info: dict[str, Any]) -> None:
    table = Table(title="DL/T 645 frame", show_header=True)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    keys = [k for k in _ORDER if k in info] + [k for k in info if k not in _ORDER and k != "values"]
    for k in keys:
        if k == "error_bits" and not info[k]:
            continue  # a normal reply: nothing to show
        bad = (k in ("error", "error_bits", "data_error") and info[k]) or (k == "valid" and not info[k])
        style = "red" if bad else ""
        table.add_row(k, _fmt(info[k]), style=style)
    console.print(table)
    values = info.get("values")
    if values:
        vt = Table(title=f"{info.get('di', '')} {info.get('name', '')}".strip())
        for col in ("name", "value", "unit", "status", "ts"):
            vt.add_column(col)
        for row in values:
            vt.add_row(*[_fmt(row.get(c)) for c in ("name", "value", "unit", "status", "ts")])
        console.print(vt)
    if info.get("trailing"):
        n = len(info["trailing"].split())
        extra = f", holding {info['trailing_frames']} more frame(s): decode them separately" if info.get(
            "trailing_frames") else ""
        console.print(f"[yellow]note:[/yellow] {n} bytes after the end byte (ignored){extra}")


def decode_cmd(
    hex_text: Annotated[list[str], typer.Argument(help="Frame bytes in hex, spaces optional.", metavar="HEX")],
    as_json: JsonOpt = False,
    version: Annotated[
        int | None, typer.Option("--version-645", help="Force 1997 or 2007 (default: from the function code).")
    ] = None,
    all_frames: Annotated[
        bool, typer.Option("--all", help="Decode every frame in the bytes (request, echo, reply...); JSON list.")
    ] = False,
) -> None:
    """Decode one DL/T 645 frame: header, function, DI, value; or why it is invalid."""
    try:
        raw = parse_hex(" ".join(hex_text))
        if version not in (None, 1997, 2007):
            raise LocalProtocolError("--version-645 must be 1997 or 2007")
    except LocalProtocolError as exc:
        raise fail(exc, ExitCode.USAGE) from None
    if all_frames:
        infos = describe_stream(raw, version=version)
        if as_json:
            print_json(infos)
        else:
            for info in infos:
                _human(info)
            if not infos:
                console.print("no frame found")
        if not infos or not all(i["valid"] for i in infos):
            raise typer.Exit(int(ExitCode.BAD_FRAME))
        return
    info = describe_frame(raw, version=version)
    if as_json:
        print_json(info)
    else:
        _human(info)
    if not info["valid"]:
        raise typer.Exit(int(ExitCode.BAD_FRAME))


frame_app.command("decode")(decode_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(frame_app, name="frame")
