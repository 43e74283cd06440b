"""Load monitoring and control: power/demand limits, crossing events, audited load-control commands.

Limits come from the config (``[load]`` section, :class:`LoadSettings`) or the database
(``load_limits``, migration 0030); a database row wins over a config entry for the same
target. A limit applies to one terminal (``kind="device"``, target = the device id the
readings carry) or to a customer (``kind="customer"``: the sum of its terminals' latest power).

:class:`LoadMonitor` is sans-I/O: feed it readings (any protocol: Modbus, MQTT, DL/T 645),
it returns :class:`LoadEvent` crossings (exceeded once, then cleared once the value falls
below ``limit x (1 - hysteresis)``). :func:`store_events` writes them to ``load_events``.

:func:`run_load_command` sends one load-control command through any client implementing
:class:`~protocols.client.LoadControl` (``ModbusClient``, the MQTT client), reads the
effect back, and writes a ``requested`` and a ``result`` row to ``load_control_log``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from protocols.client import ControlResult, LoadCommand, LoadControl, LoadControlRequest, MeterClient
from protocols.errors import HeadendError, UnknownOutcomeError
from protocols.reading import Reading

__all__ = [
    "READBACK_QUANTITIES",
    "CommandOutcome",
    "LimitConfig",
    "LimitKind",
    "LoadEvent",
    "LoadLimit",
    "LoadMonitor",
    "LoadSettings",
    "MonitoredSink",
    "audit_command",
    "http_load",
    "load_limits",
    "run",
    "run_load_command",
    "store_events",
    "upsert_limit",
]

LOGGER = logging.getLogger(__name__)

POWER_QUANTITY = "power.active.total"
DEMAND_QUANTITIES = ("interval.demand.active", "demand.active.import.max")

# What to read back after each command (for the operator's screen and the audit row).
READBACK_QUANTITIES: dict[LoadCommand, tuple[str, ...]] = {
    LoadCommand.SET_POWER_LIMIT: ("limit.power",),
    LoadCommand.TRIP_CIRCUIT: ("relay.state",),
    LoadCommand.RESTORE_CIRCUIT: ("relay.state",),
    LoadCommand.KEEP_POWER_ON: ("keep_power.state",),
    LoadCommand.KEEP_POWER_OFF: ("keep_power.state",),
    LoadCommand.PURCHASE_ENERGY: ("balance.energy",),
}


class LimitKind(StrEnum):
    DEVICE = "device"
    CUSTOMER = "customer"


@dataclass(frozen=True, slots=True)
class LoadLimit:
    target: str
    kind: LimitKind = LimitKind.DEVICE
    power_kw: float | None = None
    demand_kw: float | None = None
    hysteresis: float = 0.05  # clears below limit x (1 - hysteresis)


class LimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str
    kind: LimitKind = LimitKind.DEVICE
    power_kw: float | None = Field(default=None, gt=0)
    demand_kw: float | None = Field(default=None, gt=0)
    hysteresis: float = Field(default=0.05, ge=0, lt=1)

    def to_limit(self) -> LoadLimit:
        return LoadLimit(self.target, self.kind, self.power_kw, self.demand_kw, self.hysteresis)


class LoadSettings(BaseModel):
    """``[load]`` config section: limits and the terminal -> customer mapping."""

    model_config = ConfigDict(extra="forbid")

    limits: list[LimitConfig] = Field(default_factory=list)
    customers: dict[str, str] = Field(default_factory=dict, description="device id -> customer id")
    default_map: str = Field(default="generic_terminal", description="Modbus register map when none is given")

    def limit_table(self) -> dict[tuple[str, LimitKind], LoadLimit]:
        return {(c.target, c.kind): c.to_limit() for c in self.limits}


@dataclass(frozen=True, slots=True)
class LoadEvent:
    ts: datetime
    meter: str  # the device, or the customer id for customer limits
    kind: str  # power_limit_exceeded / power_limit_cleared / demand_limit_exceeded / demand_limit_cleared
    value: float
    limit: float
    customer: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class LoadMonitor:
    """Detects limit crossings in a stream of readings (state kept per target and limit)."""

    def __init__(
        self,
        limits: Mapping[tuple[str, LimitKind], LoadLimit] | Iterable[LoadLimit] = (),
        customers: Mapping[str, str] | None = None,
    ) -> None:
        self.limits: dict[tuple[str, LimitKind], LoadLimit] = {}
        self.set_limits(limits)
        self.customers = dict(customers or {})
        self._over: dict[tuple[str, LimitKind, str], bool] = {}
        self._latest_power: dict[str, tuple[datetime, float]] = {}

    def set_limits(self, limits: Mapping[tuple[str, LimitKind], LoadLimit] | Iterable[LoadLimit]) -> None:
        items = limits.values() if isinstance(limits, Mapping) else limits
        self.limits = {(lim.target, lim.kind): lim for lim in items}

    def over(self, target: str, kind: LimitKind = LimitKind.DEVICE, what: str = "power") -> bool:
        return self._over.get((target, kind, what), False)

    def _check(
        self, target: str, kind: LimitKind, what: str, value: float, ts: datetime, limit: float, hyst: float,
        customer: str | None, details: Mapping[str, Any],
    ) -> LoadEvent | None:
        key = (target, kind, what)
        was = self._over.get(key, False)
        if not was and value > limit:
            self._over[key] = True
            return LoadEvent(ts, target, f"{what}_limit_exceeded", value, limit, customer, details)
        if was and value < limit * (1.0 - hyst):
            self._over[key] = False
            return LoadEvent(ts, target, f"{what}_limit_cleared", value, limit, customer, details)
        return None

    def observe(self, readings: Iterable[Reading]) -> list[LoadEvent]:
        events: list[LoadEvent] = []
        touched_customers: set[str] = set()
        for r in readings:
            customer = self.customers.get(r.meter)
            if r.quantity == POWER_QUANTITY:
                what = "power"
                self._latest_power[r.meter] = (r.ts, r.value)
                if customer is not None:
                    touched_customers.add(customer)
            elif r.quantity in DEMAND_QUANTITIES:
                what = "demand"
            else:
                continue
            lim = self.limits.get((r.meter, LimitKind.DEVICE))
            cap = None if lim is None else (lim.power_kw if what == "power" else lim.demand_kw)
            if lim is not None and cap is not None:
                ev = self._check(r.meter, LimitKind.DEVICE, what, r.value, r.ts, cap, lim.hysteresis, customer,
                                 {"quantity": r.quantity, "source": r.source})
                if ev is not None:
                    events.append(ev)
        for customer in sorted(touched_customers):
            lim = self.limits.get((customer, LimitKind.CUSTOMER))
            if lim is None or lim.power_kw is None:
                continue
            members = [m for m, c in self.customers.items() if c == customer and m in self._latest_power]
            total = sum(self._latest_power[m][1] for m in members)
            ts = max(self._latest_power[m][0] for m in members)
            ev = self._check(customer, LimitKind.CUSTOMER, "power", total, ts, lim.power_kw, lim.hysteresis,
                             customer, {"devices": members})
            if ev is not None:
                events.append(ev)
        for ev in events:
            LOGGER.warning("load %s: %s %.3f (limit %.3f)", ev.meter, ev.kind, ev.value, ev.limit)
        return events


# ------------------------------------------------------------------ database (psycopg 3, async)


async def load_limits(conn: Any) -> dict[tuple[str, LimitKind], LoadLimit]:
    """All limits from ``load_limits`` (an ``psycopg.AsyncConnection``)."""
    cur = await conn.execute("SELECT target, kind, power_kw, demand_kw, hysteresis FROM load_limits")
    out: dict[tuple[str, LimitKind], LoadLimit] = {}
    for target, kind, power, demand, hyst in await cur.fetchall():
        out[(target, LimitKind(kind))] = LoadLimit(target, LimitKind(kind), power, demand, hyst)
    return out


async def upsert_limit(conn: Any, limit: LoadLimit, operator: str) -> None:
    await conn.execute(
        """INSERT INTO load_limits (target, kind, power_kw, demand_kw, hysteresis, updated_by)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (target, kind) DO UPDATE SET power_kw = EXCLUDED.power_kw,
               demand_kw = EXCLUDED.demand_kw, hysteresis = EXCLUDED.hysteresis,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        (limit.target, limit.kind.value, limit.power_kw, limit.demand_kw, limit.hysteresis, operator),
    )


