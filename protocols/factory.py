"""Protocol clients registered by name and imported lazily (after python-can's BACKENDS)."""

from __future__ import annotations

import importlib
from typing import Any

from protocols.client import MeterClient
from protocols.errors import ConfigError

__all__ = ["CLIENTS", "open_client"]

# name -> (module, class). Each class has ``classmethod from_url(url: str, **options) -> MeterClient``.
CLIENTS: dict[str, tuple[str, str]] = {
    "dlt645": ("protocols.dlt645.client", "Dlt645Client"),
    "modbus": ("protocols.modbus.client", "ModbusClient"),
    "mqtt": ("protocols.mqtt.client", "MqttClient"),
}


def open_client(protocol: str, url: str, **options: Any) -> MeterClient:
    try:
        module_name, class_name = CLIENTS[protocol]
    except KeyError:
        raise ConfigError(f"unknown protocol {protocol!r}; known: {', '.join(sorted(CLIENTS))}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    client: MeterClient = cls.from_url(url, **options)
    return client
