"""``headend sim mqtt``: a fleet of simulated MQTT load-management terminals.

    headend sim mqtt --broker mqtt://127.0.0.1:1883 --terminals 1000 --interval 60
    headend sim mqtt --terminals 50 --faults malformed=0.01,no_answer=LMT00003,flap=30
    headend sim mqtt --profile .../smud_3_meters_15min_kw.csv.gz --speed 60 --duration 120 --json

Without ``--broker`` (and no ``[mqtt] host``), an in-process amqtt broker on 127.0.0.1 is started
and its URL printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, fail, print_json, settings_from
from protocols.errors import ConfigError, HeadendError

__all__ = ["register_sim", "sim_mqtt"]


def sim_mqtt(
    ctx: typer.Context,
    broker: Annotated[
        str | None, typer.Option("--broker", help="mqtt://HOST:PORT (default: [mqtt] host, else an in-process broker).")
    ] = None,
    terminals: Annotated[int, typer.Option("--terminals", "-n", min=1, max=20_000, help="Terminals.")] = 100,
    first: Annotated[int, typer.Option("--first", min=0, help="Number of the first terminal (LMT00001..).")] = 1,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Topic prefix (default: [mqtt] topic_prefix).")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.01, help="Telemetry period per terminal, s.")] = 60.0,
    speed: Annotated[float, typer.Option("--speed", help="Simulated seconds per real second (load profile).")] = 1.0,
    profile: Annotated[
        Path | None, typer.Option("--profile", help="CSV load profile to replay (path; nothing is copied).")
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option("--faults", help="malformed=0.01,no_answer=LMT00003+LMT00007,no_answer_ratio=0.05,"
                                      "flap=30,offline_for=5"),
    ] = None,
    event_rate: Annotated[float, typer.Option("--event-rate", help="Random alarm per telemetry message.")] = 0.001,
    duration: Annotated[float, typer.Option("--duration", help="Stop after N seconds (0 = until Ctrl-C).")] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """MQTT terminals publishing telemetry, events and status, answering commands. Ctrl-C stops it."""
    from headend.broker import InProcessBroker
    from protocols.mqtt.client import MqttUrl
    from simulators.mqtt import FleetFaults, MqttTerminalFleet

    settings = settings_from(ctx, config)
    try:
        fault_cfg = FleetFaults.parse(faults)
        if profile is not None and not profile.is_file():
            raise ConfigError(f"profile not found: {profile}")
        if broker:
            u = MqttUrl.parse(broker)
            host: str | None = u.host
            port = u.port
        else:
            host, port = settings.mqtt.host, settings.mqtt.port
    except (ValueError, HeadendError) as exc:
        raise fail(exc if isinstance(exc, HeadendError) else ConfigError(str(exc))) from None
    topic_prefix = prefix or settings.mqtt.topic_prefix
    summary: dict[str, Any] = {}

    async def run() -> None:
        local: InProcessBroker | None = None
        h, p = host, port
        if not h:
            local = InProcessBroker()
            await local.start()
            h, p = local.host, local.port
            (console.print if not json_out else _stderr)(f"in-process broker: {local.url}")
        fleet = MqttTerminalFleet(h, p, terminals, prefix=topic_prefix, first=first, interval=interval, speed=speed,
                                  profile=profile, faults=fault_cfg, seed=seed, event_rate=event_rate)
        t0 = time.monotonic()
        try:
            with console.status(f"connecting {terminals} terminals to mqtt://{h}:{p} ...") if not json_out \
                    else contextlib.nullcontext():
                await fleet.start()
            if not json_out:
                console.print(f"{terminals} terminals {fleet.ids[0]} .. {fleet.ids[-1]} on mqtt://{h}:{p}, "
                              f"prefix {topic_prefix!r}, telemetry every {interval:g} s", highlight=False)
            end = t0 + duration if duration > 0 else None
            while end is None or time.monotonic() < end:
                await asyncio.sleep(min(5.0, end - time.monotonic()) if end else 5.0)
                if not json_out:
                    s = fleet.stats
                    console.print(
                        f"[{time.monotonic() - t0:6.0f} s] telemetry {s.telemetry}  events {s.events}  "
                        f"commands {s.commands} (dup {s.duplicates}, unanswered {s.unanswered})  "
                        f"malformed {s.malformed}  drops {s.drops}  errors {s.publish_errors}", highlight=False)
        finally:
            await fleet.stop()
            if local is not None:
                await local.stop()
            summary.update({"broker": f"mqtt://{h}:{p}", "prefix": topic_prefix, "terminals": terminals,
                            "seconds": round(time.monotonic() - t0, 1), **vars_of(fleet.stats)})

    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(run())
        except HeadendError as exc:
            raise fail(exc) from None
    if json_out:
        print_json(summary)


def _stderr(text: str) -> None:
    import sys

    sys.stderr.write(text + "\n")


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def register_sim(sim_app: typer.Typer) -> None:
    sim_app.command("mqtt")(sim_mqtt)
