"""Fixtures shared by the store's CLI tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import app

Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(fresh_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``headend`` in-process on this test's database and data folder: (exit code, stdout, stderr)."""
    monkeypatch.setenv("HEADEND_DATABASE__DSN", fresh_dsn)
    monkeypatch.setenv("HEADEND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HEADEND_TIMEZONE", "Asia/Shanghai")
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        res = runner.invoke(app, list(args))
        return res.exit_code, res.stdout, res.stderr

    return invoke
