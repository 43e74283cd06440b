"""``headend demo``: the whole head-end on embedded defaults, in about a minute."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

import typer

from headend.cliutil import ConfigOpt, console, err_console, fail, print_json, print_table, settings_from
from protocols.errors import HeadendError

__all__ = ["register"]


def demo_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    minutes: Annotated[float, typer.Option("--minutes", help="Simulated minutes to collect.")] = 60.0,
    speed: Annotated[float, typer.Option("--speed", help="Simulated seconds per real second.")] = 80.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Simulated DL/T 645 buses (TCP and pty, some faulty meters), the embedded database and the
    collection daemon on an accelerated clock; prints a summary and leaves the data for
    ``headend reads`` and ``headend kpi``."""
    from headend.demo import run_demo
    from headend.storeglue import migrate, resolve_dsn

    t0 = time.monotonic()
    logging.getLogger("simulators").setLevel(logging.ERROR)
    if not getattr(ctx.find_root().obj, "verbose", 0):
        logging.getLogger().setLevel(logging.ERROR)  # the live table tells the story
    try:
        settings = settings_from(ctx, config)
        status = "starting the database (embedded PostgreSQL unless a DSN is configured)..."
        with (err_console if json_out else console).status(status):
            dsn = resolve_dsn(settings)
            migrate(dsn, settings)
        live = err_console if json_out else console  # --json: stdout carries only the JSON
        result = asyncio.run(run_demo(settings, dsn, console=live, minutes=minutes, speed=speed))
    except HeadendError as exc:
        raise fail(exc) from None
    summary = dict(result.summary)
    summary["wall time"] = f"{time.monotonic() - t0:.0f} s"
    if json_out:
        print_json(summary)
        return
    print_table(["", "value"], list(summary.items()), title="headend demo: summary")
    m = result.extras.get("silent_meter", ("", "000000000202"))[1]
    console.print(
        "Explore the data:\n"
        f"  headend kpi --by channel          collection success rate per bus and day\n"
        f"  headend kpi --by meter --png kpi.png\n"
        f"  headend reads show --meter {m}     (silent across midnight; its freeze was backfilled)"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
