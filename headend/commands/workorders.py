"""``headend workorders list|show|raise|dispatch|complete|cancel|export|publish|due``: field work orders."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, fail, print_json, print_table, settings_from
from headend.commands.vee import db
from headend.exitcodes import ExitCode
from mdm import workorders as wo
from protocols.errors import HeadendError

__all__ = ["register", "workorders_app"]

workorders_app = typer.Typer(help="Field work orders: list, dispatch, complete, cancel, export, publish.",
                             no_args_is_help=True)

OperatorOpt = Annotated[str, typer.Option("--operator", "-o", help="Who does this (recorded in the audit).",
                                          envvar="HEADEND_OPERATOR")]


def _row(o: wo.WorkOrder) -> list[Any]:
    return [o.id, o.meter, o.type, o.status, o.priority, len(o.evidence), o.assignee or "",
            o.created_at.strftime("%Y-%m-%d %H:%M") if o.created_at else "", o.summary[:60]]


@workorders_app.command("list")
def list_cmd(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="open, dispatched, completed, cancelled "
                                                      "(repeatable; default open and dispatched).")] = None,
    meter: Annotated[str | None, typer.Option("--meter", "-m")] = None,
    type_: Annotated[str | None, typer.Option("--type", "-t", help="Work order type.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every status.")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 200,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """List work orders, most urgent first."""
    st = None if all_ else (status or ["open", "dispatched"])
    with db(ctx, config) as conn:
        orders = wo.list_orders(conn, status=st, meter=meter, type=type_, limit=limit)
    if json_:
        print_json([o.to_dict() for o in orders])
        return
    print_table(["id", "meter", "type", "status", "prio", "evidence", "assignee", "created", "summary"],
                [_row(o) for o in orders], title=f"{len(orders)} work orders")


@workorders_app.command("show")
def show_cmd(ctx: typer.Context, order_id: Annotated[int, typer.Argument()], json_: JsonOpt = False,
             config: ConfigOpt = None) -> None:
    """One work order with its evidence and history."""
    with db(ctx, config) as conn:
        o = wo.get_order(conn, order_id)
        if o is None:
            raise fail(f"no work order {order_id}", ExitCode.USAGE)
        history = conn.execute("SELECT from_status, to_status, at, operator, note FROM work_order_transitions "
                               "WHERE order_id = %s ORDER BY at, id", (order_id,)).fetchall()
    hist = [{"from": h[0], "to": h[1], "at": h[2], "operator": h[3], "note": h[4]} for h in history]
    if json_:
        print_json({**o.to_dict(), "history": hist})
        return
    kind = wo.CATALOGUE.get(wo.WorkOrderType(o.type)) if o.type in set(wo.WorkOrderType) else None
    console.print(f"[bold]work order {o.id}[/bold]: {kind.title if kind else o.type} for meter {o.meter}")
    console.print(f"status {o.status}, priority {o.priority}, due {o.due_at}, assignee {o.assignee or '-'}")
    console.print(f"summary: {o.summary}")
    print_table(["at", "source", "evidence"], [[e.get("at", ""), e.get("source", ""),
                                               json.dumps({k: v for k, v in e.items() if k not in ("at", "source")},
                                                          ensure_ascii=False)[:100]] for e in o.evidence],
                title="evidence")
    print_table(["at", "from", "to", "operator", "note"],
                [[h["at"], h["from"] or "", h["to"], h["operator"], h["note"]] for h in hist], title="history")
    if o.outcome:
        console.print(f"outcome: {json.dumps(o.outcome, ensure_ascii=False)}")


@workorders_app.command("raise")
def raise_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Option("--meter", "-m")],
    type_: Annotated[str, typer.Option("--type", "-t", help=f"One of: {', '.join(wo.WorkOrderType)}.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (becomes the evidence summary).")],
    priority: Annotated[int | None, typer.Option("--priority", "-p", min=1, max=5)] = None,
    operator: OperatorOpt = "",
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Raise a work order by hand (or add evidence to the open one of that meter and type)."""
    with db(ctx, config) as conn:
        try:
            ref = wo.raise_work_order_sync(conn, meter, type_, {"summary": reason, "operator": operator},
                                           priority=priority, source=f"manual:{operator}" if operator else "manual")
        except wo.InvalidTransition as exc:
            raise fail(exc, ExitCode.USAGE) from None
    if json_:
        print_json({"id": ref.id, "created": ref.created, "status": ref.status, "priority": ref.priority,
                    "evidence_count": ref.evidence_count})
    else:
        console.print(f"work order {ref.id} {'opened' if ref.created else 'updated (evidence added)'}, "
                      f"priority {ref.priority}")


def _do(ctx: typer.Context, config: Path | None, json_: bool, fn: Any, *args: Any, **kw: Any) -> None:
    with db(ctx, config) as conn:
        try:
            with conn.transaction():
                o = fn(conn, *args, **kw)
        except wo.InvalidTransition as exc:
            raise fail(exc, ExitCode.BLOCKED) from None
        except HeadendError as exc:
            raise fail(exc) from None
    if json_:
        print_json(o.to_dict())
    else:
        console.print(f"work order {o.id}: {o.status}")


@workorders_app.command("dispatch")
def dispatch_cmd(ctx: typer.Context, order_id: Annotated[int, typer.Argument()],
                 to: Annotated[str, typer.Option("--to", help="Crew or field engineer.")],
                 operator: OperatorOpt = "", note: Annotated[str, typer.Option("--note")] = "",
                 json_: JsonOpt = False, config: ConfigOpt = None) -> None:
    """open -> dispatched."""
    _do(ctx, config, json_, wo.dispatch, order_id, assignee=to, operator=operator, note=note)


