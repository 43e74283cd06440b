"""``python -m simulators.modbus``: the Modbus simulator without the CLI (used by benchmarks).

Prints one JSON line with the endpoints (``{"tcp": "tcp://127.0.0.1:PORT", "pty": ...}``)
once it listens, then serves until killed. ``headend sim modbus`` is the user-facing command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from simulators.modbus.server import Faults, ModbusSimulator, serve
from simulators.modbus.terminal import TerminalConfig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m simulators.modbus")
    ap.add_argument("--tcp", help="HOST:PORT to listen on (PORT 0 = any free port)")
    ap.add_argument("--pty", action="store_true", help="serve RTU on a new pty")
    ap.add_argument("--map", default="generic_terminal")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--faults", default="")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--profile", type=Path, help="SMUD-style CSV (site_type,meter,timestamp_utc,kW) to replay")
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args(argv)
    tcp = None
    if a.tcp:
        host, _, port = a.tcp.rpartition(":")
        tcp = (host or "127.0.0.1", int(port))
    sim = ModbusSimulator.build(
        a.map, devices=a.devices, faults=Faults.parse(a.faults), config=TerminalConfig(speed=a.speed),
        profile_path=a.profile,
    )

    def ready(info: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    if a.uvloop:
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sim, tcp=tcp, pty=a.pty, ready=ready))


if __name__ == "__main__":
    main()
