"""Fixtures for the Modbus area: simulators on real sockets and ptys (no mocks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from simulators.modbus.server import Faults, ModbusSimulator

T = TypeVar("T")


@pytest.fixture
async def tcp_sim() -> AsyncIterator[ModbusSimulator]:
    """Three generic terminals (units 1-3) behind one TCP endpoint; unit 9 is configured silent."""
    sim = ModbusSimulator.build("generic_terminal", devices=3, faults=Faults(silent={9}))
    await sim.start_tcp("127.0.0.1", 0)
    yield sim
    await sim.stop()


@pytest.fixture
async def rtu_line() -> AsyncIterator[ModbusSimulator]:
    """A multi-drop RTU line on a pty: units 1-4, unit 2 silent, unit 4 replies with a bad CRC."""
    sim = ModbusSimulator.build("generic_terminal", devices=4, faults=Faults(silent={2}, bad_crc={4}))
    await sim.start_pty()
    yield sim
    await sim.stop()


class ThreadedSim:
    """A simulator running in its own event loop thread, for CLI tests (the CLI runs asyncio.run)."""

    def __init__(self, rmap: str = "generic_terminal", devices: int = 2, faults: Faults | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim: ModbusSimulator = self._run(self._start(rmap, devices, faults))
        assert self.sim.tcp_port
        self.url = f"tcp://127.0.0.1:{self.sim.tcp_port}"

    async def _start(self, rmap: str, devices: int, faults: Faults | None) -> ModbusSimulator:
        sim = ModbusSimulator.build(rmap, devices=devices, faults=faults)
        await sim.start_tcp("127.0.0.1", 0)
        return sim

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(10)

    def close(self) -> None:
        self._run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def threaded_sim() -> Iterator[ThreadedSim]:
    ts = ThreadedSim()
    yield ts
    ts.close()