@workorders_app.command("complete")
def complete_cmd(
    ctx: typer.Context,
    order_id: Annotated[int, typer.Argument()],
    operator: OperatorOpt,
    read: Annotated[list[str] | None, typer.Option(
        "--read", help="Manual read brought back: QUANTITY=VALUE[@ISO-TIME] (stored as a new version).")] = None,
    exchange: Annotated[str | None, typer.Option(
        "--exchange", help="Meter exchanged: NEW_METER:OLD_FINAL_READ:NEW_START_READ[:MULTIPLIER].")] = None,
    finding: Annotated[str | None, typer.Option("--finding", help="What the crew found (free text).")] = None,
    theft: Annotated[bool | None, typer.Option("--theft/--no-theft", help="Investigation label.")] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """dispatched (or open) -> completed; the outcome feeds back into the data."""
    outcome: dict[str, Any] = {}
    if read:
        outcome["reads"] = [_parse_read(r) for r in read]
    if exchange:
        parts = exchange.split(":")
        if len(parts) not in (3, 4):
            raise fail("--exchange needs NEW_METER:OLD_FINAL_READ:NEW_START_READ[:MULTIPLIER]", ExitCode.USAGE)
        try:
            outcome["exchange"] = {"new_meter": parts[0], "old_final_read": float(parts[1]),
                                   "new_start_read": float(parts[2]),
                                   "multiplier": float(parts[3]) if len(parts) == 4 else None,
                                   "ts": datetime.now().astimezone().isoformat()}
        except ValueError:
            raise fail(f"bad --exchange {exchange!r}: reads and multiplier must be numbers", ExitCode.USAGE) from None
    if finding:
        outcome["finding"] = finding
    if theft is not None:
        outcome["theft"] = theft
    _do(ctx, config, json_, wo.complete, order_id, operator=operator, outcome=outcome, note=finding or "")


def _parse_read(text: str) -> dict[str, Any]:
    try:
        q, rest = text.split("=", 1)
        value_s, _, ts_s = rest.partition("@")
        ts = datetime.fromisoformat(ts_s) if ts_s else datetime.now().astimezone()
        if ts.tzinfo is None:
            ts = ts.astimezone()
        return {"quantity": q.strip(), "value": float(value_s), "ts": ts.isoformat()}
    except ValueError:
        raise fail(f"bad --read {text!r}: use QUANTITY=VALUE[@ISO-TIME]", ExitCode.USAGE) from None


@workorders_app.command("cancel")
def cancel_cmd(ctx: typer.Context, order_id: Annotated[int, typer.Argument()], operator: OperatorOpt,
               reason: Annotated[str, typer.Option("--reason", "-r")], json_: JsonOpt = False,
               config: ConfigOpt = None) -> None:
    """open|dispatched -> cancelled."""
    _do(ctx, config, json_, wo.cancel, order_id, operator=operator, reason=reason)


@workorders_app.command("export")
def export_cmd(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or json")] = "csv",
    out: Annotated[Path | None, typer.Option("--out", help="File (default: standard output).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every status (default: open and dispatched).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Export work orders for a field-workforce system (CSV or JSON)."""
    if fmt not in ("csv", "json"):
        raise fail("--format must be csv or json", ExitCode.USAGE)
    with db(ctx, config) as conn:
        orders = wo.list_orders(conn, status=None if all_ else ["open", "dispatched"], limit=1_000_000)
    text = wo.export_csv(orders) if fmt == "csv" else wo.export_json(orders) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"{len(orders)} work orders written to {out}")


@workorders_app.command("publish")
def publish_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Broker (default: mqtt.host setting).")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Republish every open order, not only new or changed.")] = False,
    retain: Annotated[bool, typer.Option("--retain/--no-retain", help="Retained messages (the field system "
                                         "sees the latest state of each order on connect).")] = True,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Publish open work orders on MQTT: <prefix>/workorders/<type>/<id> (QoS 1, retained)."""
    settings = settings_from(ctx, config)
    h = host or settings.mqtt.host or "127.0.0.1"
    p = port or settings.mqtt.port
    with db(ctx, config) as conn:
        try:
            n = asyncio.run(wo.publish_orders(conn, host=h, port=p, topic_prefix=settings.mqtt.topic_prefix,
                                              only_unpublished=not all_, username=settings.mqtt.username,
                                              retain=retain))
        except OSError as exc:
            raise fail(f"cannot publish to {h}:{p}: {exc}", ExitCode.TRANSPORT) from None
        except Exception as exc:  # aiomqtt.MqttError and friends
            raise fail(f"cannot publish to {h}:{p}: {exc}", ExitCode.TRANSPORT) from None
    if json_:
        print_json({"published": n, "host": h, "port": p})
    else:
        console.print(f"{n} work orders published to {h}:{p}")


@workorders_app.command("due")
def due_cmd(
    ctx: typer.Context,
    today: Annotated[str | None, typer.Option("--today", help="Date to judge (default today).")] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Raise periodic verification / rotation orders for meters whose cycle has ended."""
    day = date.fromisoformat(today) if today else date.today()
    from mdm.vee import feedback

    with db(ctx, config) as conn:
        refs = feedback.raise_verification_due(conn, day)
    if json_:
        print_json([{"id": r.id, "created": r.created} for r in refs])
    else:
        console.print(f"{sum(r.created for r in refs)} verification orders opened, "
                      f"{sum(not r.created for r in refs)} already open")


def register(app: typer.Typer) -> None:
    app.add_typer(workorders_app, name="workorders")
