"""``headend kpi``: success rate per day and bus or meter, as a table, JSON and a PNG chart."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from headend.cli import app


@pytest.fixture
def kpi_dsn(daemon_dsn: str) -> str:
    rows = [
        (date(2026, 11, 25), "000000000001", "instant", "bus-a", 288, 288, 0, 0),
        (date(2026, 11, 25), "000000000002", "instant", "bus-a", 288, 200, 88, 0),
        (date(2026, 11, 25), "000000000002", "profile", "bus-a", 96, 90, 6, 6),
        (date(2026, 11, 26), "000000000001", "instant", "bus-a", 288, 288, 0, 0),
        (date(2026, 11, 26), "000000000003", "daily", "bus-b", 1, 0, 1, 1),
    ]
    with psycopg.connect(daemon_dsn) as c:
        c.cursor().executemany(
            "INSERT INTO collection_kpi (day, meter, plan, channel, due, ok, failed, backfilled)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return daemon_dsn


def test_kpi_table_json_and_png(kpi_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", kpi_dsn)
    runner = CliRunner()
    r = runner.invoke(app, ["kpi", "--from", "2026-11-25", "--to", "2026-11-26", "--json"])
    assert r.exit_code == 0, r.output
    rows = {(x["day"], x["key"]): x for x in json.loads(r.output)["rows"]}
    a25 = rows[("2026-11-25", "bus-a")]
    assert (a25["meters"], a25["due"], a25["ok"], a25["backfilled"]) == (2, 672, 578, 6)
    assert a25["complete_meters"] == 1  # meter 2 missed instant reads that cannot be backfilled
    assert rows[("2026-11-26", "bus-b")]["complete_rate"] == 1.0  # its missed freeze was backfilled
    png = tmp_path / "kpi.png"
    r = runner.invoke(app, ["kpi", "--from", "2026-11-25", "--to", "2026-11-26", "--by", "meter", "--png", str(png)])
    assert r.exit_code == 0, r.output
    assert "chart written" in r.output and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["kpi", "--from", "2026-11-25", "--to", "2026-11-26", "--by", "day", "--json"])
    fleet = json.loads(r.output)["rows"]
    assert [x["key"] for x in fleet] == ["fleet", "fleet"] and fleet[0]["meters"] == 2
    r = runner.invoke(app, ["kpi", "--from", "not-a-date"])
    assert r.exit_code == 2


def test_kpi_counters_upsert_and_add_up_with_awkward_names(daemon_dsn: str) -> None:
    """The recorder's COPY escapes what text COPY treats specially; a second flush adds to the first."""
    from headend.kpi import KpiRecorder

    names = ["bus\twith tab", "back\\slash", "new\nline", "plain"]
    k = KpiRecorder()
    day = date(2026, 11, 27)
    for i, ch in enumerate(names):
        k.scheduled(day, f"00000000000{i}", "instant", ch, ok=True)
        k.scheduled(day, f"00000000000{i}", "instant", ch, ok=False)
    assert k.write_sync(daemon_dsn, k.take()) == 4
    k.scheduled(day, "000000000003", "instant", "plain", ok=True)
    k.backfilled(day, "000000000003", "instant", "plain", 2)
    assert k.write_sync(daemon_dsn, k.take()) == 1
    with psycopg.connect(daemon_dsn) as c:
        got = c.execute("SELECT meter, channel, due, ok, failed, backfilled FROM collection_kpi"
                        " ORDER BY meter").fetchall()
    assert got == [
        ("000000000000", "bus\twith tab", 2, 1, 1, 0),
        ("000000000001", "back\\slash", 2, 1, 1, 0),
        ("000000000002", "new\nline", 2, 1, 1, 0),
        ("000000000003", "plain", 3, 2, 1, 2),
    ]