# crossing kind -> meter_events severity (1 critical .. 5 info)
_SEVERITY = {"power_limit_exceeded": 2, "demand_limit_exceeded": 2, "power_limit_cleared": 4,
             "demand_limit_cleared": 4}


async def store_events(conn: Any, events: Sequence[LoadEvent]) -> int:
    """Store crossings as meter events (``meter_events``, code = kind, deduplicated on
    (meter, code, ts)) and in ``load_events`` (value, limit, customer), in one transaction."""
    if not events:
        return 0
    from psycopg.types.json import Jsonb

    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO load_events (ts, meter, customer, kind, value, limit_value, details)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [(e.ts, e.meter, e.customer, e.kind, e.value, e.limit, Jsonb(dict(e.details))) for e in events],
        )
        await cur.executemany(
            """INSERT INTO meter_events (meter, code, ts, severity, source, detail)
               VALUES (%s, %s, %s, %s, 'loadmon', %s) ON CONFLICT (meter, code, ts) DO NOTHING""",
            [
                (e.meter, e.kind, e.ts, _SEVERITY.get(e.kind, 3),
                 Jsonb({"value": e.value, "limit": e.limit, "customer": e.customer, **dict(e.details)}))
                for e in events
            ],
        )
    return len(events)


async def audit_command(
    conn: Any,
    request: LoadControlRequest,
    phase: str,
    *,
    channel: str = "",
    protocol: str = "",
    result: ControlResult | None = None,
    reason: str = "",
    readback: Mapping[str, float] | None = None,
) -> None:
    """Append one row to ``load_control_log`` (phase: requested / result / unknown / error) and
    one to the store's ``audit_log`` (actor = operator, action = ``load.<command>.<phase>``), together."""
    from psycopg.types.json import Jsonb

    accepted = None if result is None else result.accepted
    why = reason or (result.reason if result is not None else "")
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO load_control_log (request_id, phase, device, channel, protocol, command, value,
                   circuit, operator, accepted, reason, readback, tx_frame, rx_frame)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                request.request_id, phase, request.device, channel, protocol, request.command.value, request.value,
                request.circuit, request.operator_id, accepted, why, Jsonb(dict(readback or {})),
                result.tx.hex(" ") if result is not None and result.tx else None,
                result.rx.hex(" ") if result is not None and result.rx else None,
            ),
        )
        await conn.execute(
            "INSERT INTO audit_log (actor, action, target, detail) VALUES (%s, %s, %s, %s)",
            (
                request.operator_id, f"load.{request.command.value}.{phase}", request.device,
                Jsonb({"request_id": request.request_id, "value": request.value, "circuit": request.circuit,
                       "channel": channel, "protocol": protocol, "accepted": accepted, "reason": why,
                       "readback": dict(readback or {})}),
            ),
        )


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    request: LoadControlRequest
    result: ControlResult | None
    readback: dict[str, float]
    outcome: str  # accepted / rejected / unknown


