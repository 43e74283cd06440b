"""CLI: db migrate|status, meters add|list|import|export, reads show|daily|import; embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import app
from headend.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]


def test_help_for_every_store_command(run) -> None:  # type: ignore[no-untyped-def]
    for cmd in (["db"], ["db", "migrate"], ["db", "status"], ["meters", "import"], ["meters", "export"],
                ["reads", "show"], ["reads", "daily"], ["reads", "import"]):
        code, out, _ = run(*cmd, "--help")
        assert code == 0 and "Usage" in out


def test_db_status_and_migrate(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("db", "migrate", "--json")
    assert code == 0 and json.loads(out)["applied"] == []
    code, out, _ = run("db", "status", "--json")
    st = json.loads(out)
    assert code == 0 and st["pending"] == [] and st["storage_mode"] in ("partitioned", "timescaledb")
    assert st["schema_version"] == st["code_version"] and "password" not in st["database"]


def test_meters_add_list_import_export(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("meters", "add", "000000000001", "--ct", "40", "--vendor", "Acme", "--json")
    assert code == 0 and json.loads(out)["multiplier"] == 40 and json.loads(out)["created"]
    f = tmp_path / "m.csv"
    f.write_text("address,protocol,ct_ratio,time_zone\n000000000002,dlt645,1,Asia/Shanghai\n"
                 ",dlt645,1,\n000000000003,modbus,-5,\n000000000004,modbus,1,Mars/Olympus\n")
    code, out, _ = run("meters", "import", str(f), "--json")
    res = json.loads(out)
    assert code == ExitCode.PARTIAL and res["created"] == 1
    assert [r["line"] for r in res["rejected"]] == [3, 4, 5]
    code, out, _ = run("meters", "list", "--json")
    assert [m["address"] for m in json.loads(out)] == ["000000000001", "000000000002"]
    exp = tmp_path / "out.csv"
    code, _, _ = run("meters", "export", "--out", str(exp))
    assert code == 0 and exp.read_text().splitlines()[0].startswith("address,protocol")
    assert len(exp.read_text().splitlines()) == 3


def test_reads_import_show_daily(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "reads.csv"
    lines = ["meter,quantity,ts,value"]
    t0 = datetime(2026, 11, 1, 0, 0)  # naive: Asia/Shanghai local time
    for k in range(96 * 2):
        lines.append(f"000000000007,interval.energy.active.import,{(t0 + timedelta(minutes=15 * k)).isoformat()},0.25")
    lines.append("000000000007,energy.active.import,2026-11-01T00:00:00,100.0")
    lines.append("000000000007,energy.active.import,2026-11-02T00:00:00,124.5")
    lines.append("000000000008,energy.active.import,2026-10-31T00:00:00,10")
    lines.append("000000000008,energy.active.import,2026-11-01T00:00:00,12.5")
    lines.append("000000000007,no.such.code,2026-11-01T00:00:00,1")  # line 198
    lines.append("000000000007,interval.energy.active.import,yesterday,1")  # line 199
    lines.append("000000000007,interval.energy.active.import,2026-11-01T00:00:00,abc")  # line 200
    f.write_text("\n".join(lines) + "\n")
    code, out, _ = run("reads", "import", str(f), "--json")
    res = json.loads(out)
    assert code == ExitCode.PARTIAL, out
    assert [r["line"] for r in res["rejected"]] == [198, 199, 200]
    assert res["loaded"] == 196 and res["meters_discovered"] == 2
    code, out, _ = run("reads", "import", str(f), "--json")  # replay: nothing new
    assert json.loads(out)["inserted"] == 0 and json.loads(out)["unchanged"] == 196
    code, out, _ = run("reads", "show", "--meter", "000000000007", "--from", "2026-11-01", "--to", "2026-11-02",
                       "--json")
    reads = json.loads(out)["reads"]
    assert code == 0 and len(reads) == 96 + 1
    assert reads[0]["ts"].startswith("2026-11-01T00:00:00+08:00") and reads[0]["quality"] == 128  # IMPORTED
    code, out, _ = run("reads", "daily", "-m", "000000000007,000000000008", "--from", "2026-11-01",
                       "--to", "2026-11-02", "--json")
    days = {(d["meter"], d["day"]): (d["kwh"], d["source"]) for d in json.loads(out)["days"]}
    assert days[("000000000007", "2026-11-01")] == (24.0, "interval")
    assert days[("000000000007", "2026-11-02")] == (24.0, "interval")
    assert days[("000000000008", "2026-11-01")] == (2.5, "register")
    code, out, _ = run("reads", "show", "--meter", "000000000007", "--from", "2026-11-01T00:00",
                       "--to", "2026-11-01T00:30", "--csv")
    assert out.splitlines()[0] == "ts,quantity,value,unit,quality,source,version" and len(out.splitlines()) == 4


def test_unreachable_database_is_exit_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", "host=127.0.0.1 port=1 user=x dbname=x connect_timeout=1")
    res = CliRunner().invoke(app, ["meters", "list"])
    assert res.exit_code == ExitCode.DATABASE


def test_embedded_default_with_no_dsn(tmp_path: Path) -> None:
    """No DSN: the first command starts a private server in DATA_DIR/pg, migrates it and works; db stop ends it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
    env["HEADEND_DATA_DIR"] = str(tmp_path / "data")
    cmd = [str(Path(sys.executable).parent / "headend")]
    try:
        p = subprocess.run([*cmd, "meters", "add", "000000000001", "--json"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        p = subprocess.run([*cmd, "db", "status", "--json"], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=60)
        st = json.loads(p.stdout)
        assert st["embedded"] and st["pending"] == [] and st["storage_mode"] == "partitioned"
        assert "host=" in st["database"] and str(tmp_path) in st["database"]
    finally:
        subprocess.run([*cmd, "db", "stop"], env=env, cwd=REPO, capture_output=True, timeout=60)
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()

