"""Real daemon processes: SIGTERM drains and flushes; channel leases survive a SIGKILLed daemon.

Each daemon is ``headend run --config FILE`` in its own process; the meter buses are simulators
in the test process, over real TCP sockets; the store is a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from simulators.dlt645 import MeterBusSimulator
from tests.daemon.conftest import query

ROOT = Path(__file__).resolve().parents[2]


def _config(path: Path, dsn: str, name: str, sims: list[MeterBusSimulator], ttl: float = 4.0) -> Path:
    lines = [
        'timezone = "Asia/Shanghai"',
        "[database]",
        f"dsn = {dsn!r}",
        "[daemon]",
        f'name = "{name}"',
        'listen = "127.0.0.1:0"',
        "kpi_flush = 0.5",
        "drain_timeout = 10.0",
        "[daemon.leases]",
        'enabled = "on"',
        f"ttl = {ttl}",
        f"renew = {ttl / 4}",
        "[daemon.backfill]",
        "enabled = false",
        "[[daemon.plans]]",
        'name = "instant"',
        'kind = "read"',
        "every = 1.0",
        'quantities = ["voltage.a", "energy.active.import"]',
    ]
    for i, sim in enumerate(sims):
        lines += ["[[daemon.channels]]", f'name = "bus-{i}"', f'url = "{sim.url}"', "timeout = 1.0",
                  f"meters = {sim.addresses!r}".replace("'", '"')]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _start(cfg: Path, data_dir: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "HEADEND_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from headend.cli import main; main()", "-v", "run", "--config", str(cfg),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("wb"), cwd=str(ROOT),
    )


async def _until(pred: object, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _owners(dsn: str) -> dict[str, str]:
    return dict(query(dsn, "SELECT channel, owner FROM channel_leases WHERE expires_at > now()"))


async def test_sigterm_drains_in_flight_and_flushes(daemon_dsn: str, tmp_path: Path) -> None:
    async with MeterBusSimulator(4, transport="tcp", parity="N", line_time=True, baud=1200,
                                 turnaround=0.1) as sim:
        cfg = _config(tmp_path / "d.toml", daemon_dsn, "d-term", [sim])
        log = tmp_path / "d.log"
        proc = await _start(cfg, tmp_path / "data", log)
        try:
            await _until(lambda: query(daemon_dsn, "SELECT count(*) FROM register_reads")[0][0] >= 8, 30,
                         "first readings")
            assert list((tmp_path / "data" / "daemons").glob("*.json"))  # registered for on-demand reads
            # `headend read` on the daemon's port goes through the daemon's queue, not the port
            reader = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from headend.cli import main; main()", "read", sim.addresses[1],
                "voltage.a", "--port", sim.url, "--json", stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "HEADEND_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)},
            )
            out, _ = await asyncio.wait_for(reader.communicate(), 30)
            assert reader.returncode == 0
            item = json.loads(out)["items"][0]
            assert item["via"] == "daemon d-term" and item["quantity"] == "voltage.a"
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = log.read_text()
    assert rc == 0, text
    m = re.search(r"stopped: (\d+) readings handed to the store", text)
    assert m, text
    stored = query(daemon_dsn, "SELECT count(*) FROM register_reads WHERE source = 'dlt645@d-term'")[0][0]
    assert stored == int(m.group(1))  # everything read before the exit is in the store
    assert query(daemon_dsn, "SELECT count(*) FROM channel_leases") == [(0,)]  # released, not left to expire
    assert not list((tmp_path / "data" / "daemons").glob("*.json"))
    assert query(daemon_dsn, "SELECT sum(due) > 0 FROM collection_kpi") == [(True,)]


async def test_lease_takeover_after_sigkill_without_double_reads(daemon_dsn: str, tmp_path: Path) -> None:
    async with (MeterBusSimulator(3, transport="tcp", parity="N") as s0,
                MeterBusSimulator(addresses=["000000000011", "000000000012"], transport="tcp", parity="N") as s1):
        procs: list[asyncio.subprocess.Process] = []
        try:
            cfg1 = _config(tmp_path / "d1.toml", daemon_dsn, "d1", [s0, s1])
            cfg2 = _config(tmp_path / "d2.toml", daemon_dsn, "d2", [s0, s1])
            procs.append(await _start(cfg1, tmp_path / "data1", tmp_path / "d1.log"))
            await _until(lambda: _owners(daemon_dsn) == {"bus-0": "d1", "bus-1": "d1"}, 30, "d1 leases")
            procs.append(await _start(cfg2, tmp_path / "data2", tmp_path / "d2.log"))
            await asyncio.sleep(3.0)  # d2 is up and renewing, but must not take live leases
            assert _owners(daemon_dsn) == {"bus-0": "d1", "bus-1": "d1"}
            procs[0].kill()  # SIGKILL: no release, the leases must expire
            killed = datetime.now(UTC)
            await procs[0].wait()
            await _until(lambda: _owners(daemon_dsn) == {"bus-0": "d2", "bus-1": "d2"}, 20, "takeover by d2")
            # d1 comes back: it must not fight d2 for the buses d2 now holds
            procs.append(await _start(cfg1, tmp_path / "data1", tmp_path / "d1b.log"))
            await _until(lambda: "started" in (tmp_path / "d1b.log").read_text(errors="replace"), 30, "d1 again")
            await asyncio.sleep(2.5)
            assert _owners(daemon_dsn) == {"bus-0": "d2", "bus-1": "d2"}
            procs[2].send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(procs[2].wait(), 20) == 0
            procs[1].send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(procs[1].wait(), 20) == 0
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
    for ch, meters in (("bus-0", s0.addresses), ("bus-1", s1.addresses)):
        rows = dict(query(daemon_dsn, "SELECT source, array[min(ts), max(ts)] FROM register_reads"
                          " WHERE meter = ANY(%s) GROUP BY source", list(meters)))
        d1, d2 = rows["dlt645@d1"], rows["dlt645@d2"]
        assert d1[1] < killed <= d2[0], (ch, d1, d2)  # one owner at a time: no bus polled by both
    acquired = query(daemon_dsn, "SELECT owner, at FROM channel_lease_log WHERE event = 'acquired' ORDER BY at")
    assert [o for o, _ in acquired] == ["d1", "d1", "d2", "d2"]  # the returning d1 acquired nothing
    assert acquired[2][1] >= killed