async def run_load_command(
    client: LoadControl,
    request: LoadControlRequest,
    *,
    conn: Any | None = None,
    channel: str = "",
    protocol: str = "",
) -> CommandOutcome:
    """Send, read back, audit. ``conn`` (psycopg AsyncConnection, autocommit) receives the audit rows.

    The ``requested`` row is written (and committed) before anything is sent, so a command
    that cannot be audited is never sent. An unknown outcome is audited and re-raised.
    """
    if conn is not None:
        await audit_command(conn, request, "requested", channel=channel, protocol=protocol)
    try:
        result = await client.load_command(request)
    except UnknownOutcomeError as exc:
        if conn is not None:
            await audit_command(conn, request, "unknown", channel=channel, protocol=protocol, reason=str(exc))
        raise
    except HeadendError as exc:
        if conn is not None:
            await audit_command(conn, request, "error", channel=channel, protocol=protocol,
                                reason=f"{type(exc).__name__}: {exc}")
        raise
    readback: dict[str, float] = {}
    if isinstance(client, MeterClient):
        for q in READBACK_QUANTITIES.get(request.command, ()):
            try:
                (r,) = await client.read(request.device, [q])
                readback[q] = r.value
            except HeadendError as exc:  # the command's own read-back decided acceptance already
                LOGGER.info("read-back of %s from %s failed: %s", q, request.device, exc)
    if conn is not None:
        await audit_command(conn, request, "result", channel=channel, protocol=protocol, result=result,
                            readback=readback)
    LOGGER.info(
        "load command %s %s on %s by %s: %s", request.request_id, request.command.value, request.device,
        request.operator_id, "accepted" if result.accepted else f"rejected ({result.reason})",
    )
    return CommandOutcome(request, result, readback, "accepted" if result.accepted else "rejected")


