"""VEE throughput: one day of 15-minute data for 1,000,000 meters (96M intervals), in chunks.

    python -m bench.bench_vee [--meters 1000000] [--chunk 50000] [--sql-meters 20000] [--dsn DSN]

numpy side: synthetic but realistic data (household shape with noise, 0.2 % gaps, some spikes,
stopped meters, high/low days) is generated chunk by chunk; only the VEE time is measured:
gap, spike, stopped (with current), high/low vs 28 days of history, running fast (rating),
sum check against the register delta, and the interval count per day. Memory stays bounded by
the chunk (peak RSS reported).

SQL side, same run: the same checks written as window functions (lag/lead, windowed counts,
per-meter aggregates joined back) over a sample of ``--sql-meters`` meters loaded with COPY into a
private database that is dropped afterwards. Its rate is intervals/s on that sample; the ratio
compares rates (the SQL figure is for a smaller sample, stated as such).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from mdm.vee import rules
from mdm.vee.config import load_vee_config

PER_DAY = 96
STEP = 900
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC

FloatArray = npt.NDArray[np.float64]


def make_chunk(rng: np.random.Generator, m: int) -> dict[str, Any]:
    t = np.arange(PER_DAY)
    shape = 0.15 + 0.1 * np.sin(2 * np.pi * (t - 30) / PER_DAY) ** 2
    scale = rng.lognormal(0, 0.5, (m, 1))
    v = shape[None, :] * scale * rng.uniform(0.7, 1.3, (m, PER_DAY))
    current = v * 4 * 1000 / 220
    gaps = rng.random((m, PER_DAY)) < 0.002
    v[gaps] = np.nan
    spikes = rng.random(m) < 0.001
    v[spikes, 40] = 5.0
    stopped = rng.random(m) < 0.001
    v[stopped, 50:60] = 0.0
    history = rng.normal(1.0, 0.1, (m, 28)) * np.nansum(shape) * scale
    reg_start = rng.uniform(1000, 5000, m)
    reg_end = reg_start + np.nansum(v, axis=1) + np.where(rng.random(m) < 0.001, 3.0, 0.0)
    return {"v": v, "current": current, "history": history, "reg_start": reg_start, "reg_end": reg_end}


def vee_chunk(c: dict[str, Any], th: Any) -> int:
    """Run the checks; returns the number of findings."""
    v = c["v"]
    n = 0
    n += len(rules.check_gaps(v, T0, STEP, th))
    n += len(rules.check_spikes(v, T0, STEP, th))
    n += len(rules.check_stopped(v, c["current"], None, T0, STEP, th))
    daily = np.nansum(v, axis=1)[:, None]
    hi, lo = rules.check_high_low(daily, c["history"], np.array([T0]), th)
    n += len(hi) + len(lo)
    n += len(rules.check_running_fast(v, T0, STEP, th))
    m = v.shape[0]
    n += len(rules.check_sum_intervals_register(daily[:, 0], c["reg_start"], c["reg_end"], np.full(m, T0),
                                                np.full(m, T0 + 86400), th))
    count = (~np.isnan(v)).sum(axis=1)
    n += int((count != PER_DAY).sum())
    return n


def bench_numpy(meters: int, chunk: int, seed: int) -> dict[str, float]:
    th = load_vee_config().for_class("residential")
    rng = np.random.default_rng(seed)
    vee_s = 0.0
    findings = 0
    done = 0
    wall = time.perf_counter()
    while done < meters:
        m = min(chunk, meters - done)
        c = make_chunk(rng, m)
        t = time.perf_counter()
        findings += vee_chunk(c, th)
        vee_s += time.perf_counter() - t
        done += m
        del c
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"meters": meters, "intervals": meters * PER_DAY, "vee_seconds": vee_s,
            "wall_seconds": time.perf_counter() - wall, "intervals_per_s": meters * PER_DAY / vee_s,
            "findings": findings, "peak_rss_mb": rss_mb}


SQL_SETUP = """
CREATE TABLE iv (meter int NOT NULL, ts timestamptz NOT NULL, kwh float8, current_a float8);
CREATE TABLE hist (meter int NOT NULL, day date NOT NULL, kwh float8);
CREATE TABLE reg (meter int PRIMARY KEY, start_kwh float8, end_kwh float8);
"""

SQL_CHECKS = {
    "gap": """
        SELECT count(*) FROM (
          SELECT meter, ts, lead(ts) OVER w AS nxt FROM iv WHERE kwh IS NOT NULL
          WINDOW w AS (PARTITION BY meter ORDER BY ts)
        ) s WHERE nxt - ts > interval '15 minutes'""",
    "spike": """
        WITH med AS (SELECT meter, percentile_cont(0.5) WITHIN GROUP (ORDER BY kwh) AS m FROM iv GROUP BY meter),
        nb AS (SELECT meter, kwh, (coalesce(lag(kwh) OVER w, kwh) + coalesce(lead(kwh) OVER w, kwh)) / 2 AS n
               FROM iv WINDOW w AS (PARTITION BY meter ORDER BY ts))
        SELECT count(*) FROM nb JOIN med USING (meter)
        WHERE kwh > %(f)s * greatest(m, 1e-9) AND kwh - n > %(min)s AND kwh > %(f)s * greatest(n, 1e-9)""",
    "stopped": """
        SELECT count(*) FROM (
          SELECT meter, grp, count(*) AS n FROM (
            SELECT meter, ts, z, sum(CASE WHEN z THEN 0 ELSE 1 END) OVER w AS grp FROM (
              SELECT meter, ts, (kwh = 0 AND current_a > %(cur)s) AS z FROM iv) a
            WINDOW w AS (PARTITION BY meter ORDER BY ts)) b
          WHERE z GROUP BY meter, grp) c WHERE n >= %(k)s""",
    "high_low": """
        WITH d AS (SELECT meter, sum(kwh) AS kwh FROM iv GROUP BY meter),
        h AS (SELECT meter, avg(kwh) AS m, stddev_pop(kwh) AS s FROM hist GROUP BY meter)
        SELECT count(*) FROM d JOIN h USING (meter) WHERE m >= %(hm)s AND
          ((d.kwh > %(hf)s * m AND d.kwh > m + 4 * s) OR d.kwh < %(lf)s * m)""",
    "running_fast": "SELECT count(*) FROM iv WHERE kwh > %(cap)s",
    "sum_register": """
        SELECT count(*) FROM (SELECT meter, sum(kwh) AS s FROM iv GROUP BY meter) d JOIN reg USING (meter)
        WHERE abs(s - (end_kwh - start_kwh)) > greatest(%(rel)s * abs(end_kwh - start_kwh), %(abs)s)""",
    "day_count": """
        SELECT count(*) FROM (SELECT meter, count(kwh) AS n FROM iv GROUP BY meter) c WHERE n <> 96""",
}


def bench_sql(dsn: str, meters: int, seed: int) -> dict[str, float] | None:
    try:
        import psycopg
        from psycopg import sql
    except ImportError:  # pragma: no cover
        return None
    th = load_vee_config().for_class("residential")
    name = f"bench_vee_{os.getpid()}"
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"SQL side skipped: {exc}", file=sys.stderr)
        return None
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname=name), autocommit=True) as conn:
            conn.execute(SQL_SETUP)
            c = make_chunk(np.random.default_rng(seed), meters)
            load_t = time.perf_counter()
            _copy(conn, c, meters)
            conn.execute("CREATE INDEX ON iv (meter, ts)")
            conn.execute("ANALYZE")
            load_s = time.perf_counter() - load_t
            params = {"f": th.spike_factor, "min": th.spike_min_kw * STEP / 3600, "cur": th.stopped_current_a,
                      "k": th.stopped_min_intervals, "hm": th.history_min_mean_kwh, "hf": th.high_factor,
                      "lf": th.low_factor, "rel": th.sum_rel_tolerance, "abs": th.sum_abs_tolerance,
                      "cap": th.fast_factor * th.nominal_voltage * th.rated_max_current * th.phases / 1000 * 0.25}
            per_check: dict[str, float] = {}
            t = time.perf_counter()
            for k, q in SQL_CHECKS.items():
                t1 = time.perf_counter()
                conn.execute(q, params if "%(" in q else None)
                per_check[k] = time.perf_counter() - t1
            sql_s = time.perf_counter() - t
            # numpy on the very same sample, for a like-for-like ratio as well
            t = time.perf_counter()
            vee_chunk(c, th)
            np_s = time.perf_counter() - t
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin2:
            admin2.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return {"meters": meters, "intervals": meters * PER_DAY, "sql_seconds": sql_s, "load_seconds": load_s,
            "intervals_per_s": meters * PER_DAY / sql_s, "numpy_same_sample_s": np_s,
            **{f"sql_{k}_s": v for k, v in per_check.items()}}


def _copy(conn: Any, c: dict[str, Any], meters: int) -> None:
    v = c["v"]
    cur = c["current"]
    with conn.cursor() as cu:
        with cu.copy("COPY iv (meter, ts, kwh, current_a) FROM STDIN") as cp:
            base = np.datetime64("2026-01-01T00:00:00")
            stamps = [str(base + np.timedelta64(15 * j, "m")) + "+00" for j in range(PER_DAY)]
            for i in range(meters):  # loading the sample (not timed as VEE)
                for j in range(PER_DAY):
                    x = v[i, j]
                    cp.write_row((i, stamps[j], None if np.isnan(x) else float(x), float(cur[i, j])))
        with cu.copy("COPY hist (meter, day, kwh) FROM STDIN") as cp:
            h = c["history"]
            for i in range(meters):
                for d in range(h.shape[1]):
                    cp.write_row((i, f"2025-12-{d + 1:02d}" if d < 31 else "2025-12-31", float(h[i, d])))
        with cu.copy("COPY reg (meter, start_kwh, end_kwh) FROM STDIN") as cp:
            for i in range(meters):
                cp.write_row((i, float(c["reg_start"][i]), float(c["reg_end"][i])))


def bench_runner(dsn: str, meters: int, seed: int) -> dict[str, float] | None:
    """The VEE runner end to end on the store: load (current + superseded reads, 7 days of history), rules,
    estimation, exception and version writes, for ``meters`` meters x 1 day, in a private migrated database."""
    import psycopg
    from psycopg import sql

    from mdm.migrate import migrate
    from mdm.vee.config import Thresholds, VeeConfig
    from mdm.vee.runner import run_vee

    name = f"bench_vee_run_{os.getpid()}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        print(f"runner side skipped: {exc}", file=sys.stderr)
        return None
    db = psycopg.conninfo.make_conninfo(dsn, dbname=name)
    try:
        migrate(db)
        rng = np.random.default_rng(seed)
        days = 8
        with psycopg.connect(db, autocommit=True) as conn:
            t = time.perf_counter()
            with conn.cursor() as cu, cu.copy("COPY interval_reads (meter, quantity, ts, value) FROM STDIN") as cp:
                base = np.datetime64("2026-01-01T00:00:00")
                stamps = [str(base + np.timedelta64(15 * j, "m")) + "+00" for j in range(days * PER_DAY)]
                for i in range(meters):  # loading the sample (not timed as VEE)
                    c = make_chunk(rng, 1)["v"][0]
                    v = np.tile(np.nan_to_num(c, nan=0.1), days) * rng.uniform(0.9, 1.1, days * PER_DAY)
                    gap = rng.random(days * PER_DAY) < 0.002
                    for j in np.flatnonzero(~gap):
                        cp.write_row((f"M{i:07d}", "interval.energy.active.import", stamps[j], float(v[j])))
            load_s = time.perf_counter() - t
            conn.execute("ANALYZE interval_reads")
            cfg = VeeConfig(timezone="UTC", classes={"residential": Thresholds(history_days=7)})
            start = datetime(2026, 1, 8, tzinfo=UTC)
            t = time.perf_counter()
            s = run_vee(conn, start, start + timedelta(days=1), config=cfg, tz="UTC", raise_orders=True,
                        now=start + timedelta(days=2))
            run_s = time.perf_counter() - t
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin2:
            admin2.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return {"meters": meters, "intervals": s.intervals, "rows_loaded": meters * days * PER_DAY, "seconds": run_s,
            "intervals_per_s": s.intervals / run_s, "exceptions": sum(s.exceptions.values()),
            "new_versions": s.new_versions, "work_orders": len(s.work_orders), "copy_seconds": load_s}


@contextmanager
def _timer(label: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    print(f"{label}: {time.perf_counter() - t:.1f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="VEE throughput: numpy chunks vs SQL window functions")
    ap.add_argument("--meters", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--sql-meters", type=int, default=20_000)
    ap.add_argument("--dsn", default=os.environ.get("HEADEND_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-sql", action="store_true")
    ap.add_argument("--runner-meters", type=int, default=2000,
                    help="meters for the end-to-end runner run on the store (0 = skip)")
    args = ap.parse_args(argv)
    with _timer("numpy side"):
        npr = bench_numpy(args.meters, args.chunk, args.seed)
    print(f"numpy VEE: {npr['meters']:,} meters x 96 = {npr['intervals']:,} intervals in {npr['vee_seconds']:.2f} s "
          f"VEE time ({npr['wall_seconds']:.1f} s wall incl. data generation): {npr['intervals_per_s'] / 1e6:.2f}M "
          f"intervals/s, {npr['findings']:,} findings, peak RSS {npr['peak_rss_mb']:.0f} MB, chunk {args.chunk:,}")
    if not args.no_sql:
        with _timer("SQL side"):
            sq = bench_sql(args.dsn, args.sql_meters, args.seed)
        if sq:
            print(f"SQL window functions: {sq['meters']:,} meters ({sq['intervals']:,} intervals) in "
                  f"{sq['sql_seconds']:.2f} s: {sq['intervals_per_s'] / 1e6:.3f}M intervals/s "
                  f"(COPY load {sq['load_seconds']:.1f} s, not counted)")
            print("  per check: " + ", ".join(f"{k[4:-2]} {v:.2f} s" for k, v in sq.items()
                                              if k.startswith("sql_") and k.endswith("_s") and k != "sql_seconds"))
            print(f"ratio numpy / SQL (rates): {npr['intervals_per_s'] / sq['intervals_per_s']:.0f}x; "
                  f"same {sq['meters']:,}-meter sample in numpy: {sq['numpy_same_sample_s']:.3f} s "
                  f"({sq['sql_seconds'] / sq['numpy_same_sample_s']:.0f}x)")
    if args.runner_meters:
        with _timer("runner side"):
            rr = bench_runner(args.dsn, args.runner_meters, args.seed)
        if rr:
            print(f"VEE runner end to end on the store: {rr['meters']:,} meters, {rr['intervals']:,} intervals of the "
                  f"day (store: {rr['rows_loaded']:,} rows, 7 days of history + the day) in {rr['seconds']:.2f} s: "
                  f"{rr['intervals_per_s'] / 1e3:.0f}k intervals/s incl. loading, {rr['exceptions']} exceptions, "
                  f"{rr['new_versions']} estimates, {rr['work_orders']} work orders")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
