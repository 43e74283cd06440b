"""The Modbus simulator: a line (or TCP gateway) of :class:`Terminal` units, over TCP or an RTU pty.

In-process use (tests, benchmarks, the demo)::

    sim = ModbusSimulator.build("generic_terminal", devices=3, faults=Faults(silent={2}))
    await sim.start_tcp("127.0.0.1", 0)      # sim.tcp_port is the bound port
    path = await sim.start_pty()             # RTU on a pty: open ``path`` as the serial port
    ...
    await sim.stop()

Faults: ``silent`` units never answer (a dead meter on RS-485), ``busy`` units answer
exception 6, ``bad_crc`` units send a corrupted CRC (RTU), ``delay`` adds a reply delay
(``slow`` to one unit: its replies arrive after the head-end gave up),
``drop`` drops that share of replies at random, and ``char_time`` emulates the wire time
of a real baud rate on a pty (which ignores baud rates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import termios
import tty
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocols.errors import ConfigError
from protocols.modbus.maps import RegisterMap, load_map
from simulators.modbus.terminal import Terminal, TerminalConfig, load_smud_profile
from simulators.modbus.wire import MbapHeader, RtuRequestDeframer, handle_pdu, rtu_frame

__all__ = ["Faults", "ModbusSimulator", "serve"]

LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class Faults:
    silent: set[int] = field(default_factory=set)
    busy: set[int] = field(default_factory=set)
    bad_crc: set[int] = field(default_factory=set)
    delay: float = 0.0
    drop: float = 0.0
    char_time: float = 0.0
    slow: dict[int, float] = field(default_factory=dict)  # unit -> extra reply delay (late replies)

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """``"silent=2+3,busy=4,delay=0.05,drop=0.1,bad_crc=5,baud=9600,slow=6:0.5"`` -> Faults."""
        f = cls()
        if not text:
            return f
        for item in text.split(","):
            key, _, val = item.strip().partition("=")
            try:
                if key in ("silent", "busy", "bad_crc"):
                    getattr(f, key).update(int(x) for x in val.split("+") if x)
                elif key in ("delay", "drop"):
                    setattr(f, key, float(val))
                elif key == "baud":
                    f.char_time = 11.0 / float(val)
                elif key == "slow":
                    unit, _, secs = val.partition(":")
                    f.slow[int(unit)] = float(secs or 0.5)
                else:
                    raise ConfigError(f"unknown fault {key!r} (silent, busy, bad_crc, delay, drop, baud)")
            except ValueError:
                raise ConfigError(f"bad fault value {item!r}") from None
        return f


class ModbusSimulator:
    def __init__(self, terminals: Iterable[Terminal], faults: Faults | None = None) -> None:
        self.terminals: dict[int, Terminal] = {t.unit: t for t in terminals}
        self.faults = faults or Faults()
        self._rng = random.Random(1)
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._pty: tuple[int, int] | None = None
        self.pty_path: str | None = None
        self.tcp_port: int | None = None
        self.requests = 0
        self.requests_by_unit: dict[int, int] = {}
        self.rtu_bad_crc = 0
        self.tcp_connections = 0  # accepted so far

    @classmethod
    def build(
        cls,
        rmap: str | RegisterMap | Sequence[str | RegisterMap] = "generic_terminal",
        *,
        devices: int = 1,
        first_unit: int = 1,
        faults: Faults | None = None,
        config: TerminalConfig | None = None,
        profile_path: Path | None = None,
        profile_meter: str | None = None,
    ) -> ModbusSimulator:
        """``devices`` units from ``first_unit``. A list of maps makes a mixed line: unit i uses
        map i (the last map for the rest), e.g. a terminal and two meter models on one RS-485 line."""
        names = [rmap] if isinstance(rmap, str | RegisterMap) else list(rmap)
        if not names:
            raise ConfigError("no register map")
        maps = [m if isinstance(m, RegisterMap) else load_map(m) for m in names]
        cfg = config or TerminalConfig()
        if profile_path is not None:
            cfg.profile = load_smud_profile(profile_path, profile_meter)
        terms = [Terminal(maps[min(i, len(maps) - 1)], first_unit + i, cfg) for i in range(devices)]
        return cls(terms, faults)

    # ------------------------------------------------------------------ dispatch

    def _answer(self, unit: int, pdu: bytes) -> bytes | None:
        """Response PDU for a unit, or None when the unit stays silent."""
        self.requests += 1
        self.requests_by_unit[unit] = self.requests_by_unit.get(unit, 0) + 1
        f = self.faults
        term = self.terminals.get(unit)
        if term is None or unit in f.silent:
            return None
        if f.drop and self._rng.random() < f.drop:
            return None
        if unit in f.busy:
            return bytes([(pdu[0] | 0x80) & 0xFF, 6])
        return handle_pdu(term, pdu)

    # ------------------------------------------------------------------ TCP

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve_tcp, host, port)
        self.tcp_port = int(self._server.sockets[0].getsockname()[1])
        LOGGER.info("modbus simulator: TCP on %s:%s, units %s", host, self.tcp_port, sorted(self.terminals))
        return self.tcp_port

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        self.tcp_connections += 1
        try:
            while True:
                head = await reader.readexactly(MbapHeader.SIZE)
                hdr = MbapHeader.parse(head)
                if hdr.protocol != 0 or not 2 <= hdr.length <= 254:
                    break
                pdu = await reader.readexactly(hdr.length - 1)
                reply = self._answer(hdr.unit, pdu)
                if reply is None:
                    continue
                wait = self.faults.delay + self.faults.slow.get(hdr.unit, 0.0)
                if wait:
                    await asyncio.sleep(wait)
                writer.write(hdr.reply(reply))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            if task is not None:
                self._conn_tasks.discard(task)

    # ------------------------------------------------------------------ RTU on a pty

    async def start_pty(self) -> str:
        """Open a pty pair; the simulator drives the master, the head-end opens the slave path."""
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        self._pty = (master, slave)
        self.pty_path = os.ttyname(slave)
        deframer = RtuRequestDeframer()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

        def on_readable() -> None:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            for frame in deframer.feed(data):
                queue.put_nowait(frame)
            self.rtu_bad_crc = deframer.bad_crc

        loop.add_reader(master, on_readable)
        task = asyncio.create_task(self._serve_rtu(master, queue))
        self._conn_tasks.add(task)
        LOGGER.info("modbus simulator: RTU on %s, units %s", self.pty_path, sorted(self.terminals))
        return self.pty_path

    async def _serve_rtu(self, master: int, queue: asyncio.Queue[tuple[int, bytes]]) -> None:
        f = self.faults
        while True:
            unit, pdu = await queue.get()
            if unit == 0:  # broadcast: act, never answer
                for term in self.terminals.values():
                    handle_pdu(term, pdu)
                continue
            reply = self._answer(unit, pdu)
            if reply is None:
                continue
            frame = rtu_frame(unit, reply)
            if unit in f.bad_crc:
                frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
            wait = f.delay + f.slow.get(unit, 0.0) + f.char_time * (len(frame) + 8)
            if wait:
                await asyncio.sleep(wait)
            with contextlib.suppress(OSError):
                os.write(master, frame)

    # ------------------------------------------------------------------ lifecycle

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._conn_tasks):
            t.cancel()
        for t in list(self._conn_tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self._pty is not None:
            master, slave = self._pty
            asyncio.get_running_loop().remove_reader(master)
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pty = None

    async def __aenter__(self) -> ModbusSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(
    sim: ModbusSimulator,
    *,
    tcp: tuple[str, int] | None = None,
    pty: bool = False,
    ready: Callable[[dict[str, object]], None] | None = None,
    duration: float | None = None,
) -> None:
    """Run a simulator until cancelled (or for ``duration`` seconds); ``ready`` gets the endpoints."""
    info: dict[str, object] = {"units": sorted(sim.terminals)}
    try:
        if tcp is not None:
            info["tcp"] = f"tcp://{tcp[0]}:{await sim.start_tcp(*tcp)}"
        if pty:
            info["pty"] = await sim.start_pty()
        if ready is not None:
            ready(info)
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
    finally:
        await sim.stop()
