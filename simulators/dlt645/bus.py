"""A simulated RS-485 DL/T 645 bus: N meters behind one pty or one TCP port.

The bus deframes what the master sends (with the project's :class:`Deframer`), records
every request frame, lets the addressed meter answer and puts the reply on the line:
after the line time (11 bits per character at the configured baud, for the request and
the reply) plus the meter's turnaround when line-time emulation is on, and through the
meter's byte-level faults (silent, garbage, bad checksum, slow). Several meters matching
a wildcard address answer at once, which on a real line is a collision: garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import tty
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from protocols.dlt645.frame import BROADCAST, Deframer, Frame, encode_frame
from protocols.dlt645.quirks import DEFAULT_QUIRKS, Quirks
from protocols.dlt645.services import masked_hex
from protocols.transport import virtual
from simulators.clock import SimClock
from simulators.dlt645.meter import SimMeter
from simulators.faults import Fault, FaultSet, parse_faults
from simulators.loadprofile import CsvProfile, LoadProfile, SyntheticProfile

__all__ = ["BusStats", "MeterBusSimulator", "ReceivedFrame"]

LOGGER = logging.getLogger(__name__)
TRACE_LOG = logging.getLogger("headend.trace")  # `headend --trace sim dlt645` shows the simulator's side
TRACE = 5
LINE_CHUNK = 16  # bytes per write when line time is emulated (a UART FIFO's worth)


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    ts: float  # time.time() when the frame was complete
    raw: bytes  # the frame as received (with its FE preamble)
    frame: Frame


@dataclass
class BusStats:
    requests: int = 0
    replies: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    line_seconds: float = 0.0  # line time spent (request + turnaround + reply) with line-time emulation
    by_meter: dict[str, int] = field(default_factory=dict)


class _Conn:
    """One master connection (the pty, or one TCP client)."""

    def __init__(self, write: Any) -> None:
        self.write = write
        self.deframer = Deframer()
        self.queue: asyncio.Queue[tuple[bytes, Frame, float]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None


class MeterBusSimulator:
    """N simulated meters on one line. ``async with MeterBusSimulator(...) as sim: sim.url``."""

    def __init__(
        self,
        meters: int = 4,
        *,
        addresses: Iterable[str] | None = None,
        transport: str = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        baud: int = 2400,
        parity: str = "E",
        line_time: bool = False,
        turnaround: float = 0.05,
        speed: float = 1.0,
        start: datetime | None = None,
        history_days: float = 2.0,
        profile: LoadProfile | str | Path | None = None,
        faults: str | Mapping[str, str | Iterable[str]] | None = None,
        seed: int = 1,
        tz: str = "Asia/Shanghai",
        reply_preamble: int | None = None,
        pv_every: int = 7,
        echo: bool = False,
        quirks: Mapping[str, Quirks] | None = None,
    ) -> None:
        if transport not in ("tcp", "pty", "virtual"):
            raise ValueError("transport must be 'tcp', 'pty' or 'virtual'")
        self.transport = transport
        self.host, self.port = host, port
        self.baud = baud
        self.parity = parity
        self.line_time = line_time
        self.turnaround = turnaround
        self.clock = SimClock(start, speed)
        self.tz = ZoneInfo(tz)
        self.seed = seed
        self._rng = random.Random(seed)
        self.reply_preamble = reply_preamble
        self.echo = echo  # half-duplex adapter that echoes what the master sends
        if profile is None:
            prof: LoadProfile = SyntheticProfile(seed=seed)
        elif isinstance(profile, str | Path):
            prof = CsvProfile(profile)
        else:
            prof = profile
        self.profile = prof
        addrs = list(addresses) if addresses is not None else [f"{i + 1:012d}" for i in range(meters)]
        history_start = self.clock.start - timedelta(days=history_days)
        fault_map = parse_faults(faults)
        self._meters: list[SimMeter] = []
        for i, a in enumerate(addrs):
            self._meters.append(
                SimMeter(
                    a, index=i, clock=self.clock, profile=prof, history_start=history_start, tz=self.tz,
                    faults=FaultSet(fault_map.get(a, [])), pv_kw=3.0 if pv_every and i % pv_every == pv_every - 1
                    else 0.0, initial_kwh=1000.0 + 137.0 * i, quirks=(quirks or {}).get(a, DEFAULT_QUIRKS),
                )
            )
        self._index = {m.address: m for m in self._meters}
        self.received: list[ReceivedFrame] = []
        self.stats = BusStats()
        self._bus_lock = asyncio.Lock()
        self._line_free = 0.0  # time.monotonic() when the line's last transmission ends
        self._conns: list[_Conn] = []
        self._server: asyncio.Server | None = None
        self._master_fd = -1
        self._slave_fd = -1
        self._pty_conn: _Conn | None = None
        self._vname = f"dlt645-{id(self):x}" if host == "127.0.0.1" else host
        self._started = False

    # -- public API -------------------------------------------------------------------
    @property
    def meters(self) -> dict[str, SimMeter]:
        return {m.address: m for m in self._meters}

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self._meters]

    @property
    def url(self) -> str:
        if self.transport == "pty":
            return f"serial://{self.pty_path}?baud={self.baud}&parity=N"
        if self.transport == "virtual":
            return f"virtual://{self._vname}"
        return f"tcp://{self.host}:{self.port}"

    @property
    def pty_path(self) -> str:
        if self._slave_fd < 0:
            raise RuntimeError("the simulator is not started")
        return os.ttyname(self._slave_fd)

    def set_fault(self, address: str, kind: Fault | str, value: float | None = None) -> None:
        self.meters[address].faults.set(kind, value)

    def clear_fault(self, address: str, kind: Fault | str | None = None) -> None:
        self.meters[address].faults.clear(kind)

    def clear_received(self) -> None:
        self.received.clear()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def char_time(self) -> float:
        bits = 1 + 8 + (0 if self.parity == "N" else 1) + 1
        return bits / self.baud

    async def start(self) -> None:
        if self._started:
            return
        loop = asyncio.get_running_loop()
        if self.transport == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._master_fd, self._slave_fd = master, slave
            conn = _Conn(self._pty_write)
            self._pty_conn = conn
            self._start_conn(conn)
            loop.add_reader(master, self._pty_readable)
        elif self.transport == "virtual":
            virtual.serve(self._vname, self._virtual_accept)
        else:
            self._server = await asyncio.start_server(self._tcp_client, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        self._started = True
        LOGGER.info("DL/T 645 simulator: %d meters on %s", len(self._meters), self.url)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.transport == "virtual":
            virtual.unserve(self._vname)
        if self._server is not None:
            self._server.close()
        if self._server is not None or self.transport == "virtual":
            for c in list(self._conns):
                with contextlib.suppress(Exception):
                    c.write(None)
        for c in list(self._conns):
            if c.task is not None:
                c.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await c.task
        self._conns.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        if self._master_fd >= 0:
            asyncio.get_running_loop().remove_reader(self._master_fd)
            os.close(self._master_fd)
            os.close(self._slave_fd)
            self._master_fd = self._slave_fd = -1

    async def __aenter__(self) -> MeterBusSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- transports --------------------------------------------------------------------
    def _pty_readable(self) -> None:
        try:
            data = os.read(self._master_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: no process has the slave open
        if data and self._pty_conn is not None:
            self._feed(self._pty_conn, data)

    def _pty_write(self, data: bytes | None) -> None:
        if data:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self._master_fd, view)
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                view = view[n:]

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def write(data: bytes | None) -> None:
            if data is None:
                writer.close()
            elif not writer.is_closing():
                writer.write(data)

        conn = _Conn(write)
        self._start_conn(conn)
        try:
            while data := await reader.read(4096):
                self._feed(conn, data)
        except (ConnectionError, OSError):
            pass
        finally:
            if conn.task is not None:
                conn.task.cancel()
            if conn in self._conns:
                self._conns.remove(conn)
            writer.close()

    def _virtual_accept(self, to_client: Callable[[bytes | None], None]) -> Callable[[bytes | None], None]:
        conn = _Conn(to_client)
        self._start_conn(conn)

        def to_server(data: bytes | None) -> None:
            if data is not None:
                self._feed(conn, data)
                return
            if conn.task is not None:
                conn.task.cancel()
            if conn in self._conns:
                self._conns.remove(conn)

        return to_server

    def _start_conn(self, conn: _Conn) -> None:
        self._conns.append(conn)
        conn.task = asyncio.get_running_loop().create_task(self._worker(conn))

    def _feed(self, conn: _Conn, data: bytes) -> None:
        arrived = time.monotonic()
        self.stats.bytes_in += len(data)
        conn.deframer.feed(data)
        while (ev := conn.deframer.next_event()) is not None:
            if isinstance(ev, Frame) and not ev.is_reply:
                raw = encode_frame(ev, preamble=ev.preamble)
                self.received.append(ReceivedFrame(time.time(), raw, ev))
                if TRACE_LOG.isEnabledFor(TRACE):
                    TRACE_LOG.log(TRACE, "%s %s %s", f"sim:{self.url}", "RX", masked_hex(raw))
                conn.queue.put_nowait((raw, ev, arrived))

    # -- the line ------------------------------------------------------------------------
    async def _worker(self, conn: _Conn) -> None:
        while True:
            raw, frame, arrived = await conn.queue.get()
            try:
                async with self._bus_lock:
                    await self._transact(conn, raw, frame, arrived)
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - a simulator bug must not kill the bus
                LOGGER.exception("simulator failed on %s", raw.hex(" "))

    async def _transact(self, conn: _Conn, raw: bytes, frame: Frame, arrived: float | None = None) -> None:
        self.stats.requests += 1
        ct = self.char_time()
        # The request goes on the line when its bytes arrive (or when the line is free again), not
        # when this loop gets round to it: the simulator's own scheduling delay is not line time.
        now = time.monotonic()
        t0 = now if arrived is None else min(now, max(arrived, self._line_free))
        if self.echo:
            conn.write(raw)
        if frame.address != BROADCAST and "A" not in frame.address:
            hit = self._index.get(frame.address)
            targets = [hit] if hit is not None and hit.address == frame.address else []
        else:
            targets = [m for m in self._meters if m.accepts(frame.address)]
        replies: list[tuple[SimMeter, list[Frame]]] = [(m, m.handle(frame)) for m in targets]
        if frame.function == 0x15:  # write address: re-index
            self._index = {m.address: m for m in self._meters}
        speaking = [(m, r) for m, r in replies if r and not m.faults.has(Fault.SILENT)]
        if not speaking or frame.address == BROADCAST:
            if self.line_time:
                self._line_free = t0 + len(raw) * ct
                await self._sleep_until(self._line_free)
            return
        m, frames = speaking[0]
        self.stats.by_meter[m.address] = self.stats.by_meter.get(m.address, 0) + 1
        if m.quirks is not DEFAULT_QUIRKS:
            pre = m.quirks.reply_preamble
        elif self.reply_preamble is not None:
            pre = self.reply_preamble
        else:
            pre = (0, 2, 4)[m.index % 3]  # vendors differ: 0, 2 or 4 FE before a reply
        out = b"".join(encode_frame(f, preamble=pre) for f in frames)
        if len(speaking) > 1:  # several meters answered a wildcard at once: a collision
            out = bytes(self._rng.randrange(256) for _ in range(len(out)))
        else:
            out = self._apply_faults(m.faults, out)
        delay = m.faults.value(Fault.SLOW)
        if self.line_time:
            # The reply starts after the request's wire time and the turnaround, then goes out at
            # line speed, a chunk at a time (so a long reply at a low rate arrives gradually).
            delay += len(raw) * ct + self.turnaround
            self.stats.line_seconds += len(raw) * ct + self.turnaround + len(out) * ct
            t = t0 + delay
            self._line_free = t + len(out) * ct
            # The chunks go out from a chain of timer callbacks, in order, and only the end of the
            # reply wakes this task: at fleet scale the simulators share the cores with the head-end
            # being measured, and a task wake-up per chunk was a visible part of their CPU.
            chunks: list[tuple[float, bytes]] = []
            for i in range(0, len(out), LINE_CHUNK):
                chunk = out[i : i + LINE_CHUNK]
                t += len(chunk) * ct
                chunks.append((t, chunk))
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            _put_on_line(conn.write, chunks, 0, sent)
            try:
                await sent
            except asyncio.CancelledError:
                sent.cancel()  # stops the chain
                raise
        else:
            await self._sleep_until(t0 + delay)
            conn.write(out)
        if TRACE_LOG.isEnabledFor(TRACE):
            TRACE_LOG.log(TRACE, "%s %s %s", f"sim:{self.url}", "TX", masked_hex(out))
        self.stats.replies += 1
        self.stats.bytes_out += len(out)

    @staticmethod
    async def _sleep_until(deadline: float) -> None:
        wait = deadline - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        wait = deadline - time.monotonic()
        if wait > 0:  # a loop's timer may fire a little early (uvloop): never end the line time early
            await asyncio.sleep(wait)

    def _apply_faults(self, faults: FaultSet, out: bytes) -> bytes:
        if faults.has(Fault.BAD_CHECKSUM):
            b = bytearray(out)
            b[-2] ^= 0x5A
            out = bytes(b)
        if faults.has(Fault.GARBAGE):
            n = max(1, int(faults.value(Fault.GARBAGE)))
            junk = bytes(self._rng.choice((0x00, 0x16, 0x68, 0xE5, 0x33, 0xFF, 0x55)) for _ in range(n))
            out = junk + out
        return out


def _put_on_line(write: Callable[[bytes | None], None], chunks: list[tuple[float, bytes]], i: int,
                 done: asyncio.Future[None]) -> None:
    """Write the chunks whose time (time.monotonic()) has come, never earlier (uvloop's timers count
    from the time cached at the start of a loop iteration and can fire a little early), then wait
    for the next one; ``done`` is resolved after the last chunk (cancelling it stops the chain)."""
    if done.done():
        return
    try:
        now = time.monotonic()
        while i < len(chunks) and chunks[i][0] <= now:
            write(chunks[i][1])
            i += 1
    except Exception as exc:  # the connection went away: end the reply
        done.set_exception(exc)
        return
    if i >= len(chunks):
        done.set_result(None)
        return
    asyncio.get_running_loop().call_later(chunks[i][0] - now, _put_on_line, write, chunks, i, done)
