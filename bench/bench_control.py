"""Remote disconnect benchmark: 1,000 disconnects across 100 simulated buses, with scheduled reads.

Set-up: 100 DL/T 645 buses (TCP simulators, 10 meters each, in a child process: they stand for
field equipment and must not share the head-end's event loop), line-time emulation at 2400 baud
8E1 (11 bits a character) with a 50 ms meter turnaround, one client per bus shared by the
scheduled reader and the control executor (so control traffic competes for the same bus lock,
at Priority.CONTROL against Priority.SCHEDULED), PostgreSQL for every state change and audit row.

1. Baseline: scheduled reads only (each bus reads its meters round-robin, 00010000), for B seconds.
2. Control: the same reads keep running; 1,000 accounts in arrears are planned, approved by a
   second operator and executed (interlocks re-checked at send time, trip, read-back of status
   word 3). Per command we record:
   - service time: from its turn on the bus (its claim and interlock re-check ran while the previous
     command was on the bus) to the confirmed read-back;
   - time from execute: from the start of ``execute`` to its confirmed read-back (includes the
     queue behind the other disconnects of its bus, which are sent one at a time per bus);
   - overhead = service time - line-time cost of its frames (1C request and reply, read-back
     request and reply, two turnarounds). Goal: p99 overhead <= 1 s.
   - bus time: the part of the service time spent on the bus (waiting for the frame in flight,
     command, read-back, i.e. including the simulator's own delays); head-end own time = service
     time - bus time (claim, interlock re-check, state and audit writes).
3. Scheduled-read throughput during execution versus the baseline.

    python -m bench.bench_control                      # 100 buses x 10 meters, ~1 min
    python -m bench.bench_control --buses 20 --meters 5   # quick
    python -m bench.bench_control --json

Needs PostgreSQL (``HEADEND_TEST_DSN`` or 127.0.0.1:5432 user postgres); a scratch database is
created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from headend.control.config import ControlPolicy, ControlSettings
from headend.control.directory import MeterDirectory, Route
from headend.control.executor import Executor
from headend.control.planner import approve_plan
from headend.control.secrets import load_secrets
from mdm.db import scratch_database
from mdm.migrate import migrate
from protocols.arbitration import Priority
from protocols.dlt645.client import Dlt645Client
from protocols.errors import HeadendError
from simulators.dlt645 import MeterBusSimulator

BAUD = 2400
TURNAROUND = 0.05
REPLY_PREAMBLE = 2
CHAR = 11 / BAUD
# 1C request: 4 FE + 12 header/CS/end + 16 data; reply 9C: 12 + preamble; read 04000503: 4 + 12 + 4;
# reply: 12 + 4 DI + 2 status word + preamble.
LINE_COST = (32 + (12 + REPLY_PREAMBLE) + 20 + (18 + REPLY_PREAMBLE)) * CHAR + 2 * TURNAROUND
READ_COST = (20 + (12 + 4 + 4 + REPLY_PREAMBLE)) * CHAR + TURNAROUND  # one scheduled energy read
REPO = str(Path(__file__).resolve().parents[1])
AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # a Tuesday 10:00 in Shanghai: every time rule passes


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


class Reader:
    """Scheduled collection on one bus: round-robin energy reads at Priority.SCHEDULED."""

    def __init__(self, client: Dlt645Client, meters: list[str]) -> None:
        self.client, self.meters = client, meters
        self.done = 0
        self.errors = 0

    async def run(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            m = self.meters[i % len(self.meters)]
            i += 1
            try:
                await self.client.read_raw(m, 0x00010000, priority=Priority.SCHEDULED)
                self.done += 1
            except HeadendError:
                self.errors += 1


async def main(buses: int, meters: int, baseline_s: float, server_dsn: str, reads: bool = True,
               pool: int = 0) -> dict[str, Any]:
    name = f"bench_control_{os.getpid()}"
    with scratch_database(server_dsn, name) as dsn:
        migrate(dsn, timescaledb="off")
        return await _run(dsn, buses, meters, baseline_s, reads, pool)


def _addresses(b: int, meters: int) -> list[str]:
    return [f"{b * 1000 + k + 1:012d}" for k in range(meters)]


async def serve_sims(buses: int, meters: int) -> None:
    """Child process: the simulated buses. Prints their URLs as one JSON line; on "count" prints how
    many relays are open; stops at end of input."""
    sims: list[MeterBusSimulator] = []
    for b in range(buses):
        sim = MeterBusSimulator(addresses=_addresses(b, meters), transport="tcp", baud=BAUD, line_time=True,
                                turnaround=TURNAROUND, reply_preamble=REPLY_PREAMBLE, seed=b, history_days=0.1)
        await sim.start()
        sims.append(sim)
    print(json.dumps([s.url for s in sims]), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "count":
            print(sum(1 for s in sims for m in s.meters.values() if m.relay_open), flush=True)
    for s in sims:
        await s.stop()


async def _run(dsn: str, buses: int, meters: int, baseline_s: float, reads: bool, pool: int) -> dict[str, Any]:
    clients: dict[str, Dlt645Client] = {}
    routes: dict[str, Route] = {}
    accounts: list[tuple[str, str]] = []
    # The simulators are field equipment: they run in their own process, not on the head-end's event loop.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_control", "--serve-sims", "--buses", str(buses), "--meters", str(meters),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=REPO)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        urls = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
        for b, url in enumerate(urls):
            addrs = _addresses(b, meters)
            bus = f"bus-{b:03d}"
            client = Dlt645Client.from_url(url, timeout=1.0, inter_byte_timeout=0.2, breaker=False)
            await client.open()
            clients[bus] = client
            for a in addrs:
                routes[a] = Route(a, bus, "dlt645", url)
                accounts.append((f"ACC{a}", a))
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO control_accounts (account, meter) VALUES (%s, %s)", accounts)
            cur.executemany("INSERT INTO arrears (account, amount, days_overdue, as_of) VALUES (%s, 200, 60, %s)",
                            [(acc, AT - timedelta(days=30)) for acc, _ in accounts])
            cur.executemany("INSERT INTO notices (account, kind, delivered_at, method) VALUES "
                            "(%s, 'notice', %s, 'letter')", [(acc, AT - timedelta(days=10)) for acc, _ in accounts])
        policy = ControlPolicy(timezone="Asia/Shanghai", batch_per_bus=meters, max_per_bus_day=meters,
                               max_per_day=len(accounts), approval_threshold=50)
        settings = ControlSettings(utilities={"default": policy},
                                   roles={"plan": ["planner"], "approve": ["approver"], "execute": ["operator"]})
        secrets = load_secrets(None, {"HEADEND_METER_PASSWORD": "123456", "HEADEND_OPERATOR_CODE": "00000001"})
        ex = Executor(dsn, settings, MeterDirectory(routes), secrets, clients=clients, now=lambda: AT,
                      pool_size=pool or None)
        readers = [Reader(clients[bus], [a for a, r in routes.items() if r.bus == bus]) for bus in clients]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(r.run(stop)) for r in readers] if reads else []
        async with ex:
            async with ex.pool.connection() as aconn:
                t = time.monotonic()
                res = await ex.planner.plan(aconn, AT, operator="planner", dry_run=False)
                plan_s = time.monotonic() - t
                await approve_plan(aconn, settings, int(res.plan_id or 0), "approver")
            await asyncio.sleep(2.0)  # warm-up
            r0 = sum(r.done for r in readers)
            t0 = time.monotonic()
            await asyncio.sleep(baseline_s)
            base_rate = (sum(r.done for r in readers) - r0) / (time.monotonic() - t0)
            r1 = sum(r.done for r in readers)
            t1 = time.monotonic()
            report = await ex.execute_plan(int(res.plan_id or 0), "operator")
            t2 = time.monotonic()
            during_rate = (sum(r.done for r in readers) - r1) / (t2 - t1)
        stop.set()
        await asyncio.gather(*tasks)
        ok = [o for o in report.outcomes if o.state == "confirmed"]
        service = [o.elapsed for o in ok]
        from_exec = [o.finished - t1 for o in ok]
        overhead = [s - LINE_COST for s in service]
        bus_time = [ex.bus_seconds.get(o.command_id, 0.0) for o in ok]
        own = [o.elapsed - ex.bus_seconds.get(o.command_id, 0.0) for o in ok]
        proc.stdin.write(b"count\n")
        await proc.stdin.drain()
        relays_open = int(await proc.stdout.readline())
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
            "buses": buses, "meters_per_bus": meters, "disconnects": len(accounts),
            "confirmed": len(ok), "relays_open_in_simulators": relays_open,
            "states": report.as_dict()["states"],
            "plan_seconds": round(plan_s, 2),
            "execute_seconds": round(t2 - t1, 2),
            "line_cost_per_command_s": round(LINE_COST, 3),
            "service_p50_s": round(pct(service, 50), 3), "service_p99_s": round(pct(service, 99), 3),
            "overhead_p50_s": round(pct(overhead, 50), 3), "overhead_p99_s": round(pct(overhead, 99), 3),
            "bus_time_p50_s": round(pct(bus_time, 50), 3), "bus_time_p99_s": round(pct(bus_time, 99), 3),
            "headend_own_p50_s": round(pct(own, 50), 3), "headend_own_p99_s": round(pct(own, 99), 3),
            "load_average": os.getloadavg(),
            "from_execute_p50_s": round(pct(from_exec, 50), 3), "from_execute_p99_s": round(pct(from_exec, 99), 3),
            "queue_bound_s": round(meters * (LINE_COST + READ_COST), 3),
            "scheduled_reads_per_s_baseline": round(base_rate, 1),
            "scheduled_reads_per_s_during_control": round(during_rate, 1),
            "scheduled_throughput_ratio": round(during_rate / base_rate, 3) if base_rate else None,
            "scheduled_reads": reads, "db_pool": ex.pool.max_size,
            "scheduled_read_bound_per_s": round(buses / READ_COST, 1),
            "service_mean_s": round(statistics.fmean(service), 3) if service else None,
        }
    finally:
        for c in clients.values():
            await c.aclose()
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--buses", type=int, default=100)
    ap.add_argument("--meters", type=int, default=10)
    ap.add_argument("--baseline", type=float, default=8.0, help="seconds of scheduled reads alone")
    ap.add_argument("--no-reads", action="store_true", help="no scheduled reads (control traffic alone)")
    ap.add_argument("--pool", type=int, default=0, help="database connections of the executor (0: automatic, "
                                                        "about one per two buses, at most 40)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-sims", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_sims:
        asyncio.run(serve_sims(a.buses, a.meters))
        return
    server = os.environ.get("HEADEND_TEST_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    out = asyncio.run(main(a.buses, a.meters, a.baseline, server, not a.no_reads, a.pool))
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:40s} {v}")


if __name__ == "__main__":
    cli()
