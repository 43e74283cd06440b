"""MQTT telemetry from the simulated fleet into the database vs a bare aiomqtt subscriber, in one run.

    python -m bench.bench_mqtt [--terminals 1000] [--count 20000] [--rounds 5] [--rate 300] [--paced 3000]
                               [--broker mqtt://127.0.0.1:1883] [--dsn postgresql://...]

The fleet (``simulators.mqtt``, one MQTT connection per terminal) runs in a subprocess; this
process runs the consumer. For each consumer, on the same broker and the same fleet:

1. **flood**: ``--count`` telemetry messages (7 values each) as fast as the fleet publishes;
   throughput = messages / (last message done - consumer connecting), the drain time; also
   reported from the first message the consumer sees (``msg_per_s_from_first``), which flatters a
   consumer that subscribes before it iterates: aiomqtt buffers up to the broker's in-flight window
   of messages (received and, for the bare one, acknowledged) before its iterator yields the first;
2. **paced**: ``--paced`` messages at ``--rate`` msg/s; end-to-end latency p50/p99 =
   (done - the telemetry's own ``ts``, stamped when the terminal publishes).

"done" is, for the head-end, the batch committed in PostgreSQL by the ingest service
(validation, Reading objects, ``mdm.ingest.Ingestor``), and for the baseline, the message
received by a bare ``aiomqtt`` subscriber (QoS 1, parsed with ``json.loads``).
Ratio = head-end msg/s / bare msg/s (goal >= 0.8).
Broker: the Mosquitto at 127.0.0.1:1883 when it answers, else an in-process amqtt broker.
Database: a fresh database created on 127.0.0.1:5432 (dropped at the end) unless ``--dsn`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LOCAL_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


# ---------------------------------------------------------------------- publisher subprocess

async def _publisher(args: argparse.Namespace) -> None:
    from simulators.mqtt import MqttTerminalFleet

    fleet = MqttTerminalFleet(args.host, args.port, args.terminals, prefix=args.prefix, telemetry=False,
                              event_rate=0, connect_concurrency=100)
    await fleet.start(timeout=120)
    print("ready", flush=True)
    terms = list(fleet.terminals.values())
    while True:  # read commands off the event loop: a blocked loop would miss keepalives
        line = await asyncio.to_thread(sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        count = int(cmd[1])
        if cmd[0] == "flood":
            seconds = await fleet.flood(count, concurrency=300)
        else:  # paced COUNT RATE
            rate = float(cmd[2])
            t0 = time.perf_counter()
            tasks = []
            for i in range(count):
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(fleet.publish_telemetry(terms[i % len(terms)])))
            await asyncio.gather(*tasks)
            seconds = time.perf_counter() - t0
        print(json.dumps({"published": count, "seconds": seconds, "errors": fleet.stats.publish_errors}), flush=True)
    await fleet.stop()


class Publisher:
    def __init__(self, host: str, port: int, prefix: str, terminals: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_mqtt", "--publisher", "--host", host, "--port", str(port),
             "--prefix", prefix, "--terminals", str(terminals)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("publisher died")
        return line.strip()

    def ready(self) -> None:
        assert self._line() == "ready"

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    async def run(self, command: str) -> dict[str, Any]:
        self.send(command)
        result: dict[str, Any] = json.loads(await asyncio.to_thread(self._line))
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------- consumers

def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class BareSubscriber:
    """The baseline: aiomqtt, QoS 1, json.loads, nothing else."""

    def __init__(self, host: str, port: int, prefix: str, client_id: str) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.client_id = client_id
        self.count = 0
        self.first = self.last = self.connecting = 0.0
        self.latencies: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self.connecting = time.time()
        self._task = asyncio.create_task(self._run())
        await self._ready.wait()

    async def _run(self) -> None:
        async with aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                  clean_session=False, max_queued_incoming_messages=0) as c:
            await c.subscribe(f"{self.prefix}/terminal/+/telemetry", qos=1)
            self._ready.set()
            async for m in c.messages:
                doc = json.loads(m.payload)  # type: ignore[arg-type,unused-ignore]
                now = time.time()
                if not self.count:
                    self.first = now
                self.count += 1
                self.last = now
                self.latencies.append(now - datetime.fromisoformat(doc["ts"]).timestamp())

    def reset(self) -> None:
        self.count, self.latencies = 0, []

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class HeadendConsumer:
    """The ingest service (validation -> Reading -> Ingestor -> PostgreSQL)."""

    def __init__(self, host: str, port: int, prefix: str, dsn: str, data_dir: Path, client_id: str) -> None:
        from headend.settings import MqttSettings, Settings

        self.client_id = f"{client_id}-ingest"  # the ingest service's MQTT client id
        self.settings = Settings(mqtt=MqttSettings(host=host, port=port, topic_prefix=prefix,
                                                   client_id=client_id), data_dir=data_dir)
        self.dsn = dsn
        self.first = self.last = self.connecting = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self.service: Any = None
        self.ingestor: Any = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from headend.mqtt_ingest import MqttIngestService, run_mqtt_ingest
        from headend.storeglue import open_ingestor

        self.ingestor = await open_ingestor(self.settings, self.dsn)
        self.service = MqttIngestService(self.settings.mqtt, self.ingestor, self.dsn, keep_latencies=True)
        # watch before connecting: a persistent session's queued messages arrive right after the CONNACK
        self.connecting = time.time()
        self._watch = asyncio.create_task(self._times())
        self._task = asyncio.create_task(run_mqtt_ingest(self.settings, self.ingestor, stop=self._stop,
                                                         service=self.service))
        await self.service.ready.wait()
        await self.service.conn.wait_connected(10)

    async def _times(self) -> None:
        seen = 0
        while True:
            await asyncio.sleep(0.002)
            st = self.service.stats
            if st.received and not self.first:
                self.first = time.time()
            if st.telemetry != seen:
                seen = st.telemetry
                self.last = time.time()

    @property
    def count(self) -> int:
        return int(self.service.stats.telemetry)

    @property
    def latencies(self) -> list[float]:
        return list(self.service.stats.latencies)

    def reset(self) -> None:
        self.service.stats.telemetry = 0
        self.service.stats.received = 0
        self.service.stats.latencies.clear()
        self.first = self.last = 0.0

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._stop.set()
        if self._task is not None:
            await self._task
        closer = getattr(self.ingestor, "aclose", None)
        if closer is not None:
            await closer()


async def _measure(
    consumer: Any, pub: Publisher, command: str, count: int, timeout: float = 300  # noqa: ASYNC109
) -> dict[str, Any]:
    consumer.reset()
    if isinstance(consumer, BareSubscriber):
        consumer.first = consumer.last = 0.0
    consumer.connecting = time.time()  # live: timed from the publish command
    sent = await pub.run(command)
    return await _wait(consumer, sent, count, timeout)


async def _wait(
    consumer: Any, sent: dict[str, Any], count: int, timeout: float = 300  # noqa: ASYNC109
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while consumer.count < count and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    span = max(consumer.last - consumer.connecting, 1e-9)
    span_first = max(consumer.last - consumer.first, 1e-9)
    lat = consumer.latencies
    return {
        "messages": consumer.count, "published": sent["published"], "publish_seconds": round(sent["seconds"], 3),
        "msg_per_s": round(consumer.count / span, 1), "seconds": round(span, 3),
        "msg_per_s_from_first": round(consumer.count / span_first, 1),
        "latency_p50_ms": round(_pct(lat, 0.50) * 1000, 1), "latency_p99_ms": round(_pct(lat, 0.99) * 1000, 1),
    }


class PrivateMosquitto:
    """A mosquitto process of our own on a free 127.0.0.1 port, with an unbounded per-session queue."""

    def __init__(self, binary: str, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "log_dest none\nmax_queued_messages 0\nmax_inflight_messages 1000\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _broker_answers("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("private mosquitto did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _purge(host: str, port: int, client_id: str) -> None:
    """Drop a persistent session (and what it queued) by connecting once with a clean session."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
            pass


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(bytes.fromhex("101100044d5154540402000a000570726f6265"))
            s.settimeout(0.5)
            return s.recv(1)[:1] == b"\x20"
    except OSError:
        return False


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from headend.broker import InProcessBroker
    from mdm.migrate import migrate

    local_broker = None
    private = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-mqtt-")
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if args.broker:
        from protocols.mqtt.client import MqttUrl

        u = MqttUrl.parse(args.broker)
        host, port, kind = u.host, u.port, "given"
    elif mosquitto and not args.live:
        private = PrivateMosquitto(mosquitto, Path(tmp.name))
        host, port, kind = "127.0.0.1", private.port, "private mosquitto (unbounded session queue)"
    elif _broker_answers("127.0.0.1", 1883):
        host, port, kind = "127.0.0.1", 1883, "mosquitto"
    else:
        local_broker = InProcessBroker()
        await local_broker.start()
        host, port, kind = local_broker.host, local_broker.port, "amqtt in-process"
    dbname = None
    dsn = args.dsn
    if dsn is None:
        dbname = f"headend_bench_mqtt_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(LOCAL_SERVER, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname)))
        dsn = LOCAL_SERVER.replace("dbname=postgres", f"dbname={dbname}")
    migrate(dsn)
    prefix = f"bench{secrets.token_hex(3)}"
    pub = Publisher(host, port, prefix, args.terminals)
    results: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        await asyncio.to_thread(pub.ready)
        results["fleet_connect_s"] = round(time.perf_counter() - t0, 2)
        drain = bool(private is not None or args.drain)
        factories: list[tuple[str, Any]] = [
            ("bare", lambda cid: BareSubscriber(host, port, prefix, f"{cid}-bare")),
            ("headend", lambda cid: HeadendConsumer(host, port, prefix, dsn, Path(tmp.name), cid)),
        ]
        floods: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in factories}
        ratios: list[float] = []
        ratios_first: list[float] = []
        for rnd in range(args.rounds):  # paired rounds: bare then head-end, same fleet, same count
            for name, factory in factories:
                cid = f"bench-{prefix}-{name}-{rnd}"  # a session of its own, purged after use
                consumer = factory(cid)
                await consumer.start()
                try:
                    if drain:  # queue the flood in the consumer's persistent session, then time the drain
                        await consumer.stop()
                        sent = await pub.run(f"flood {args.count}")
                        consumer = factory(cid)
                        await consumer.start()
                        flood = await _wait(consumer, sent, args.count)
                    else:
                        flood = await _measure(consumer, pub, f"flood {args.count}", args.count)
                finally:
                    await consumer.stop()
                    await _purge(host, port, consumer.client_id)
                floods[name].append(flood)
            ratios.append(floods["headend"][-1]["msg_per_s"] / floods["bare"][-1]["msg_per_s"])
            ratios_first.append(floods["headend"][-1]["msg_per_s_from_first"]
                                / floods["bare"][-1]["msg_per_s_from_first"])
            print(f"round {rnd + 1}: bare {floods['bare'][-1]['msg_per_s']:8.0f} msg/s   head-end "
                  f"{floods['headend'][-1]['msg_per_s']:8.0f} msg/s   ratio {ratios[-1]:.3f}   (from the first "
                  f"message: {floods['bare'][-1]['msg_per_s_from_first']:.0f} / "
                  f"{floods['headend'][-1]['msg_per_s_from_first']:.0f}, {ratios_first[-1]:.3f})", flush=True)
        for name, factory in factories:  # latency at a steady rate, live
            consumer = factory(f"bench-{prefix}-{name}-paced")
            await consumer.start()
            try:
                paced = await _measure(consumer, pub, f"paced {args.paced} {args.rate}", args.paced)
            finally:
                await consumer.stop()
                await _purge(host, port, consumer.client_id)
            rates = [f["msg_per_s"] for f in floods[name]]
            results[name] = {"flood_msg_per_s": rates, "flood_median_msg_per_s": statistics.median(rates),
                             "paced": paced}
            print(f"{name:8s} median {statistics.median(rates):8.0f} msg/s   paced @{args.rate:g}/s "
                  f"p50 {paced['latency_p50_ms']} ms p99 {paced['latency_p99_ms']} ms", flush=True)
        results["round_ratios"] = [round(r, 3) for r in ratios]
        results["round_ratios_from_first"] = [round(r, 3) for r in ratios_first]
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM register_reads WHERE source = 'mqtt'").fetchone()
            results["rows_in_db"] = row[0] if row else 0
    finally:
        pub.close()
        tmp.cleanup()
        if local_broker is not None:
            await local_broker.stop()
        if private is not None:
            private.stop()
        if dbname is not None:
            with psycopg.connect(LOCAL_SERVER, autocommit=True) as conn:
                conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(dbname)))
    ratio = statistics.median(results["round_ratios"])
    results["ratio_from_first"] = round(statistics.median(results["round_ratios_from_first"]), 3)
    results.update({
        "ratio": round(ratio, 3), "goal": 0.8, "broker": kind, "mode": "drain" if drain else "live",
        "terminals": args.terminals, "count": args.count, "rounds": args.rounds,
        "values_per_message": _values_per_message(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    })
    return results


def _values_per_message() -> int:
    from simulators.mqtt.fleet import SimTerminal

    return len(SimTerminal("X", 0).values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--terminals", type=int, default=1000)
    ap.add_argument("--count", type=int, default=20000, help="messages in the flood phase")
    ap.add_argument("--rounds", type=int, default=5, help="paired bare/head-end rounds (median ratio)")
    ap.add_argument("--paced", type=int, default=3000, help="messages in the paced (latency) phase")
    ap.add_argument("--rate", type=float, default=300.0, help="paced publish rate, msg/s")
    ap.add_argument("--broker", help="mqtt://HOST:PORT (default: 127.0.0.1:1883 if it answers, else amqtt)")
    ap.add_argument("--dsn", help="existing migrated database (default: a fresh one on 127.0.0.1:5432)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--live", action="store_true",
                    help="consume while the fleet publishes (publisher-bound) instead of draining a queued flood")
    ap.add_argument("--drain", action="store_true", help="drain mode on a --broker given (needs a large queue)")
    ap.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publisher:
        asyncio.run(_publisher(args))
        return
    results = asyncio.run(_bench(args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"ratio head-end / bare aiomqtt = {results['ratio']} (goal >= 0.8; timed from the first message "
              f"seen: {results['ratio_from_first']}); "
              f"{results['rows_in_db']} readings in the database; broker {results['broker']}")


if __name__ == "__main__":
    main()
