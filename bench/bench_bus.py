"""DL/T 645 bus benchmarks: bus efficiency against the line-time bound, and the cost of dead meters.

(a) Bus efficiency. A simulated 2400-baud 8E1 bus (11 bits per character) with a 50 ms
    meter turnaround, line-time emulation on: the simulator holds every reply for the time
    the request and the reply would take on the wire plus the turnaround. The client polls
    the meters round-robin (forward active energy, 00010000). The line-time bound is what a
    perfect master would get: one read per (request bytes + reply bytes) x 11 / 2400 s + 50 ms,
    computed from the bytes actually exchanged. Efficiency = achieved reads/s / bound. Goal >= 0.95.

(b) A dead meter does not hold the bus. Same bus, N meters polled round-robin for the same
    time, once all healthy (baseline) and once with 10 % of them silent. Healthy-meter reads/s
    with silent meters divided by the all-healthy figure; goal >= 0.85. The per-meter circuit
    breaker makes this true: a silent meter costs its timeout a few times, then it is skipped.

    The breaker run includes the breaker's learning cost (each silent meter costs 4 timeouts
    before it opens: one retry on the first failure, none after); the second-half figure is
    the steady state.

    python -m bench.bench_bus                 # about 140 s (20 s + 2 x 60 s)
    python -m bench.bench_bus --quick         # about 100 s, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from protocols.arbitration import Priority
from protocols.dlt645.client import Dlt645Client
from protocols.errors import CircuitOpenError, HeadendError
from simulators.dlt645 import MeterBusSimulator

BAUD = 2400
TURNAROUND = 0.05


@dataclass
class Run:
    meters: int
    silent: int
    seconds: float
    reads_ok: int
    failures: int
    skipped: int
    reads_per_s: float
    line_seconds: float
    bound_reads_per_s: float
    efficiency: float
    second_half_reads_per_s: float  # steady state, after the breaker has learnt the silent meters


async def poll(
    transport: str, meters: int, silent: int, duration: float, reply_timeout: float, breaker: bool = True
) -> Run:
    addrs = [f"{i + 1:012d}" for i in range(meters)]
    dead = addrs[:: meters // silent][:silent] if silent else []
    faults = {a: "silent" for a in dead}
    async with MeterBusSimulator(addresses=addrs, transport=transport, baud=BAUD, parity="E", line_time=True,
                                 turnaround=TURNAROUND, faults=faults, seed=3) as sim:
        async with Dlt645Client.from_url(sim.url, timeout=reply_timeout, inter_byte_timeout=0.1, retries=1,
                                         breaker=breaker) as client:
            await client.read(addrs[-1], ["energy.active.import"])  # warm-up (opens the port)
            sim.stats.line_seconds = 0.0
            ok = fail = skipped = 0
            stamps: list[float] = []
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < duration:
                a = addrs[i % len(addrs)]
                i += 1
                try:
                    await client.read(a, ["energy.active.import"], priority=Priority.SCHEDULED)
                    ok += 1
                    stamps.append(time.monotonic() - t0)
                except CircuitOpenError:
                    skipped += 1
                except HeadendError:
                    fail += 1
            elapsed = time.monotonic() - t0
            line = sim.stats.line_seconds
    rate = ok / elapsed
    bound = ok / line if line else 0.0
    half = elapsed / 2
    steady = sum(1 for s in stamps if s >= half) / (elapsed - half)
    return Run(meters, silent, round(elapsed, 2), ok, fail, skipped, round(rate, 3), round(line, 2),
               round(bound, 3), round(rate / bound if bound else 0.0, 4), round(steady, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transport", choices=["pty", "tcp"], default="pty")
    ap.add_argument("--meters", type=int, default=20)
    ap.add_argument("--efficiency-seconds", type=float, default=20.0)
    ap.add_argument("--breaker-seconds", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=0.7, help="response timeout (Td <= 500 ms + request time)")
    ap.add_argument("--quick", action="store_true", help="shorter runs (10 s / 45 s)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compare-no-breaker", action="store_true",
                    help="also run (b) with the breaker off, to show what it buys")
    args = ap.parse_args()
    if args.quick:
        args.efficiency_seconds, args.breaker_seconds = 10.0, 45.0
    silent = max(1, round(args.meters * 0.1))

    a = asyncio.run(poll(args.transport, 4, 0, args.efficiency_seconds, args.timeout))
    healthy = asyncio.run(poll(args.transport, args.meters, 0, args.breaker_seconds, args.timeout))
    with_dead = asyncio.run(poll(args.transport, args.meters, silent, args.breaker_seconds, args.timeout))
    ratio = with_dead.reads_per_s / healthy.reads_per_s if healthy.reads_per_s else 0.0
    no_breaker = None
    if args.compare_no_breaker:
        no_breaker = asyncio.run(poll(args.transport, args.meters, silent, args.breaker_seconds, args.timeout, False))
    steady = (with_dead.second_half_reads_per_s / healthy.second_half_reads_per_s
              if healthy.second_half_reads_per_s else 0.0)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "bus": f"{BAUD} baud 8E1 (11 bits/char), turnaround {TURNAROUND * 1000:.0f} ms, {args.transport}",
        "a_efficiency": asdict(a),
        "b_all_healthy": asdict(healthy),
        "b_ten_percent_silent": asdict(with_dead),
        "b_ratio": round(ratio, 4),
        "b_ratio_second_half": round(steady, 4),
        **({"b_no_breaker": asdict(no_breaker),
            "b_no_breaker_ratio": round(no_breaker.reads_per_s / healthy.reads_per_s, 4)} if no_breaker else {}),
        "goals": {"a_efficiency": ">= 0.95", "b_ratio": ">= 0.85"},
        "pass": a.efficiency >= 0.95 and ratio >= 0.85,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"(a) bus efficiency: {a.reads_per_s:.3f} reads/s vs line-time bound {a.bound_reads_per_s:.3f} "
          f"-> {a.efficiency:.3f} (goal >= 0.95)")
    print(f"(b) {args.meters} meters, all healthy: {healthy.reads_per_s:.3f} reads/s; "
          f"{silent} silent: healthy reads {with_dead.reads_per_s:.3f}/s "
          f"({with_dead.failures} timeouts, {with_dead.skipped} skipped by the breaker) "
          f"-> ratio {ratio:.3f} (goal >= 0.85); second half (breaker open) {steady:.3f}")
    if no_breaker is not None:
        print(f"    breaker off: healthy reads {no_breaker.reads_per_s:.3f}/s "
              f"-> ratio {no_breaker.reads_per_s / healthy.reads_per_s:.3f}")
    print("PASS" if result["pass"] else "FAIL")


if __name__ == "__main__":
    main()
