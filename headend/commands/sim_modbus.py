"""``headend sim modbus``: simulated Modbus load-management terminals or meters, over TCP or RTU on a pty.

    headend sim modbus --tcp 127.0.0.1:5020 --devices 3
    headend sim modbus --pty --map generic_terminal --devices 4 --faults silent=2,delay=0.02
    headend sim modbus --tcp 127.0.0.1:5020 --profile .../smud_3_meters_15min_kw.csv.gz --speed 60
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from headend.cliutil import console, fail
from protocols.errors import ConfigError
from protocols.modbus.maps import available_maps

__all__ = ["register_sim", "sim_modbus"]


def sim_modbus(
    tcp: Annotated[str | None, typer.Option("--tcp", help="Listen on HOST:PORT (Modbus TCP).")] = None,
    pty: Annotated[bool, typer.Option("--pty", help="Serve Modbus RTU on a pseudo-terminal; prints its URL.")] = False,
    map_name: Annotated[
        str,
        typer.Option("--map", help="Register map(s): " + ", ".join(available_maps())
                     + ". A comma list makes a mixed line: unit i uses map i, the last one the rest."),
    ] = "generic_terminal",
    devices: Annotated[int, typer.Option("--devices", "-n", min=1, max=247, help="Units on the line.")] = 1,
    first: Annotated[int, typer.Option("--first", min=1, max=247, help="Unit id of the first device.")] = 1,
    faults: Annotated[
        str | None,
        typer.Option("--faults", help="silent=2+3,busy=4,bad_crc=5,delay=0.05,drop=0.1,baud=9600"),
    ] = None,
    speed: Annotated[float, typer.Option("--speed", help="Simulated seconds per real second.")] = 1.0,
    base_kw: Annotated[float, typer.Option("--base-kw", help="Synthetic load when no profile is given.")] = 50.0,
    limit_kw: Annotated[float, typer.Option("--limit-kw", help="Initial power limit (0 = none).")] = 0.0,
    balance_kwh: Annotated[float, typer.Option("--balance-kwh", help="Initial prepaid balance.")] = 1000.0,
    profile: Annotated[
        Path | None, typer.Option("--profile", help="SMUD-style CSV (site_type,meter,timestamp_utc,kW) to replay.")
    ] = None,
    profile_meter: Annotated[str | None, typer.Option("--profile-meter", help="Meter id in the profile.")] = None,
) -> None:
    """Modbus terminals built from a register map, with evolving values, relays and faults. Ctrl-C stops it."""
    from simulators.modbus.server import Faults, ModbusSimulator, serve
    from simulators.modbus.terminal import TerminalConfig

    if not tcp and not pty:
        raise fail("give --tcp HOST:PORT and/or --pty")
    tcp_addr = None
    if tcp:
        h, _, p = tcp.rpartition(":")
        if not p.isdigit():
            raise fail(f"bad --tcp {tcp!r}: use HOST:PORT")
        tcp_addr = (h or "127.0.0.1", int(p))
    try:
        cfg = TerminalConfig(base_kw=base_kw, speed=speed, power_limit_kw=limit_kw, balance_kwh=balance_kwh)
        maps = [m.strip() for m in map_name.split(",") if m.strip()]
        sim = ModbusSimulator.build(
            maps, devices=devices, first_unit=first, faults=Faults.parse(faults), config=cfg,
            profile_path=profile, profile_meter=profile_meter,
        )
    except (ConfigError, ValueError, OSError) as exc:
        raise fail(exc if isinstance(exc, ConfigError) else f"cannot build the simulator: {exc}") from None

    def ready(info: dict[str, object]) -> None:
        units = sorted(sim.terminals)
        first_map = maps[0]
        if "tcp" in info:
            console.print(f"{info['tcp']}?map={first_map}", highlight=False, soft_wrap=True)
        if "pty" in info:
            console.print(f"serial://{info['pty']}?baud=9600&parity=N&map={first_map}", highlight=False,
                          soft_wrap=True)
        runs: list[list[int]] = []  # consecutive units with the same map
        for u in units:
            if runs and sim.terminals[runs[-1][0]].map.name == sim.terminals[u].map.name:
                runs[-1].append(u)
            else:
                runs.append([u])
        for run in runs:
            span = str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}"
            console.print(f"units {span}: {sim.terminals[run[0]].map.name}", highlight=False)

    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(serve(sim, tcp=tcp_addr, pty=pty, ready=ready))
        except OSError as exc:
            raise fail(f"cannot start the simulator: {exc}") from None


def register_sim(sim_app: typer.Typer) -> None:
    sim_app.command("modbus")(sim_modbus)
