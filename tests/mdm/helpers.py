"""Shared helpers for the store tests: deterministic readings and a row checksum."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from protocols.reading import Reading

T0 = datetime(2026, 10, 1, tzinfo=UTC)
QTY = "interval.energy.active.import"


def readings(start: int, stop: int, meters: int = 1000, t0: datetime = T0) -> Iterator[Reading]:
    """Reading number i: meter i % meters, interval i // meters, a value derived from i."""
    for i in range(start, stop):
        yield Reading(f"{i % meters:012d}", QTY, t0 + timedelta(minutes=15 * (i // meters)),
                      round((i * 7919 % 1000) / 1000, 3), "kWh", source="test")


def expected_checksum(conn: psycopg.Connection[Any], n: int, meters: int = 1000, t0: datetime = T0) -> tuple[int, str]:
    """(count, md5) that interval_reads must have after readings(0, n), computed from the generator's
    formula with generate_series (k/1000 is the same correctly rounded double in Python and SQL)."""
    row = conn.execute(
        """
        WITH g AS (
            SELECT lpad((i %% %(m)s)::text, 12, '0') AS meter,
                   %(t0)s::timestamptz + make_interval(mins => 15 * (i / %(m)s)::int) AS ts,
                   ((i * 7919) %% 1000)::float8 / 1000 AS value
              FROM generate_series(0::bigint, %(n)s - 1) AS i)
        SELECT count(*), coalesce(md5(string_agg(meter || '|' || extract(epoch FROM ts)::bigint || '|'
               || value::text || E'\\n', '' ORDER BY meter, ts)), md5('')) FROM g""",
        {"m": meters, "t0": t0, "n": n},
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def db_checksum(conn: psycopg.Connection[Any], table: str = "interval_reads") -> tuple[int, str]:
    """The same (count, md5) over the stored rows, computed by the server."""
    row = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(meter || '|' || extract(epoch FROM ts)::bigint || '|' "
        "|| value::text || E'\\n', '' ORDER BY meter, ts)), md5('')) FROM {}").format(sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])
