"""Modbus RTU/TCP client: the ONLY module of the project that imports pymodbus.

pymodbus changes its API in minor releases (3.10 renamed ``slave=``, 3.13 deprecated
the datastores), so it is pinned to one minor version and wrapped here. Everything
else talks to :class:`ModbusClient` (a :class:`~protocols.client.MeterClient`, plus
:class:`~protocols.client.LoadControl` and :class:`~protocols.client.RelayControl`).

Who owns what:

* pymodbus retries are off (``retries=0``) and its "disconnect after N silent
  requests" counter is set out of reach (``set_max_no_responses``): one silent
  device on a multi-drop RS-485 line must not drop the whole line (pymodbus#1654).
* Retries, the per-device :class:`~protocols.arbitration.CircuitBreaker`, the
  one-request-at-a-time :class:`~protocols.arbitration.PriorityLock` and reconnects
  (``reconnect_delay=0``: pymodbus never reconnects on its own) live here.
* Errors arrive two ways, a raised ``ModbusException`` or a response whose
  ``isError()`` is true; both become :mod:`protocols.errors` exceptions.

Channel URLs are the project's (:class:`~protocols.transport.url.ChannelSpec`) plus
one Modbus option, the register map: ``tcp://10.0.0.5:502?map=dtsu666`` or
``serial:///dev/ttyUSB0?baud=9600&parity=N&map=generic_terminal``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from protocols.arbitration import BreakerPolicy, CircuitBreaker, Priority, PriorityLock
from protocols.client import (
    ControlResult,
    LoadCommand,
    LoadControl,
    LoadControlRequest,
    MeterClient,
    RelayCommand,
    RelayControl,
    RelayRequest,
    RelayState,
)
from protocols.errors import (
    ConfigError,
    DeviceError,
    LocalProtocolError,
    NoResponseError,
    RemoteProtocolError,
    TransportError,
    UnknownOutcomeError,
)
from protocols.modbus.maps import (
    EXCEPTION_NAMES,
    DataType,
    Function,
    Point,
    ReadBlock,
    RegisterMap,
    compile_values,
    decode_registers,
    encode_value,
    load_map,
    plan_reads,
)
from protocols.reading import Quality, Reading
from protocols.transport.url import ChannelSpec

__all__ = [
    "DEFAULT_MAP",
    "BareTcpPoller",
    "ModbusClient",
    "ModbusLink",
    "bare_tcp_poll",
    "purchase_sequence",
    "split_modbus_url",
]

LOGGER = logging.getLogger(__name__)
# one read request of a plan and the function turning its registers into values (maps.compile_values)
_Step = tuple["ReadBlock", Callable[[Sequence[int]], list[float]]]
# a read() plan: quantity codes and units in the order asked, where each one's value is in the
# plan's value list, and the steps
_CachedPlan = tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], list[_Step]]
TRACE_LOG = logging.getLogger("headend.trace")
TRACE = 5

DEFAULT_MAP = "generic_terminal"

# pymodbus logs every silent request at ERROR with a frame dump; the head-end reports
# those itself (typed errors, breaker transitions logged once), so keep pymodbus quiet
# unless someone configured its logger on purpose.
_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)
NEVER_DISCONNECT = 1 << 30  # pymodbus' no-response counter limit: out of reach


def split_modbus_url(url: str) -> tuple[str, dict[str, str]]:
    """Strip the Modbus-only query options (``map``) from a channel URL.

    Returns the URL :meth:`ChannelSpec.parse` accepts and the stripped options.
    """
    parts = urlsplit(url)
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    mine = {k: q.pop(k) for k in ("map",) if k in q}
    return urlunsplit(parts._replace(query=urlencode(q))), mine


def purchase_sequence(request_id: str) -> int:
    """The 31-bit order number a top-up carries, derived from the request id.

    The terminal applies an order number once, so re-sending the same request after
    an unknown outcome cannot credit the balance twice.
    """
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big") & 0x7FFF_FFFF



def _read_functions(c: Any) -> dict[Function, Callable[..., Awaitable[Any]]]:
    """The pymodbus client's read call for each function code."""
    return {
        Function.COILS: c.read_coils,
        Function.DISCRETE: c.read_discrete_inputs,
        Function.HOLDING: c.read_holding_registers,
        Function.INPUT: c.read_input_registers,
    }

