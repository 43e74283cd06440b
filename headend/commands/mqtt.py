"""``headend mqtt ...``: MQTT terminals outside the daemon.

    headend mqtt ingest                 # subscribe and store until Ctrl-C (what the daemon plug-in does)
    headend mqtt dead-letters --limit 20 [--json]
    headend mqtt terminals [--state offline] [--json]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, fail, print_json, print_table, settings_from
from headend.exitcodes import ExitCode
from protocols.errors import HeadendError

__all__ = ["mqtt_app", "register"]

mqtt_app = typer.Typer(help="MQTT terminals: ingest, dead letters, online/offline state.", no_args_is_help=True)


def _dsn(ctx: typer.Context, config: Any) -> tuple[Any, str]:
    from headend.storeglue import migrate, resolve_dsn

    settings = settings_from(ctx, config)
    try:
        dsn = resolve_dsn(settings)
        migrate(dsn)
    except HeadendError:
        raise
    except Exception as exc:
        raise fail(f"database: {exc}", ExitCode.DATABASE) from None
    return settings, dsn


@mqtt_app.command("ingest")
def ingest_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    duration: Annotated[float, typer.Option("--duration", help="Stop after N seconds (0 = until Ctrl-C).")] = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Subscribe to the terminals' telemetry, events, status and responses and store them (Ctrl-C stops)."""
    from headend.mqtt_ingest import MqttIngestService, run_mqtt_ingest
    from headend.storeglue import open_ingestor

    try:
        settings, dsn = _dsn(ctx, config)
    except HeadendError as exc:
        raise fail(exc) from None
    result: dict[str, Any] = {}

    async def run() -> None:
        ingestor = await open_ingestor(settings, dsn)
        service = MqttIngestService(settings.mqtt, ingestor, dsn)
        stop = asyncio.Event()
        task = asyncio.create_task(run_mqtt_ingest(settings, ingestor, stop=stop, service=service))
        t0 = time.monotonic()
        try:
            await service.ready.wait()
            if not json_out:
                console.print(f"MQTT ingest from mqtt://{service.host}:{service.port} prefix "
                              f"{settings.mqtt.topic_prefix!r} (Ctrl-C stops)", highlight=False)
            while not task.done() and (duration <= 0 or time.monotonic() - t0 < duration):
                await asyncio.sleep(min(5.0, duration) if duration > 0 else 5.0)
                s = service.stats
                if not json_out:
                    console.print(f"[{time.monotonic() - t0:6.0f} s] received {s.received}  readings {s.readings}  "
                                  f"events {s.events}  status {s.statuses}  responses {s.responses}  "
                                  f"dead letters {s.dead_letters}", highlight=False)
        finally:
            stop.set()
            stats = await task
            closer = getattr(ingestor, "aclose", None)
            if closer is not None:
                await closer()
            result.update({k: getattr(stats, k) for k in (
                "received", "telemetry", "readings", "events", "statuses", "responses", "dead_letters",
                "store_retries")})

    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(run())
        except HeadendError as exc:
            raise fail(exc) from None
    if json_out:
        print_json(result)


async def _rows(dsn: str, sql: str, params: Any) -> list[Any]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


@mqtt_app.command("dead-letters")
def dead_letters_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Newest N.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Invalid MQTT messages kept by the ingest (topic, reason, payload as received)."""
    try:
        _, dsn = _dsn(ctx, config)
        rows = asyncio.run(_rows(dsn, "SELECT id, received_at, topic, reason, detail, payload FROM mqtt_dead_letters"
                                      " ORDER BY id DESC LIMIT %s", (limit,)))
    except HeadendError as exc:
        raise fail(exc) from None
    items = [{"id": r[0], "received_at": r[1].isoformat(), "topic": r[2], "reason": r[3], "detail": r[4],
              "payload": bytes(r[5]).decode("utf-8", "backslashreplace")} for r in rows]
    if json_out:
        print_json(items)
        return
    print_table(["id", "received", "topic", "reason", "detail", "payload"],
                [(i["id"], i["received_at"][:19], i["topic"], i["reason"], i["detail"][:60], i["payload"][:60])
                 for i in items], title="MQTT dead letters")


@mqtt_app.command("terminals")
def terminals_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    state: Annotated[str | None, typer.Option("--state", help="online or offline only.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Online/offline state of MQTT terminals (offline = Last Will or orderly shutdown) and since when."""
    try:
        _, dsn = _dsn(ctx, config)
        rows = asyncio.run(_rows(dsn, "SELECT terminal, state, since, updated_at, status FROM mqtt_terminal_status"
                                      " WHERE %(s)s::text IS NULL OR state = %(s)s ORDER BY terminal", {"s": state}))
    except HeadendError as exc:
        raise fail(exc) from None
    items = [{"terminal": r[0], "state": r[1], "since": r[2].isoformat(), "updated_at": r[3].isoformat(),
              "status": r[4]} for r in rows]
    if json_out:
        print_json(items)
        return
    print_table(["terminal", "state", "since", "relay", "keep power", "limit kW", "balance kWh"],
                [(i["terminal"], i["state"], i["since"][:19], i["status"].get("relay", ""),
                  i["status"].get("keep_power", ""), i["status"].get("limit_kw", ""),
                  i["status"].get("balance_kwh", "")) for i in items], title="MQTT terminals")


def register(app: typer.Typer) -> None:
    app.add_typer(mqtt_app, name="mqtt")
