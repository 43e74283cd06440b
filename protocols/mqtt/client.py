"""MQTT over aiomqtt (never asyncio-mqtt): a self-healing connection and the terminal client.

:class:`MqttConnection` keeps one aiomqtt connection alive: QoS 1, persistent session
(``clean_session=False`` with a stable client id), reconnect with exponential back-off and
jitter, and every subscription re-made after each (re)connect, so subscriptions survive a
broker restart even when the broker lost its session store. Messages go to one synchronous
handler (cheap: it queues or resolves a future).

:class:`MqttClient` is the head-end side of the terminal schema (:mod:`protocols.mqtt.schema`):
``read`` asks the terminal for current values with a ``read`` command (falling back to fresh
telemetry when it does not answer), load and relay commands carry a request id, wait for the
response, then for the status read-back. A side-effect command without a response in time
raises :class:`UnknownOutcomeError`; the client never re-sends it under a new request id.
Calling again with the *same* request id is safe: the terminal answers from its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import socket
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import aiomqtt

from protocols import quantities
from protocols.arbitration import Priority
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
    NoResponseError,
    TransportError,
    UnknownOutcomeError,
)
from protocols.mqtt.schema import (
    Channel,
    Command,
    PayloadError,
    Response,
    Status,
    Telemetry,
    Topics,
    decode,
    encode,
)
from protocols.reading import Quality, Reading

__all__ = ["MqttClient", "MqttConnection", "MqttUrl"]

LOGGER = logging.getLogger(__name__)
TRACE_LOG = logging.getLogger("headend.trace")
TRACE = 5

Handler = Callable[[aiomqtt.Message], None]
_PUBACK = struct.Struct("!BBH")  # fixed header (type 4), remaining length 2, packet id
_PUBACK_TYPE = 0x40


def _paho(client: aiomqtt.Client) -> Any:
    """The paho client under an aiomqtt client.

    aiomqtt 2.x exposes neither manual acknowledgement (``manual_ack_set`` / ``ack``), nor an abrupt
    close of the socket, nor a synchronous message callback; its underlying ``paho.mqtt.client.Client``
    does. This is the ONE place that reaches under aiomqtt (and :meth:`MqttConnection.ack_many` the one
    that queues raw packets on paho, ``_run`` the one that wraps its socket, ``_socket_opened`` /
    ``_on_readable`` the ones that replace aiomqtt's read callback and use its ``_loop`` and
    ``_disconnected``, paho-mqtt 2.x); aiomqtt is
    pinned ``<3`` in pyproject.toml so it cannot change under us (re-check all three when lifting the pin).
    """
    return client._client


class _BufferedSocket:
    """The broker socket with a read buffer under paho.

    paho reads each packet with three or four ``recv`` calls (type byte, length bytes, body): one system
    call per few bytes, the largest single cost of receiving at 10k messages/s. This serves them from one
    large ``recv`` per readable event. ``pending()`` is what aiomqtt's read callback checks (its provision
    for TLS sockets) to call ``loop_read`` again while bytes are buffered, since the kernel will not report
    them readable. Once the buffer is used up, the rest of that callback gets ``BlockingIOError`` (paho
    keeps a partial packet for the next call) instead of another read: the callback then returns to the
    event loop, which runs the batch writer and acknowledgements between reads (the socket is
    level-triggered, so it is reported readable again at once when more is there).
    Everything else goes to the socket.
    """

    __slots__ = ("_buf", "_may_read", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self._may_read = True

    def recv(self, bufsize: int) -> bytes:
        pos = self._pos
        if pos >= len(self._buf):
            if not self._may_read:
                raise BlockingIOError
            self._may_read = False
            data: bytes = self._sock.recv(max(bufsize, 65536))  # BlockingIOError / b"" (EOF) as from the socket
            if len(data) <= bufsize:
                return data
            self._buf, pos = data, 0
        end = pos + bufsize
        self._pos = end
        return self._buf[pos:end]

    def pending(self) -> int:
        if self._pos < len(self._buf):
            return len(self._buf) - self._pos
        self._may_read = True  # the read callback ends here: the next one reads the socket again
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _buffered_socket(create: Callable[[], Any]) -> _BufferedSocket:
    return _BufferedSocket(create())


class MqttConnection:
    """One broker connection that comes back by itself.

    ``start()`` returns at once; ``wait_connected(timeout)`` waits for the (next) CONNACK.
    Incoming messages go to ``handler`` (synchronous; keep it cheap). ``on_connect`` runs
    after every CONNACK and re-subscription (e.g. to publish a retained online status).

    With ``manual_ack=True`` a QoS 1 message is not acknowledged when it is received: the owner
    calls :meth:`ack` once it is durable, so a crash before that leaves it queued at the broker
    (persistent session) and it is delivered again. ``connects`` at receipt identifies the connection
    a message came on; an ack for an older connection is not sent (the broker re-sends the message).
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str,
        clean_session: bool = False,
        username: str | None = None,
        password: str | None = None,
        will: aiomqtt.Will | None = None,
        keepalive: int = 30,
        handler: Handler | None = None,
        on_connect: Callable[[], Any] | None = None,
        backoff: tuple[float, float] = (0.1, 10.0),
        max_inflight: int = 200,
        manual_ack: bool = False,
        name: str = "",
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.clean_session = clean_session
        self._username, self._password = username, password
        self.will = will
        self.keepalive = keepalive
        self.handler = handler
        self.on_connect = on_connect
        self.backoff = backoff
        self.max_inflight = max_inflight
        self.manual_ack = manual_ack
        self.name = name or client_id
        self.subscriptions: dict[str, int] = {}
        self.connects = 0  # connection attempts so far: the number of the current (or last) connection
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._down_logged = False
        self._paused = False  # pause_reading(): the broker socket is not read (TCP flow control holds the broker)
        self._sock: _BufferedSocket | None = None

    def __repr__(self) -> str:
        return f"MqttConnection({self.name!r}, {self.host}:{self.port}, client_id={self.client_id!r})"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mqtt:{self.name}")

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109 - connect timeout
        self.start()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise TransportError(f"MQTT broker {self.host}:{self.port} not reachable within {timeout:g} s") from None

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._connected.clear()

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Remember the filter (re-made after every reconnect) and subscribe now when connected."""
        if self.subscriptions.get(topic_filter) == qos:
            return
        self.subscriptions[topic_filter] = qos
        client = self._client
        if client is not None and self.connected:
            try:
                await client.subscribe(topic_filter, qos=qos)
            except aiomqtt.MqttError as exc:  # the reconnect loop re-subscribes
                LOGGER.debug("%s: subscribe %s deferred: %s", self.name, topic_filter, exc)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and (QoS 1) wait for the PUBACK.

        Raises :class:`TransportError` when not connected (nothing left this process) and
        :class:`NoResponseError` when the connection failed after the PUBLISH may have left
        (the broker may or may not have it: callers with side effects treat it as unknown).
        """
        client = self._client
        if client is None or not self.connected:
            raise TransportError(f"MQTT {self.name}: not connected to {self.host}:{self.port}")
        TRACE_LOG.log(TRACE, "%s %s %s %s", self.name, "TX", topic, payload[:512])
        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttCodeError as exc:
            if exc.rc in (4, 7):  # MQTT_ERR_NO_CONN / CONN_LOST: the publish may have left
                raise NoResponseError(f"MQTT {self.name}: connection lost during publish: {exc}") from exc
            raise TransportError(f"MQTT {self.name}: publish failed: {exc}") from exc
        except aiomqtt.MqttError as exc:
            raise NoResponseError(f"MQTT {self.name}: publish failed: {exc}") from exc

    def ack(self, connection: int, mid: int, qos: int) -> bool:
        """Acknowledge message ``mid`` received on connection number ``connection`` (``connects`` then).

        Only with ``manual_ack``; call in the order the messages were received. Returns False when
        that connection is gone (not sent: the broker delivers the message again on the next one).
        """
        return self.ack_many(connection, ((mid, qos),)) == 1

    def ack_many(self, connection: int, messages: Sequence[tuple[int, int]] | Iterable[tuple[int, int]]) -> int:
        """Acknowledge ``(mid, qos)`` messages of connection number ``connection``, in the order given.

        The PUBACKs go out as one write (one syscall and TCP segment instead of one per message), so the
        broker refills its in-flight window in bursts. Returns how many were acknowledged: 0 when that
        connection is gone (the broker re-sends them on the next one).
        """
        client = self._client
        if client is None or connection != self.connects:
            return 0
        paho = _paho(client)
        if not paho.is_connected():
            return 0
        items = list(messages)
        if not self.manual_ack:
            return len(items)
        pubacks = bytearray()
        for mid, qos in items:
            if qos == 1:
                pubacks += _PUBACK.pack(_PUBACK_TYPE, 2, mid)
            elif qos == 2:  # never with QoS 1 subscriptions; paho's own exchange for completeness
                paho.ack(mid, qos)
        if pubacks:
            # paho queues its packets on _out_packet and writes each with its own send(); one packet holding
            # all the PUBACKs (the same bytes paho would send) is written by the same loop_write, in order
            paho._packet_queue(_PUBACK_TYPE, bytes(pubacks), 0, 1)
        return len(items)

    def drop(self) -> None:
        """Close the socket without DISCONNECT (the broker then publishes the Last Will). For simulators."""
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                sock: Any = _paho(client).socket()
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def pause_reading(self) -> None:
        """Stop reading the broker socket until :meth:`resume_reading` (back-pressure).

        What the kernel buffers stays unread, so TCP flow control stops the broker sending: the backlog
        waits in the broker's queue instead of this process's memory. Packets already read into the
        buffer are not dispatched while paused. Acknowledgements still go out. A pause longer than the
        keepalive can end the connection (no PINGRESP read); the broker then re-sends what was not
        acknowledged after the reconnect.
        """
        if self._paused:
            return
        self._paused = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(Exception):  # closed meanwhile: the next connection starts paused
                asyncio.get_running_loop().remove_reader(sock.fileno())

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        sock, client = self._sock, self._client
        if sock is not None and client is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):
                loop.add_reader(sock.fileno(), self._on_readable, client, sock)
                # packets left in the buffer: the kernel will not report them readable
                loop.call_soon(self._on_readable, client, sock)

    def _on_readable(self, client: aiomqtt.Client, sock: _BufferedSocket) -> None:
        """Read callback in place of aiomqtt's (same loop: read while buffered bytes remain, a failure ends
        the connection), which also stops when :meth:`pause_reading` was called by a handler."""
        if self._paused or sock is not self._sock:
            return
        paho = _paho(client)
        try:
            while True:
                paho.loop_read()
                if not self._paused and sock.pending() > 0:
                    continue
                break
        except Exception as exc:  # as aiomqtt does: a broken pipe and the like end the connection
            disconnected = client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    def _socket_opened(self, client: aiomqtt.Client, opened: Callable[..., None],
                       paho: Any, userdata: Any, sock: Any) -> None:
        """paho's on_socket_open (called from the connecting thread): aiomqtt registers its read callback;
        ours replaces it right after (same thread-safe queue, so in that order)."""
        opened(paho, userdata, sock)
        client._loop.call_soon_threadsafe(self._use_socket, client, sock)

    def _use_socket(self, client: aiomqtt.Client, sock: Any) -> None:
        if self._client is not client or not isinstance(sock, _BufferedSocket):
            return
        self._sock = sock
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            if self._paused:
                loop.remove_reader(sock.fileno())
            else:
                loop.add_reader(sock.fileno(), self._on_readable, client, sock)

    def _dispatch(self, _client: Any, _userdata: Any, raw: Any) -> None:
        """paho's on_message: straight to the handler, inside the read callback (no per-message queue and
        task as with aiomqtt's ``messages`` iterator: a third of the receive path's CPU at 10k msg/s)."""
        message = aiomqtt.Message(raw.topic, raw.payload, raw.qos, raw.retain, raw.mid, None)
        if TRACE_LOG.isEnabledFor(TRACE):
            TRACE_LOG.log(TRACE, "%s %s %s %s", self.name, "RX", message.topic.value,
                          bytes(message.payload)[:512] if isinstance(message.payload, bytes | bytearray)
                          else message.payload)
        handler = self.handler
        if handler is not None:
            try:
                handler(message)
            except Exception:  # a handler bug must not kill the connection
                LOGGER.exception("MQTT %s: handler failed on %s", self.name, message.topic.value)

    async def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stopping:
            try:
                client = aiomqtt.Client(
                    self.host, self.port, identifier=self.client_id, clean_session=self.clean_session,
                    username=self._username, password=self._password, will=self.will, keepalive=self.keepalive,
                    max_inflight_messages=self.max_inflight, timeout=10,
                )
                paho = _paho(client)
                if self.manual_ack:  # before CONNECT: nothing may be acknowledged automatically
                    paho.manual_ack_set(True)
                paho.on_message = self._dispatch
                paho._create_socket = functools.partial(_buffered_socket, paho._create_socket)
                paho.on_socket_open = functools.partial(self._socket_opened, client, paho.on_socket_open)
                # a persistent session's queued messages follow the CONNACK at once, before the subscriptions
                # are re-made: they carry this connection's number, and ack_many may answer them from then on
                self.connects += 1
                self._client = client
                async with client:
                    for topic_filter, qos in list(self.subscriptions.items()):
                        await client.subscribe(topic_filter, qos=qos)
                    self._connected.set()
                    if self._down_logged:
                        LOGGER.warning("MQTT %s: reconnected to %s:%s", self.name, self.host, self.port)
                        self._down_logged = False
                    else:
                        LOGGER.info("MQTT %s: connected to %s:%s", self.name, self.host, self.port)
                    delay = self.backoff[0]
                    if self.on_connect is not None:
                        result = self.on_connect()
                        if asyncio.iscoroutine(result):
                            await result
                    # messages go to _dispatch; the iterator only ends (MqttError) when the connection is lost
                    async for message in client.messages:
                        self._dispatch(None, None, message)
            except aiomqtt.MqttError as exc:
                if not self._down_logged and not self._stopping:
                    LOGGER.warning("MQTT %s: connection to %s:%s lost or refused (%s); retrying with back-off",
                                   self.name, self.host, self.port, exc)
                    self._down_logged = True
            finally:
                self._client = None
                self._sock = None
                self._connected.clear()
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff[1])


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """``mqtt://[user@]host:port?prefix=ami&client_id=...&timeout=5&group=...``."""

    host: str
    port: int
    username: str | None
    options: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ConfigError(f"bad MQTT URL {url!r}: use mqtt://host:port")
        try:
            port = parts.port or 1883
        except ValueError:
            raise ConfigError(f"bad port in {url!r}") from None
        return cls(parts.hostname, port, parts.username, dict(parse_qsl(parts.query)))


