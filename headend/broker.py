"""The in-process MQTT broker (amqtt) used when ``settings.mqtt.host`` is unset: the demo, a fresh machine.

Always bound to 127.0.0.1 (amqtt's default listener binds 0.0.0.0:1883), on a free port
unless one is given. amqtt speaks MQTT 3.1.1 only and is slower than Mosquitto for QoS 1
(docs/mqtt.md): configure ``[mqtt] host`` for production.

    async with InProcessBroker() as broker:
        url = broker.url          # mqtt://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from protocols.errors import ConfigError

__all__ = ["InProcessBroker", "broker_endpoint", "free_port"]

LOGGER = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class InProcessBroker:
    """amqtt broker on 127.0.0.1 in this event loop (anonymous, no persistence)."""

    def __init__(self, port: int = 0) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise ConfigError(
                "no MQTT broker configured ([mqtt] host) and amqtt is not installed: pip install 'ami-headend[broker]'"
            ) from None
        for name in ("amqtt", "transitions"):  # amqtt logs every connection at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await self._broker.start()
        LOGGER.info("in-process MQTT broker (amqtt) on %s", self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.shutdown()

    async def __aenter__(self) -> InProcessBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def broker_endpoint(host: str | None, port: int = 1883) -> AsyncIterator[tuple[str, int]]:
    """``(host, port)`` of the configured broker, or of an in-process one started for the block."""
    if host:
        yield host, port
        return
    async with InProcessBroker() as broker:
        yield broker.host, broker.port
