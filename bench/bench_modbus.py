"""Modbus TCP polling: through the head-end (ModbusClient.read) vs a bare pymodbus loop, in one run.

Three clients poll the same simulated terminal (a separate process: ``python -m simulators.modbus``),
each on its own connection, with the same register requests (the head-end's read plan for the
quantity list):

* ``headend``: ``ModbusClient.read`` (line lock, breaker, cached plan, decoding, Readings);
* ``bare``: a plain pymodbus ``AsyncModbusTcpClient`` sending the same requests, checking
  ``isError()`` only (``protocols.modbus.client.BareTcpPoller``);
* ``bare+decode``: the same, also converting the registers like any application must.

The polls are interleaved one by one (bare, head-end, bare+decode, the order rotating through
all six permutations), each timed on its own, so load from other processes on a shared machine
hits the three alike, down to the millisecond. One round lasts ``--seconds``; its ratio is
the bare loop's total poll time / the head-end's (= head-end polls/s / bare polls/s, both did
the same number of polls). The result is the median of the round ratios (goal >= 0.9).

    python bench/bench_modbus.py [--rounds 9] [--seconds 3] [--warmup 1] [--in-process] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from protocols.arbitration import Priority
from protocols.modbus.client import BareTcpPoller, ModbusClient
from protocols.modbus.maps import load_map, plan_reads

QUANTITIES = [
    "voltage.a", "voltage.b", "voltage.c", "current.a", "current.b", "current.c",
    "power.active.total", "power.reactive.total", "pf.total", "frequency",
    "energy.active.import", "energy.active.export", "relay.state", "balance.energy",
]
KINDS = ("bare", "headend", "bare+decode")
ORDERS = list(itertools.permutations(KINDS))  # each kind first, second and third equally often


class _Instant:
    """A response object like pymodbus' (registers/bits/isError) for the no-I/O layer measurement."""

    def __init__(self, count: int) -> None:
        self.registers = [0x4366] * count
        self.bits = [False] * max(8, count)

    def isError(self) -> bool:  # pymodbus' name
        return False


async def layer_cost(polls: int = 5000) -> dict[str, float]:
    """Head-end cost per poll without the network: the link's pymodbus readers are replaced by an
    immediate in-memory answer, so what remains is lock, breaker, plan, decoding and Readings."""

    async def instant(address: int, *, count: int, device_id: int) -> _Instant:
        return _Instant(count)

    client = ModbusClient.from_url("tcp://127.0.0.1:9", retries=0)
    link: Any = client.link
    link._client.ctx.transport = object()  # looks open: no connect attempt
    link.readers = dict.fromkeys(link.readers, instant)
    blocks = plan_reads(load_map("generic_terminal").for_quantities(QUANTITIES))
    best_bare = best_head = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(polls):
            for b in blocks:
                await instant(b.address, count=b.count, device_id=1)
        best_bare = min(best_bare, (time.perf_counter() - t0) / polls * 1e6)
        t0 = time.perf_counter()
        for _ in range(polls):
            await client.read("1", QUANTITIES, priority=Priority.SCHEDULED)
        best_head = min(best_head, (time.perf_counter() - t0) / polls * 1e6)
    link._client.ctx.transport = None
    return {"bare_us": round(best_bare, 1), "headend_us": round(best_head, 1),
            "layer_cost_us_per_poll": round(best_head - best_bare, 1)}


