"""``headend control``: plan, approve and execute disconnections; manual disconnect/reconnect; status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, err_console, fail, print_json, print_table, settings_from
from headend.exitcodes import ExitCode

__all__ = ["OperatorOpt", "fail_control", "register"]

OperatorOpt = Annotated[
    str | None, typer.Option("--operator", envvar="HEADEND_OPERATOR", show_envvar=True,
                             help="Who is acting (recorded in the audit trail).")]

T = TypeVar("T")

control_app = typer.Typer(help="Remote disconnect/reconnect for arrears: plan, approve, execute, status.",
                          no_args_is_help=True)


def fail_control(exc: BaseException) -> typer.Exit:
    """Permission and interlock refusals exit with BLOCKED (9)."""
    from headend.control.roles import PermissionDenied

    if isinstance(exc, PermissionDenied):
        return fail(exc, ExitCode.BLOCKED)
    try:
        import psycopg

        if isinstance(exc, psycopg.Error):
            return fail(exc, ExitCode.DATABASE)
    except ImportError:  # pragma: no cover
        pass
    return fail(exc)


def _env(ctx: typer.Context, config: Any) -> Any:
    from headend.control.service import open_env

    return open_env(settings_from(ctx, config))


def _on_conn(env: Any, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(conn)`` on a fresh autocommit connection to the control database."""

    async def go() -> T:
        import psycopg

        async with await psycopg.AsyncConnection.connect(env.dsn, autocommit=True) as conn:
            return await work(conn)

    return asyncio.run(go())


def _on_executor(env: Any, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(executor)`` inside the control executor's lifetime."""

    async def go() -> T:
        async with env.executor() as ex:
            return await work(ex)

    return asyncio.run(go())


def _parse_at(at: str | None) -> datetime:
    if not at:
        return datetime.now(UTC)
    t = datetime.fromisoformat(at)
    if t.tzinfo is None:
        raise typer.BadParameter("--at needs a zone, e.g. 2026-11-24T10:00+08:00")
    return t


@control_app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    operator: OperatorOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and explain only; write nothing.")] = False,
    at: Annotated[str | None, typer.Option("--at", help="Plan for this time (ISO with zone); default now.")] = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Only these accounts (repeatable).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "arrears",
    json_out: JsonOpt = False,
) -> None:
    """Evaluate every account in arrears against the rules: cut or not, with every reason."""
    from headend.control.roles import resolve_operator

    try:
        op = resolve_operator(operator)
        env = _env(ctx, config)

        result = _on_conn(env, lambda conn: env.planner().plan(conn, _parse_at(at), operator=op, dry_run=dry_run,
                                                                accounts=account, reason=reason))
    except Exception as exc:
        raise fail_control(exc) from None
    if json_out:
        print_json(result.as_dict())
        return
    rows = [(d.account, d.meter or "-", d.bus or "-", "CUT" if d.cut else "not cut",
             "; ".join(c.message for c in (d.checks if d.cut else d.reasons))) for d in result.decisions]
    title = "dry run (nothing written)" if dry_run else f"plan {result.plan_id}"
    print_table(["account", "meter", "bus", "decision", "reasons"], rows, title=title)
    console.print(f"{result.n_cut} to cut, {len(result.decisions) - result.n_cut} not cut"
                  + ("; needs a second operator to approve" if result.needs_second else ""))


