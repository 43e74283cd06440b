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


def expected_checksum(n: int, meters: int = 1000, t0: datetime = T0) -> tuple[int, str]:
    """(count, md5) the interval_reads rows for readings(0, n) must have, computed in Python."""
    import hashlib

    h = hashlib.md5()
    rows = sorted(
        (f"{i % meters:012d}", t0 + timedelta(minutes=15 * (i // meters)), round((i * 7919 % 1000) / 1000, 3))
        for i in range(n)
    )
    for m, ts, v in rows:
        text = repr(v)[:-2] if repr(v).endswith(".0") else repr(v)  # PostgreSQL prints 1.0 as 1
        h.update(f"{m}|{int(ts.timestamp())}|{text}\n".encode())
    return n, h.hexdigest()


def db_checksum(conn: psycopg.Connection[Any], table: str = "interval_reads") -> tuple[int, str]:
    """The same (count, md5) over the stored rows, computed by the server."""
    row = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(meter || '|' || extract(epoch FROM ts)::bigint || '|' "
        "|| value::text || E'\\n', '' ORDER BY meter, ts)), md5('')) FROM {}").format(sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])
