"""MQTT ingest: terminal telemetry, events, status and command responses into the meter data store.

subscribe -> validate (:mod:`protocols.mqtt.schema`) -> store:

- telemetry -> :class:`protocols.reading.Reading` (meter = terminal id, the shared quantity codes,
  ``source="mqtt"``) -> ``ingestor.submit(readings)``: the same path and tables as DL/T 645 reads;
- events -> ``meter_events`` (``source="mqtt"``, de-duplicated on (meter, code, ts));
- status -> ``mqtt_terminal_status`` + ``mqtt_status_log`` (online/offline; offline = Last Will);
- responses -> ``mqtt_command_responses`` (late answers resolve unknown outcomes);
- anything invalid -> ``mqtt_dead_letters`` (topic, payload bytes, reason, received_at), never dropped.

QoS 1, persistent session (stable client id ``<mqtt.client_id>-ingest``), reconnect with back-off.
A message is acknowledged to the broker only once it is durable (``ingestor.submit`` returned: in
PostgreSQL or the ingestor's disk spool; or its dead letter / event / status / response row
committed), in the order received. A kill -9 therefore loses nothing: the broker re-delivers what
was not acknowledged, and every write is idempotent, so a re-delivery does not count twice.
With ``[mqtt] shared_group`` every subscription is ``$share/<group>/...`` so several daemons split
the terminals' traffic (give each daemon its own ``client_id``).

The daemon runs it as one task::

    ingestor = await storeglue.open_ingestor(settings, dsn)
    task = asyncio.create_task(run_mqtt_ingest(settings, ingestor, dsn=dsn, stop=stop_event))

With ``[mqtt] host`` unset, an in-process amqtt broker on 127.0.0.1 is started for the task's
lifetime; its port is on :attr:`MqttIngestService.port` once :attr:`MqttIngestService.ready` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiomqtt

from headend.broker import InProcessBroker
from headend.settings import MqttSettings, Settings
from protocols import quantities
from protocols.mqtt.client import MqttConnection
from protocols.mqtt.schema import Channel, Event, PayloadError, Response, Status, Telemetry, Topics, decode
from protocols.reading import Quality, Reading

__all__ = ["IngestStats", "MqttIngestService", "ReadingSink", "run_mqtt_ingest"]

LOGGER = logging.getLogger(__name__)
SUBSCRIBED = (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS, Channel.RESPONSE)
_UNITS = {q.code: q.unit for q in quantities.QUANTITIES.values()}
_GOOD = Quality.GOOD


class ReadingSink(Protocol):
    async def submit(self, readings: Sequence[Reading]) -> Any: ...


@dataclass(slots=True)
class IngestStats:
    received: int = 0
    telemetry: int = 0
    readings: int = 0
    events: int = 0
    statuses: int = 0
    responses: int = 0
    dead_letters: int = 0
    batches: int = 0
    store_retries: int = 0
    acked: int = 0  # messages acknowledged to the broker (after they were durable)
    pending_peak: int = 0  # most messages received and not yet durable at once
    read_pauses: int = 0  # times the socket reading was paused because max_pending were waiting
    # end-to-end latency samples (s): stored (batch committed) minus the telemetry's ts
    latencies: list[float] = field(default_factory=list)
    keep_latencies: bool = False


_Raw = tuple[str, bytes, datetime]
_Ack = tuple[int, int, int]  # (connection number, mid, qos) of one received message


class MqttIngestService:
    def __init__(
        self,
        mqtt: MqttSettings,
        ingestor: ReadingSink,
        dsn: str,
        *,
        client_id: str | None = None,
        batch_size: int = 5000,
        batch_wait: float = 0.05,
        pipeline: int = 8,
        keep_latencies: bool = False,
        ack_window: int | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.ingestor = ingestor
        self.dsn = dsn
        self.topics = Topics(mqtt.topic_prefix)
        self.client_id = client_id or f"{mqtt.client_id}-ingest"
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.stats = IngestStats(keep_latencies=keep_latencies)
        self.ready = asyncio.Event()
        self.host: str = mqtt.host or "127.0.0.1"
        self.port: int = mqtt.port
        self.conn: MqttConnection | None = None
        self._buf: list[_Raw] = []
        self._buf_acks: list[_Ack] = []
        # the broker sends at most its max_inflight_messages unacknowledged QoS 1 messages (Mosquitto:
        # 20 by default; [mqtt] ack_window says how many): batches of a quarter of it start at once
        self.ack_window = max(1, ack_window if ack_window is not None else mqtt.ack_window)
        self._unacked = 0  # messages handed to batches, not yet acknowledged (or given up)
        # back-pressure: Mosquitto 2.0.11 sends a resumed session's backlog past its in-flight window, so
        # the socket reading stops at this many messages not yet durable and resumes at half of it
        self.max_pending = max(1, max_pending if max_pending is not None else mqtt.max_pending)
        self._seq = 0  # batch numbers, in the order received
        self._ack_next = 0  # the next batch whose messages may be acknowledged
        self._finished: dict[int, list[_Ack] | None] = {}  # done batches waiting for earlier ones
        self._wake = asyncio.Event()
        self._db: Any = None
        self._slots = asyncio.Semaphore(max(1, pipeline))
        self._writing: set[asyncio.Task[None]] = set()
        self._db_lock = asyncio.Lock()

    # ------------------------------------------------------------------ receive

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        self._buf.append((message.topic.value, raw, datetime.now(UTC)))
        conn = self.conn
        self._buf_acks.append((conn.connects if conn is not None else 0, message.mid, message.qos))
        st = self.stats
        st.received += 1
        pending = len(self._buf) + self._unacked
        if pending > st.pending_peak:
            st.pending_peak = pending
        if pending >= self.max_pending and conn is not None and not conn.reading_paused:
            conn.pause_reading()
            st.read_pauses += 1
            LOGGER.debug("MQTT ingest: %d messages not yet durable: reading paused", pending)
        # group commit: start at once when nothing is being written; else when a quarter of the broker's
        # window waits (so a few batches are in flight and their acks keep the broker sending), when the
        # broker will send no more before an ack, or when the batch is full; otherwise after batch_wait
        if self._unacked == 0 or len(self._buf) >= self._batch_target():
            self._wake.set()

    def _batch_target(self) -> int:
        room = self.ack_window - self._unacked
        if room <= 0:  # the broker's window is larger than ack_window: batch by size and time only
            return self.batch_size
        return max(1, min(self.batch_size, self.ack_window // 4, room))

    def _take(self) -> tuple[int, list[_Raw], list[_Ack]]:
        batch, self._buf = self._buf, []
        acks, self._buf_acks = self._buf_acks, []
        seq = self._seq
        self._seq += 1
        self._unacked += len(acks)
        return seq, batch, acks

    def _finish(self, seq: int, acks: list[_Ack], stored: bool) -> None:
        """Batch ``seq`` is durable (``stored``) or given up: acknowledge, in the order received, every
        batch up to the first one still being written. A batch given up is not acknowledged (the broker
        re-sends it after the next reconnect) but does not hold the later ones back."""
        self._finished[seq] = acks if stored else None
        conn = self.conn
        ready: list[_Ack] = []
        while self._ack_next in self._finished:
            done = self._finished.pop(self._ack_next)
            self._ack_next += 1
            if done is None:
                continue
            self._unacked -= len(done)
            ready.extend(done)
        if ready and conn is not None:
            # one write for every PUBACK that became due (batches finishing in order), per connection number
            start = 0
            for i in range(1, len(ready) + 1):
                if i == len(ready) or ready[i][0] != ready[start][0]:
                    self.stats.acked += conn.ack_many(ready[start][0], [(mid, qos) for _, mid, qos in ready[start:i]])
                    start = i
        if stored is False:
            self._unacked -= len(acks)
        if self._unacked == 0 and self._buf:  # what arrived meanwhile goes next (group commit)
            self._wake.set()
        if conn is not None and conn.reading_paused and len(self._buf) + self._unacked <= self.max_pending // 2:
            conn.resume_reading()

    async def run(self, stop: asyncio.Event | None = None) -> IngestStats:
        stop = stop or asyncio.Event()
        broker: InProcessBroker | None = None
        if not self.mqtt.host:
            broker = InProcessBroker()
            await broker.start()
            self.host, self.port = broker.host, broker.port
        group = self.mqtt.shared_group
        if group and broker is not None:  # amqtt delivers nothing on $share filters; one daemon owns it anyway
            LOGGER.warning("MQTT ingest: shared_group %r ignored with the in-process broker", group)
            group = None
        self.conn = MqttConnection(
            self.host, self.port, client_id=self.client_id, clean_session=False,
            username=self.mqtt.username, password=os.environ.get("HEADEND_MQTT_PASSWORD") or None,
            handler=self._on_message, name="mqtt-ingest", max_inflight=1000, manual_ack=True,
            keepalive=self.mqtt.keepalive,
        )
        for channel in SUBSCRIBED:
            self.conn.subscriptions[self.topics.filter(channel, shared_group=group)] = 1
        try:
            self.conn.start()
            self.ready.set()
            LOGGER.info("MQTT ingest: %s:%s prefix %r%s", self.host, self.port, self.mqtt.topic_prefix,
                        f" shared group {group!r}" if group else "")
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.batch_wait)
                self._wake.clear()
                if self._buf:
                    # parse the next batch while earlier ones are being written (bounded pipeline)
                    await self._slots.acquire()
                    seq, batch, acks = self._take()
                    task = asyncio.create_task(self._store_in_slot(seq, batch, acks, stop))
                    self._writing.add(task)
                    task.add_done_callback(self._writing.discard)
            if self._writing:
                await asyncio.gather(*self._writing, return_exceptions=True)
            if self._buf:  # what arrived before the stop is still stored
                seq, batch, acks = self._take()
                self._finish(seq, acks, await self._store(batch, stop, final=True))
        finally:
            # a write still in flight (cancellation) must end before its connection is closed: closing a
            # psycopg connection under a waiting query leaves a stale fd registration in the event loop
            for task in list(self._writing):
                task.cancel()
            if self._writing:
                await asyncio.gather(*self._writing, return_exceptions=True)
            await self.conn.stop()
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await self._db.close()
            if broker is not None:
                await broker.stop()
        return self.stats

    # ------------------------------------------------------------------ store

    async def _store_in_slot(self, seq: int, batch: list[_Raw], acks: list[_Ack], stop: asyncio.Event) -> None:
        stored = False
        try:
            stored = await self._store(batch, stop)
        except Exception:  # not durable: left unacknowledged, so the broker re-sends it after a reconnect
            LOGGER.exception("MQTT ingest: batch of %d message(s) not stored", len(batch))
        finally:
            self._slots.release()
            self._finish(seq, acks, stored)

    async def _connection(self) -> Any:
        import psycopg

        if self._db is None or self._db.closed:
            self._db = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)
        return self._db

    async def _store(self, batch: list[_Raw], stop: asyncio.Event, *, final: bool = False) -> bool:
        """Write one batch; True once it is durable, False when given up (stopping, store down)."""
        import psycopg

        parsed = self._parse(batch)
        delay = 0.2
        logged = False
        while True:
            try:
                await self._write(*parsed)
                if logged:
                    LOGGER.warning("MQTT ingest: store reachable again")
                break
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                # the store is down: keep the batch in memory and retry (the broker keeps the rest queued)
                self.stats.store_retries += 1
                if not logged:
                    LOGGER.warning("MQTT ingest: store unavailable (%s); retrying", exc)
                    logged = True
                with contextlib.suppress(Exception):
                    if self._db is not None:
                        await self._db.close()
                self._db = None
                if stop.is_set() and (final or self.stats.store_retries > 3):  # do not block a shutdown
                    LOGGER.error("MQTT ingest: stopping with %d unstored messages (store unavailable;"
                                 " not acknowledged, the broker keeps them)", len(batch))
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:  # data the store refuses: keep every message as a dead letter
                LOGGER.exception("MQTT ingest: batch refused by the store")
                dead = [(topic, raw, "store_error", f"{type(exc).__name__}: {exc}"[:500], at)
                        for topic, raw, at in batch]
                await self._write([], [], [], [], dead, [])
                break
        self.stats.batches += 1
        return True

    def _parse(self, batch: list[_Raw]) -> tuple[list[Reading], list[tuple[Any, ...]], list[tuple[Any, ...]],
                                                 list[tuple[Any, ...]], list[tuple[Any, ...]], list[datetime]]:
        readings: list[Reading] = []
        events: list[tuple[Any, ...]] = []
        statuses: list[tuple[Any, ...]] = []
        responses: list[tuple[Any, ...]] = []
        dead: list[tuple[Any, ...]] = []
        tss: list[datetime] = []
        for topic, raw, at in batch:
            try:
                terminal, channel = self.topics.parse(topic)
                if not raw and channel is Channel.STATUS:  # a retained status being deleted: not a message
                    continue
                if channel not in SUBSCRIBED:
                    raise PayloadError("topic", f"{channel.value} messages are not for the head-end")
                msg = decode(channel, raw)
            except PayloadError as exc:
                dead.append((topic, raw, exc.reason, exc.detail[:1000], at))
                continue
            if isinstance(msg, Telemetry):
                ts = msg.ts
                for code, value in msg.values.items():
                    readings.append(Reading(terminal, code, ts, value, _UNITS[code], _GOOD, "mqtt"))
                tss.append(msg.ts)
            elif isinstance(msg, Event):
                events.append((terminal, msg.event, msg.ts, msg.ended, msg.severity, msg.model_dump_json(
                    include={"detail"})))
            elif isinstance(msg, Status):
                statuses.append((terminal, msg.state, msg.model_dump_json(exclude_none=True), at))
            elif isinstance(msg, Response):
                responses.append((msg.request_id, terminal, msg.status, msg.reason, msg.model_dump_json(
                    include={"values"}), msg.ts, 1 if msg.duplicate else 0))
        return readings, events, statuses, responses, dead, tss

    async def _write(
        self,
        readings: list[Reading],
        events: list[tuple[Any, ...]],
        statuses: list[tuple[Any, ...]],
        responses: list[tuple[Any, ...]],
        dead: list[tuple[Any, ...]],
        tss: list[datetime],
    ) -> None:
        if dead or events or statuses or responses:
            async with self._db_lock:  # batches are written concurrently; one transaction at a time here
                await self._write_rows(dead, events, statuses, responses)
        if readings:
            await self.ingestor.submit(readings)
        stored = datetime.now(UTC)
        st = self.stats
        st.dead_letters += len(dead)
        st.events += len(events)
        st.statuses += len(statuses)
        st.responses += len(responses)
        st.readings += len(readings)
        st.telemetry += len(tss)
        if st.keep_latencies:
            st.latencies.extend((stored - ts).total_seconds() for ts in tss)
        if dead:
            LOGGER.info("MQTT ingest: %d invalid message(s) stored as dead letters (first: %s, %s)",
                        len(dead), dead[0][0], dead[0][2])

    async def _write_rows(
        self,
        dead: list[tuple[Any, ...]],
        events: list[tuple[Any, ...]],
        statuses: list[tuple[Any, ...]],
        responses: list[tuple[Any, ...]],
    ) -> None:
        db = await self._connection()
        async with db.transaction(), db.cursor() as cur:
            if dead:
                await cur.executemany(
                    # a re-delivered message (not acknowledged before a crash) is the same dead letter
                    "INSERT INTO mqtt_dead_letters (topic, payload, reason, detail, received_at)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (topic, sha256(payload)) DO UPDATE SET last_received_at = EXCLUDED.received_at",
                    dead)
            if events:
                await cur.executemany(
                    "INSERT INTO meter_events (meter, code, ts, ended_at, severity, source, detail)"
                    " VALUES (%s, %s, %s, %s, %s, 'mqtt', (%s::jsonb)->'detail')"
                    " ON CONFLICT (meter, code, ts) DO NOTHING", events)
            if statuses:
                # one statement per status, in arrival order (the last one wins), sent by executemany in one
                # pipeline: a connecting ingest receives every terminal's retained status at once, and a
                # round trip per status held the broker's in-flight window (full of unacknowledged statuses)
                # shut for half a second, delaying the telemetry queued behind it. The log row is inserted
                # from the snapshot before the upsert, as two statements in that order would see it.
                await cur.executemany(
                    """WITH logged AS (
                         INSERT INTO mqtt_status_log (terminal, state, at)
                         SELECT %(t)s, %(s)s, %(at)s
                         WHERE NOT EXISTS (SELECT 1 FROM mqtt_terminal_status
                                           WHERE terminal = %(t)s AND state = %(s)s))
                       INSERT INTO mqtt_terminal_status (terminal, state, since, updated_at, status)
                       VALUES (%(t)s, %(s)s, %(at)s, %(at)s, %(doc)s::jsonb)
                       ON CONFLICT (terminal) DO UPDATE SET
                         since = CASE WHEN mqtt_terminal_status.state = EXCLUDED.state
                                      THEN mqtt_terminal_status.since ELSE EXCLUDED.since END,
                         state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, status = EXCLUDED.status""",
                    [{"t": terminal, "s": state, "at": at, "doc": doc} for terminal, state, doc, at in statuses])
            if responses:
                # a duplicate answer (the terminal answering a re-sent request id from its record) counts once
                # per send time: a re-delivery of the same message (not acknowledged before a crash) carries
                # the same ts and is not counted again (migration 0022)
                await cur.executemany(
                    """INSERT INTO mqtt_command_responses
                           (request_id, terminal, status, reason, "values", responded_at, duplicates, duplicate_ts)
                       VALUES (%(id)s, %(t)s, %(s)s, %(r)s, (%(v)s::jsonb)->'values', %(ts)s, %(dup)s,
                               CASE WHEN %(dup)s > 0 THEN ARRAY[%(ts)s::timestamptz] ELSE '{}' END)
                       ON CONFLICT (request_id) DO UPDATE SET
                         duplicates = mqtt_command_responses.duplicates + 1,
                         duplicate_ts = mqtt_command_responses.duplicate_ts || EXCLUDED.responded_at
                       WHERE EXCLUDED.duplicates > 0
                         AND EXCLUDED.responded_at <> ALL (mqtt_command_responses.duplicate_ts)""",
                    [{"id": r[0], "t": r[1], "s": r[2], "r": r[3], "v": r[4], "ts": r[5], "dup": r[6]}
                     for r in responses])


async def run_mqtt_ingest(
    settings: Settings,
    ingestor: ReadingSink,
    *,
    dsn: str | None = None,
    stop: asyncio.Event | None = None,
    service: MqttIngestService | None = None,
    **options: Any,
) -> IngestStats:
    """Run MQTT ingest until ``stop`` is set (or the task is cancelled). Returns the counters.

    ``dsn`` defaults to the ingestor's ``dsn`` attribute, else the configured / embedded store.
    Pass ``service`` (a :class:`MqttIngestService`) to watch its ``ready``/``port``/``stats``.
    """
    if service is None:
        if dsn is None:
            dsn = getattr(ingestor, "dsn", None)
        if dsn is None:
            from headend.storeglue import resolve_dsn

            dsn = resolve_dsn(settings)
        service = MqttIngestService(settings.mqtt, ingestor, dsn, **options)
    started = time.monotonic()
    try:
        return await service.run(stop)
    finally:
        LOGGER.info("MQTT ingest stopped after %.0f s: %s", time.monotonic() - started, service.stats)


async def run(daemon: Any) -> None:
    """Daemon plug-in: ``[daemon] plugins = ["headend.mqtt_ingest"]`` runs MQTT ingest inside ``headend run``,
    into the daemon's own ingestor and database, until the daemon stops. With the ``headend.loadmon``
    plug-in too, telemetry passes the load monitor (limit crossings -> load_events)."""
    if daemon.dsn is None:
        LOGGER.error("MQTT ingest plug-in: the daemon has no database; not started")
        return
    ingestor = getattr(daemon.sink, "ingestor", None)
    if ingestor is None:
        LOGGER.error("MQTT ingest plug-in: the daemon has no ingestor; not started")
        return
    if "headend.loadmon" in daemon.settings.daemon.plugins:  # MQTT telemetry passes the load monitor too
        from headend.loadmon import MonitoredSink

        for _ in range(50):  # the plug-ins start together: give loadmon a moment to set daemon.load_monitor
            if getattr(daemon, "load_monitor", None) is not None:
                break
            await asyncio.sleep(0.02)
        ingestor = MonitoredSink.for_daemon(daemon, ingestor)
    name = getattr(daemon, "name", "") or "daemon"
    service = MqttIngestService(daemon.settings.mqtt, ingestor, daemon.dsn,
                                client_id=f"{daemon.settings.mqtt.client_id}-{name}-ingest")
    daemon.mqtt_ingest = service  # for /metrics or the demo (host/port of an in-process broker)
    inner = asyncio.create_task(run_mqtt_ingest(daemon.settings, ingestor, stop=daemon.stopping, service=service))
    try:
        await asyncio.shield(inner)
    except asyncio.CancelledError:
        # the daemon cancels plug-ins when it stops: finish the batches in flight and close the database
        # connection cleanly instead of abandoning a query half-way
        try:
            await asyncio.wait_for(asyncio.shield(inner), 10)
        except (TimeoutError, asyncio.CancelledError):
            inner.cancel()
        raise
