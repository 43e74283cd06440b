"""A fleet of simulated MQTT load-management terminals in one process (schema: protocols.mqtt.schema).

Each terminal has its own MQTT connection (so its Last Will is real: the broker publishes
``offline`` when the terminal drops), publishes telemetry every ``interval`` seconds (phases
spread over the interval), events (relay trips, limit crossings, random alarms), a retained
status after every change, and answers commands once per request id (repeats are answered
from its record with ``duplicate: true``).

Fault injection (:class:`FleetFaults`, CLI ``--faults``):
``malformed=0.01`` share of telemetry sent malformed (bad JSON, unknown code, naive time...),
``no_answer=LMT00003+LMT00007`` terminals that never answer commands (they still act on nothing),
``no_answer_ratio=0.05`` the same for a random share, ``flap=30`` a random terminal drops off
(Last Will) every 30 s on average and comes back after ``offline_for`` seconds.

Load values come from :class:`simulators.loadprofile.SyntheticProfile` or a CSV given by path
(``CsvProfile``, e.g. the SMUD 15-min kW series); nothing is copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from protocols.errors import HeadendError
from protocols.mqtt.client import MqttConnection
from protocols.mqtt.schema import Channel, Command, Event, PayloadError, Response, Status, Telemetry, Topics, encode
from simulators.loadprofile import CsvProfile, LoadProfile, SyntheticProfile

__all__ = ["FleetFaults", "FleetStats", "MqttTerminalFleet", "SimTerminal"]

LOGGER = logging.getLogger(__name__)

MALFORMED_KINDS = ("json", "unknown_code", "naive_ts", "not_number", "empty", "extra_field")


@dataclass(slots=True)
class FleetFaults:
    malformed: float = 0.0
    no_answer: frozenset[str] = frozenset()
    no_answer_ratio: float = 0.0
    flap: float = 0.0  # mean seconds between random drops (0 = never)
    offline_for: float = 5.0

    @classmethod
    def parse(cls, text: str | None) -> FleetFaults:
        f = cls()
        if not text:
            return f
        for item in text.split(","):
            key, _, value = item.strip().partition("=")
            try:
                if key == "malformed":
                    f.malformed = float(value)
                elif key == "no_answer":
                    f.no_answer = frozenset(v for v in value.split("+") if v)
                elif key == "no_answer_ratio":
                    f.no_answer_ratio = float(value)
                elif key == "flap":
                    f.flap = float(value)
                elif key == "offline_for":
                    f.offline_for = float(value)
                else:
                    raise ValueError(f"unknown fault {key!r}")
            except ValueError as exc:
                raise ValueError(f"bad fault {item!r}: {exc}") from None
        return f


@dataclass(slots=True)
class FleetStats:
    telemetry: int = 0
    malformed: int = 0
    events: int = 0
    commands: int = 0
    duplicates: int = 0
    unanswered: int = 0
    drops: int = 0
    publish_errors: int = 0


@dataclass(slots=True)
class SimTerminal:
    id: str
    index: int
    relay: str = "closed"
    keep_power: bool = False
    limit_kw: float | None = None
    balance_kwh: float = 1000.0
    energy_kwh: float = 0.0
    power_kw: float = 0.0
    answers: bool = True
    last_request_id: str | None = None
    done: OrderedDict[str, Response] = field(default_factory=OrderedDict)
    acted: int = 0  # side-effect commands actually executed
    over_limit: bool = False
    conn: MqttConnection | None = None
    last_t: float = 0.0

    def status(self, state: str = "online") -> Status:
        return Status(
            state=state, ts=datetime.now(UTC), relay="open" if self.relay == "open" else "closed",  # type: ignore[arg-type]
            keep_power=self.keep_power, limit_kw=self.limit_kw, balance_kwh=round(self.balance_kwh, 3),
            last_request_id=self.last_request_id, firmware="sim-1.0",
        )

    def values(self) -> dict[str, float]:
        return {
            "energy.active.import": round(self.energy_kwh, 3),
            "power.active.total": round(self.power_kw, 3),
            "voltage.a": round(230.0 + 3 * math.sin(self.index + time.time() / 60), 1),
            "current.a": round(self.power_kw * 1000 / 3 / 230.0, 3),
            "relay.state": 1.0 if self.relay == "open" else 0.0,
            "keep_power.state": 1.0 if self.keep_power else 0.0,
            "balance.energy": round(self.balance_kwh, 3),
            **({"limit.power": self.limit_kw} if self.limit_kw is not None else {}),
        }

    def execute(self, cmd: Command) -> tuple[Response, list[Event]]:
        """Act on one command (never twice per request id). Returns the response and any events."""
        now = datetime.now(UTC)
        prev = self.done.get(cmd.request_id)
        if prev is not None:
            # answered from the record, stamped with when this answer is sent: the head-end tells a second
            # duplicate answer from a re-delivery of the first by it
            return prev.model_copy(update={"duplicate": True, "ts": now}), []
        events: list[Event] = []
        status, reason, values = "accepted", "", {}
        if cmd.expires_at is not None and cmd.expires_at < now:
            status, reason = "rejected", "expired"
        elif cmd.command == "read":
            all_values = self.values()
            values = {q: all_values[q] for q in cmd.quantities if q in all_values} if cmd.quantities else all_values
        elif cmd.command == "status":
            values = self.values()
        elif cmd.command == "set_power_limit":
            self.limit_kw = cmd.value
            values = {"limit.power": float(cmd.value or 0)}
        elif cmd.command == "trip_circuit":
            if self.keep_power:
                status, reason = "rejected", "keep-power active"
            else:
                self.relay = "open"
                events.append(Event(ts=now, event="relay_trip", severity=2, detail={"request_id": cmd.request_id}))
        elif cmd.command == "restore_circuit":
            self.relay = "closed"
            events.append(Event(ts=now, event="relay_close", severity=4, detail={"request_id": cmd.request_id}))
        elif cmd.command == "keep_power_on":
            self.keep_power = True
        elif cmd.command == "keep_power_off":
            self.keep_power = False
        elif cmd.command == "purchase_energy":
            self.balance_kwh += float(cmd.value or 0)
            values = {"balance.energy": round(self.balance_kwh, 3)}
        resp = Response(request_id=cmd.request_id, status=status, ts=now, reason=reason,  # type: ignore[arg-type]
                        values=values)
        if cmd.has_side_effects:
            self.last_request_id = cmd.request_id
            if status == "accepted":
                self.acted += 1
        self.done[cmd.request_id] = resp
        while len(self.done) > 256:
            self.done.popitem(last=False)
        return resp, events

    def advance(self, profile: LoadProfile, sim_time: datetime, dt_h: float) -> list[Event]:
        """Evolve load, energy and balance by ``dt_h`` hours; returns limit-crossing events."""
        events: list[Event] = []
        demand = profile.demand_kw(self.index, sim_time) * 20  # terminals serve larger loads than households
        self.power_kw = 0.0 if self.relay == "open" else demand
        used = self.power_kw * dt_h
        self.energy_kwh += used
        self.balance_kwh -= used
        now = datetime.now(UTC)
        over = self.limit_kw is not None and self.power_kw > self.limit_kw
        if over != self.over_limit:
            self.over_limit = over
            events.append(Event(ts=now, event="power_limit_exceeded" if over else "power_limit_cleared",
                                severity=2 if over else 4,
                                detail={"power_kw": round(self.power_kw, 3), "limit_kw": self.limit_kw}))
        return events


def malformed_payload(kind: str, now: datetime) -> bytes:
    ts = now.isoformat()
    if kind == "json":
        return b'{"v":1,"ts":"' + ts.encode() + b'","values":{'
    if kind == "unknown_code":
        return json.dumps({"v": 1, "ts": ts, "values": {"power.bogus": 1.0}}).encode()
    if kind == "naive_ts":
        return json.dumps({"v": 1, "ts": now.replace(tzinfo=None).isoformat(), "values": {"voltage.a": 1}}).encode()
    if kind == "not_number":
        return json.dumps({"v": 1, "ts": ts, "values": {"voltage.a": "high"}}).encode()
    if kind == "empty":
        return b""
    return json.dumps({"v": 1, "ts": ts, "values": {"voltage.a": 230}, "colour": "red"}).encode()


class MqttTerminalFleet:
    """``n`` terminals ``LMT00001``.. on one broker. ``async with`` starts and stops them."""

    def __init__(
        self,
        host: str,
        port: int,
        n: int,
        *,
        prefix: str = "ami",
        first: int = 1,
        id_format: str = "LMT{:05d}",
        interval: float = 60.0,
        speed: float = 1.0,
        profile: LoadProfile | str | Path | None = None,
        faults: FleetFaults | str | None = None,
        seed: int = 1,
        event_rate: float = 0.001,
        telemetry: bool = True,
        balance_kwh: float = 1000.0,
        connect_concurrency: int = 50,
        clear_retained: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.topics = Topics(prefix)
        self.interval = interval
        self.speed = speed
        if isinstance(profile, str | Path):
            profile = CsvProfile(profile)
        self.profile: LoadProfile = profile or SyntheticProfile(seed=seed)
        self.faults = faults if isinstance(faults, FleetFaults) else FleetFaults.parse(faults)
        self.rng = random.Random(seed)
        self.event_rate = event_rate
        self.telemetry_enabled = telemetry
        self.connect_concurrency = connect_concurrency
        self.clear_retained = clear_retained  # on stop, delete the retained statuses (tests on a shared broker)
        self.stats = FleetStats()
        self.terminals: dict[str, SimTerminal] = {}
        for i in range(n):
            tid = id_format.format(first + i)
            answers = tid not in self.faults.no_answer and self.rng.random() >= self.faults.no_answer_ratio
            self.terminals[tid] = SimTerminal(tid, i, answers=answers, balance_kwh=balance_kwh)
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._t0 = time.monotonic()
        self._sim0 = datetime.now(UTC)
        self._inflight = asyncio.Semaphore(400)

    @property
    def ids(self) -> list[str]:
        return list(self.terminals)

    def sim_time(self) -> datetime:
        from datetime import timedelta

        return self._sim0 + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    # ------------------------------------------------------------------ lifecycle

    def _connection(self, term: SimTerminal) -> MqttConnection:
        status_topic = self.topics.topic(term.id, Channel.STATUS)
        will = aiomqtt.Will(status_topic, encode(Status(state="offline")), qos=1, retain=True)

        async def online() -> None:
            await self._publish(term, Channel.STATUS, encode(term.status()), retain=True)

        conn = MqttConnection(
            # clean session: a command sent while the terminal was away must not run late (it is unknown-outcome
            # at the head-end already); the prefix keeps ids unique when several fleets share a broker
            self.host, self.port, client_id=f"sim-{self.topics.prefix}-{term.id}", clean_session=True, will=will,
            keepalive=30,
            handler=lambda m: self._on_command(term, m), on_connect=online, backoff=(0.2, 5.0), name=term.id,
            max_inflight=20,
        )
        conn.subscriptions[self.topics.filter(Channel.COMMAND, term.id)] = 1
        return conn

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - overall connect timeout
        sem = asyncio.Semaphore(self.connect_concurrency)

        async def connect(term: SimTerminal) -> None:
            async with sem:
                term.conn = self._connection(term)
                await term.conn.wait_connected(timeout)

        try:
            await asyncio.gather(*(connect(t) for t in self.terminals.values()))
        except HeadendError:
            await self.stop()
            raise
        if self.telemetry_enabled:
            self._tasks.append(asyncio.create_task(self._telemetry_loop(), name="fleet-telemetry"))
        if self.faults.flap > 0:
            self._tasks.append(asyncio.create_task(self._flap_loop(), name="fleet-flap"))
        LOGGER.info("MQTT fleet: %d terminals on %s:%s", len(self.terminals), self.host, self.port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for task in list(self._pending):
            task.cancel()

        async def close(term: SimTerminal) -> None:
            if term.conn is None:
                return
            status = b"" if self.clear_retained else encode(term.status("offline"))
            with contextlib.suppress(HeadendError, TimeoutError):  # an orderly shutdown says offline itself
                await asyncio.wait_for(
                    term.conn.publish(self.topics.topic(term.id, Channel.STATUS), status, retain=True), 2.0)
            with contextlib.suppress(TimeoutError, HeadendError):
                await term.conn.stop()

        await asyncio.gather(*(close(t) for t in self.terminals.values()), return_exceptions=True)

    async def __aenter__(self) -> MqttTerminalFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ publishing

    async def _publish(self, term: SimTerminal, channel: Channel, payload: bytes, *, retain: bool = False) -> bool:
        if term.conn is None:
            return False
        try:
            await term.conn.publish(self.topics.topic(term.id, channel), payload, qos=1, retain=retain)
            return True
        except HeadendError:
            self.stats.publish_errors += 1
            return False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def publish_telemetry(self, term: SimTerminal, *, ts: datetime | None = None) -> bool:
        """Advance one terminal and publish one telemetry message (possibly malformed by fault injection)."""
        now_m = time.monotonic()
        dt_h = (now_m - term.last_t) * self.speed / 3600 if term.last_t else 0.0
        term.last_t = now_m
        for ev in term.advance(self.profile, self.sim_time(), dt_h):
            await self.publish_event(term, ev)
        now = ts or datetime.now(UTC)
        if self.faults.malformed and self.rng.random() < self.faults.malformed:
            self.stats.malformed += 1
            bad = malformed_payload(self.rng.choice(MALFORMED_KINDS), now)
            return await self._publish(term, Channel.TELEMETRY, bad)
        self.stats.telemetry += 1
        payload = encode(Telemetry(ts=now, values=term.values(), seq=self.stats.telemetry))
        ok = await self._publish(term, Channel.TELEMETRY, payload)
        if self.event_rate and self.rng.random() < self.event_rate:
            await self.publish_event(term, Event(ts=now, event=self.rng.choice(
                ["cover_open", "power_down", "voltage_loss.a", "terminal_cover_open", "magnetic"]), severity=2))
        return ok

    async def publish_event(self, term: SimTerminal, event: Event) -> None:
        self.stats.events += 1
        await self._publish(term, Channel.EVENT, encode(event))

    async def _telemetry_loop(self) -> None:
        terms = list(self.terminals.values())
        n = len(terms)
        slot = self.interval / max(n, 1)
        t0 = time.monotonic()
        k = 0
        while True:
            term = terms[k % n]
            due = t0 + k * slot
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            k += 1
            if term.conn is None or not term.conn.connected:
                continue
            await self._inflight.acquire()

            async def one(t: SimTerminal = term) -> None:
                try:
                    await self.publish_telemetry(t)
                finally:
                    self._inflight.release()

            self._spawn(one())

    async def flood(self, count: int, *, concurrency: int = 200) -> float:
        """Publish ``count`` telemetry messages round-robin as fast as the broker takes them; returns seconds."""
        terms = [t for t in self.terminals.values() if t.conn is not None]
        sem = asyncio.Semaphore(concurrency)
        t0 = time.perf_counter()

        async def one(t: SimTerminal) -> None:
            try:
                await self.publish_telemetry(t)
            finally:
                sem.release()

        tasks = []
        for i in range(count):
            await sem.acquire()
            tasks.append(asyncio.create_task(one(terms[i % len(terms)])))
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ commands

    def _on_command(self, term: SimTerminal, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            return
        self.stats.commands += 1
        if not term.answers:
            self.stats.unanswered += 1
            return
        try:
            cmd = Command.model_validate_json(payload)
        except ValueError as exc:
            err = PayloadError("schema", str(exc).splitlines()[0])
            rid = None
            with contextlib.suppress(ValueError, AttributeError):
                rid = json.loads(payload).get("request_id")
            if isinstance(rid, str) and rid:
                with contextlib.suppress(ValueError):
                    resp = Response(request_id=rid[:64], status="error", ts=datetime.now(UTC), reason=str(err)[:256])
                    self._spawn(self._publish(term, Channel.RESPONSE, encode(resp)))
            return
        self._spawn(self._answer(term, cmd))

    async def _answer(self, term: SimTerminal, cmd: Command) -> None:
        resp, events = term.execute(cmd)
        if resp.duplicate:
            self.stats.duplicates += 1
        await self._publish(term, Channel.RESPONSE, encode(resp))
        if cmd.has_side_effects and not resp.duplicate:
            await self._publish(term, Channel.STATUS, encode(term.status()), retain=True)
        for ev in events:
            await self.publish_event(term, ev)

    # ------------------------------------------------------------------ going offline

    async def drop(self, terminal: str, offline_for: float | None = None) -> None:
        """Drop a terminal's connection without DISCONNECT (the broker publishes its Last Will);
        it reconnects after ``offline_for`` seconds (None = stays offline until :meth:`reconnect`)."""
        term = self.terminals[terminal]
        if term.conn is None:
            return
        self.stats.drops += 1
        conn = term.conn
        conn.drop()
        # let aiomqtt notice and clean up the dead socket itself before the task is cancelled
        for _ in range(100):
            if not conn.connected:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        await conn.stop()
        if offline_for is not None:
            self._spawn(self._later(offline_for, term))

    async def _later(self, delay: float, term: SimTerminal) -> None:
        await asyncio.sleep(delay)
        await self.reconnect(term.id)

    async def reconnect(self, terminal: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        term = self.terminals[terminal]
        if term.conn is not None:
            await term.conn.wait_connected(timeout)

    async def _flap_loop(self) -> None:
        ids = self.ids
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / self.faults.flap))
            await self.drop(self.rng.choice(ids), self.faults.offline_for)


def terminal_ids(n: int, first: int = 1, id_format: str = "LMT{:05d}") -> Sequence[str]:
    return [id_format.format(first + i) for i in range(n)]
