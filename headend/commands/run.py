"""``headend run --config FILE.toml``: the collection daemon (what a collection server runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import typer

from headend.cliutil import ConfigOpt, fail, settings_from
from headend.logsetup import configure_logging
from protocols.errors import ConfigError, HeadendError

__all__ = ["register"]


def run_cmd(
    ctx: typer.Context,
    config: ConfigOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Daemon id in leases and logs.")] = None,
    listen: Annotated[
        str | None, typer.Option("--listen", help="host:port for /health, /metrics and /read ('' = off).")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Validate the configuration and exit.")] = False,
) -> None:
    """Run the collection daemon until SIGTERM: scheduled reads, backfill, clock sync, KPIs."""
    from headend.daemon import run_daemon

    try:
        settings = settings_from(ctx, config)
        if name is not None:
            settings.daemon.name = name
        if listen is not None:
            settings.daemon.listen = listen
    except HeadendError as exc:
        raise fail(exc) from None
    if check:
        from headend.daemon import Daemon

        try:
            Daemon(settings)
        except HeadendError as exc:
            raise fail(exc) from None
        n = sum(len(c.meters) for c in settings.daemon.channels)
        typer.echo(f"configuration OK: {len(settings.daemon.channels)} channels, {n} meters, "
                   f"{len([p for p in settings.daemon.plans if p.enabled])} read plans")
        return
    state = ctx.find_root().obj
    verbose = getattr(state, "verbose", 0)
    configure_logging(settings.log_level if not verbose else ("DEBUG" if verbose > 1 else "INFO"),
                      json_lines=settings.log_json or bool(ctx.find_root().params.get("log_json")),
                      trace=bool(getattr(state, "trace", False)))
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.daemon.event_loop)) as runner:
            runner.run(run_daemon(settings))
    except HeadendError as exc:
        raise fail(exc) from None


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for or (``auto``) installed: at fleet scale the event loop's own work (timers,
    transports, selector) is a large share of each request's CPU, and uvloop does it in C."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise fail(ConfigError("daemon.event_loop = 'uvloop' but uvloop is not installed (pip install "
                                   "uvloop)")) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
