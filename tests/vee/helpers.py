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


def install(conn: psycopg.Connection[Any], meter: str, *, area: str | None = None, meter_class: str | None = None,
            installed_at: datetime | None = None) -> int:
    """A meter installed at its own service point (optionally in transformer area ``area``)."""
    area_id = None
    if area is not None:
        row = conn.execute("SELECT id FROM transformer_areas WHERE code = %s", (area,)).fetchone()
        area_id = row[0] if row else None
    conn.execute("INSERT INTO meters (address, meter_class, status) VALUES (%s, %s, 'installed') "
                 "ON CONFLICT (address) DO NOTHING", (meter, meter_class))
    sp = conn.execute("INSERT INTO service_points (sp_no, transformer_area_id) VALUES (%s, %s) RETURNING id",
                      (f"SP-{meter}", area_id)).fetchone()
    assert sp is not None
    conn.execute("INSERT INTO meter_installations (meter, service_point_id, installed_at) VALUES (%s, %s, %s)",
                 (meter, sp[0], installed_at or datetime(2020, 1, 1).astimezone()))
    return int(sp[0])
