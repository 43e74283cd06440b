"""Where a meter is: its bus (channel), protocol and URL, from the daemon's channel config.

The executor opens one client per bus (or uses the ones given to it, e.g. the daemon's own
clients, so control traffic shares the bus lock with collection and goes first).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.client import RelayControl
from protocols.errors import ConfigError
from protocols.factory import open_client

__all__ = ["ClientProvider", "MeterDirectory", "Route"]


@dataclass(frozen=True, slots=True)
class Route:
    meter: str
    bus: str
    protocol: str = "dlt645"
    url: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class MeterDirectory:
    routes: dict[str, Route] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> MeterDirectory:
        """From ``settings.daemon.channels`` (each channel is one bus)."""
        routes: dict[str, Route] = {}
        for ch in settings.daemon.channels:
            opts: dict[str, Any] = dict(ch.options)
            if ch.protocol == "dlt645":
                opts.setdefault("tz", ch.timezone or settings.timezone)
                opts.setdefault("timeout", ch.timeout)
            for m in ch.meter_configs():
                routes[m.address] = Route(m.address, ch.name, ch.protocol, ch.url, opts)
        return cls(routes)

    def add_from_database(self, rows: Any, timezone: str) -> int:
        """Routes from the store's ``meters`` x ``channels`` rows (address, channel, protocol, url, meter zone);
        configured routes win. Returns how many were added."""
        n = 0
        for address, bus, protocol, url, zone in rows:
            if address in self.routes or not url:
                continue
            opts: dict[str, Any] = {"tz": zone or timezone} if protocol == "dlt645" else {}
            self.routes[address] = Route(address, bus, protocol, url, opts)
            n += 1
        return n

    def route(self, meter: str) -> Route:
        r = self.routes.get(meter)
        if r is None:
            raise ConfigError(f"meter {meter} is on no configured bus ([[daemon.channels]] meters)")
        return r

    def bus_of(self, meter: str | None) -> str:
        r = self.routes.get(meter or "")
        return r.bus if r else ""


class ClientProvider:
    """One RelayControl client per bus: given ones (shared with collection) or opened on demand."""

    def __init__(self, directory: MeterDirectory, clients: Mapping[str, RelayControl] | None = None) -> None:
        self.directory = directory
        self._given = dict(clients or {})
        self._opened: dict[str, Any] = {}

    async def get(self, route: Route) -> RelayControl:
        if route.bus in self._given:
            return self._given[route.bus]
        if route.bus not in self._opened:
            client = open_client(route.protocol, route.url, **dict(route.options))
            if not isinstance(client, RelayControl):
                raise ConfigError(f"protocol {route.protocol} has no relay control")
            opener = getattr(client, "open", None)
            if opener is not None:
                res = opener()
                if inspect.isawaitable(res):
                    await res
            self._opened[route.bus] = client
        c: RelayControl = self._opened[route.bus]
        return c

    async def aclose(self) -> None:
        for c in self._opened.values():
            await c.aclose()
        self._opened.clear()