# Expected status after each load command, as (status field, expected value or None = the request value).
_READBACK: dict[LoadCommand, tuple[str, object]] = {
    LoadCommand.SET_POWER_LIMIT: ("limit_kw", None),
    LoadCommand.TRIP_CIRCUIT: ("relay", "open"),
    LoadCommand.RESTORE_CIRCUIT: ("relay", "closed"),
    LoadCommand.KEEP_POWER_ON: ("keep_power", True),
    LoadCommand.KEEP_POWER_OFF: ("keep_power", False),
    LoadCommand.PURCHASE_ENERGY: ("balance_kwh", "response"),
}

_RELAY_TO_LOAD: dict[RelayCommand, LoadCommand] = {
    RelayCommand.TRIP: LoadCommand.TRIP_CIRCUIT,
    RelayCommand.CLOSE_DIRECT: LoadCommand.RESTORE_CIRCUIT,
    RelayCommand.CLOSE_PERMIT: LoadCommand.RESTORE_CIRCUIT,
    RelayCommand.KEEP_POWER_ON: LoadCommand.KEEP_POWER_ON,
    RelayCommand.KEEP_POWER_OFF: LoadCommand.KEEP_POWER_OFF,
}

class MqttClient(MeterClient, LoadControl, RelayControl):
    """Head-end client of MQTT load-management terminals (device = terminal id).

    Options (``from_url`` query or keywords): ``prefix`` (topic prefix, default ``ami``),
    ``timeout`` (response timeout, s), ``client_id`` (stable id -> persistent session; default:
    a random id with a clean session, for one-off CLI use), ``telemetry_max_age`` (s; a read
    without a response may use telemetry this fresh, 0 = never), ``readback_timeout`` (s).
    """

    protocol: ClassVar[str] = "mqtt"

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        prefix: str = "ami",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        readback_timeout: float | None = None,
        telemetry_max_age: float = 120.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.topics = Topics(prefix)
        if password is None:
            password = os.environ.get("HEADEND_MQTT_PASSWORD") or None  # never from a URL, never logged
        stable = client_id is not None
        cid = client_id or f"ami-headend-cmd-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.conn = MqttConnection(
            host, port, client_id=cid, clean_session=not stable, username=username, password=password,
            handler=self._on_message, name=f"mqtt://{host}:{port}",
        )
        self.timeout = timeout
        self.readback_timeout = readback_timeout if readback_timeout is not None else timeout
        self.telemetry_max_age = telemetry_max_age
        self.connect_timeout = connect_timeout
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._status: dict[str, Status] = {}
        self._telemetry: dict[str, dict[str, tuple[datetime, float]]] = {}
        self._changed = asyncio.Condition()
        self._done: OrderedDict[str, ControlResult] = OrderedDict()
        self.unknown: dict[str, LoadControlRequest] = {}  # request ids whose outcome is unknown
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MqttClient:
        u = MqttUrl.parse(url)
        merged: dict[str, Any] = {**u.options, **options}
        for ignored in ("tz", "breaker", "retries", "map", "maps", "breaker_policy"):
            merged.pop(ignored, None)
        kwargs: dict[str, Any] = {}
        try:
            for key, conv in (("timeout", float), ("readback_timeout", float), ("telemetry_max_age", float),
                              ("connect_timeout", float)):
                if key in merged:
                    kwargs[key] = conv(merged.pop(key))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad option in {url!r}: {exc}") from None
        if "password" in u.options:  # URLs end up in logs and --json output
            raise ConfigError("no password in an MQTT URL: set HEADEND_MQTT_PASSWORD")
        for key in ("prefix", "client_id", "password", "username"):
            if key in merged:
                kwargs[key] = str(merged.pop(key))
        if merged:
            raise ConfigError(f"unknown MQTT option(s): {', '.join(sorted(merged))}")
        kwargs.setdefault("username", u.username)
        return cls(u.host, u.port, **kwargs)

    async def __aenter__(self) -> MqttClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        await self.conn.wait_connected(self.connect_timeout)

    async def aclose(self) -> None:
        await self.conn.stop()
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()

    # ------------------------------------------------------------------ incoming

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            terminal, channel = self.topics.parse(message.topic.value)
            msg = decode(channel, payload)
        except PayloadError as exc:
            LOGGER.info("ignoring invalid message on %s: %s", message.topic.value, exc)
            return
        if isinstance(msg, Response):
            fut = self._pending.get(msg.request_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, Status):
            self._status[terminal] = msg
            asyncio.get_running_loop().create_task(self._notify())
        elif isinstance(msg, Telemetry):
            cache = self._telemetry.setdefault(terminal, {})
            for code, value in msg.values.items():
                cache[code] = (msg.ts, value)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _watch(self, device: str) -> None:
        self.topics.topic(device, Channel.COMMAND)  # validates the id
        await self.conn.wait_connected(self.connect_timeout)
        for channel in (Channel.RESPONSE, Channel.STATUS, Channel.TELEMETRY):
            await self.conn.subscribe(self.topics.filter(channel, device), 1)

    def status(self, device: str) -> Status | None:
        """The last status seen from a terminal this client watches."""
        return self._status.get(device)

    # ------------------------------------------------------------------ commands

    async def command(
        self, device: str, command: Command, *, timeout: float | None = None  # noqa: ASYNC109
    ) -> Response:
        """Publish one command and wait for its response.

        Raises :class:`NoResponseError` when no response arrives in time (for a side-effect
        command the caller turns that into an unknown outcome) and :class:`TransportError`
        when nothing could be sent.
        """
        await self._watch(device)
        loop = asyncio.get_running_loop()
        fut = self._pending.get(command.request_id)
        if fut is None or fut.done():
            fut = loop.create_future()
            self._pending[command.request_id] = fut
        try:
            await self.conn.publish(self.topics.topic(device, Channel.COMMAND), encode(command), qos=1)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout if timeout is not None else self.timeout)
            except TimeoutError:
                raise NoResponseError(
                    f"no response from terminal {device} to {command.command} {command.request_id} "
                    f"within {timeout if timeout is not None else self.timeout:g} s"
                ) from None
        finally:
            if self._pending.get(command.request_id) is fut:
                del self._pending[command.request_id]

    async def read(
        self, device: str, quantities_: Sequence[str], *, priority: Priority = Priority.ON_DEMAND
    ) -> list[Reading]:
        """Current values by a ``read`` command; without a response, telemetry younger than
        ``telemetry_max_age`` (quality unchanged, its own timestamp); else :class:`NoResponseError`."""
        codes = list(quantities_)
        for code in codes:
            quantities.get(code)
        cmd = Command(request_id=uuid.uuid4().hex, command="read", issued_at=datetime.now(UTC), quantities=codes)
        try:
            resp = await self.command(device, cmd)
        except NoResponseError:
            cached = self._fresh_telemetry(device, codes)
            if cached is None:
                raise
            LOGGER.info("terminal %s did not answer a read; using telemetry", device)
            return cached
        if resp.status != "accepted":
            raise DeviceError(f"terminal {device} refused the read: {resp.reason}", code=0,
                              flags=(resp.status,), device=device)
        out = []
        for code in codes:
            q = quantities.get(code)
            if code in resp.values:
                out.append(Reading(device, code, resp.ts, resp.values[code], q.unit, Quality.GOOD, "mqtt"))
            else:
                out.append(Reading(device, code, resp.ts, math.nan, q.unit, Quality.NOT_SUPPORTED, "mqtt"))
        return out

    def _fresh_telemetry(self, device: str, codes: Sequence[str]) -> list[Reading] | None:
        if self.telemetry_max_age <= 0:
            return None
        cache = self._telemetry.get(device, {})
        limit = datetime.now(UTC) - timedelta(seconds=self.telemetry_max_age)
        out = []
        for code in codes:
            hit = cache.get(code)
            if hit is None or hit[0] < limit:
                return None
            out.append(Reading(device, code, hit[0], hit[1], quantities.get(code).unit, Quality.GOOD, "mqtt"))
        return out

    def _remember(self, result: ControlResult) -> ControlResult:
        self._done[result.request_id] = result
        self.unknown.pop(result.request_id, None)
        while len(self._done) > 1024:
            self._done.popitem(last=False)
        return result

    async def load_command(self, request: LoadControlRequest) -> ControlResult:
        """Send one load-control command, wait for its response, then for the status read-back.

        Idempotent by ``request_id``: a request already answered returns the recorded result;
        a request with an unknown outcome may be retried with the *same* id (the terminal
        answers from its record and does not act twice). No response in time ->
        :class:`UnknownOutcomeError`; the request id stays in :attr:`unknown`.
        """
        done = self._done.get(request.request_id)
        if done is not None:
            return done
        value = request.value
        if request.command in (LoadCommand.SET_POWER_LIMIT, LoadCommand.PURCHASE_ENERGY) and (
            value is None or not math.isfinite(value)
        ):
            from protocols.errors import LocalProtocolError

            raise LocalProtocolError(f"{request.command.value} needs a value")
        cmd = Command(
            request_id=request.request_id, command=request.command.value, issued_at=datetime.now(UTC),
            operator=request.operator_id[:64], value=value, circuit=request.circuit,
        )
        tx = encode(cmd)
        try:
            resp = await self.command(request.device, cmd)
        except NoResponseError as exc:
            self.unknown[request.request_id] = request
            LOGGER.warning("load command %s %s to %s: outcome unknown (%s); not re-sent",
                           request.request_id, request.command.value, request.device, exc)
            raise UnknownOutcomeError(
                f"{request.command.value} to {request.device} (request {request.request_id}): {exc}; outcome unknown"
            ) from exc
        rx = encode(resp)
        if resp.status != "accepted":
            return self._remember(ControlResult(request.request_id, False, resp.reason or resp.status, tx, rx))
        field_name, expected = _READBACK[request.command]
        if expected is None:
            expected = value
        elif expected == "response":
            expected = resp.values.get("balance.energy")
        try:
            status = await self._await_status(request.device, request.request_id, self.readback_timeout)
        except NoResponseError as exc:
            self.unknown[request.request_id] = request
            raise UnknownOutcomeError(
                f"{request.command.value} to {request.device}: accepted, but no status read-back ({exc})"
            ) from exc
        got = getattr(status, field_name)
        accepted, reason = True, ""
        if expected is not None and not _same(got, expected):
            accepted, reason = False, f"read-back {field_name}={got!r}, expected {expected!r}"
        LOGGER.info("mqtt %s %s by %s: %s%s", request.device, request.command.value, request.operator_id,
                    "accepted" if accepted else "NOT accepted", f" ({reason})" if reason else "")
        return self._remember(ControlResult(request.request_id, accepted, reason, tx, rx))

    async def _await_status(self, device: str, request_id: str, timeout: float) -> Status:  # noqa: ASYNC109
        def seen() -> bool:
            s = self._status.get(device)
            return s is not None and s.last_request_id == request_id

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(seen), timeout)
        except TimeoutError:
            raise NoResponseError(f"no status from {device} after request {request_id} within {timeout:g} s") from None
        return self._status[device]

    # ------------------------------------------------------------------ RelayControl

    async def relay_command(self, request: RelayRequest) -> ControlResult:
        cmd = _RELAY_TO_LOAD.get(request.command)
        if cmd is None:
            return ControlResult(request.request_id, False, f"{request.command.value} not supported over MQTT")
        if request.valid_until <= datetime.now(UTC):
            return ControlResult(request.request_id, False, "command expired before it was sent")
        return await self.load_command(
            LoadControlRequest(request.device, cmd, request.operator_id, request_id=request.request_id)
        )

    async def relay_state(self, device: str) -> RelayState:
        try:
            (r,) = await self.read(device, ["relay.state"], priority=Priority.CONTROL)
        except NoResponseError:
            s = self._status.get(device)
            if s is None or s.relay is None:
                raise
            return RelayState.OPEN if s.relay == "open" else RelayState.CLOSED
        if math.isnan(r.value):
            return RelayState.UNKNOWN
        return RelayState.OPEN if r.value else RelayState.CLOSED


def _same(got: object, expected: object) -> bool:
    if isinstance(got, float | int) and not isinstance(got, bool) and isinstance(expected, float | int):
        return abs(float(got) - float(expected)) <= max(1e-6, abs(float(expected)) * 1e-9)
    return got == expected