class MonitoredSink:
    """Wraps any reading sink (``submit(readings)``, e.g. :class:`mdm.ingest.Ingestor`) so every
    reading on its way to the store also passes the load monitor: for paths that are not channel
    jobs (MQTT telemetry). Crossings go to ``events`` (stored by :func:`run` or :func:`store_events`)."""

    def __init__(self, inner: Any, monitor: LoadMonitor, events: Any | None = None) -> None:
        import asyncio

        self.inner = inner
        self.monitor = monitor
        self.events: asyncio.Queue[list[LoadEvent]] = events if events is not None else asyncio.Queue()

    @classmethod
    def for_daemon(cls, daemon: Any, inner: Any) -> Any:
        """``inner`` wrapped with the daemon's load monitor (the ``headend.loadmon`` plug-in stores
        the events), or ``inner`` itself when the plug-in is not running."""
        monitor = getattr(daemon, "load_monitor", None)
        if monitor is None:
            return inner
        return cls(inner, monitor, getattr(daemon, "load_events", None))

    async def submit(self, readings: Sequence[Reading]) -> Any:
        events = self.monitor.observe(readings)
        if events:
            self.events.put_nowait(events)
        return await self.inner.submit(readings)

    def __getattr__(self, name: str) -> Any:  # flush(), aclose(), stats... of the wrapped sink
        return getattr(self.inner, name)


# ------------------------------------------------------------------ daemon plug-in


