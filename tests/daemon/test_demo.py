"""``headend demo``, shortened: simulated buses (TCP and pty), the daemon on a fast clock, a summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import app
from tests.daemon.conftest import query


def test_demo_runs_and_leaves_data(daemon_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_DATABASE__DSN", daemon_dsn)
    monkeypatch.setenv("HEADEND_DATA_DIR", str(tmp_path))
    r = CliRunner().invoke(app, ["demo", "--minutes", "12", "--speed", "120", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["meters"] >= 24 and summary["buses"] >= 3
    assert summary["scheduled reads due"] > 100 and summary["readings stored"] > 500
    assert summary["clock syncs (broadcast)"] >= 1 or summary["meters with clock flagged"] >= 1
    channels = {c for (c,) in query(daemon_dsn, "SELECT DISTINCT channel FROM collection_kpi")}
    assert {"tcp-bus-1", "pty-bus-2", "tcp-bus-3"} <= channels  # TCP and pty buses both collected
    # Every module's stage ran on the collected data: Modbus, MQTT, remote control, VEE.
    assert "modbus reads ok / no reply" in summary
    assert "mqtt stored" in summary
    assert str(summary["remote cut (DEMO-0001)"]).startswith("confirmed")
    assert "frames to its meter: 0" in str(summary["remote cut refused (DEMO-0002)"])
    assert str(summary["reconnect after payment"]).startswith("confirmed")
    assert "VEE exceptions" in summary
