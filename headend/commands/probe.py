"""``headend probe --port URL``: find the meters on a bus.

Without a range, sends 13H read-address to ``AAAAAAAAAAAA`` (works when one meter is on the
line, e.g. a field engineer's optical head or a single-meter RS-485 port). With
``--range FIRST-LAST`` or ``--address`` (repeatable) it asks each address for its comm
address (DI 04000401) with a short timeout; silent addresses are reported as absent.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.progress import Progress

from headend.cliutil import JsonOpt, console, err_console, fail, print_json, print_table, settings_from
from headend.exitcodes import ExitCode
from protocols.errors import (
    ConfigError,
    DeviceError,
    FrameError,
    HeadendError,
    LocalProtocolError,
    NoResponseError,
)

__all__ = ["probe_bus", "register"]

MAX_SCAN = 10_000


def expand(range_: str | None, addresses: list[str]) -> list[str]:
    out = [a.rjust(12, "0") for a in addresses]
    if range_:
        first, sep, last = range_.partition("-")
        if not sep or not first.isdigit() or not last.isdigit():
            raise LocalProtocolError(f"bad range {range_!r}: use FIRST-LAST, e.g. 000000000001-000000000032")
        lo, hi = int(first), int(last)
        if hi < lo or hi - lo >= MAX_SCAN:
            raise LocalProtocolError(f"range must be ascending and at most {MAX_SCAN} addresses")
        out += [f"{n:012d}" for n in range(lo, hi + 1)]
    for a in out:
        if not a.isdigit() or len(a) != 12:
            raise LocalProtocolError(f"bad meter address {a!r}: 12 digits")
    return out


async def probe_bus(
    url: str, candidates: list[str], *, reply_timeout: float = 0.5, progress: Progress | None = None
) -> list[dict[str, Any]]:
    from protocols.dlt645.client import Dlt645Client

    found: list[dict[str, Any]] = []
    async with Dlt645Client.from_url(url, timeout=reply_timeout, retries=0, breaker=False) as client:
        if not candidates:
            try:
                addr = await client.read_address()
            except FrameError as exc:
                raise FrameError(
                    exc.reason, "garbled reply to the wildcard address: several meters on the bus? use --range"
                ) from None
            except NoResponseError:
                raise NoResponseError("no meter answered the wildcard address AAAAAAAAAAAA") from None
            return [{"address": addr, "method": "read_address"}]
        task = progress.add_task("scanning", total=len(candidates)) if progress else None
        for a in candidates:
            try:
                found.append({"address": await client.ping(a), "method": "scan"})
            except DeviceError:
                found.append({"address": a, "method": "scan"})  # it answered, even if with an error
            except (NoResponseError, FrameError):
                pass
            if progress is not None and task is not None:
                progress.advance(task)
    return found


def probe_cmd(
    ctx: typer.Context,
    port: Annotated[str | None, typer.Option("--port", "-p", help="Channel URL (serial:// or tcp://).",
                                             envvar="HEADEND_PORT")] = None,
    channel: Annotated[str | None, typer.Option(
        "--channel", help="A channel from the config file: its URL, and its meter list as the addresses to try.",
    )] = None,
    range_: Annotated[str | None, typer.Option("--range", help="Address range to scan, FIRST-LAST.")] = None,
    address: Annotated[list[str] | None, typer.Option("--address", "-a", help="Address to try (repeatable).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-address response timeout, seconds.")] = 0.5,
    json_out: JsonOpt = False,
) -> None:
    """Find the DL/T 645 meters on a bus (wildcard read-address, or a scan of addresses)."""
    try:
        candidates = expand(range_, address or [])
        if channel is not None:
            ch = next((c for c in settings_from(ctx).daemon.channels if c.name == channel), None)
            if ch is None:
                raise ConfigError(f"no channel {channel!r} in the configuration")
            port = port or ch.url
            if not candidates:
                candidates = [m.address for m in ch.meter_configs()]
        if not port:
            raise LocalProtocolError("give --port URL or --channel NAME")
        if candidates and not json_out:
            with Progress(console=err_console, transient=True) as progress:
                found = asyncio.run(probe_bus(port, candidates, reply_timeout=timeout, progress=progress))
        else:
            found = asyncio.run(probe_bus(port, candidates, reply_timeout=timeout))
    except HeadendError as exc:
        raise fail(exc) from None
    seen = {m["address"] for m in found}
    missing = [a for a in candidates if a not in seen]
    if json_out:
        print_json({"port": port, "meters": found, "missing": missing})
    else:
        print_table(["address", "found by"], [(m["address"], m["method"]) for m in found],
                    title=f"{len(found)} meter(s) on {port}")
        if missing:
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            console.print(f"no answer from {len(missing)} of {len(candidates)}: {shown}", highlight=False)
    if not found:
        raise fail("no meter answered", ExitCode.NO_RESPONSE)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_cmd)
