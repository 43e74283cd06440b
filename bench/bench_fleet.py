"""Fleet-scale collection: one daemon process polls N simulated meters on M TCP buses.

Each bus is a DL/T 645 simulator (20 meters by default) with 2400-baud line-time emulation
(11 bits a character, request and reply, plus the meter turnaround), hosted in simulator
worker processes; the daemon is a separate ``headend run`` process with one read plan: every
``--every`` seconds, one energy block (0001FF00) and one instantaneous block (0201FF00) per
meter, no jitter, so every bus starts its cycle at the slot boundary. 0.5 % of the meters are
silent. After a warm-up cycle, one cycle is measured:

- cycle ratio: per bus, (last reply - first request) / line-time bound, where the bound is the
  line time the simulator spent on that bus's exchanges plus the response timeout of each
  unanswered request (the least the bus can take); reported for the slowest bus and the median;
- success on healthy meters: reads done in their slot / due, from the daemon's KPI table;
- the daemon process's CPU (s of CPU per s of wall during the cycle) and peak RSS.

Baseline in the same run: the line-time bound itself (ratio 1.0 is the physical optimum).

    python bench/bench_fleet.py --meters 20000 --per-bus 20            # 1,000 buses
    python bench/bench_fleet.py --meters 2000 --per-bus 20             # scaling point
    python bench/bench_fleet.py --meters 200000 --per-bus 200 --baud 19200

Bounded: every phase has a timeout; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
ENERGY = ["energy.active.import", "energy.active.import.t1", "energy.active.import.t2",
          "energy.active.import.t3", "energy.active.import.t4"]
INSTANT = ["voltage.a", "voltage.b", "voltage.c"]


# -- simulator worker process ---------------------------------------------------------------
def _sim_worker(buses: list[list[str]], faults: dict[str, str], baud: int, turnaround: float,
                conn: Any) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from simulators.dlt645 import MeterBusSimulator

    class _Flat:
        """A constant household load per meter: the meter physics is not what is measured here."""

        def demand_kw(self, meter_index: int, t: datetime) -> float:
            return 0.3 + (meter_index % 7) * 0.2

    async def main() -> None:
        sims = []
        for addrs in buses:
            f = {a: faults[a] for a in addrs if a in faults}
            sim = MeterBusSimulator(addresses=addrs, transport="tcp", baud=baud, line_time=True,
                                    turnaround=turnaround, history_days=0.05, faults=f or None, profile=_Flat())
            await sim.start()
            sims.append(sim)
        conn.send([s.url for s in sims])
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd == "reset":
                for s in sims:
                    s.clear_received()
                    s.stats.line_seconds = 0.0
                    s.stats.requests = 0
                    s.stats.replies = 0
                conn.send("ok")
            elif cmd == "stats":
                out = []
                for s in sims:
                    ts = [r.ts for r in s.received]
                    out.append({"url": s.url, "first": min(ts) if ts else None, "last": max(ts) if ts else None,
                                "requests": s.stats.requests, "replies": s.stats.replies,
                                "line_seconds": s.stats.line_seconds})
                conn.send(out)
            elif cmd == "stop":
                for s in sims:
                    await s.stop()
                conn.send("ok")
                return

    asyncio.run(main())


# -- baseline: a bare poller (client only: no scheduler, queues, KPIs or store) ---------------
def _bare_worker(urls: list[str], buses: list[list[str]], timeout: float, conn: Any) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    try:  # the same event loop as `headend run` picks by default, so daemon / bare compares like with like
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from protocols.dlt645.client import Dlt645Client

    async def bus(url: str, meters: list[str]) -> None:
        client = Dlt645Client.from_url(url, timeout=timeout, retries=0, breaker=False)
        await client.open()
        try:
            for m in meters:
                for q in (ENERGY, INSTANT):
                    try:
                        await client.read(m, q)
                    except Exception:  # the baseline only needs the bus time
                        pass
        finally:
            await client.aclose()

    async def main() -> None:
        cpu0 = time.process_time()
        t0 = time.monotonic()
        await asyncio.gather(*(bus(u, b) for u, b in zip(urls, buses, strict=True)))
        conn.send({"wall": time.monotonic() - t0, "cpu": time.process_time() - cpu0})

    asyncio.run(main())


def _bus_ratios(stats: list[dict[str, Any]], timeout: float) -> list[tuple[float, float, float, str]]:
    ratios = []
    for s in stats:
        if not s["requests"]:
            continue
        unanswered = s["requests"] - s["replies"]
        bound = s["line_seconds"] + unanswered * timeout
        per = s["line_seconds"] / max(1, s["replies"])
        cycle = (s["last"] - s["first"]) + per
        ratios.append((cycle / bound, cycle, bound, s["url"]))
    return sorted(ratios)


def _sim_call(procs: list[tuple[Any, Any]], cmd: str) -> list[Any]:
    out: list[Any] = []
    for (_, parent) in procs:
        parent.send(cmd)
    for (_, parent) in procs:
        r = parent.recv()
        out += r if isinstance(r, list) else [r]
    return out


# -- daemon process sampling ----------------------------------------------------------------
def _proc_cpu_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return cpu, rss * 1024


def _outcomes(data_dir: Path) -> dict[str, float]:
    """Jobs per outcome since the daemon started, from its /metrics endpoint."""
    import re
    import urllib.request

    out: dict[str, float] = {}
    for f in (data_dir / "daemons").glob("*.json"):
        endpoint = json.loads(f.read_text())["endpoint"]
        with urllib.request.urlopen(endpoint + "/metrics", timeout=30) as r:
            text = r.read().decode()
        for m in re.finditer(r'^headend_reads_total\{channel="[^"]*",outcome="([a-z_]+)"\} (\S+)$', text, re.M):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        lag = re.search(r"^headend_event_loop_lag_seconds (\S+)$", text, re.M)
        if lag:
            out["max_event_loop_lag_s"] = round(float(lag.group(1)), 3)
        gc_max = re.search(r"^headend_gc_pause_max_seconds (\S+)$", text, re.M)
        if gc_max:
            out["max_gc_pause_s"] = round(float(gc_max.group(1)), 3)
    return {k: v for k, v in out.items() if v}


def _write_config(path: Path, dsn: str, urls: list[str], buses: list[list[str]], every: float,
                  timeout: float, data_dir: Path) -> None:
    lines = [
        'timezone = "Asia/Shanghai"', f'data_dir = "{data_dir}"', "[database]", f"dsn = {dsn!r}",
        "[daemon]", 'name = "bench"', 'listen = "127.0.0.1:0"', "kpi_flush = 10.0",
        "[daemon.backfill]", "enabled = false",
        "[daemon.clocksync]", "enabled = false",
        "[daemon.leases]", "ttl = 60.0", "renew = 20.0",
        "[[daemon.plans]]", 'name = "energy"', 'kind = "read"', f"every = {every}",
        f"quantities = {json.dumps(ENERGY)}",
        "[[daemon.plans]]", 'name = "instant"', 'kind = "read"', f"every = {every}",
        f"quantities = {json.dumps(INSTANT)}",
    ]
    for i, (url, addrs) in enumerate(zip(urls, buses, strict=True)):
        lines += ["[[daemon.channels]]", f'name = "bus-{i:05d}"', f'url = "{url}"', f"timeout = {timeout}",
                  "retries = 0", f"meters = {json.dumps(addrs)}"]
    path.write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    n_bus = args.meters // args.per_bus
    buses = [[f"{b * args.per_bus + k + 1:012d}" for k in range(args.per_bus)] for b in range(n_bus)]
    all_meters = [m for b in buses for m in b]
    step = max(1, round(1 / args.faulty)) if args.faulty > 0 else 0
    faulty = set(all_meters[step // 2::step]) if step else set()
    faults = {m: "silent" for m in faulty}
    server = args.dsn
    dbname = f"bench_fleet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{dbname}"')
    dsn = psycopg.conninfo.make_conninfo(server, dbname=dbname)
    from mdm.migrate import migrate

    migrate(dsn)
    procs: list[tuple[mp.Process, Any]] = []
    daemon: subprocess.Popen[bytes] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench_fleet_"))
    result: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        chunks = [buses[i::args.sim_procs] for i in range(args.sim_procs)]
        urls_by_chunk = []
        ctx = mp.get_context("spawn")
        for ch in chunks:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_sim_worker, args=(ch, faults, args.baud, args.turnaround, child), daemon=True)
            p.start()
            procs.append((p, parent))
        for (_, parent) in procs:
            if not parent.poll(args.setup_timeout):
                raise TimeoutError("simulators did not start")
            urls_by_chunk.append(parent.recv())
        urls = [u for us in urls_by_chunk for u in us]
        ordered_buses = [b for ch in chunks for b in ch]
        sim_setup = time.monotonic() - t0
        cfg = tmp / "bench.toml"
        _write_config(cfg, dsn, urls, ordered_buses, args.every, args.timeout, tmp / "data")
        log = (tmp / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-c", "from headend.cli import main; main()", "run", "--config", str(cfg)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        # wait for the next slot boundary after all channels are leased (first = warm-up cycle)
        deadline = time.monotonic() + args.setup_timeout
        while time.monotonic() < deadline:
            with psycopg.connect(dsn) as c:
                held = c.execute("SELECT count(*) FROM channel_leases").fetchone()[0]  # type: ignore[index]
            if held == n_bus:
                break
            time.sleep(1.0)
        else:
            raise TimeoutError("daemon did not take all channels")
        now = time.time()
        warm_start = (now // args.every + 1) * args.every
        measure_start = warm_start + args.every * args.warmup
        time.sleep(max(0.0, measure_start - time.time() - 1.0))
        for (_, parent) in procs:
            parent.send("reset")
            parent.recv()
        cpu0, _ = _proc_cpu_rss(daemon.pid)
        sim0 = sum(_proc_cpu_rss(p.pid or 0)[0] for p, _ in procs)
        load0 = os.getloadavg()[0]
        w0 = time.monotonic()
        peak_rss = 0
        time.sleep(max(0.0, measure_start - time.time()))
        end = measure_start + args.every * 0.95
        while time.time() < end:
            _, rss = _proc_cpu_rss(daemon.pid)
            peak_rss = max(peak_rss, rss)
            time.sleep(0.5)
        cpu1, rss = _proc_cpu_rss(daemon.pid)
        sim1 = sum(_proc_cpu_rss(p.pid or 0)[0] for p, _ in procs)
        wall = time.monotonic() - w0
        stats: list[dict[str, Any]] = []
        for (_, parent) in procs:
            parent.send("stats")
            stats += parent.recv()
        ratios = _bus_ratios(stats, args.timeout)
        busy_buses = len(ratios)
        outcomes = _outcomes(tmp / "data")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        # baseline in the same run: one cycle of a bare client-only poller on the same buses
        base: dict[str, Any] = {}
        if args.baseline:
            _sim_call(procs, "reset")
            bparent, bchild = ctx.Pipe()
            bp = ctx.Process(target=_bare_worker, args=(urls, ordered_buses, args.timeout, bchild), daemon=True)
            bp.start()
            if bparent.poll(args.every * 4):
                base = bparent.recv()
            bp.join(10)
            if bp.is_alive():
                bp.kill()
            bratios = _bus_ratios(_sim_call(procs, "stats"), args.timeout)
            if bratios:
                base.update(ratio_slowest=round(bratios[-1][0], 3),
                            ratio_median=round(statistics.median(r[0] for r in bratios), 3))
        with psycopg.connect(dsn) as c:
            rows = c.execute(
                "SELECT meter = ANY(%s) AS faulty, sum(due), sum(ok) FROM collection_kpi GROUP BY 1",
                (sorted(faulty),)).fetchall()
        kpi = {bool(f): (int(d), int(o)) for f, d, o in rows}
        due, ok = kpi.get(False, (0, 0))
        slowest = ratios[-1] if ratios else (float("nan"), 0, 0, "")
        result = {
            "meters": args.meters, "buses": n_bus, "per_bus": args.per_bus, "baud": args.baud,
            "turnaround_s": args.turnaround, "faulty": len(faulty), "every_s": args.every, "warmup": args.warmup,
            "buses_measured": busy_buses,
            "cycle_ratio_slowest": round(slowest[0], 3), "cycle_s_slowest": round(slowest[1], 2),
            "bound_s_slowest": round(slowest[2], 2),
            "cycle_ratio_median": round(statistics.median(r[0] for r in ratios), 3) if ratios else None,
            "requests_measured": sum(s["requests"] for s in stats),
            "healthy_success": round(ok / due, 5) if due else None, "healthy_due": due, "healthy_ok": ok,
            "daemon_outcomes": outcomes,
            "baseline_bare_poller": {k: round(v, 3) if isinstance(v, float) else v for k, v in base.items()},
            "daemon_vs_bare_slowest": round(slowest[0] / base["ratio_slowest"], 3) if base.get("ratio_slowest")
            else None,
            "daemon_cpu_per_s": round((cpu1 - cpu0) / wall, 3), "daemon_rss_mb": round(max(peak_rss, rss) / 2**20, 1),
            "sim_cpu_per_s": round((sim1 - sim0) / wall, 3), "load_avg_1m": round(max(load0, os.getloadavg()[0]), 2),
            "sim_setup_s": round(sim_setup, 1), "sim_procs": args.sim_procs,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        }
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for p, parent in procs:
            try:
                parent.send("stop")
                if parent.poll(20):
                    parent.recv()
            except (OSError, EOFError):
                pass
            p.join(5)
            if p.is_alive():
                p.kill()
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} (config, daemon log)", file=sys.stderr)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=20_000)
    ap.add_argument("--per-bus", type=int, default=20)
    ap.add_argument("--baud", type=int, default=2400)
    ap.add_argument("--turnaround", type=float, default=0.05)
    ap.add_argument("--faulty", type=float, default=0.005, help="fraction of silent meters")
    ap.add_argument("--every", type=float, default=60.0, help="cycle (slot) length, seconds")
    ap.add_argument("--timeout", type=float, default=1.0, help="response timeout, seconds")
    ap.add_argument("--sim-procs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="cycles before the measured one")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, daemon log)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the bare-poller baseline cycle")
    ap.add_argument("--setup-timeout", type=float, default=300.0)
    ap.add_argument("--dsn", default=os.environ.get("HEADEND_TEST_DSN", "host=127.0.0.1 user=postgres dbname=postgres"))
    args = ap.parse_args()
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
