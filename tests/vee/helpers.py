"""Writing test reads into the store's tables (the columns every version of the store has)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg


def put(conn: psycopg.Connection[Any], table: str, rows: Iterable[tuple[str, str, datetime, float | None]],
        quality: int = 0, version: int | None = None) -> None:
    assert table in ("interval_reads", "register_reads")
    cols = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)).fetchall()}
    extra = ", version" if version is not None and "version" in cols else ""
    ph = ", %s" if extra else ""
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} (meter, quantity, ts, value, quality, source{extra}) "
            f"VALUES (%s, %s, %s, %s, %s, 'test'{ph})",
            [(m, q, t, v, quality, *((version,) if extra else ())) for m, q, t, v in rows])
