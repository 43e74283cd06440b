"""Migrations: order, recording, refusal of a newer database, failing files, base schema rules."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from mdm.migrate import MigrationError, discover, migrate, status
from protocols.quantities import QUANTITIES


def test_all_applied_in_order_and_recorded(pg_dsn: str) -> None:
    migs = discover()
    versions = [m.version for m in migs]
    assert versions == sorted(versions) and versions[:4] == [1, 2, 3, 4]
    with psycopg.connect(pg_dsn) as conn:
        st = status(conn)
        assert st.pending == [] and st.unknown == []
        assert st.version == max(versions)
        assert st.storage_mode in ("partitioned", "timescaledb")
        n = conn.execute("SELECT count(*) FROM quantities").fetchone()
        assert n == (len(QUANTITIES),)
    assert migrate(pg_dsn) == []  # idempotent: nothing left to do


def test_refuses_database_newer_than_code(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, sha256) VALUES (9999, 'future', 'x')")
    with pytest.raises(MigrationError, match="newer than this code"):
        migrate(fresh_dsn)


def test_failing_file_rolls_back_and_later_gap_files_apply(fresh_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE t_a (x int);")
    (tmp_path / "0003_bad.sql").write_text("CREATE TABLE t_b (x int); SELECT * FROM no_such_table;")
    (tmp_path / "0002_c.sql").write_text("CREATE TABLE t_c (x int);")
    # a scratch schema so these files do not touch the store's tables
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA scratch")
    dsn = fresh_dsn + " options='-c search_path=scratch'"
    with pytest.raises(MigrationError, match="0003_bad"):
        migrate(dsn, migrations=discover(tmp_path))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('t_b')").fetchone() == (None,)
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")] == [1, 2]


def test_bad_file_name_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "12_x.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_name"):
        discover(tmp_path)


def test_audit_log_is_append_only(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO audit_log (actor, action, target) VALUES ('op', 'test', 'm1')")
        for stmt in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)


def test_exchange_closes_one_history_and_opens_the_next(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (address, ct_ratio, pt_ratio, multiplier) VALUES "
                     "('000000000001', 1, 1, 1), ('000000000002', 50, 1, 50)")
        conn.execute("INSERT INTO customers (customer_no) VALUES ('C1')")
        conn.execute("INSERT INTO accounts (account_no, customer_id) SELECT 'A1', id FROM customers")
        sp = conn.execute("INSERT INTO service_points (sp_no, account_id) SELECT 'SP1', id FROM accounts "
                          "RETURNING id").fetchone()
        assert sp is not None
        conn.execute("SELECT exchange_meter(%s, '000000000001', '2026-01-01', NULL, 10.0)", (sp[0],))
        conn.execute("SELECT exchange_meter(%s, '000000000002', '2026-06-01', 1234.5, 0.0)", (sp[0],))
        ex = conn.execute("SELECT old_meter, new_meter, old_final_read, new_start_read FROM meter_exchanges"
                          ).fetchall()
        assert ex == [("000000000001", "000000000002", 1234.5, 0.0)]
        st: dict[str, str] = dict(conn.execute("SELECT address, status FROM meters").fetchall())
        assert st == {"000000000001": "removed", "000000000002": "installed"}
        mult = conn.execute("SELECT multiplier FROM meter_installations WHERE removed_at IS NULL").fetchone()
        assert mult == (50.0,)


def test_embedded_data_dir_in_a_home_is_refused_as_root(tmp_path: Path) -> None:
    import os

    from headend.settings import load_settings
    from mdm.db import resolve_dsn
    from protocols.errors import ConfigError

    if os.geteuid() != 0:
        pytest.skip("only root triggers the embedded server's permission changes")
    settings = load_settings(None, database={"embedded_dir": "/root/.local/state/ami-headend/pg"})
    with pytest.raises(ConfigError, match="home directories"):
        resolve_dsn(settings)
    assert not Path("/root/.local/state/ami-headend/pg").exists()
