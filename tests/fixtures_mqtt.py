"""MQTT broker fixtures (owned by the MQTT adapter).

- ``mqtt_broker`` (session): the Mosquitto at 127.0.0.1:1883 when it answers, else an amqtt broker
  (in a thread with its own event loop) on a free 127.0.0.1 port. ``.host``, ``.port``, ``.url``, ``.kind``.
- ``mqtt_prefix`` (function): a unique topic prefix, so tests sharing a broker never see each other.
- ``private_broker`` (function): a broker process of our own (``mosquitto -c <tmp conf>`` on a free
  127.0.0.1 port; amqtt in a thread when mosquitto is not installed) with ``stop()``, ``start()``,
  ``restart()``, for reconnect tests. The system Mosquitto is never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["BrokerInfo", "PrivateBroker", "mqtt_broker", "mqtt_prefix", "private_broker"]

SYSTEM_HOST, SYSTEM_PORT = "127.0.0.1", 1883


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    host: str
    port: int
    kind: str  # mosquitto | amqtt

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            # MQTT 3.1.1 CONNECT, clean session, client id "probe"; a broker answers CONNACK (0x20)
            s.sendall(bytes.fromhex("101100044d5154540402000a000570726f6265"))
            s.settimeout(timeout)
            return s.recv(1)[:1] == b"\x20"
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadBroker:
    """amqtt on 127.0.0.1:port in a daemon thread with its own event loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def start(self) -> None:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            from headend.broker import InProcessBroker

            self._broker = InProcessBroker(self.port)
            try:
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._broker.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"amqtt-{self.port}", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[BrokerInfo]:
    if _answers(SYSTEM_HOST, SYSTEM_PORT):
        yield BrokerInfo(SYSTEM_HOST, SYSTEM_PORT, "mosquitto")
        return
    broker = ThreadBroker(_free_port())
    broker.start()
    try:
        yield BrokerInfo("127.0.0.1", broker.port, "amqtt")
    finally:
        broker.stop()


@pytest.fixture
def mqtt_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


class PrivateBroker:
    """A broker only this test uses; stop/start/restart keep the same port."""

    def __init__(self, workdir: Path) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.workdir = workdir
        self.mosquitto = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
        )
        self.kind = "mosquitto" if self.mosquitto else "amqtt"
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread_broker: ThreadBroker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def info(self) -> BrokerInfo:
        return BrokerInfo(self.host, self.port, self.kind)

    def start(self) -> None:
        if self.mosquitto:
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "log_dest none\nmax_queued_messages 100000\n"
            )
            self._proc = subprocess.Popen([self.mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
        else:
            self._thread_broker = ThreadBroker(self.port)
            self._thread_broker.start()
        deadline = time.monotonic() + 10
        while not _answers(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"private {self.kind} broker did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._thread_broker is not None:
            self._thread_broker.stop()
            self._thread_broker = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    with tempfile.TemporaryDirectory(prefix="headend-mqtt-") as tmp:
        broker = PrivateBroker(Path(tmp))
        broker.start()
        try:
            yield broker
        finally:
            with contextlib.suppress(Exception):
                broker.stop()