async def http_load(daemon: Any, method: str, body: bytes) -> tuple[int, str, bytes]:
    """``POST /load`` on the daemon: run one load command as a control-priority job of the
    channel's worker (so it never competes with the daemon's own polling for the line),
    audited with the daemon's database. Body: channel, device, command, operator and
    optionally value, circuit, request_id. Answer: ``{"result": {...}}`` or ``{"error": {...}}``."""
    import json

    from headend.health import json_response
    from headend.ipc import error_payload
    from protocols.arbitration import Priority

    if method != "POST":
        return json_response(405, {"error": {"type": "ConfigError", "message": "POST a JSON body"}})
    try:
        req = json.loads(body)
        kw = {"request_id": str(req["request_id"])} if req.get("request_id") else {}
        request = LoadControlRequest(
            str(req["device"]), LoadCommand(str(req["command"])), str(req["operator"]),
            value=None if req.get("value") is None else float(req["value"]), circuit=int(req.get("circuit", 1)), **kw,
        )
        channel = str(req["channel"])
    except (ValueError, KeyError, TypeError) as exc:
        return json_response(400, {"error": {"type": "ConfigError", "message": f"bad request: {exc}"}})
    ch = daemon.channels.get(channel)
    if ch is None:
        return json_response(200, {"error": {"type": "ConfigError", "message": f"channel {channel} not polled here"}})
    protocol = ch.cfg.protocol

    conn: Any = None

    async def job(client: Any) -> CommandOutcome:
        if not isinstance(client, LoadControl):
            from protocols.errors import ConfigError

            raise ConfigError(f"protocol {protocol!r} has no load control")
        return await run_load_command(client, request, conn=conn, channel=channel, protocol=protocol)

    try:
        if daemon.dsn is not None:  # before the job: never hold the line while connecting to the database
            import psycopg

            conn = await psycopg.AsyncConnection.connect(daemon.dsn, autocommit=True, connect_timeout=5)
        out: CommandOutcome = await ch.call(request.device, job, Priority.CONTROL)
    except HeadendError as exc:
        return json_response(200, {"daemon": daemon.name, "error": error_payload(exc)})
    except Exception as exc:  # database trouble: the command was not sent without its audit row
        return json_response(200, {"daemon": daemon.name, "error": {"type": "ConfigError", "message": str(exc)}})
    finally:
        if conn is not None:
            await conn.close()
    assert out.result is not None
    return json_response(200, {"daemon": daemon.name, "result": {
        "request_id": request.request_id, "accepted": out.result.accepted, "reason": out.result.reason,
        "readback": out.readback, "audited": daemon.dsn is not None,
    }})



async def run(daemon: Any, *, reload_every: float = 60.0) -> None:
    """Daemon plug-in (``[daemon] plugins = ["headend.loadmon"]``): watch every finished read
    for limit crossings and store them (``meter_events`` and ``load_events``); serve ``POST /load``.

    Limits: the ``[load]`` config section, overridden by ``load_limits`` rows (re-read every
    ``reload_every`` seconds). Events are written by this task, never from the channel workers.
    """
    import asyncio
    import contextlib

    settings = getattr(daemon.settings, "load", None) or LoadSettings()
    config_limits = settings.limit_table()
    monitor = LoadMonitor(config_limits, settings.customers)
    pending: asyncio.Queue[list[LoadEvent]] = asyncio.Queue()
    daemon.load_monitor = monitor  # for MonitoredSink.for_daemon (readings that are not channel jobs)
    daemon.load_events = pending

    def listener(channel: Any, job: Any, outcome: Any, readings: Sequence[Reading]) -> None:
        if readings:
            events = monitor.observe(readings)
            if events:
                pending.put_nowait(events)

    daemon.listeners.append(listener)
    http = getattr(daemon, "http", None)
    if http is not None:  # `headend load ...` goes through the daemon that owns the line
        http.route("/load", lambda method, path, query, body: http_load(daemon, method, body))
    dsn = getattr(daemon, "dsn", None)
    conn: Any = None
    stopping = getattr(daemon, "stopping", None) or asyncio.Event()
    next_reload = 0.0
    loop = asyncio.get_running_loop()
    stored = 0
    carry: list[LoadEvent] = []  # events not yet stored (kept across a database outage)
    try:
        while not stopping.is_set():
            try:
                if dsn is not None and conn is None:
                    import psycopg

                    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
                if conn is not None and loop.time() >= next_reload:
                    monitor.set_limits({**config_limits, **await load_limits(conn)})
                    next_reload = loop.time() + reload_every
                if not carry:
                    try:
                        carry = await asyncio.wait_for(pending.get(), timeout=1.0)
                    except TimeoutError:
                        continue
                if conn is not None:
                    stored += await store_events(conn, carry)
                carry = []  # stored (or no database configured: the warning log is the record)
            except Exception as exc:  # keep monitoring through a database outage
                LOGGER.warning("load monitor: database error: %s", exc)
                if conn is not None:
                    await conn.close()
                    conn = None
                await asyncio.sleep(1.0)
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                if carry:
                    stored += await store_events(conn, carry)
                while not pending.empty():
                    stored += await store_events(conn, pending.get_nowait())
            await conn.close()
        LOGGER.info("load monitor stopped: %d events stored", stored)
