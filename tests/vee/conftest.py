"""VEE tests use the store's session database (``pg_dsn``: fresh, every migration applied)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest


@pytest.fixture(scope="session")
def vee_dsn(pg_dsn: str) -> str:
    return str(pg_dsn)


@pytest.fixture()
def conn(vee_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(vee_dsn, autocommit=True) as c:
        yield c
