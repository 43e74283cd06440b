"""Query latency on the meter data store: one meter-month of 15-minute data; a 10,000-meter daily report.

Data (loaded server-side with generate_series, not timed): ``--meters`` meters (default 10,000)
with 15-minute intervals for ``--days`` days (default 3), plus ``--month-meters`` (default 100) of
them with a full 31-day month. Then, timed from Python through the same functions the CLI uses:

* ``mdm.store.read_range(meter, month)`` - 2,976 rows of one meter (``headend reads show``),
  over ``--runs`` different meters: p50/p95/max;
* ``mdm.store.daily_consumption(all meters, one day)`` - the fleet's daily report
  (``headend reads daily``), 10,000 rows; and the same over all ``--days`` days.

    python bench/bench_query.py [--dsn DSN] [--meters 10000] [--days 3] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from mdm.db import scratch_database
from mdm.migrate import migrate
from mdm.store import daily_consumption, read_range

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MONTH = datetime(2026, 10, 1, tzinfo=UTC)  # interval data: October (store zone UTC for this bench)
QTY = "interval.energy.active.import"


def load(dsn: str, meters: int, days: int, month_meters: int) -> dict[str, Any]:
    t = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT mdm_ensure_partitions('interval_reads', %s, %s)",
                     (MONTH, MONTH + timedelta(days=31)))
        # the whole fleet: the last `days` days of the month
        start = MONTH + timedelta(days=31 - days)
        conn.execute(
            """INSERT INTO interval_reads (meter, quantity, ts, value, unit, source)
               SELECT lpad(m::text, 12, '0'), %s, %s::timestamptz + make_interval(mins => 15 * k),
                      ((m * 31 + k) %% 97) / 100.0, 'kWh', 'bench'
                 FROM generate_series(0, %s - 1) AS k, generate_series(0, %s - 1) AS m
                ORDER BY k, m""",
            (QTY, start, days * 96, meters))
        # a full month for the first `month_meters` meters (the days before the fleet data)
        conn.execute(
            """INSERT INTO interval_reads (meter, quantity, ts, value, unit, source)
               SELECT lpad(m::text, 12, '0'), %s, %s::timestamptz + make_interval(mins => 15 * k),
                      ((m * 31 + k) %% 97) / 100.0, 'kWh', 'bench'
                 FROM generate_series(0, %s - 1) AS k, generate_series(0, %s - 1) AS m
                ORDER BY k, m""",
            (QTY, MONTH, (31 - days) * 96, month_meters))
        conn.execute("ANALYZE interval_reads")
        n = conn.execute("SELECT count(*) FROM interval_reads").fetchone()
        out: dict[str, Any] = {"rows": int(n[0]) if n else 0, "load_s": round(time.perf_counter() - t, 1)}
        mode = conn.execute("SELECT mode FROM mdm_storage").fetchone()
        if mode and mode[0] == "timescaledb":
            # what the refresh policies do in the background: materialise the continuous aggregates
            t = time.perf_counter()
            for cagg in ("consumption_hourly", "consumption_daily", "consumption_monthly"):
                conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (cagg,))
            out["aggregate_refresh_s"] = round(time.perf_counter() - t, 1)
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("HEADEND_BENCH_DSN", DEFAULT_DSN))
    ap.add_argument("--meters", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--month-meters", type=int, default=100)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    name = f"bench_mdmq_{os.getpid()}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()
    with scratch_database(args.dsn, name, keep=args.keep) as dsn:
        migrate(dsn, timezone="UTC")
        data = load(dsn, args.meters, args.days, args.month_meters)
        print(f"loaded {data['rows']:,} rows in {data['load_s']} s", flush=True)
        with psycopg.connect(dsn) as conn:
            mode = conn.execute("SELECT mode FROM mdm_storage").fetchone()
            month_ms: list[float] = []
            for i in range(args.runs):
                meter = f"{i % args.month_meters:012d}"
                t = time.perf_counter()
                rows = read_range(conn, meter, MONTH, MONTH + timedelta(days=31))
                month_ms.append((time.perf_counter() - t) * 1000)
                assert len(rows) == 31 * 96, len(rows)
            last_day = (MONTH + timedelta(days=30)).date()
            day_ms: list[float] = []
            for _ in range(max(3, args.runs // 6)):
                t = time.perf_counter()
                rep = daily_consumption(conn, None, last_day, last_day)
                day_ms.append((time.perf_counter() - t) * 1000)
                assert len(rep) == args.meters, len(rep)
            first_day: date = last_day - timedelta(days=args.days - 1)
            t = time.perf_counter()
            rep = daily_consumption(conn, None, first_day, last_day)
            span_ms = (time.perf_counter() - t) * 1000
            assert len(rep) >= args.meters * args.days, len(rep)
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {os.cpu_count()} CPU, CPython {platform.python_version()}",
            "server": f"PostgreSQL {server[0] if server else '?'} ({args.dsn.split('dbname')[0].strip()})",
            "storage_mode": mode[0] if mode else None,
            **data,
            "meter_month_15min": {"rows": 31 * 96, "runs": len(month_ms),
                                  "p50_ms": round(statistics.median(month_ms), 1),
                                  "p95_ms": round(pct(month_ms, 0.95), 1), "max_ms": round(max(month_ms), 1)},
            "daily_report_one_day": {"meters": args.meters, "runs": len(day_ms),
                                     "p50_ms": round(statistics.median(day_ms), 1), "max_ms": round(max(day_ms), 1)},
            f"daily_report_{args.days}_days": {"meters": args.meters, "rows": len(rep), "ms": round(span_ms, 1)},
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
