"""CLI (vee, reads edit, anomalies, workorders) and anomaly ranking on the database."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from typer.testing import CliRunner

from headend.cli import app
from mdm.anomalies import find_suspects, raise_theft_orders
from tests.vee.helpers import install, put

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 1, 1, tzinfo=TZ)
DAYS = 35
Q = "interval.energy.active.import"


def shape(i: int) -> float:
    h = (i % 96) / 4
    return 0.15 + 0.1 * math.sin(2 * math.pi * (h - 6) / 24) ** 2


@pytest.fixture(scope="module")
def area(vee_dsn: str) -> dict[str, object]:
    """One transformer area: a check meter and 6 customers; customer 'thief' bypasses from day 28."""
    tag = uuid.uuid4().hex[:6]
    customers = [f"C{tag}{k}" for k in range(6)]
    thief = customers[2]
    check = f"K{tag}"
    code = f"AREA{tag}"
    with psycopg.connect(vee_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO transformer_areas (code, check_meter, transformer_kva) VALUES (%s, %s, 200)",
                     (code, check))
        install(conn, check, meter_class="ct")
        conn.execute("UPDATE meters SET ct_ratio = 50, multiplier = 50 WHERE address = %s", (check,))
        for m in customers:
            install(conn, m, area=code, meter_class="single_phase")
        rows = []
        checks = []
        for i in range(DAYS * 96):
            ts = START + timedelta(minutes=15 * i)
            total = 0.0
            for k, m in enumerate(customers):
                v = shape(i) * (1 + 0.1 * k)
                total += v
                if m == thief and i >= 28 * 96:
                    v *= 0.25
                rows.append((m, Q, ts, round(v, 5)))
            checks.append((check, Q, ts, round(total * 1.03, 5)))
        put(conn, "interval_reads", rows + checks)
        conn.execute("INSERT INTO meter_events (meter, ts, code) VALUES (%s, %s, 'cover_open')",
                     (thief, START + timedelta(days=27, hours=23)))
    return {"customers": customers, "thief": thief, "check": check, "code": code}


def test_anomalies_rank_the_thief_first(vee_dsn: str, area: dict[str, object]) -> None:
    with psycopg.connect(vee_dsn, autocommit=True) as conn:
        rep = find_suspects(conn, START, START + timedelta(days=DAYS), tz="Asia/Shanghai",
                            meters=[*area["customers"], area["check"]])  # type: ignore[misc]
        top = rep.suspects[0]
        assert top.meter == area["thief"]
        kinds = {r["kind"] for r in top.reasons}
        assert {"sustained_drop", "cover_open", "area_loss"} <= kinds
        a = next(x for x in rep.areas if x["area"] == area["code"])
        assert a["loss_pct_by_day"][START.date().isoformat()] == pytest.approx(2.9, abs=0.2)
        assert a["loss_pct_latest"] > 8 and a["abnormal_days"] == DAYS - 28
        ids = raise_theft_orders(conn, rep, min_score=3.0)
        again = raise_theft_orders(conn, rep, min_score=3.0)
        assert ids and ids == again  # same day's evidence is not added twice
        row = conn.execute("SELECT type, jsonb_array_length(evidence) FROM work_orders WHERE id = %s",
                           (ids[0],)).fetchone()
        assert row == ("theft_investigation", 1)


def test_cli_end_to_end(vee_dsn: str, area: dict[str, object], tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", vee_dsn)
    monkeypatch.setenv("HEADEND_TIMEZONE", "Asia/Shanghai")
    runner = CliRunner()
    thief = str(area["thief"])
    meters = ",".join([*area["customers"], area["check"]])  # type: ignore[list-item]
    day = START + timedelta(days=30)
    # punch a hole in one customer's day to have something to estimate
    with psycopg.connect(vee_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM interval_reads WHERE meter = %s AND ts >= %s AND ts < %s",
                     (thief, day + timedelta(hours=10), day + timedelta(hours=11)))
    r = runner.invoke(app, ["vee", "run", "--from", day.date().isoformat(), "--meters", meters, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["meters"] == 7 and out["exceptions"]["gap"] == 1 and out["new_versions"] == 4
    r = runner.invoke(app, ["vee", "report", "--meter", thief, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert any(e["rule"] == "gap" for e in rep["exceptions"])
    assert rep["versions_by_method"]
    r = runner.invoke(app, ["vee", "report"])
    assert r.exit_code == 0 and "exception queue" in r.output
    gap_id = next(e["id"] for e in rep["exceptions"] if e["rule"] == "gap")
    r = runner.invoke(app, ["vee", "resolve", str(gap_id), "999999999", "--operator", "carol", "--note", "re-read"])
    assert r.exit_code == 10, r.output  # PARTIAL: one id unknown
    r = runner.invoke(app, ["vee", "run", "--from", day.date().isoformat(), "--meters", meters, "--json"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["vee", "report", "--meter", thief, "--json", "--status", "all"])
    gap = next(e for e in json.loads(r.output)["exceptions"] if e["id"] == gap_id)
    assert gap["values"]["resolution"]["by"] == "carol"  # a re-run keeps the resolution
    r = runner.invoke(app, ["vee", "report", "--meter", thief, "--json"])
    assert all(e["id"] != gap_id for e in json.loads(r.output)["exceptions"])

    ts = (day + timedelta(hours=10)).isoformat()
    r = runner.invoke(app, ["reads", "edit", "--meter", thief, "--ts", ts, "--value", "0.05", "--reason",
                            "customer photo of register", "--operator", "alice", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["version"] == 2  # above the estimate (version 1)
    r = runner.invoke(app, ["reads", "versions", "--meter", thief, "--ts", ts, "--json"])
    vers = json.loads(r.output)["versions"]
    assert vers[0]["method"] in ("linear", "shape", "shape+scaled", "linear+scaled")
    assert vers[-1]["method"] == "manual" and vers[-1]["operator"] == "alice"
    r = runner.invoke(app, ["reads", "edit", "--meter", thief, "--ts", ts, "--value", "1", "--reason", "x",
                            "--operator", "bob", "--quantity", "no.such.quantity"])
    assert r.exit_code == 2

    r = runner.invoke(app, ["anomalies", "list", "--from", START.date().isoformat(), "--to",
                            (START + timedelta(days=DAYS)).date().isoformat(), "--meters", meters, "--json",
                            "--raise-orders"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["suspects"][0]["meter"] == thief and data["suspects"][0]["rank"] == 1 and data["work_orders"]
    r = runner.invoke(app, ["anomalies", "list", "--from", START.date().isoformat(), "--to",
                            (START + timedelta(days=DAYS)).date().isoformat(), "--meters", meters])
    assert r.exit_code == 0 and thief in r.output and "transformer-area balance" in r.output
    png = tmp_path / "curve.png"
    frm, to = (day - timedelta(days=2)).date().isoformat(), (day + timedelta(days=1)).isoformat()
    r = runner.invoke(app, ["anomalies", "plot", "--meter", thief, "--out", str(png), "--from", frm, "--to", to])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # work orders: list, show, dispatch, complete with a field read, export
    r = runner.invoke(app, ["workorders", "list", "--meter", thief, "--json"])
    orders = json.loads(r.output)
    theft = next(o for o in orders if o["type"] == "theft_investigation")
    r = runner.invoke(app, ["workorders", "show", str(theft["id"])])
    assert r.exit_code == 0 and "theft investigation" in r.output
    r = runner.invoke(app, ["workorders", "complete", str(theft["id"]), "--operator", "crew"])
    assert r.exit_code == 0  # open -> completed is allowed for a crew already on site
    r = runner.invoke(app, ["workorders", "dispatch", str(theft["id"]), "--to", "crew-2"])
    assert r.exit_code == 9, r.output  # completed -> dispatched is refused (BLOCKED)
    reread = next((o for o in orders if o["type"] == "manual_reread"), None)
    if reread is None:
        r = runner.invoke(app, ["workorders", "raise", "--meter", thief, "--type", "manual_reread", "--reason",
                                "gap", "--json"])
        reread = json.loads(r.output)
    r = runner.invoke(app, ["workorders", "dispatch", str(reread["id"]), "--to", "crew-3", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "dispatched"
    r = runner.invoke(app, ["workorders", "complete", str(reread["id"]), "--operator", "crew-3", "--read",
                            f"energy.active.import=4321.5@{day.isoformat()}", "--json"])
    assert r.exit_code == 0, r.output
    with psycopg.connect(vee_dsn) as conn:
        v = conn.execute("SELECT value, method FROM read_versions WHERE meter = %s AND quantity = "
                         "'energy.active.import'", (thief,)).fetchall()
    assert v == [(4321.5, "field_read")]
    csv_out = tmp_path / "wo.csv"
    r = runner.invoke(app, ["workorders", "export", "--format", "csv", "--out", str(csv_out), "--all"])
    assert r.exit_code == 0 and thief in csv_out.read_text()
    r = runner.invoke(app, ["workorders", "cancel", "999999999", "--operator", "x", "--reason", "y"])
    assert r.exit_code == 9
    r = runner.invoke(app, ["workorders", "due", "--today", "2020-06-01", "--json"])
    assert r.exit_code == 0 and isinstance(json.loads(r.output), list)
    r = runner.invoke(app, ["vee", "rules", "--json"])
    assert any(x["id"] == "stopped" for x in json.loads(r.output))


def test_cli_database_unreachable_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1")
    r = CliRunner().invoke(app, ["workorders", "list"])
    assert r.exit_code == 8


def test_cli_publish_work_orders(vee_dsn: str, mqtt_broker: Any, mqtt_prefix: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", vee_dsn)
    monkeypatch.setenv("HEADEND_MQTT__TOPIC_PREFIX", mqtt_prefix)
    runner = CliRunner()
    m = f"P{uuid.uuid4().hex[:8]}"
    r = runner.invoke(app, ["workorders", "raise", "--meter", m, "--type", "comm_inspection", "--reason", "silent",
                            "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["workorders", "publish", "--host", mqtt_broker.host, "--port", str(mqtt_broker.port),
                            "--no-retain", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["published"] >= 1
    r = runner.invoke(app, ["workorders", "publish", "--host", "127.0.0.1", "--port", "1", "--all", "--no-retain"])
    assert r.exit_code == 6  # TRANSPORT: broker unreachable
