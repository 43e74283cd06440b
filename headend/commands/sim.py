"""``headend sim ...``: run simulated field equipment (``headend sim dlt645 --tcp 127.0.0.1:8645``).

``sim_app`` is a typer sub-app. Other simulators add their subcommand either by listing a
module in :data:`SIM_MODULES` (it must define ``register_sim(sim_app)``), or by importing
``sim_app`` from their own command module (listed in ``COMMAND_MODULES``) and decorating a
function with ``@sim_app.command("modbus")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from headend.cliutil import console, fail
from headend.exitcodes import ExitCode

__all__ = ["SIM_MODULES", "register", "sim_app"]

sim_app = typer.Typer(help="Run simulated meters and terminals for tests, demos and training.", no_args_is_help=True)

# Modules defining register_sim(sim_app: typer.Typer) -> None.
SIM_MODULES: list[str] = ["headend.commands.sim_modbus", "headend.commands.sim_mqtt"]


@sim_app.command("dlt645")
def sim_dlt645(
    tcp: Annotated[str | None, typer.Option("--tcp", help="Listen on HOST:PORT (a serial server / DTU).")] = None,
    pty: Annotated[bool, typer.Option("--pty", help="Serve on a pseudo-terminal; prints its serial:// URL.")] = False,
    meters: Annotated[int, typer.Option("--meters", "-n", min=1, max=10_000, help="Meters on the bus.")] = 8,
    first: Annotated[int, typer.Option("--first", help="Address of the first meter (addresses count up).")] = 1,
    baud: Annotated[int, typer.Option("--baud", help="Line rate used by --line-time.")] = 2400,
    line_time: Annotated[bool, typer.Option("--line-time", help="Emulate 11 bits/char + turnaround.")] = False,
    turnaround: Annotated[float, typer.Option("--turnaround", help="Meter reply delay, seconds.")] = 0.05,
    speed: Annotated[float, typer.Option("--speed", help="Simulated clock speed (60 = a minute per second).")] = 1.0,
    history_days: Annotated[float, typer.Option("--history-days", help="History kept for backfill.")] = 2.0,
    profile: Annotated[Path | None, typer.Option("--profile", help="CSV load profile to replay.")] = None,
    faults: Annotated[str | None, typer.Option(
        "--faults", help="ADDR:KIND[=V],... KIND: silent, garbage=NBYTES, bad_checksum, slow=S, clock_drift=S/h, "
        "clock_offset=S, abnormal=ERRBYTE; e.g. 000000000003:silent,000000000004:slow=2",
    )] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (load profiles, faults).")] = 1,
    tz: Annotated[str, typer.Option("--tz", help="Zone of the meters' clocks.")] = "Asia/Shanghai",
) -> None:
    """A DL/T 645-2007 meter bus (N meters on one pty or one TCP port). Ctrl-C stops it."""
    from simulators.dlt645 import MeterBusSimulator

    if bool(tcp) == pty:
        raise fail("give exactly one of --tcp HOST:PORT or --pty", ExitCode.USAGE)
    host, port = "127.0.0.1", 0
    if tcp:
        h, _, p = tcp.rpartition(":")
        if not p.isdigit() or int(p) > 65535:
            raise fail(f"bad --tcp {tcp!r}: use HOST:PORT", ExitCode.USAGE)
        host, port = h or "127.0.0.1", int(p)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"unknown time zone {tz!r} (e.g. Asia/Shanghai)", ExitCode.USAGE) from None
    try:
        sim = MeterBusSimulator(
            addresses=[f"{first + i:012d}" for i in range(meters)], transport="pty" if pty else "tcp",
            host=host, port=port, baud=baud, parity="E", line_time=line_time,
            turnaround=turnaround, speed=speed, history_days=history_days, profile=profile, faults=faults,
            seed=seed, tz=tz,
        )
    except (ValueError, OSError) as exc:  # a bad --faults spec, an unreadable --profile
        raise fail(f"cannot start the simulator: {exc}", ExitCode.USAGE) from None

    async def run() -> None:
        await sim.start()
        console.print(sim.url, highlight=False, soft_wrap=True)
        console.print(f"{len(sim.addresses)} meters: {sim.addresses[0]} .. {sim.addresses[-1]}", highlight=False)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(run())
        except OSError as exc:  # the port is taken, no pty available
            raise fail(f"cannot start the simulator: {exc}", ExitCode.TRANSPORT) from None


def register(app: typer.Typer) -> None:
    for mod in SIM_MODULES:
        importlib.import_module(mod).register_sim(sim_app)
    app.add_typer(sim_app, name="sim")