class ModbusLink:
    """One pymodbus connection (a TCP socket or a serial line) with typed errors.

    Not arbitrated: :class:`ModbusClient` serialises calls with its PriorityLock.
    """

    def __init__(self, spec: ChannelSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.last_tx = b""
        self.last_rx = b""
        common: dict[str, Any] = {
            "timeout": spec.timeout,
            "retries": 0,  # retries are ours (per device, with the breaker)
            "reconnect_delay": 0,  # reconnects are ours: pymodbus must not loop on its own
            "trace_packet": self._trace,
        }
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if spec.scheme == "tcp":
            self._client = AsyncModbusTcpClient(spec.host, port=spec.port, **common)
        elif spec.scheme == "serial":
            self._client = AsyncModbusSerialClient(
                spec.path,
                framer=FramerType.RTU,
                baudrate=spec.baud,
                bytesize=spec.bytesize,
                parity=spec.parity,
                stopbits=spec.stopbits,
                **common,
            )
        else:  # pragma: no cover - ChannelSpec.parse only yields these two
            raise ConfigError(f"Modbus cannot use a {spec.scheme!r} channel")
        self._client.set_max_no_responses(NEVER_DISCONNECT)
        self.readers = _read_functions(self._client)

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.last_tx = data
        else:
            self.last_rx = data
        if TRACE_LOG.isEnabledFor(TRACE):
            TRACE_LOG.log(TRACE, "%s %s %s", self.name, "TX" if sending else "RX", data.hex(" "))
        return data

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def ensure_open(self) -> None:
        if self._client.connected:
            return
        ok = await self._client.connect()
        if not ok:
            raise TransportError(f"cannot open Modbus channel {self.name}")
        LOGGER.info("modbus channel %s open", self.name)

    def close(self) -> None:
        self._client.close()

    def _typed(self, exc: ModbusException, device_id: int, what: str) -> Exception:
        """A raised pymodbus exception -> the project's error."""
        if isinstance(exc, ModbusIOException):
            if "but received" in str(exc):  # a stray (late) reply of another request was consumed
                return NoResponseError(f"no valid response from unit {device_id} on {self.name} ({what}): {exc}")
            return NoResponseError(f"no response from unit {device_id} on {self.name} ({what})")
        if isinstance(exc, ConnectionException):
            self.close()
            return TransportError(f"Modbus channel {self.name} lost: {exc}")
        return RemoteProtocolError(f"{what} on {self.name}: {exc}")

    def _refused(self, rr: Any, device_id: int, what: str) -> None:
        """A response whose ``isError()`` is true (an exception response) -> DeviceError."""
        if rr is None:
            raise NoResponseError(f"no response from unit {device_id} on {self.name} ({what})")
        code = int(getattr(rr, "exception_code", 0))
        name = EXCEPTION_NAMES.get(code, f"exception_{code:#04x}")
        raise DeviceError(
            f"unit {device_id} refused {what}: {name} ({code})", code=code, flags=(name,), device=str(device_id)
        )

    async def _call(self, what: str, device_id: int, op: Callable[[], Awaitable[Any]]) -> Any:
        await self.ensure_open()
        self.last_rx = b""
        try:
            rr = await op()
        except ModbusException as exc:
            raise self._typed(exc, device_id, what) from exc
        except OSError as exc:
            self.close()
            raise TransportError(f"Modbus channel {self.name}: {exc}") from exc
        if rr is None or rr.isError():
            self._refused(rr, device_id, what)
        return rr

    @property
    def closed(self) -> bool:
        """Closed or never opened: the next request reopens it."""
        return self._client.ctx.transport is None

    def read_failed(
        self, exc: BaseException, function: Function, address: int, count: int, device_id: int
    ) -> Exception:
        """The project's error for a read that raised (a pymodbus exception or an OSError)."""
        if isinstance(exc, ModbusException):
            return self._typed(exc, device_id, f"read {function} {address}+{count}")
        self.close()
        return TransportError(f"Modbus channel {self.name}: {exc}")

    def words(self, rr: Any, function: Function, address: int, count: int, device_id: int) -> list[int]:
        """The registers (or 0/1 bits) of a read's response; exception responses and short replies raise."""
        if rr is None or rr.isError():
            self._refused(rr, device_id, f"read {function} {address}+{count}")
        if function.is_bit:
            bits = [1 if b else 0 for b in rr.bits[:count]]
            if len(bits) < count:
                raise RemoteProtocolError(f"short bit read from unit {device_id}: {len(bits)} of {count}")
            return bits
        regs: list[int] = rr.registers
        if len(regs) != count:
            raise RemoteProtocolError(f"unit {device_id} returned {len(regs)} registers, asked {count}")
        return regs

    async def read(self, function: Function, address: int, count: int, device_id: int) -> list[int]:
        """Registers (or 0/1 bits) of one read request. (``ModbusClient`` runs the same steps inline
        in its polling loop: one coroutine layer less per request.)"""
        if self.closed:
            await self.ensure_open()
        try:
            rr = await self.readers[function](address, count=count, device_id=device_id)
        except (ModbusException, OSError) as exc:
            raise self.read_failed(exc, function, address, count, device_id) from exc
        return self.words(rr, function, address, count, device_id)

    async def write(self, function: Function, address: int, words: Sequence[int], device_id: int) -> None:
        """FC05 for one coil, FC15 for several; FC16 for registers."""
        c = self._client
        what = f"write {function} {address}+{len(words)}"
        if function is Function.COILS:
            if len(words) == 1:
                await self._call(what, device_id, lambda: c.write_coil(address, bool(words[0]), device_id=device_id))
            else:
                await self._call(
                    what, device_id, lambda: c.write_coils(address, [bool(w) for w in words], device_id=device_id)
                )
        elif function is Function.HOLDING:
            await self._call(what, device_id, lambda: c.write_registers(address, list(words), device_id=device_id))
        else:
            raise LocalProtocolError(f"{function} cannot be written")


# RelayControl commands carried by the map's load-control entries.
_RELAY_TO_LOAD: dict[RelayCommand, LoadCommand] = {
    RelayCommand.TRIP: LoadCommand.TRIP_CIRCUIT,
    RelayCommand.CLOSE_DIRECT: LoadCommand.RESTORE_CIRCUIT,
    RelayCommand.CLOSE_PERMIT: LoadCommand.RESTORE_CIRCUIT,
    RelayCommand.KEEP_POWER_ON: LoadCommand.KEEP_POWER_ON,
    RelayCommand.KEEP_POWER_OFF: LoadCommand.KEEP_POWER_OFF,
}


class ModbusClient(MeterClient, LoadControl, RelayControl):
    """Reads and controls the devices (unit ids 1..247) of one Modbus TCP endpoint or RTU line.

    ``device`` strings are unit ids (``"1"``) or ``NAME@UNIT`` (``"LMT-0007@1"``). Each device
    uses ``maps[device]`` or the default ``map``. Reads of one device are planned into the fewest register requests.
    """

    protocol: ClassVar[str] = "modbus"

    def __init__(
        self,
        spec: ChannelSpec,
        *,
        map: str | RegisterMap = DEFAULT_MAP,
        maps: Mapping[str, str | RegisterMap] | None = None,
        retries: int = 1,
        breaker: CircuitBreaker | bool | None = None,
        breaker_policy: BreakerPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        late_guard: float | None = None,
    ) -> None:
        self.spec = spec
        self.link = ModbusLink(spec)
        self.lock = PriorityLock()
        self.retries = max(0, retries)
        # after a timeout, keep the line this long so a late reply drains (default: half the timeout)
        self.late_guard = spec.timeout / 2 if late_guard is None else max(0.0, late_guard)
        # breaker=False: the caller (the daemon) runs its own per-meter breaker
        self.breaker: CircuitBreaker | None
        if isinstance(breaker, CircuitBreaker):
            self.breaker = breaker
        else:
            self.breaker = None if breaker is False else CircuitBreaker(breaker_policy)
        self.default_map = map if isinstance(map, RegisterMap) else load_map(map)
        self.maps = {k: (v if isinstance(v, RegisterMap) else load_map(v)) for k, v in (maps or {}).items()}
        self._clock = clock  # None: datetime.now(UTC), called directly (a lambda would add a frame per poll)
        self._done: OrderedDict[str, ControlResult] = OrderedDict()  # request_id -> result (idempotency)
        # (map id, quantities) -> ((code, point name, unit) per reading, [(block, decoder)]): planned once
        self._plans: dict[tuple[int, tuple[str, ...]], _CachedPlan] = {}
        self.source = f"modbus:{spec.name}"
        self._devices: dict[str, tuple[int, str]] = {}  # device -> (unit id, breaker key)
        self._suspect: set[str] = set()  # devices whose last request got no reply

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ModbusClient:
        """``open_client("modbus", url, map=..., maps=..., timeout=..., retries=..., breaker=...)``.

        The map may also come in the URL (``?map=dtsu666``); an explicit option wins.
        ``timeout`` overrides the URL's response timeout; ``breaker=False`` turns the
        per-device breaker off (for callers that run their own); ``late_guard`` (s) is how long
        the line stays quiet after a timeout so a late reply cannot answer the next request. Options meant for other
        protocols (``tz``...) are ignored and logged at debug level.
        """
        plain, extra = split_modbus_url(url)
        spec = ChannelSpec.parse(plain)
        timeout = options.pop("timeout", None)
        if timeout is not None:
            spec = spec.with_options(timeout=float(timeout))
        known = {"map", "maps", "retries", "breaker", "breaker_policy", "clock", "late_guard"}
        kwargs = {k: v for k, v in options.items() if k in known and v is not None}
        ignored = sorted(set(options) - known)
        if ignored:
            LOGGER.debug("modbus client ignores options %s", ignored)
        if "map" not in kwargs and "map" in extra:
            kwargs["map"] = extra["map"]
        if "retries" in kwargs:
            kwargs["retries"] = int(kwargs["retries"])
        return cls(spec, **kwargs)

    # ------------------------------------------------------------------ helpers

    def map_for(self, device: str) -> RegisterMap:
        return self.maps.get(device, self.default_map)

    @staticmethod
    def unit_id(device: str) -> int:
        """``"3"`` or ``"LMT-0007@3"`` -> 3. Unit ids are unique per line only, so a fleet names
        devices ``NAME@UNIT`` and the readings carry the full (globally unique) name."""
        try:
            unit = int(device.rpartition("@")[2])
        except ValueError:
            raise LocalProtocolError(f"Modbus device must be UNIT or NAME@UNIT (0..247), got {device!r}") from None
        if not 0 <= unit <= 247:
            raise LocalProtocolError(f"Modbus unit id {unit} outside 0..247")
        return unit

    def _key(self, device: str) -> str:
        return self._device(device)[1]

    def _device(self, device: str) -> tuple[int, str]:
        """(unit id, breaker key) of a device, parsed once (a polling loop asks every poll)."""
        known = self._devices.get(device)
        if known is None:
            known = (self.unit_id(device), f"{self.spec.name}/{device}")
            if len(self._devices) >= 4096:  # bounded: device names may come from callers
                self._devices.clear()
            self._devices[device] = known
        return known

    async def _exchange(self, priority: int, op: Callable[[], Awaitable[Any]]) -> Any:
        lock = self.lock
        await lock.acquire(priority)
        try:
            return await op()
        except NoResponseError:
            if self.late_guard > 0:
                await asyncio.sleep(self.late_guard)
            raise
        finally:
            if self.spec.turnaround > 0:
                await asyncio.sleep(self.spec.turnaround)
            lock.release()

    def _check(self, device: str) -> None:
        if self.breaker is not None:
            self.breaker.check(self._key(device))

    def _note_failure(self, device: str, exc: BaseException) -> None:
        if self.breaker is not None and self.breaker.failure(self._key(device)):
            LOGGER.warning("modbus %s unit %s: circuit opened after %s", self.spec.name, device, exc)

    def _note_success(self, device: str) -> None:
        if self.breaker is not None and self.breaker.success(self._key(device)):
            LOGGER.info("modbus %s unit %s: answering again, circuit closed", self.spec.name, device)

    def _plan(self, rmap: RegisterMap, points: Sequence[Point]) -> tuple[list[str], list[_Step]]:
        """The requests for ``points`` and, in the order ``_run_plan`` returns their values, the point names."""
        names: list[str] = []
        steps: list[_Step] = []
        for block in plan_reads(points, max_registers=rmap.max_registers, max_gap=rmap.max_gap):
            block_names, values = compile_values(block)
            names += block_names
            steps.append((block, values))
        return names, steps

    async def _run_plan(self, device: str, plan: Sequence[_Step], priority: int) -> list[float]:
        """Read and decode a plan's blocks, values in the plan's order: one request at a time under the
        line lock (taken per block, so a control command waits for one request, not a whole device),
        with retries."""
        unit, key = self._device(device)
        breaker = self.breaker
        if breaker is not None:
            breaker.check(key)
        # a device whose last request went unanswered gets no re-send: on a shared line a dead
        # device would otherwise cost timeout x (1 + retries) per read until its breaker opens
        suspect = self._suspect
        retries = 0 if device in suspect else self.retries
        lock, link, turnaround = self.lock, self.link, self.spec.turnaround
        readers = link.readers
        values: list[float] = []
        for block, decode in plan:
            attempt = 0
            while True:
                if not lock.try_acquire():
                    await lock.acquire(priority)
                try:
                    # ModbusLink.read, inline
                    fn, address, count = block.function, block.address, block.count
                    if link.closed:
                        await link.ensure_open()
                    try:
                        rr = await readers[fn](address, count=count, device_id=unit)
                    except (ModbusException, OSError) as exc:
                        raise link.read_failed(exc, fn, address, count, unit) from exc
                    words = link.words(rr, fn, address, count, unit)
                    break
                except NoResponseError as exc:
                    # hold the line a little: a late reply must drain before the next request,
                    # or it would be taken for that request's answer (RTU has no transaction id)
                    if self.late_guard > 0:
                        await asyncio.sleep(self.late_guard)
                    attempt += 1
                    if attempt > retries:
                        self._failed(device, exc)
                        raise
                except TransportError as exc:
                    attempt += 1
                    if attempt > retries:
                        self._failed(device, exc)
                        raise
                finally:
                    if turnaround > 0:
                        await asyncio.sleep(turnaround)
                    lock.release()
            values += decode(words)
        if suspect:
            suspect.discard(device)
        if breaker is not None and breaker.success(key):
            LOGGER.info("modbus %s unit %s: answering again, circuit closed", self.spec.name, device)
        return values

    def _failed(self, device: str, exc: BaseException) -> None:
        self._suspect.add(device)
        self._note_failure(device, exc)

    def planned_requests(self, device: str, quantities: Sequence[str]) -> list[tuple[Function, int, int]]:
        """(function, address, count) of each request one ``read(device, quantities)`` sends."""
        rmap = self.map_for(device)
        points = rmap.for_quantities(list(quantities) or rmap.quantities())
        return [(b.function, b.address, b.count) for b, _ in self._plan(rmap, points)[1]]

    async def read_points(
        self, device: str, points: Sequence[Point], *, priority: int = Priority.ON_DEMAND
    ) -> dict[str, float]:
        """Values of the given points (by point name), breaker-guarded and retried."""
        names, steps = self._plan(self.map_for(device), points)
        return dict(zip(names, await self._run_plan(device, steps, priority), strict=True))

    # ------------------------------------------------------------------ MeterClient

    async def read(
        self, device: str, quantities: Sequence[str], *, priority: Priority = Priority.ON_DEMAND
    ) -> list[Reading]:
        rmap = self.maps.get(device, self.default_map)
        key = (id(rmap), tuple(quantities))
        cached = self._plans.get(key)
        if cached is None:
            points = rmap.for_quantities(list(quantities) or rmap.quantities())
            names, steps = self._plan(rmap, points)
            index = {name: i for i, name in enumerate(names)}
            codes = tuple(p.quantity or p.name for p in points)
            units = tuple(p.unit for p in points)
            cached = self._plans[key] = (codes, units, tuple(index[p.name] for p in points), steps)
            if len(self._plans) > 256:
                self._plans.pop(next(iter(self._plans)))
        codes, units, order, plan = cached
        values = await self._run_plan(device, plan, priority)
        ts = datetime.now(UTC) if self._clock is None else self._clock()
        return Reading.batch(device, ts, codes, map(values.__getitem__, order), units, Quality.GOOD, self.source)

    async def aclose(self) -> None:
        self.link.close()

    # ------------------------------------------------------------------ LoadControl

    def _remember(self, result: ControlResult) -> ControlResult:
        self._done[result.request_id] = result
        while len(self._done) > 1024:
            self._done.popitem(last=False)
        return result

    async def load_command(self, request: LoadControlRequest) -> ControlResult:
        """Write the command's register(s), then read the effect back.

        Idempotent by ``request_id`` (a repeated request returns the first result
        without writing again). A write or read-back without a reply raises
        :class:`UnknownOutcomeError`: the caller must not blindly re-send.
        """
        done = self._done.get(request.request_id)
        if done is not None:
            return done
        rmap = self.map_for(request.device)
        spec = rmap.controls.get(request.command.value)
        if spec is None:
            return ControlResult(request.request_id, False, f"map {rmap.name!r} has no {request.command.value}")
        unit = self.unit_id(request.device)
        shift = (request.circuit - 1) * spec.circuit_stride
        if request.circuit < 1 or (request.circuit > 1 and spec.circuit_stride == 0):
            return ControlResult(request.request_id, False, f"circuit {request.circuit} not supported")
        target = rmap.point(spec.point)
        target = replace(target, address=target.address + shift)
        value = spec.value if spec.value is not None else request.value
        if value is None or not math.isfinite(value):
            raise LocalProtocolError(f"{request.command.value} needs a value")
        words = encode_value(target, value)
        write_at, write_fn = target.address, target.function
        seq = None
        if spec.seq_point is not None:
            seq_pt = rmap.point(spec.seq_point)
            seq = purchase_sequence(request.request_id)
            seq_words = encode_value(seq_pt, seq)
            if seq_pt.function is not target.function or seq_pt.end != target.address:
                raise ConfigError(f"map {rmap.name!r}: {spec.seq_point} must directly precede {spec.point}")
            words, write_at = seq_words + words, seq_pt.address
        self._check(request.device)
        try:
            await self._exchange(Priority.CONTROL, lambda: self.link.write(write_fn, write_at, words, unit))
        except DeviceError as exc:
            self._note_success(request.device)
            return self._remember(
                ControlResult(request.request_id, False, f"refused: {exc}", self.link.last_tx, self.link.last_rx)
            )
        except (NoResponseError, TransportError) as exc:
            self._note_failure(request.device, exc)
            raise UnknownOutcomeError(
                f"{request.command.value} to unit {unit}: no reply to the write, outcome unknown"
            ) from exc
        tx, rx = self.link.last_tx, self.link.last_rx
        self._note_success(request.device)
        accepted, reason = True, ""
        if spec.readback is not None:
            rb = rmap.point(spec.readback)
            rb = replace(rb, address=rb.address + shift)
            expect = float(seq) if seq is not None else (spec.expect if spec.expect is not None else value)
            try:
                got = (await self.read_points(request.device, [rb], priority=Priority.CONTROL))[rb.name]
            except (NoResponseError, TransportError) as exc:
                raise UnknownOutcomeError(
                    f"{request.command.value} to unit {unit}: written, but the read-back got no reply"
                ) from exc
            tolerance = max(1e-6, abs(expect) * 1e-6) if rb.dtype is DataType.FLOAT32 else abs(rb.scale) / 2
            if abs(got - expect) > tolerance:
                accepted, reason = False, f"read-back {rb.name}={got:g}, expected {expect:g}"
        LOGGER.info(
            "modbus %s unit %s %s by %s: %s%s",
            self.spec.name, unit, request.command.value, request.operator_id,
            "accepted" if accepted else "NOT accepted", f" ({reason})" if reason else "",
        )
        return self._remember(ControlResult(request.request_id, accepted, reason, tx, rx))

    # ------------------------------------------------------------------ RelayControl

    async def relay_command(self, request: RelayRequest) -> ControlResult:
        cmd = _RELAY_TO_LOAD.get(request.command)
        if cmd is None:
            return ControlResult(request.request_id, False, f"{request.command.value} not supported over Modbus")
        if request.valid_until <= datetime.now(UTC):
            return ControlResult(request.request_id, False, "command expired before it was sent")
        return await self.load_command(
            LoadControlRequest(request.device, cmd, request.operator_id, request_id=request.request_id)
        )

    async def relay_state(self, device: str) -> RelayState:
        rmap = self.map_for(device)
        if rmap.relay_point is None:
            return RelayState.UNKNOWN
        pt = rmap.point(rmap.relay_point)
        value = (await self.read_points(device, [pt], priority=Priority.CONTROL))[pt.name]
        return RelayState.OPEN if value else RelayState.CLOSED

    async def read_point(self, device: str, name: str, *, priority: int = Priority.ON_DEMAND) -> float:
        """One named point (quantity or control-only register) of a device."""
        pt = self.map_for(device).point(name)
        return (await self.read_points(device, [pt], priority=priority))[pt.name]


class BareTcpPoller:
    """Benchmark baseline: a plain pymodbus ``AsyncModbusTcpClient`` issuing fixed read requests.

    ``poll()`` sends ``requests`` once, one after the other, and checks only ``isError()``: no lock,
    breaker, retries or readings. With ``decode`` (the points of each request) it also converts the
    registers with :func:`decode_registers`, like any application must.
    """

    def __init__(
        self,
        host: str,
        port: int,
        requests: Sequence[tuple[Function, int, int]],
        *,
        device_id: int = 1,
        decode: Sequence[Sequence[Point]] | None = None,
    ) -> None:
        self.client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
        self.requests = list(requests)
        self.device_id = device_id
        self.decode = decode
        self._readers = _read_functions(self.client)

    async def connect(self) -> None:
        if not await self.client.connect():
            raise TransportError("baseline client cannot connect")

    async def poll(self) -> None:
        readers, device_id, decode = self._readers, self.device_id, self.decode
        for i, (fn, address, count) in enumerate(self.requests):
            rr = await readers[fn](address, count=count, device_id=device_id)
            if rr.isError():
                raise DeviceError("baseline read refused", code=int(rr.exception_code))
            if decode is not None:
                regs = rr.bits if fn.is_bit else rr.registers
                for p in decode[i]:
                    off = p.address - address
                    decode_registers(p, regs[off : off + p.count])

    def close(self) -> None:
        self.client.close()


async def bare_tcp_poll(
    host: str,
    port: int,
    requests: Sequence[tuple[Function, int, int]],
    *,
    device_id: int = 1,
    duration: float = 2.0,
    decode: Sequence[Sequence[Point]] | None = None,
) -> int:
    """:class:`BareTcpPoller` in a loop for ``duration`` s; returns how many full polls completed."""
    bare = BareTcpPoller(host, port, requests, device_id=device_id, decode=decode)
    await bare.connect()
    polls = 0
    try:
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            await bare.poll()
            polls += 1
    finally:
        bare.close()
    return polls
