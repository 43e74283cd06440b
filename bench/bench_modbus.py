"""Modbus TCP polling: through the head-end (ModbusClient.read) vs a bare pymodbus loop, in one run.

Both poll the same simulated terminal (a separate process: ``python -m simulators.modbus``)
with the same register requests (the head-end's read plan for the quantity list), in
short alternating slices so drift on a shared machine hits both alike. The figure is
polls/s; the result is the median of the per-round ratios head-end / bare (goal >= 0.9).

The bare loop only issues the requests (``bare``); ``bare+decode`` also converts the
registers like any application must. The head-end adds arbitration, the breaker, decoding
and building :class:`~protocols.reading.Reading` objects.

    python bench/bench_modbus.py [--seconds 1] [--rounds 7] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from protocols.arbitration import Priority
from protocols.modbus.client import ModbusClient, bare_tcp_poll
from protocols.modbus.maps import load_map, plan_reads

QUANTITIES = [
    "voltage.a", "voltage.b", "voltage.c", "current.a", "current.b", "current.c",
    "power.active.total", "power.reactive.total", "pf.total", "frequency",
    "energy.active.import", "energy.active.export", "relay.state", "balance.energy",
]


async def headend_poll(url: str, seconds: float) -> int:
    client = ModbusClient.from_url(url, retries=0)
    polls = 0
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            await client.read("1", QUANTITIES, priority=Priority.SCHEDULED)
            polls += 1
    finally:
        await client.aclose()
    return polls


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
    link._readers = dict.fromkeys(link._readers, instant)
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


async def run(url: str, seconds: float, rounds: int, use_uvloop: bool) -> dict[str, object]:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    rmap = load_map("generic_terminal")
    blocks = plan_reads(rmap.for_quantities(QUANTITIES))
    requests = [(b.function, b.address, b.count) for b in blocks]
    decode = [b.points for b in blocks]
    await headend_poll(url, 0.3)  # warm-up (connect, imports, caches)
    no_io = await layer_cost()
    rates: dict[str, list[float]] = {"bare": [], "bare+decode": [], "headend": []}
    cpu: dict[str, list[float]] = {"bare": [], "bare+decode": [], "headend": []}
    paired: list[float] = []
    paired_decode: list[float] = []

    async def measure(kind: str) -> None:
        c0 = time.process_time()
        if kind == "headend":
            n = await headend_poll(url, seconds)
        else:
            n = await bare_tcp_poll(host, int(port), requests, duration=seconds,
                                    decode=decode if kind == "bare+decode" else None)
        cpu[kind].append((time.process_time() - c0) / max(n, 1) * 1e6)
        rates[kind].append(n / seconds)

    for i in range(rounds):
        # alternate the order so neither side always runs first after a pause
        order = ["bare", "headend"] if i % 2 == 0 else ["headend", "bare"]
        for kind in [*order, "bare+decode"]:
            await measure(kind)
        paired.append(rates["headend"][-1] / rates["bare"][-1])
        paired_decode.append(rates["headend"][-1] / rates["bare+decode"][-1])
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "quantities": len(QUANTITIES),
        "requests_per_poll": len(requests),
        "seconds_per_slice": seconds,
        "rounds": rounds,
        "uvloop": use_uvloop,
        "polls_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "requests_per_s_bare": round(med["bare"] * len(requests), 1),
        "no_io": no_io,
        # client-process CPU per poll (the simulator runs in its own process): what the layers cost
        "client_cpu_us_per_poll_median": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
        # the median of per-round ratios: each head-end slice against the bare slice next to it
        "ratio_headend_vs_bare": round(statistics.median(paired), 3),
        "ratio_headend_vs_bare_decode": round(statistics.median(paired_decode), 3),
        "paired_ratios": [round(x, 3) for x in paired],
        "all_rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
    }


async def run_in_process(seconds: float, rounds: int, use_uvloop: bool) -> dict[str, object]:
    """The same comparison with the simulator in this event loop (real TCP sockets, no process
    switch per request): both sides pay the same simulator CPU, the OS scheduling noise is gone."""
    from simulators.modbus.server import ModbusSimulator

    sim = ModbusSimulator.build("generic_terminal", devices=1)
    port = await sim.start_tcp("127.0.0.1", 0)
    try:
        result = await run(f"tcp://127.0.0.1:{port}", seconds, rounds, use_uvloop)
    finally:
        await sim.stop()
    result["simulator"] = "same event loop"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one measuring slice")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--uvloop", action="store_true", help="uvloop in both processes")
    ap.add_argument("--in-process", action="store_true", help="run the simulator in the benchmark's event loop")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop

        uvloop.install()
    if a.in_process:
        result = asyncio.run(run_in_process(a.seconds, a.rounds, a.uvloop))
    else:
        proc, url = start_simulator(a.uvloop)
        try:
            result = asyncio.run(run(url, a.seconds, a.rounds, a.uvloop))
        finally:
            proc.terminate()
            proc.wait(5)
        result["simulator"] = "separate process"
    print(json.dumps(result, indent=2))
    ok = float(result["ratio_headend_vs_bare"]) >= 0.9  # type: ignore[arg-type]
    print(f"head-end / bare pymodbus = {result['ratio_headend_vs_bare']} (goal >= 0.9): {'OK' if ok else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
