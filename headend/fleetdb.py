"""Channels and meters from the meter data store (``[daemon] meters_from = "database"``)."""

from __future__ import annotations

from typing import Any

import psycopg

from headend.fleetconfig import ChannelConfig, MeterConfig

__all__ = ["load_channels"]

_SQL = """
SELECT c.name, c.url, c.protocol, m.address, m.time_zone
FROM channels c JOIN meters m ON m.channel = c.name
WHERE c.enabled AND m.status IN ('installed', 'in_service', 'active') AND c.url <> ''
ORDER BY c.name, m.address
"""


async def load_channels(conn: psycopg.AsyncConnection[Any]) -> list[ChannelConfig]:
    """Enabled channels with a URL and their installed meters (meter zone from ``meters.time_zone``)."""
    async with conn.cursor() as cur:
        await cur.execute(_SQL)
        rows = await cur.fetchall()
    out: dict[str, ChannelConfig] = {}
    for name, url, protocol, address, zone in rows:
        ch = out.get(name)
        if ch is None:
            ch = out[name] = ChannelConfig(name=name, url=url, protocol=protocol or "dlt645")
        ch.meters.append(MeterConfig(address=address, timezone=zone))
    return list(out.values())
