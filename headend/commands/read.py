"""``headend read METER_ADDR DI|QUANTITY... --port URL``: an on-demand read, as a table or JSON.

Items are DL/T 645 data identifiers (8 hex digits, e.g. ``00010000``; block DIs like
``0001FF00`` too) or quantity codes (``energy.active.import``). The read logic lives in
:func:`read_items` so other front ends (the daemon's IPC) can call it.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import typer

from headend.cliutil import JsonOpt, console, fail, print_json, print_table
from protocols import quantities
from protocols.arbitration import Priority
from protocols.client import MeterClient
from protocols.errors import ConfigError, FrameError, HeadendError, LocalProtocolError
from protocols.factory import open_client
from protocols.reading import Reading

__all__ = ["read_items", "read_on_client", "register"]

_DI = re.compile(r"^[0-9A-Fa-f]{8}$|^[0-9A-Fa-f]{4}$")

PortOpt = Annotated[
    str,
    typer.Option(
        "--port", "-p", help="Channel URL: serial:///dev/ttyUSB0?baud=2400&parity=E or tcp://host:port.",
        envvar="HEADEND_PORT",
    ),
]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Response timeout in seconds.")]


def classify(items: list[str]) -> list[tuple[str, str]]:
    """``[(kind, item)]`` with kind ``di`` or ``quantity``; raises LocalProtocolError on anything else."""
    out = []
    for it in items:
        if _DI.match(it):
            out.append(("di", it.upper()))
        elif quantities.is_known(it):
            out.append(("quantity", it))
        else:
            raise LocalProtocolError(f"{it!r} is neither a data identifier (8 hex digits) nor a quantity code")
    return out


def _num(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


async def read_items(
    url: str, meter: str, items: list[str], *, protocol: str = "dlt645", reply_timeout: float | None = None,
    priority: Priority = Priority.ON_DEMAND, **options: Any,
) -> list[dict[str, Any]]:
    """Open the port, read every item from one meter, close. One JSON-ready dict per item.

    DL/T 645 DIs are decoded with the DI registry; quantity codes give one reading each.
    Raises :class:`HeadendError` subclasses (no reply, abnormal reply, bad frame, transport).
    """
    classify(items)  # bad items fail before the port is opened
    if reply_timeout is not None:
        options["timeout"] = reply_timeout
    client = open_client(protocol, url, **options)
    try:
        return await read_on_client(client, meter, items, priority=priority)
    finally:
        await client.aclose()


async def read_on_client(
    client: MeterClient, meter: str, items: Sequence[str], *, priority: Priority = Priority.ON_DEMAND,
) -> list[dict[str, Any]]:
    """Read ``items`` (DIs or quantity codes) from one meter on an open client: one JSON-ready dict
    per item, in the order asked. DIs need a DL/T 645 client; quantity codes go to the client
    in one call, so it can coalesce them (DL/T 645 block DIs, contiguous Modbus registers)."""
    kinds = classify(list(items))
    codes = list(dict.fromkeys(item for kind, item in kinds if kind == "quantity"))
    by_code: dict[str, Reading] = {}
    if codes:
        for reading in await client.read(meter, codes, priority=priority):
            by_code.setdefault(reading.quantity, reading)
    out: list[dict[str, Any]] = []
    for kind, item in kinds:
        if kind == "di":
            from protocols.dlt645.client import Dlt645Client

            if not isinstance(client, Dlt645Client):
                raise ConfigError(f"data identifiers need a DL/T 645 channel ({item}); use quantity codes")
            d = await client.read_decoded(meter, item, version=1997 if len(item) == 4 else 2007,
                                          priority=priority)
            d["item"] = item
            out.append(d)
        else:
            r = by_code.get(item)
            if r is None:
                raise FrameError("format", f"meter {meter} replied without {item}")
            out.append({
                "item": item, "quantity": r.quantity, "name": quantities.get(r.quantity).description,
                "value": _num(r.value), "unit": r.unit, "quality": r.quality.name or "GOOD",
                "meter": r.meter, "ts": r.ts.isoformat(),
            })
    return out


_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _fmt_one(v: Any) -> str:
    if isinstance(v, float):
        return repr(round(v, 6))  # 219.0 V, 1031.06 kWh: as the meter sent them
    if isinstance(v, str) and _ISO_TIME.match(v):
        return v.replace("T", " ")  # meter times: 2026-11-27 15:21:44
    return "" if v is None else str(v)


def _with_flags(d: dict[str, Any]) -> str:
    text = _fmt_one(d.get("value"))
    if d.get("flags"):  # a status word: name its set bits
        text += f" ({', '.join(d['flags'])})"
    return text


def _fmt_value(d: dict[str, Any]) -> str:
    if "values" in d:
        parts = []
        for v in d["values"]:
            parts.append(f"{v.get('name')}={_with_flags(v)}{(' ' + v['unit']) if v.get('unit') else ''}")
        return ", ".join(parts)
    return _with_flags(d)


def _read_at(rows: list[dict[str, Any]]) -> str:
    """When the items were read, in this machine's local time, to the second."""
    stamps = [r["ts"] for r in rows if isinstance(r.get("ts"), str)]
    if not stamps:
        return ""
    try:
        at = datetime.fromisoformat(stamps[0]).astimezone()
    except ValueError:
        return ""
    return f", read {at:%Y-%m-%d %H:%M:%S %Z}"


def read_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Argument(help="Meter address (12 digits as printed on the meter), or device id.")],
    items: Annotated[list[str], typer.Argument(help="Data identifiers (00010000) or quantity codes.")],
    port: PortOpt,
    protocol: Annotated[str, typer.Option("--protocol", help="dlt645 (default), modbus, ...")] = "dlt645",
    timeout: TimeoutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Read data items from one meter now (operator priority) and print them."""
    try:
        rows = _via_daemon(ctx, port, meter, items)
        if rows is None:  # no running daemon owns the port: open it here
            rows = asyncio.run(read_items(port, meter, items, protocol=protocol, reply_timeout=timeout))
    except HeadendError as exc:
        raise fail(exc) from None
    if json_out:
        print_json({"meter": rows[0].get("meter", meter) if rows else meter, "port": port, "items": rows})
        return
    print_table(
        ["item", "name", "value", "unit"],
        [(r["item"], r.get("name", ""), _fmt_value(r), r.get("unit", "")) for r in rows],
        title=f"meter {rows[0].get('meter', meter) if rows else meter}{_read_at(rows)}",
    )
    if not rows:
        console.print("nothing read")


def register(app: typer.Typer) -> None:
    app.command("read")(read_cmd)


def _via_daemon(ctx: typer.Context, port: str, meter: str, items: list[str]) -> list[dict[str, Any]] | None:
    """(added by the daemon engineer) Read through the running daemon that owns ``port``, if any:
    a serial port cannot be shared, so the read joins the daemon's queue at on-demand priority."""
    from headend.cliutil import settings_from
    from headend.ipc import try_daemon_read

    try:
        data_dir = settings_from(ctx).data_dir
    except HeadendError:
        return None
    try:
        return try_daemon_read(data_dir, port, meter, items)
    except ValueError:  # a malformed URL (port out of range...): the direct path rejects it in one line
        return None
