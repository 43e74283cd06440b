"""``headend payments import``: payments and clearances; paid accounts are reconnected at once."""

from __future__ import annotations

import typer

from headend.cliutil import ConfigOpt, JsonOpt
from headend.commands.arrears import FileArg, TableOpt, import_file
from headend.commands.control import OperatorOpt

__all__ = ["register"]

payments_app = typer.Typer(help="Payments and clearances from billing.", no_args_is_help=True)


@payments_app.command("import")
def import_cmd(ctx: typer.Context, file: FileArg = None, table: TableOpt = None, config: ConfigOpt = None,
               operator: OperatorOpt = None, json_out: JsonOpt = False) -> None:
    """Import payments: reference, account, amount, paid_at [clears]. Cleared accounts: pending cuts are
    cancelled and disconnected meters reconnected now (never blocked by the cut rules)."""
    import_file(ctx, config, operator, file, table, "payments", json_out)


def register(app: typer.Typer) -> None:
    app.add_typer(payments_app, name="payments")


