"""``headend vee run|report|rules``: validate, estimate and edit collected reads."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.progress import Progress

from headend.cliutil import ConfigOpt, JsonOpt, console, fail, print_json, print_table, settings_from
from headend.exitcodes import ExitCode
from mdm.vee.dbconn import DatabaseError, connect
from protocols.errors import HeadendError

__all__ = ["parse_when", "register", "vee_app"]

vee_app = typer.Typer(help="Validation, estimation and editing (VEE) of collected reads.", no_args_is_help=True)

FromOpt = Annotated[str | None, typer.Option("--from", help="Start: date (local midnight) or ISO time. "
                                             "Default: yesterday.")]
ToOpt = Annotated[str | None, typer.Option("--to", help="End (exclusive): date or ISO time. Default: --from + 1 day.")]


def parse_when(text: str, tz: str) -> datetime:
    """A date means local midnight in ``tz``; a naive time is local too."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date or ISO time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return dt


def window(frm: str | None, to: str | None, tz: str, default_days: int = 1) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    if frm:
        start = parse_when(frm, tz)
    else:
        today = datetime.now(zone).date()
        start = datetime.combine(today - timedelta(days=default_days), datetime.min.time(), zone)
    end = parse_when(to, tz) if to else start + timedelta(days=default_days)
    if end <= start:
        raise typer.BadParameter("--to must be after --from")
    return start, end


def db(ctx: typer.Context, config: Path | None) -> Any:
    try:
        return connect(settings_from(ctx, config))
    except DatabaseError as exc:
        raise fail(exc, ExitCode.DATABASE) from None
    except HeadendError as exc:
        raise fail(exc) from None


