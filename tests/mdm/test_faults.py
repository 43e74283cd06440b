"""Fault tests with real processes: killed connections, a SIGKILLed ingester, an outage while spooling.

Every test ends with the same proof: the row count and a checksum over (meter, ts, value) of the
stored rows equal the ones computed independently in Python - 0 lost, 0 duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from mdm.db import admin_dsn, database_name
from mdm.ingest import Ingestor

from .helpers import db_checksum, expected_checksum, readings

REPO = Path(__file__).resolve().parents[2]
N = 1_000_000


def _terminate(dsn: str) -> int:
    name = database_name(dsn)
    with psycopg.connect(admin_dsn(dsn), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def _allow(dsn: str, allow: bool) -> None:
    with psycopg.connect(admin_dsn(dsn), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database_name(dsn)), sql.Literal(allow)))
    if not allow:
        _terminate(dsn)


async def test_connections_killed_during_1m_ingest(fresh_dsn: str) -> None:
    killed = 0
    stop = asyncio.Event()

    async def killer() -> None:
        nonlocal killed
        while not stop.is_set() and killed < 8:  # a kill every ~0.7 s while the ingest runs
            await asyncio.sleep(0.7)
            killed += await asyncio.to_thread(_terminate, fresh_dsn)

    async with Ingestor(fresh_dsn, batch_size=20_000, retry_for=10.0) as ing:
        k = asyncio.create_task(killer())
        try:
            for start in range(0, N, 100_000):
                await ing.submit(list(readings(start, start + 100_000)))
        finally:
            stop.set()
            await k
        retries = ing.stats.retries
    assert killed >= 3, "the test must actually kill connections mid-ingest"
    assert retries >= 1
    with psycopg.connect(fresh_dsn) as conn:
        assert db_checksum(conn) == expected_checksum(conn, N)


def _child(dsn: str, spool: Path, start: int, progress: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.mdm.ingest_child", dsn, str(spool), str(start), str(N), str(progress)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _acked(progress: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(progress.read_text())
    return 0


def _kill_when(proc: subprocess.Popen[bytes], progress: Path, at_least: int, timeout: float = 60) -> int:
    end = time.monotonic() + timeout
    while _acked(progress) < at_least:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "child died"
        assert time.monotonic() < end, "child too slow"
        time.sleep(0.02)
    time.sleep(0.05)  # land somewhere inside the next chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return _acked(progress)


def test_ingester_sigkilled_and_restarted(fresh_dsn: str, tmp_path: Path) -> None:
    spool, progress = tmp_path / "spool", tmp_path / "acked"
    # 1st kill while writing to the database
    acked1 = _kill_when(_child(fresh_dsn, spool, 0, progress), progress, 200_000)
    assert acked1 < N, "killed before the end"
    # restart a little before the last ack (replays must be harmless), 2nd kill during an outage,
    # i.e. while the child is appending to its spool
    restart = max(0, acked1 - 40_000)
    proc = _child(fresh_dsn, spool, restart, progress)
    while _acked(progress) < acked1 + 100_000:
        assert proc.poll() is None
        time.sleep(0.02)
    _allow(fresh_dsn, False)
    try:
        spooled_until = _acked(progress) + 60_000
        acked2 = _kill_when(proc, progress, spooled_until)
        assert acked2 < N, "killed before the end"
        assert any(spool.glob("spool-*.log")), "the outage must have been spooled"
    finally:
        _allow(fresh_dsn, True)
    # final run: replays the spool (with a possibly torn tail) and finishes from the last ack
    proc = _child(fresh_dsn, spool, acked2, progress)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert not list(spool.glob("spool-*.log"))
    with psycopg.connect(fresh_dsn) as conn:
        assert db_checksum(conn) == expected_checksum(conn, N)

