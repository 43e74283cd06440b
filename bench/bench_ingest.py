"""Ingest throughput: Reading objects -> durable rows with upsert, vs raw binary COPY, in one run.

Both sides start from the same pre-built :class:`~protocols.reading.Reading` objects and commit
every 20,000 rows on the same database:

* baseline: ``COPY plain_table FROM STDIN (FORMAT BINARY)`` of the readings' fields into a plain
  table with the same columns and no index (one connection);
* ingest: :class:`mdm.ingest.Ingestor` ``submit()`` until every reading is durable: binary COPY
  into a staging table, insert into the (partitioned or hypertable) reads table with its primary
  key, unknown meters registered, idempotency/version logic armed.

Rounds alternate baseline and ingest (tables emptied between rounds) so drift on a shared
machine hits both alike; the figure is the median of the per-round ratios ingest/baseline
(goal >= 0.7). A second phase streams ``--memory-rows`` readings (default 10M) through one
Ingestor, built lazily in chunks, sampling the process RSS as it goes: memory must stay flat.

    python bench/bench_ingest.py [--dsn DSN] [--rows 1000000] [--rounds 3] [--memory-rows 10000000]

The DSN is a server/maintenance database (default: the PostgreSQL at 127.0.0.1:5432, user
postgres); a scratch database is created for the run and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from mdm.db import scratch_database
from mdm.ingest import Ingestor
from mdm.migrate import migrate
from protocols.reading import Reading

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BATCH = 20_000
T0 = datetime(2026, 9, 1, tzinfo=UTC)
QTY = "interval.energy.active.import"
_TYPES = ["text", "text", "timestamptz", "float8", "text", "int4", "text"]


def make_readings(start: int, stop: int, meters: int = 10_000) -> list[Reading]:
    return [
        Reading(f"{i % meters:012d}", QTY, T0 + timedelta(minutes=15 * (i // meters)), (i % 997) / 1000, "kWh",
                source="bench")
        for i in range(start, stop)
    ]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def baseline_copy(dsn: str, readings: list[Reading], table: str = "plain_reads") -> float:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
        conn.commit()
        t = time.perf_counter()
        for k in range(0, len(readings), BATCH):
            with conn.cursor().copy(sql.SQL(
                "COPY {} (meter, quantity, ts, value, unit, quality, source) FROM STDIN (FORMAT BINARY)"
            ).format(sql.Identifier(table))) as cp:
                cp.set_types(_TYPES)
                for r in readings[k : k + BATCH]:
                    cp.write_row((r.meter, r.quantity, r.ts, r.value, r.unit, int(r.quality), r.source))
            conn.commit()
        return time.perf_counter() - t


def reset_store(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE interval_reads, register_reads, superseded_reads")  # meters stay registered


async def ingest(dsn: str, readings: list[Reading], workers: int, fast_path: str = "copy") -> tuple[
        float, dict[str, Any]]:
    async with Ingestor(dsn, batch_size=BATCH, workers=workers, fast_path=fast_path) as ing:  # type: ignore[arg-type]
        t = time.perf_counter()
        for k in range(0, len(readings), 100_000):
            await ing.submit(readings[k : k + 100_000])
        dt = time.perf_counter() - t
        return dt, {"inserted": ing.stats.inserted, "batches": ing.stats.batches}


async def memory_run(dsn: str, n: int, workers: int) -> dict[str, Any]:
    samples: list[tuple[int, float]] = []
    chunk = 100_000
    async with Ingestor(dsn, batch_size=BATCH, workers=workers) as ing:
        t = time.perf_counter()
        done = 0
        for k in range(0, n, chunk):
            await ing.submit(iter_readings(k, min(k + chunk, n)))
            done = min(k + chunk, n)
            if done % 500_000 == 0 or done == n:
                samples.append((done, round(rss_mb(), 1)))
        dt = time.perf_counter() - t
        inserted = ing.stats.inserted
    after_warmup = [mb for rows, mb in samples if rows >= 1_000_000]
    return {
        "rows": n, "seconds": round(dt, 1), "rows_per_s": round(n / dt), "inserted": inserted,
        "rss_mb_samples": samples,
        "rss_mb_after_1M_min": min(after_warmup) if after_warmup else None,
        "rss_mb_after_1M_max": max(after_warmup) if after_warmup else None,
    }


def iter_readings(start: int, stop: int, meters: int = 10_000) -> Iterator[Reading]:
    for i in range(start, stop):
        yield Reading(f"{i % meters:012d}", QTY, T0 + timedelta(minutes=15 * (i // meters)), (i % 997) / 1000,
                      "kWh", source="bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("HEADEND_BENCH_DSN", DEFAULT_DSN))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fast-path", choices=["copy", "stage", "both"], default="both",
                    help="new-key path: COPY into the reads table (savepoint) or staging + INSERT; both = compare")
    ap.add_argument("--memory-rows", type=int, default=10_000_000, help="0 to skip the memory phase")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()

    name = f"bench_mdm_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()
    with scratch_database(args.dsn, name, keep=args.keep) as dsn:
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE plain_reads (meter text, quantity text, ts timestamptz, value float8, "
                         "unit text, quality int4, source text)")
            # the "index tax" reference: the same raw COPY into a table with the reads tables' primary key
            conn.execute('CREATE TABLE pk_reads (meter text COLLATE "C", quantity text COLLATE "C", ts timestamptz, '
                         "value float8, unit text, quality int4, source text, PRIMARY KEY (meter, quantity, ts))")
            mode = conn.execute("SELECT mode FROM mdm_storage").fetchone()
        readings = make_readings(0, args.rows)
        paths = ["copy", "stage"] if args.fast_path == "both" else [args.fast_path]
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            pk = baseline_copy(dsn, readings, "pk_reads")
            print(f"round {r + 1}: raw COPY into a table with the same primary key {args.rows / pk:,.0f} rows/s",
                  flush=True)
            for fp in paths:
                b = baseline_copy(dsn, readings)
                reset_store(dsn)
                i, st = asyncio.run(ingest(dsn, readings, args.workers, fp))
                assert st["inserted"] == args.rows, st
                rounds.append({"fast_path": fp, "baseline_s": round(b, 3), "ingest_s": round(i, 3),
                               "pk_copy_s": round(pk, 3), "ratio_vs_pk_copy": round(pk / i, 3),
                               "baseline_rows_per_s": round(args.rows / b), "ingest_rows_per_s": round(args.rows / i),
                               "ratio": round(b / i, 3)})
                print(f"round {r + 1} ({fp}): baseline {args.rows / b:,.0f} rows/s, ingest {args.rows / i:,.0f} "
                      f"rows/s, ratio {b / i:.3f}", flush=True)
        del readings
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} CPU, {platform.python_implementation()} "
                       f"{platform.python_version()}",
            "server": f"PostgreSQL {server[0] if server else '?'} ({args.dsn.split('dbname')[0].strip()})",
            "storage_mode": mode[0] if mode else None,
            "rows": args.rows, "workers": args.workers, "rounds": rounds,
            "ratio_median": {fp: statistics.median(x["ratio"] for x in rounds if x["fast_path"] == fp)
                             for fp in paths},
            "ratio_vs_pk_copy_median": {fp: statistics.median(x["ratio_vs_pk_copy"] for x in rounds
                                                              if x["fast_path"] == fp) for fp in paths},
            "ingest_rows_per_s_median": {fp: statistics.median(x["ingest_rows_per_s"] for x in rounds
                                                               if x["fast_path"] == fp) for fp in paths},
        }
        if args.memory_rows:
            reset_store(dsn)
            result["memory"] = asyncio.run(memory_run(dsn, args.memory_rows, args.workers))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
