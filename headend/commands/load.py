"""``headend load ...``: load control of terminals (Modbus writes or MQTT commands), read back and audited.

    headend load limit      --device 1 --kw 42.5   --operator alice --port tcp://10.0.0.5:502
    headend load trip       --device 1 --circuit 1 --operator alice --port ...
    headend load restore    --device 1 --circuit 1 --operator alice --port ...
    headend load keep-power on|off --device 1      --operator alice --port ...
    headend load purchase   --device 1 --kwh 100   --operator alice --port ... [--request-id ORDER-17]
    headend load status     --device 1 --port ...
    headend load limits     [--set TARGET --power-kw 80 [--demand-kw 90] [--kind customer]] --operator alice
    headend load events     [--device LMT0001@1] [--limit 50]

Every command writes a ``requested`` audit row before it is sent and a ``result`` row
(accepted, reason, read-back values, frames) after; without a database it refuses to send
unless ``--no-audit`` is given (demos, benches). When a running daemon owns the port (and
runs the ``headend.loadmon`` plug-in), the command goes through it: the daemon's channel
worker sends it at control priority between its own polls and audits it.
Exit codes: 0 accepted, 9 rejected by the device (read-back mismatch, refused write),
11 unknown outcome (no reply: do not re-send blindly), 3/4/6/12 as for reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Annotated, Any

import typer

from headend.cliutil import JsonOpt, console, fail, print_json, print_table, settings_from
from headend.exitcodes import ExitCode
from headend.loadmon import CommandOutcome, LimitKind, LoadLimit, load_limits, run_load_command, upsert_limit
from protocols.client import LoadCommand, LoadControl, LoadControlRequest, MeterClient
from protocols.errors import (
    CircuitOpenError,
    ConfigError,
    HeadendError,
    LocalProtocolError,
    TransportError,
)
from protocols.factory import open_client

__all__ = ["load_app", "register"]

LOGGER = logging.getLogger(__name__)

load_app = typer.Typer(help="Load control: power limit, trip/restore, keep-power (保电), prepaid top-up (购电).",
                       no_args_is_help=True)

DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="Terminal: Modbus unit id, or the MQTT terminal id.")]
OperatorOpt = Annotated[str, typer.Option("--operator", "-o", help="Who sends the command (audited).")]
PortOpt = Annotated[
    str, typer.Option("--port", "-p", help="Channel URL: tcp://host:502?map=generic_terminal, serial:///dev/ttyX?baud=9600")
]
ProtocolOpt = Annotated[
    str | None, typer.Option("--protocol", help="modbus or mqtt (default: mqtt for mqtt:// ports, else modbus).")
]


def _protocol(protocol: str | None, port: str) -> str:
    if protocol:
        return protocol
    return "mqtt" if port.lower().startswith(("mqtt://", "mqtts://")) else "modbus"

MapOpt = Annotated[str | None, typer.Option("--map", help="Modbus register map (config/maps/NAME.toml).")]
CircuitOpt = Annotated[int, typer.Option("--circuit", min=1, max=8, help="Controlled circuit (breaker round).")]
RequestIdOpt = Annotated[
    str | None, typer.Option("--request-id", help="Idempotency key; re-using it never repeats the effect.")
]
NoAuditOpt = Annotated[bool, typer.Option("--no-audit", help="Send without a database audit (demos only).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Reply timeout, seconds.")]


def _dsn(ctx: typer.Context) -> str | None:
    settings = settings_from(ctx)
    try:
        from mdm.db import resolve_dsn  # type: ignore[import-not-found, unused-ignore]

        return str(resolve_dsn(settings))
    except ImportError:
        return settings.database.dsn


async def _ensure_schema(conn: Any, dsn: str) -> None:
    """Apply pending migrations (the store's runner) when the load-control tables are missing."""
    cur = await conn.execute(
        "SELECT to_regclass('load_control_log') IS NOT NULL AND to_regclass('audit_log') IS NOT NULL"
    )
    row = await cur.fetchone()
    if not row[0]:
        from mdm.migrate import migrate

        await asyncio.to_thread(migrate, dsn)


async def _connect(dsn: str) -> Any:
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise ConfigError(f"cannot reach the audit database: {exc}") from None
    await _ensure_schema(conn, dsn)
    return conn


@asynccontextmanager
async def _database(dsn: str) -> AsyncIterator[Any]:
    """A connection to the load-control database (schema ensured), closed on exit."""
    conn = await _connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


def _default_map(ctx: typer.Context, port: str, map_name: str | None) -> str | None:
    """--map, else the URL's ?map=, else the configured ``load.default_map``."""
    if map_name or "map=" in port:
        return map_name
    cfg = getattr(settings_from(ctx), "load", None)
    return None if cfg is None else str(cfg.default_map)


def _open(protocol: str, port: str, map_name: str | None, timeout: float | None) -> MeterClient:
    opts: dict[str, Any] = {}
    if protocol == "modbus" and map_name:
        opts["map"] = map_name
    if timeout is not None:
        opts["timeout"] = timeout
    return open_client(protocol, port, **opts)


async def _send(
    dsn: str | None, protocol: str, port: str, map_name: str | None, reply_timeout: float | None,
    request: LoadControlRequest,
) -> CommandOutcome:
    async with _database(dsn) if dsn else nullcontext() as conn:
        client = _open(protocol, port, map_name, reply_timeout)
        try:
            if not isinstance(client, LoadControl):
                raise ConfigError(f"protocol {protocol!r} has no load control")
            return await run_load_command(client, request, conn=conn, channel=port.split("?")[0], protocol=protocol)
        finally:
            await client.aclose()


def _via_daemon(ctx: typer.Context, port: str, request: LoadControlRequest) -> dict[str, Any] | None:
    """Send through the daemon that owns ``port`` (its worker serialises the line); None if none does."""
    import json
    import urllib.error
    import urllib.request

    from headend.ipc import find_daemon, raise_remote

    found = find_daemon(settings_from(ctx).data_dir, port)
    if found is None:
        return None
    endpoint, channel = found
    body = json.dumps({
        "channel": channel, "device": request.device, "command": request.command.value,
        "operator": request.operator_id, "value": request.value, "circuit": request.circuit,
        "request_id": request.request_id,
    }).encode()
    req = urllib.request.Request(f"{endpoint}/load", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            payload: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the daemon runs without the headend.loadmon plug-in
            raise ConfigError(f"the daemon at {endpoint} owns {port} but has no /load "
                              "(add plugins = [\"headend.loadmon\"])") from None
        raise TransportError(f"daemon at {endpoint}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        LOGGER.warning("daemon at %s did not answer (%s); opening the port directly", endpoint, exc)
        return None
    if "error" in payload:
        err = payload["error"]
        if err.get("type") == "CircuitOpenError":
            raise CircuitOpenError(request.device, 0.0)
        raise_remote(err, "daemon load command failed")
    result: dict[str, Any] = payload["result"]
    result["via"] = f"daemon {payload.get('daemon', '')}".strip()
    return result


def _command(
    ctx: typer.Context, command: LoadCommand, device: str, operator: str, port: str, protocol: str | None,
    map_name: str | None, value: float | None, circuit: int, request_id: str | None, no_audit: bool,
    timeout: float | None, json_out: bool,
) -> None:
    if not operator.strip():
        raise fail("an operator is required", code=ExitCode.USAGE)
    protocol = _protocol(protocol, port)
    kw: dict[str, Any] = {"request_id": request_id} if request_id else {}
    request = LoadControlRequest(device, command, operator, value=value, circuit=circuit, **kw)
    doc: dict[str, Any] = {
        "request_id": request.request_id, "device": device, "command": command.value, "value": value,
        "circuit": circuit, "operator": operator,
    }
    try:
        remote = _via_daemon(ctx, port, request)
        if remote is not None:  # the daemon's worker sent it, audited with the daemon's database
            doc.update(accepted=remote["accepted"], reason=remote["reason"], readback=remote["readback"],
                       audited=remote["audited"], via=remote["via"])
        else:
            dsn = None if no_audit else _dsn(ctx)
            if dsn is None and not no_audit:
                raise ConfigError("no database for the audit: configure database.dsn or pass --no-audit")
            if no_audit:
                LOGGER.warning("load command %s sent WITHOUT audit by %s", request.request_id, operator)
            map_name = _default_map(ctx, port, map_name) if protocol == "modbus" else map_name
            out = asyncio.run(_send(dsn, protocol, port, map_name, timeout, request))
            assert out.result is not None
            doc.update(accepted=out.result.accepted, reason=out.result.reason, readback=out.readback,
                       audited=not no_audit)
    except HeadendError as exc:
        raise fail(exc) from None
    if json_out:
        print_json(doc)
    else:
        state = "[green]accepted[/green]" if doc["accepted"] else f"[red]rejected[/red]: {doc['reason']}"
        via = f" (via {doc['via']})" if "via" in doc else ""
        console.print(f"{command.value} on {device}: {state}{via}", highlight=False)
        for q, v in doc["readback"].items():
            console.print(f"  read back {q} = {v:g}", highlight=False)
    if not doc["accepted"]:
        raise typer.Exit(int(ExitCode.BLOCKED))


@load_app.command("limit")
def limit_cmd(
    ctx: typer.Context, device: DeviceOpt, operator: OperatorOpt, port: PortOpt,
    kw: Annotated[float, typer.Option("--kw", min=0.0, help="Power limit (功控 cap), kW.")],
    protocol: ProtocolOpt = None, map_name: MapOpt = None, request_id: RequestIdOpt = None,
    no_audit: NoAuditOpt = False, timeout: TimeoutOpt = None, json_out: JsonOpt = False,
) -> None:
    """Set the terminal's power limit, then read it back."""
    _command(ctx, LoadCommand.SET_POWER_LIMIT, device, operator, port, protocol, map_name, kw, 1, request_id,
             no_audit, timeout, json_out)


@load_app.command("trip")
def trip_cmd(
    ctx: typer.Context, device: DeviceOpt, operator: OperatorOpt, port: PortOpt, circuit: CircuitOpt = 1,
    protocol: ProtocolOpt = None, map_name: MapOpt = None, request_id: RequestIdOpt = None,
    no_audit: NoAuditOpt = False, timeout: TimeoutOpt = None, json_out: JsonOpt = False,
) -> None:
    """Trip a controlled circuit (refused by the terminal while keep-power is on), then read the breaker back."""
    _command(ctx, LoadCommand.TRIP_CIRCUIT, device, operator, port, protocol, map_name, None, circuit, request_id,
             no_audit, timeout, json_out)


@load_app.command("restore")
def restore_cmd(
    ctx: typer.Context, device: DeviceOpt, operator: OperatorOpt, port: PortOpt, circuit: CircuitOpt = 1,
    protocol: ProtocolOpt = None, map_name: MapOpt = None, request_id: RequestIdOpt = None,
    no_audit: NoAuditOpt = False, timeout: TimeoutOpt = None, json_out: JsonOpt = False,
) -> None:
    """Restore (close) a controlled circuit, then read the breaker back."""
    _command(ctx, LoadCommand.RESTORE_CIRCUIT, device, operator, port, protocol, map_name, None, circuit,
             request_id, no_audit, timeout, json_out)


@load_app.command("keep-power")
def keep_power_cmd(
    ctx: typer.Context,
    state: Annotated[str, typer.Argument(help="on (block trips) or off.")],
    device: DeviceOpt, operator: OperatorOpt, port: PortOpt,
    protocol: ProtocolOpt = None, map_name: MapOpt = None, request_id: RequestIdOpt = None,
    no_audit: NoAuditOpt = False, timeout: TimeoutOpt = None, json_out: JsonOpt = False,
) -> None:
    """Keep-power (保电) on or off, then read it back."""
    if state not in ("on", "off"):
        raise fail("keep-power takes 'on' or 'off'", code=ExitCode.USAGE)
    cmd = LoadCommand.KEEP_POWER_ON if state == "on" else LoadCommand.KEEP_POWER_OFF
    _command(ctx, cmd, device, operator, port, protocol, map_name, None, 1, request_id, no_audit, timeout, json_out)


@load_app.command("purchase")
def purchase_cmd(
    ctx: typer.Context, device: DeviceOpt, operator: OperatorOpt, port: PortOpt,
    kwh: Annotated[float, typer.Option("--kwh", min=0.01, help="Energy bought (购电), kWh.")],
    protocol: ProtocolOpt = None, map_name: MapOpt = None, request_id: RequestIdOpt = None,
    no_audit: NoAuditOpt = False, timeout: TimeoutOpt = None, json_out: JsonOpt = False,
) -> None:
    """Add a prepaid top-up to the balance (applied once per --request-id), then read the balance back."""
    _command(ctx, LoadCommand.PURCHASE_ENERGY, device, operator, port, protocol, map_name, kwh, 1, request_id,
             no_audit, timeout, json_out)


STATUS_QUANTITIES = ("power.active.total", "limit.power", "relay.state", "keep_power.state", "balance.energy",
                     "status.word1")


@load_app.command("status")
def status_cmd(
    ctx: typer.Context, device: DeviceOpt, port: PortOpt, protocol: ProtocolOpt = None, map_name: MapOpt = None,
    timeout: TimeoutOpt = None, json_out: JsonOpt = False,
) -> None:
    """Read the terminal's load-control state: power, limit, relay, keep-power, balance."""
    protocol = _protocol(protocol, port)
    if protocol == "modbus":
        try:
            map_name = _default_map(ctx, port, map_name)
        except HeadendError as exc:
            raise fail(exc) from None

    async def run() -> list[tuple[str, float, str]]:
        client = _open(protocol, port, map_name, timeout)
        try:
            rows = []
            for q in STATUS_QUANTITIES:
                try:
                    (r,) = await client.read(device, [q])
                except LocalProtocolError:
                    continue  # the map does not carry it
                rows.append((q, r.value, r.unit))
            return rows
        finally:
            await client.aclose()

    def via_daemon() -> list[tuple[str, float, str]] | None:
        """Through the daemon that owns the port (its worker reads between its polls), if any."""
        from headend.ipc import try_daemon_read

        data_dir = settings_from(ctx).data_dir
        rows: list[tuple[str, float, str]] = []
        for q in STATUS_QUANTITIES:
            try:
                got = try_daemon_read(data_dir, port, device, [q])
            except LocalProtocolError:
                continue  # the map does not carry it
            if got is None:
                return None
            rows.extend((q, float(r["value"]), str(r.get("unit", ""))) for r in got)
        return rows

    try:
        rows = via_daemon()
        if rows is None:
            rows = asyncio.run(run())
    except HeadendError as exc:
        raise fail(exc) from None
    if json_out:
        print_json({"device": device, "values": {q: v for q, v, _ in rows}})
    else:
        print_table(["quantity", "value", "unit"], [(q, f"{v:g}", u) for q, v, u in rows], title=f"terminal {device}")


@load_app.command("limits")
def limits_cmd(
    ctx: typer.Context,
    set_target: Annotated[str | None, typer.Option("--set", help="Target (device id or customer) to set.")] = None,
    kind: Annotated[LimitKind, typer.Option("--kind", help="device or customer.")] = LimitKind.DEVICE,
    power_kw: Annotated[float | None, typer.Option("--power-kw", min=0.0)] = None,
    demand_kw: Annotated[float | None, typer.Option("--demand-kw", min=0.0)] = None,
    operator: Annotated[str, typer.Option("--operator", "-o")] = "",
    json_out: JsonOpt = False,
) -> None:
    """List the monitoring limits (config and database), or store one in the database with --set."""
    settings = settings_from(ctx)
    cfg = getattr(settings, "load", None)
    config_limits = cfg.limit_table() if cfg is not None else {}

    async def run() -> dict[tuple[str, LimitKind], LoadLimit]:
        dsn = _dsn(ctx)
        if dsn is None:
            if set_target is not None:
                raise ConfigError("no database configured to store the limit")
            return {}
        async with _database(dsn) as conn:
            if set_target is not None:
                if not operator:
                    raise ConfigError("--operator is required with --set")
                await upsert_limit(conn, LoadLimit(set_target, kind, power_kw, demand_kw), operator)
            return await load_limits(conn)

    try:
        db_limits = asyncio.run(run())
    except HeadendError as exc:
        raise fail(exc) from None
    merged = {**config_limits, **db_limits}
    rows = [
        {"target": t, "kind": k.value, "power_kw": lim.power_kw, "demand_kw": lim.demand_kw,
         "source": "database" if (t, k) in db_limits else "config"}
        for (t, k), lim in sorted(merged.items())
    ]
    if json_out:
        print_json(rows)
    else:
        print_table(["target", "kind", "power kW", "demand kW", "source"],
                    [(r["target"], r["kind"], r["power_kw"], r["demand_kw"], r["source"]) for r in rows],
                    title="load limits")


@load_app.command("events")
def events_cmd(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option("--device", "-d", help="Only this terminal or customer.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most recent N events.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Limit crossings (power/demand exceeded and cleared), most recent first."""

    async def run() -> list[dict[str, Any]]:
        dsn = _dsn(ctx)
        if dsn is None:
            raise ConfigError("no database configured")
        async with _database(dsn) as conn:
            cur = await conn.execute(
                """SELECT ts, meter, customer, kind, value, limit_value FROM load_events
                   WHERE (%(d)s::text IS NULL OR meter = %(d)s) ORDER BY ts DESC, id DESC LIMIT %(n)s""",
                {"d": device, "n": limit},
            )
            cols = ("ts", "meter", "customer", "kind", "value", "limit")
            return [dict(zip(cols, row, strict=True)) for row in await cur.fetchall()]

    try:
        rows = asyncio.run(run())
    except HeadendError as exc:
        raise fail(exc) from None
    if json_out:
        print_json(rows)
        return
    print_table(["time", "meter", "customer", "event", "value", "limit"],
                [(r["ts"], r["meter"], r["customer"], r["kind"], f"{r['value']:g}", f"{r['limit']:g}") for r in rows],
                title="load events")


def register(app: typer.Typer) -> None:
    app.add_typer(load_app, name="load")
