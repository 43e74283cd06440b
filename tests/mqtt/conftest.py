"""Helpers for the MQTT tests: settings for a broker and prefix, a running ingest service, DB polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest

from headend.mqtt_ingest import MqttIngestService, run_mqtt_ingest
from headend.settings import MqttSettings, Settings
from headend.storeglue import open_ingestor
from tests.fixtures_mqtt import BrokerInfo


def make_settings(broker: BrokerInfo, prefix: str, tmp: Path, **mqtt: Any) -> Settings:
    opts: dict[str, Any] = {"host": broker.host, "port": broker.port, "topic_prefix": prefix,
                            "client_id": f"test-{uuid.uuid4().hex[:8]}"}
    opts.update(mqtt)
    return Settings(mqtt=MqttSettings(**opts), data_dir=tmp / opts["client_id"])  # one spool per daemon


@contextlib.asynccontextmanager
async def ingest_running(settings: Settings, dsn: str, **options: Any) -> AsyncIterator[MqttIngestService]:
    ingestor = await open_ingestor(settings, dsn)
    service = MqttIngestService(settings.mqtt, ingestor, dsn, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(run_mqtt_ingest(settings, ingestor, stop=stop, service=service))
    await service.ready.wait()
    assert service.conn is not None
    await service.conn.wait_connected(10)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        closer = getattr(ingestor, "aclose", None) or getattr(ingestor, "close", None)
        if closer is not None:
            res = closer()
            if asyncio.iscoroutine(res):
                await res
        await purge_session(settings.mqtt.host or "127.0.0.1", service.port, service.client_id)


async def purge_session(host: str, port: int, client_id: str) -> None:
    """Drop a test's persistent session from the (shared) broker: connect once with a clean session."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True, timeout=2):
            pass


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def query(dsn: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    def make(broker: BrokerInfo, prefix: str, **mqtt: Any) -> Settings:
        return make_settings(broker, prefix, tmp_path, **mqtt)

    return make