@vee_app.command("run")
def run_cmd(
    ctx: typer.Context,
    frm: FromOpt = None,
    to: ToOpt = None,
    meters: Annotated[str | None, typer.Option("--meters", "-m", help="Comma-separated meter addresses "
                                               "(default: every meter with reads in the range).")] = None,
    no_estimate: Annotated[bool, typer.Option("--no-estimate", help="Validate only.")] = False,
    no_orders: Annotated[bool, typer.Option("--no-orders", help="Do not raise work orders.")] = False,
    operator: Annotated[str, typer.Option("--operator", envvar="HEADEND_OPERATOR")] = "",
    vee_config: Annotated[Path | None, typer.Option("--vee-config", help="Thresholds file (default "
                                                    "config/vee.toml or HEADEND_VEE_CONFIG).")] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Validate reads in a time range, store exceptions and estimates, raise work orders."""
    from mdm.vee.config import load_vee_config
    from mdm.vee.runner import run_vee

    settings = settings_from(ctx, config)
    try:
        cfg = load_vee_config(vee_config)
    except HeadendError as exc:
        raise fail(exc) from None
    tz = cfg.timezone or settings.timezone
    start, end = window(frm, to, tz)
    meter_list = [m.strip() for m in meters.split(",") if m.strip()] if meters else None
    with db(ctx, config) as conn:
        with Progress(console=console, transient=True, disable=json_) as prog:
            task = prog.add_task("VEE", total=None)

            def step(done: int, total: int) -> None:
                prog.update(task, completed=done, total=total)

            summary = run_vee(conn, start, end, meters=meter_list, config=cfg, tz=tz, operator=operator,
                              do_estimate=not no_estimate, raise_orders=not no_orders, progress=step)
    if json_:
        print_json(summary.to_dict())
        return
    console.print(f"VEE run {summary.run_id}: {summary.meters} meters, {summary.intervals} intervals "
                  f"{start.isoformat()} .. {end.isoformat()} in {summary.seconds:.2f} s")
    print_table(["rule", "exceptions"], sorted(summary.exceptions.items(), key=lambda kv: -kv[1]),
                title=f"{sum(summary.exceptions.values())} exceptions")
    console.print(f"{summary.estimates} intervals estimated ({summary.new_versions} new versions), "
                  f"{len(set(summary.work_orders))} work orders raised or updated")


@vee_app.command("report")
def report_cmd(
    ctx: typer.Context,
    frm: Annotated[str | None, typer.Option("--from", help="Exceptions overlapping from this time.")] = None,
    to: Annotated[str | None, typer.Option("--to")] = None,
    meter: Annotated[str | None, typer.Option("--meter", "-m")] = None,
    rule: Annotated[str | None, typer.Option("--rule", "-r")] = None,
    severity: Annotated[str | None, typer.Option("--severity", help="Lowest severity: info, warning, error.")] = None,
    status: Annotated[str, typer.Option("--status", help="open, all")] = "open",
    limit: Annotated[int, typer.Option("--limit")] = 100,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The exception queue, most severe first, with counts per rule."""
    settings = settings_from(ctx, config)
    where = ["TRUE"]
    params: list[Any] = []
    if frm:
        where.append("end_ts > %s")
        params.append(parse_when(frm, settings.timezone))
    if to:
        where.append("start_ts < %s")
        params.append(parse_when(to, settings.timezone))
    if meter:
        where.append("meter = %s")
        params.append(meter)
    if rule:
        where.append("rule = %s")
        params.append(rule)
    if severity:
        levels = {"info": ["info", "warning", "error", "critical"], "warning": ["warning", "error", "critical"],
                  "error": ["error", "critical"]}
        if severity not in levels:
            raise fail("--severity must be info, warning or error", ExitCode.USAGE)
        where.append("severity = ANY(%s)")
        params.append(levels[severity])
    if status != "all":
        where.append("status = %s")
        params.append(status)
    cond = " AND ".join(where)
    with db(ctx, config) as conn:
        counts = conn.execute(f"SELECT rule, severity, count(*), count(DISTINCT meter) FROM vee_exceptions "
                              f"WHERE {cond} GROUP BY 1, 2 ORDER BY 3 DESC", params).fetchall()
        rows = conn.execute(
            f"SELECT id, severity, rule, meter, start_ts, end_ts, explanation, work_order_id, vals "
            f"FROM vee_exceptions WHERE {cond} ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 "
            f"WHEN 'warning' THEN 2 ELSE 3 END, last_seen DESC, id LIMIT %s", [*params, limit]).fetchall()
        est = conn.execute("SELECT method, count(*) FROM read_versions GROUP BY 1 ORDER BY 2 DESC").fetchall()
    if json_:
        print_json({"counts": [{"rule": r, "severity": s, "exceptions": n, "meters": m} for r, s, n, m in counts],
                    "versions_by_method": dict(est),
                    "exceptions": [{"id": r[0], "severity": r[1], "rule": r[2], "meter": r[3], "start": r[4],
                                    "end": r[5], "explanation": r[6], "work_order": r[7], "values": r[8]}
                                   for r in rows]})
        return
    print_table(["rule", "severity", "exceptions", "meters"], counts, title="exceptions per rule")
    print_table(["id", "sev", "rule", "meter", "start", "work order", "explanation"],
                [[r[0], r[1], r[2], r[3], r[4].strftime("%Y-%m-%d %H:%M"), r[7] or "", r[6][:90]] for r in rows],
                title=f"exception queue ({len(rows)} shown)")
    if est:
        console.print("versions by method: " + ", ".join(f"{m} {n}" for m, n in est))


@vee_app.command("resolve")
def resolve_cmd(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(help="Exception ids (from vee report).")],
    operator: Annotated[str, typer.Option("--operator", "-o", envvar="HEADEND_OPERATOR")],
    status: Annotated[str, typer.Option("--status", help="resolved (handled) or dismissed (not a problem: "
                                        "anomaly ranking ignores it).")] = "resolved",
    note: Annotated[str, typer.Option("--note")] = "",
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Take exceptions off the open queue (the row and its values stay; who and why are recorded)."""
    if status not in ("resolved", "dismissed", "open"):
        raise fail("--status must be resolved, dismissed or open", ExitCode.USAGE)
    with db(ctx, config) as conn:
        rows = conn.execute(
            "UPDATE vee_exceptions SET status = %s, vals = vals || jsonb_build_object('resolution', "
            "jsonb_build_object('by', %s::text, 'note', %s::text, 'at', now())) WHERE id = ANY(%s) RETURNING id",
            (status, operator, note, ids)).fetchall()
    done = sorted(r[0] for r in rows)
    missing = sorted(set(ids) - set(done))
    if json_:
        print_json({"updated": done, "not_found": missing, "status": status})
    else:
        console.print(f"{len(done)} exceptions {status}" + (f"; not found: {missing}" if missing else ""))
    if missing:
        raise typer.Exit(int(ExitCode.PARTIAL))


@vee_app.command("rules")
def rules_cmd(json_: JsonOpt = False) -> None:
    """The rule catalogue (ids stored with each exception)."""
    from mdm.vee.rules import RULES

    if json_:
        print_json([{"id": r.id, "severity": r.severity, "title": r.title} for r in RULES.values()])
    else:
        print_table(["rule", "severity", "what"], [[r.id, r.severity, r.title] for r in RULES.values()])


def register(app: typer.Typer) -> None:
    app.add_typer(vee_app, name="vee")
