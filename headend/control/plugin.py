"""Daemon plug-in: automatic reconnection after payment, and finishing interrupted commands.

``[daemon] plugins = ["headend.control.plugin"]``. Every :data:`EVERY` seconds (60) it queues
reconnects for cleared accounts and drives every due command through the daemon's own bus
clients, so control frames share each bus lock with collection and go first (Priority.CONTROL).
Buses this daemon does not hold (no lease, channel down) are left alone: their commands wait for
the daemon that holds them (or ``headend control run-due``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from headend.control.directory import MeterDirectory, Route
from headend.control.executor import Executor
from headend.control.secrets import install_log_masking, load_secrets
from protocols.client import RelayControl
from protocols.errors import HeadendError

__all__ = ["run", "run_once"]

LOGGER = logging.getLogger(__name__)
EVERY = 60.0


async def run_once(daemon: Any, secrets: Any) -> int:
    """One pass; returns how many commands were driven."""
    held = {name: ch.client for name, ch in daemon.channels.items() if isinstance(ch.client, RelayControl)}
    if not held or daemon.dsn is None:
        return 0
    full = MeterDirectory.from_settings(daemon.settings)
    routes: dict[str, Route] = {m: r for m, r in full.routes.items() if r.bus in held}
    ex = Executor(daemon.dsn, daemon.settings.control, MeterDirectory(routes), secrets, clients=held,
                  timezone=daemon.settings.timezone)
    async with ex:
        report = await ex.run_due()
    if report.outcomes:
        LOGGER.info("control: %s", report.as_dict()["states"])
    return len(report.outcomes)


async def run(daemon: Any) -> None:
    secrets = load_secrets(daemon.settings.secrets_file)
    install_log_masking(secrets)
    failing = False
    while not daemon.stopping.is_set():
        try:
            await run_once(daemon, secrets)
            if failing:
                LOGGER.warning("control: due commands running again")
            failing = False
        except (HeadendError, OSError) as exc:
            if not failing:  # log once per failure period
                LOGGER.error("control: cannot run due commands: %s", exc)
            failing = True
        except Exception as exc:  # a bug here must not stop collection
            if not failing:
                LOGGER.exception("control: unexpected error: %s", exc)
            failing = True
        try:
            async with asyncio.timeout(EVERY):
                await daemon.stopping.wait()
        except TimeoutError:
            pass