def start_simulator(use_uvloop: bool) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "simulators.modbus", "--tcp", "127.0.0.1:0", "--devices", "1"]
    if use_uvloop:
        cmd.append("--uvloop")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, str(info["tcp"])


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(url: str, seconds: float, rounds: int, warmup: float, use_uvloop: bool) -> dict[str, object]:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    client = ModbusClient.from_url(url, retries=0)
    # the bare loops send exactly the requests one head-end read sends
    requests = client.planned_requests("1", QUANTITIES)
    rmap = client.map_for("1")
    blocks = plan_reads(rmap.for_quantities(QUANTITIES), max_registers=rmap.max_registers, max_gap=rmap.max_gap)
    assert [(b.function, b.address, b.count) for b in blocks] == requests
    bare = BareTcpPoller(host, int(port), requests)
    bare_decode = BareTcpPoller(host, int(port), requests, decode=[b.points for b in blocks])
    await bare.connect()
    await bare_decode.connect()
    # the same call shape for all three: one awaitable per poll (partial is C, no extra frame)
    pollers: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare": bare.poll,
        "headend": functools.partial(client.read, "1", QUANTITIES, priority=Priority.SCHEDULED),
        "bare+decode": bare_decode.poll,
    }
    pc, pt = time.perf_counter, time.process_time
    try:
        # warm-up (connect, plan cache, interpreter specialisation): measured nowhere
        n, end = 0, pc() + warmup
        while pc() < end:
            for kind in ORDERS[n % len(ORDERS)]:
                await pollers[kind]()
            n += 1
        no_io = await layer_cost()
        samples: dict[str, list[float]] = {k: [] for k in KINDS}
        cpu = dict.fromkeys(KINDS, 0.0)
        round_ratios: list[float] = []
        round_ratios_decode: list[float] = []
        round_rates: list[dict[str, float]] = []
        for _ in range(rounds):
            gc.collect()  # start each round with no garbage pending: a full collection lands in no one's slot
            wall = dict.fromkeys(KINDS, 0.0)
            n, end = 0, pc() + seconds
            while pc() < end:
                for kind in ORDERS[n % len(ORDERS)]:
                    poll = pollers[kind]
                    c0 = pt()
                    t0 = pc()
                    await poll()
                    t1 = pc()
                    cpu[kind] += pt() - c0
                    wall[kind] += t1 - t0
                    samples[kind].append(t1 - t0)
                n += 1
            round_ratios.append(wall["bare"] / wall["headend"])
            round_ratios_decode.append(wall["bare+decode"] / wall["headend"])
            round_rates.append({k: n / wall[k] for k in KINDS})
    finally:
        await client.aclose()
        bare.close()
        bare_decode.close()
    polls = len(samples["bare"])
    total = {k: sum(v) for k, v in samples.items()}
    load1, load5, _ = os.getloadavg()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "load_average_1m_5m_at_end": [round(load1, 2), round(load5, 2)],
        "quantities": len(QUANTITIES),
        "requests_per_poll": len(requests),
        "seconds_per_round": seconds,
        "rounds": rounds,
        "polls_per_kind": polls,
        "uvloop": use_uvloop,
        "polls_per_s": {k: round(polls / total[k], 1) for k in KINDS},
        "latency_us_p50": {k: round(_pct(v, 0.5) * 1e6) for k, v in samples.items()},
        "latency_us_p99": {k: round(_pct(v, 0.99) * 1e6) for k, v in samples.items()},
        # client-process CPU per poll (the simulator runs in its own process): what the layers cost
        "client_cpu_us_per_poll": {k: round(cpu[k] / polls * 1e6, 1) for k in KINDS},
        "no_io": no_io,
        # headline: the median of the round ratios; pooled = all polls of all rounds together
        "ratio_headend_vs_bare": round(statistics.median(round_ratios), 3),
        "ratio_min_max": [round(min(round_ratios), 3), round(max(round_ratios), 3)],
        "ratio_pooled": round(total["bare"] / total["headend"], 3),
        "ratio_headend_vs_bare_decode": round(statistics.median(round_ratios_decode), 3),
        "round_ratios": [round(x, 3) for x in round_ratios],
        "round_polls_per_s": [{k: round(v) for k, v in r.items()} for r in round_rates],
    }


async def run_in_process(seconds: float, rounds: int, warmup: float, use_uvloop: bool) -> dict[str, object]:
    """The same comparison with the simulator in this event loop (real TCP sockets, no process
    switch per request): the simulator's CPU lands in every poll's time alike."""
    from simulators.modbus.server import ModbusSimulator

    sim = ModbusSimulator.build("generic_terminal", devices=1)
    port = await sim.start_tcp("127.0.0.1", 0)
    try:
        result = await run(f"tcp://127.0.0.1:{port}", seconds, rounds, warmup, use_uvloop)
    finally:
        await sim.stop()
    result["simulator"] = "same event loop"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one round (interleaved polls)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured interleaved polls first")
    ap.add_argument("--uvloop", action="store_true", help="uvloop in both processes")
    ap.add_argument("--in-process", action="store_true", help="run the simulator in the benchmark's event loop")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop

        uvloop.install()
    if a.in_process:
        result = asyncio.run(run_in_process(a.seconds, a.rounds, a.warmup, a.uvloop))
    else:
        proc, url = start_simulator(a.uvloop)
        try:
            result = asyncio.run(run(url, a.seconds, a.rounds, a.warmup, a.uvloop))
        finally:
            proc.terminate()
            proc.wait(5)
        result["simulator"] = "separate process"
    print(json.dumps(result, indent=2))
    ok = float(result["ratio_headend_vs_bare"]) >= 0.9  # type: ignore[arg-type]
    print(f"head-end / bare pymodbus = {result['ratio_headend_vs_bare']} (goal >= 0.9): {'OK' if ok else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
