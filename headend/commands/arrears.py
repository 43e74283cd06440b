"""``headend arrears``: import arrears (with notices) and exemptions from billing; list them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from headend.cliutil import ConfigOpt, JsonOpt, console, print_json, print_table, settings_from
from headend.commands.control import OperatorOpt, fail_control
from headend.exitcodes import ExitCode

__all__ = ["import_file", "register"]

arrears_app = typer.Typer(help="Arrears and exemptions from billing.", no_args_is_help=True)


def import_file(ctx: typer.Context, config: Any, operator: str | None, file: Path | None, table: str | None,
                kind: str, json_out: bool) -> None:
    """Shared by arrears/exemptions/payments import: parse, apply in one transaction, report."""
    from headend.control import imports
    from headend.control.roles import require_role, resolve_operator
    from headend.control.service import open_env

    if (file is None) == (table is None):
        raise typer.BadParameter("give a CSV FILE or --table, not both")
    try:
        op = resolve_operator(operator)
        settings = settings_from(ctx, config)
        require_role(settings.control, "import", op)
        env = open_env(settings)
        tz = ZoneInfo(settings.timezone)

        async def go() -> imports.ImportResult:
            import psycopg

            res = imports.ImportResult(kind)
            async with await psycopg.AsyncConnection.connect(env.dsn, autocommit=True) as conn:
                source: Any = file if file is not None else await imports.read_table(conn, str(table))
                parse: Any = {"arrears": imports.parse_arrears, "payments": imports.parse_payments,
                              "exemptions": imports.parse_exemptions}[kind]
                rows: Any
                rows, problems = parse(source, tz)
                res.rows, res.rejected = len(rows) + len(problems), problems
                label = str(file or table)
                async with conn.transaction():
                    if kind == "arrears":
                        res.applied = await imports.apply_arrears(conn, rows, operator=op, source=label)
                    elif kind == "exemptions":
                        res.applied = await imports.apply_exemptions(conn, rows, operator=op, source=label)
                    else:
                        res.applied, res.cleared_accounts = await imports.apply_payments(conn, rows, operator=op,
                                                                                         source=label)
            if kind == "payments":  # automatic reconnection: queue at once, send now
                async with env.executor() as ex:
                    res.cancelled_commands, res.reconnects = await ex.queue_reconnects()
                    if res.reconnects:
                        rep = await ex.execute_ids(res.reconnects, env.settings.control.system_operator)
                        res.reconnect_outcomes = [o.as_dict() for o in rep.outcomes]
            return res

        result = asyncio.run(go())
    except FileNotFoundError as exc:
        raise fail_control(exc) from None
    except Exception as exc:
        raise fail_control(exc) from None
    if json_out:
        print_json(result.as_dict())
    else:
        print_table(["", "value"], [(k, v if not isinstance(v, list) else len(v)) for k, v in result.as_dict().items()],
                    title=f"{kind} import")
        for p in result.rejected[:20]:
            console.print(f"[yellow]rejected[/yellow] {p}")
    if result.rejected or any(o["state"] != "confirmed" for o in result.reconnect_outcomes):
        raise typer.Exit(int(ExitCode.PARTIAL))


FileArg = Annotated[Path | None, typer.Argument(help="CSV file (see docs/control.md for the columns).",
                                                exists=True, dir_okay=False)]
TableOpt = Annotated[str | None, typer.Option("--table", help="Read from this SQL table or view instead.")]


@arrears_app.command("import")
def import_cmd(ctx: typer.Context, file: FileArg = None, table: TableOpt = None, config: ConfigOpt = None,
               operator: OperatorOpt = None, json_out: JsonOpt = False) -> None:
    """Import arrears: account, amount, days_overdue [meter, utility, notice_* , renotice_*]."""
    import_file(ctx, config, operator, file, table, "arrears", json_out)


@arrears_app.command("exemptions")
def exemptions_cmd(ctx: typer.Context, file: FileArg = None, table: TableOpt = None, config: ConfigOpt = None,
                   operator: OperatorOpt = None, json_out: JsonOpt = False) -> None:
    """Import exemptions: account, kind (medical, life_support, critical, keep_power, dispute, payment_plan)."""
    import_file(ctx, config, operator, file, table, "exemptions", json_out)


@arrears_app.command("list")
def list_cmd(ctx: typer.Context, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Accounts in arrears with their meter, notices and exemptions."""
    from headend.control.service import open_env

    try:
        env = open_env(settings_from(ctx, config))

        async def go() -> list[dict[str, Any]]:
            import psycopg

            from headend.control.store import load_accounts

            async with await psycopg.AsyncConnection.connect(env.dsn, autocommit=True) as conn:
                accs = await load_accounts(conn, env.directory)
            return [{"account": a.account, "meter": a.meter, "amount": a.amount, "days_overdue": a.days_overdue,
                     "cleared": a.cleared, "notices": len(a.notices),
                     "exemptions": [e.kind for e in a.exemptions]} for a in accs]

        rows = asyncio.run(go())
    except Exception as exc:
        raise fail_control(exc) from None
    if json_out:
        print_json(rows)
    else:
        print_table(["account", "meter", "amount", "days", "cleared", "notices", "exemptions"],
                    [(r["account"], r["meter"] or "", f"{r['amount']:.2f}", r["days_overdue"], r["cleared"],
                      r["notices"], ",".join(r["exemptions"])) for r in rows])


def register(app: typer.Typer) -> None:
    app.add_typer(arrears_app, name="arrears")