@control_app.command("approve")
def approve_cmd(
    ctx: typer.Context,
    plan: Annotated[int, typer.Argument(help="Plan id.")],
    config: ConfigOpt = None,
    operator: OperatorOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Approve a plan (a second operator when the plan exceeds the threshold)."""
    from headend.control.planner import approve_plan
    from headend.control.roles import resolve_operator

    try:
        op = resolve_operator(operator)
        env = _env(ctx, config)

        n = _on_conn(env, lambda conn: approve_plan(conn, env.settings.control, plan, op, reason))
    except Exception as exc:
        raise fail_control(exc) from None
    if json_out:
        print_json({"plan": plan, "approved_by": op, "commands": n})
    else:
        console.print(f"plan {plan}: {n} commands approved by {op}")


def _report_exit(report: Any, json_out: bool) -> None:
    d = report.as_dict()
    if json_out:
        print_json(d)
    else:
        print_table(["command", "meter", "kind", "state", "attempts", "work order", "s", "reason"],
                    [(o["command"], o["meter"], o["kind"], o["state"], o["attempts"], o["work_order"] or "",
                      o["seconds"], o["reason"]) for o in d["commands"]])
    states = set(d["states"])
    if states <= {"confirmed"}:
        return
    if states <= {"cancelled"}:
        raise typer.Exit(int(ExitCode.BLOCKED))
    if "escalated" in states or "unknown" in states:
        raise typer.Exit(int(ExitCode.PARTIAL if "confirmed" in states else ExitCode.UNKNOWN_OUTCOME))
    raise typer.Exit(int(ExitCode.PARTIAL))


@control_app.command("execute")
def execute_cmd(
    ctx: typer.Context,
    plan: Annotated[int, typer.Argument(help="Plan id (approved).")],
    config: ConfigOpt = None,
    operator: OperatorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send the plan's commands (interlocks re-checked at send time), read back, retry, escalate.

    Running it again never sends twice; after a crash it resumes."""
    from headend.control.roles import resolve_operator

    try:
        op = resolve_operator(operator)
        env = _env(ctx, config)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn(f"plan {plan}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=err_console, transient=True)
        task = bar.add_task("execute", total=None)

        def tick(total: int, outcome: Any) -> None:
            bar.update(task, total=total, advance=0 if outcome is None else 1)

        with bar:
            report = _on_executor(env, lambda ex: ex.execute_plan(plan, op, tick))
    except Exception as exc:
        raise fail_control(exc) from None
    _report_exit(report, json_out)


def _manual(ctx: typer.Context, config: Any, operator: str | None, meter: str, reason: str, kind: str,
            mode: str | None, json_out: bool) -> None:
    from headend.control.roles import resolve_operator
    from protocols.client import RelayCommand

    try:
        op = resolve_operator(operator)
        env = _env(ctx, config)

        async def create_and_run(ex: Any) -> Any:
            cid = await ex.create_command(meter, kind, operator=op, reason=reason,
                                          command=RelayCommand(mode) if mode else None)
            return await ex.execute_ids([cid], op)

        report = _on_executor(env, create_and_run)
    except Exception as exc:
        raise fail_control(exc) from None
    _report_exit(report, json_out)


@control_app.command("disconnect")
def disconnect_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Option("--meter", help="Meter address.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (required, recorded).")],
    config: ConfigOpt = None,
    operator: OperatorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Disconnect one meter now. Exemptions, hours, holidays and external blocks still apply (exit 9)."""
    _manual(ctx, config, operator, meter, reason, "disconnect", None, json_out)


@control_app.command("reconnect")
def reconnect_cmd(
    ctx: typer.Context,
    meter: Annotated[str, typer.Option("--meter", help="Meter address.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (required, recorded).")],
    mode: Annotated[str | None, typer.Option("--mode", help="close_direct or close_permit (default: policy).")] = None,
    config: ConfigOpt = None,
    operator: OperatorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Reconnect one meter now (never blocked by the cut rules)."""
    if mode is not None and mode not in ("close_direct", "close_permit"):
        raise typer.BadParameter("--mode must be close_direct or close_permit")
    _manual(ctx, config, operator, meter, reason, "reconnect", mode, json_out)


@control_app.command("run-due")
def run_due_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    operator: OperatorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Reconnect paid accounts and finish interrupted commands (run from cron or the daemon)."""
    try:
        env = _env(ctx, config)
        op = operator or env.settings.control.system_operator

        report = _on_executor(env, lambda ex: ex.run_due(op))
    except Exception as exc:
        raise fail_control(exc) from None
    _report_exit(report, json_out)


@control_app.command("status")
def status_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    plan: Annotated[int | None, typer.Option("--plan", help="Only this plan's commands.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Most recent commands to list.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Commands by state, overdue reconnects, and the most recent commands."""
    try:
        env = _env(ctx, config)

        async def go(conn: Any) -> dict[str, Any]:
            from headend.control import store

            where, params = ("plan_id = %s", [plan]) if plan is not None else ("TRUE", [])
            cur = await conn.execute(f"SELECT kind, state, count(*) FROM control_commands WHERE {where} "
                                     "GROUP BY kind, state ORDER BY kind, state", params)
            counts = [{"kind": k, "state": s, "count": int(n)} for k, s, n in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT id, meter, deadline_at FROM control_commands WHERE kind = 'reconnect' AND state NOT IN "
                "('confirmed', 'cancelled', 'superseded') AND deadline_at < now() ORDER BY deadline_at")
            overdue = [{"command": i, "meter": m, "deadline": d} for i, m, d in await cur.fetchall()]
            cur = await conn.execute("SELECT id, status, created_by, approved_by, n_cut, n_blocked, created_at "
                                     "FROM control_plans ORDER BY id DESC LIMIT 10")
            plans = [dict(zip(("plan", "status", "planned_by", "approved_by", "cut", "not_cut", "created"), r,
                              strict=True)) for r in await cur.fetchall()]
            cmds = await store.list_commands(conn, f"id IN (SELECT id FROM control_commands WHERE {where} "
                                             f"ORDER BY id DESC LIMIT {int(limit)})", params)
            return {"counts": counts, "overdue_reconnects": overdue, "plans": plans,
                    "commands": [{"command": c.id, "plan": c.plan_id, "account": c.account, "meter": c.meter,
                                  "kind": c.kind, "relay_command": c.command, "state": c.state,
                                  "attempts": c.attempts, "operator": c.operator, "approver": c.approver,
                                  "relay": c.relay_state, "work_order": c.work_order_id,
                                  "deadline": c.deadline_at, "error": c.last_error} for c in cmds]}

        data = _on_conn(env, go)
    except Exception as exc:
        raise fail_control(exc) from None
    if json_out:
        print_json(data)
        return
    print_table(["kind", "state", "count"], [(c["kind"], c["state"], c["count"]) for c in data["counts"]],
                title="commands")
    if data["overdue_reconnects"]:
        print_table(["command", "meter", "deadline"], [tuple(o.values()) for o in data["overdue_reconnects"]],
                    title="OVERDUE reconnects")
    print_table(["id", "plan", "account", "meter", "kind", "state", "tries", "operator", "approver", "relay", "WO"],
                [(c["command"], c["plan"] or "", c["account"] or "", c["meter"], c["kind"], c["state"],
                  c["attempts"], c["operator"], c["approver"] or "", c["relay"] or "", c["work_order"] or "")
                 for c in data["commands"]], title="recent commands")


@control_app.command("cancel")
def cancel_cmd(
    ctx: typer.Context,
    plan: Annotated[int | None, typer.Argument(help="Plan id (all its commands not yet sent).")] = None,
    command: Annotated[int | None, typer.Option("--command", help="One command instead of a plan.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (required, recorded).")] = "",
    config: ConfigOpt = None,
    operator: OperatorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cancel commands that are not sent yet (planned or approved). Needs the approve role."""
    from headend.control.planner import cancel
    from headend.control.roles import resolve_operator

    if (plan is None) == (command is None):
        raise typer.BadParameter("give a PLAN or --command, not both")
    try:
        op = resolve_operator(operator)
        env = _env(ctx, config)

        done = _on_conn(env, lambda conn: cancel(conn, env.settings.control, op, reason, plan_id=plan,
                                                 command_id=command))
    except Exception as exc:
        raise fail_control(exc) from None
    if json_out:
        print_json({"cancelled": done})
    else:
        console.print(f"cancelled {len(done)} command(s): {', '.join(map(str, done)) or '-'}")


@control_app.command("audit")
def audit_cmd(
    ctx: typer.Context,
    command: Annotated[int | None, typer.Option("--command", help="Only this command.")] = None,
    plan: Annotated[int | None, typer.Option("--plan", help="Only this plan.")] = None,
    meter: Annotated[str | None, typer.Option("--meter", help="Only this meter.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Most recent rows.")] = 100,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The audit trail: who did what, why, with the frames sent and received (secrets masked)."""
    try:
        env = _env(ctx, config)

        conds, params = [], []
        for col, val in (("command_id", command), ("plan_id", plan), ("meter", meter)):
            if val is not None:
                conds.append(f"{col} = %s")
                params.append(val)
        where = " AND ".join(conds) or "TRUE"

        async def go(conn: Any) -> list[dict[str, Any]]:
            cur = await conn.execute(
                "SELECT * FROM (SELECT id, at, action, command_id, plan_id, meter, account, from_state, to_state, "
                f"operator, approver, reason, tx_frame, rx_frame, details FROM control_audit WHERE {where} "
                f"ORDER BY id DESC LIMIT {int(limit)}) t ORDER BY id", params)
            cols = [d.name for d in cur.description or []]
            return [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]

        data = _on_conn(env, go)
    except Exception as exc:
        raise fail_control(exc) from None
    if json_out:
        print_json(data)
        return
    print_table(["at", "action", "cmd", "meter", "from -> to", "operator", "approver", "reason", "tx", "rx"],
                [(f"{r['at']:%Y-%m-%d %H:%M:%S}", r["action"], r["command_id"] or "", r["meter"] or "",
                  f"{r['from_state'] or ''} -> {r['to_state'] or ''}" if r["to_state"] else "", r["operator"],
                  r["approver"] or "", r["reason"][:60], r["tx_frame"] or "", r["rx_frame"] or "") for r in data],
                title="control audit trail")


@control_app.command("rules")
def rules_cmd(json_out: JsonOpt = False) -> None:
    """The cut rules, in evaluation order (what --dry-run explains)."""
    from headend.control.rules import RULES

    rows = [(r.code, r.description) for r in RULES]
    if json_out:
        print_json([{"code": c, "description": d} for c, d in rows])
    else:
        print_table(["rule", "meaning"], rows, title="cut rules (reconnection is never blocked by them)")


def register(app: typer.Typer) -> None:
    app.add_typer(control_app, name="control")
